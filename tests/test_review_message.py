"""The review off the critical path (protocol 1.4, issue 15): a real server subprocess sends a
1.4 client the take first and its review data in a ``review`` message after it, a 1.3 client
the review inside the result as before; ``redraw`` draws a take's sync picture again from
edited markers; a keyed client that comes back fetches the review too (or is told it was
lost); what the server keeps for redraws is bounded."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from foley_protocol.client import (
    FoleyClient,
    build_generate,
    merge_review,
    redraw_picture,
    result_sync_pictures,
)
from foley_protocol.protocol import REVIEW_FIELDS, Message, Signer, decode, encode
from tests.test_server import (
    JOB_TIMEOUT_S,
    QUICK,
    collect,
    moving_square_frames,
    png_size,
    small_frames,
    wait_ready,
)
from tests.test_spool import spool_server, started
from v2a_server.serving.review import ReviewStore, picture_bytes

KNOCKS = dict(frames_fps=8.0, duration_s=3.0, caption="knocks", seed=5, steps=1, guidance=1.0,
              variations=2, sync_picture_frame_rate=25.0)


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    proc = started(spool_server(tiny_model_dir, tmp_path_factory.mktemp("review-server")))
    yield proc
    proc.stop()


def until_review(client: FoleyClient, job_id: str, timeout_s: float = JOB_TIMEOUT_S,
                 also: tuple[str, ...] = ()) -> list:
    """Every event of ``job_id`` (and of the requests ``also``) up to and including the job's
    review."""
    events, deadline = [], time.monotonic() + timeout_s
    while not any(e.type == "review" for e in events):
        assert time.monotonic() < deadline, [e.type for e in events]
        events += [e for e in client.poll(0.1) if e.request_id in (job_id, *also)]
    return events


class RawClient:
    """A DEALER that says hello with a chosen minor and reads every message itself."""

    def __init__(self, endpoint: str, minor: int):
        self.signer = Signer()
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.send(Message("hello", {"client": f"raw 1.{minor}", "versions": [1],
                                    "minor": minor}))

    def send(self, message: Message) -> str:
        self.socket.send_multipart(encode(message, self.signer))
        return message.id

    def read(self, seconds: float) -> list[Message]:
        received, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.socket.poll(100, zmq.POLLIN):
                received.append(decode(self.socket.recv_multipart(), self.signer,
                                       direction="reply"))
            else:
                self.send(Message("ping", {}))
        return received

    def close(self) -> None:
        self.socket.close(linger=0)


def test_a_1_4_client_gets_the_take_first_and_its_review_data_after_it(server):
    frames = moving_square_frames(24, 64, (8, 16))
    with FoleyClient(server.endpoint) as client:
        wait_ready(client)
        assert client.protocol_minor >= 4  # 1.4 or later: the review message
        job_id = client.generate(frames, **KNOCKS, timeout_s=JOB_TIMEOUT_S)
        events = until_review(client, job_id)
    finals = [e for e in events if e.final]
    assert [e.type for e in finals] == ["result", "review"]
    result, review = finals
    assert result.body["review_follows"] is True
    assert not set(REVIEW_FIELDS) & set(result.body)  # the take alone: audio, onsets, levels
    assert len(result.buffers) == 2 and "review_s" not in result.body["timings_s"]
    assert review.body["takes"] == 2 and "missing" not in review.body
    assert review.body["motion"]["times_s"] == pytest.approx([1.0, 2.0])  # the square's jumps
    assert len(review.body["audio_onsets"]) == 2
    pictures = result_sync_pictures(review)
    assert [png_size(p) for p in pictures] == [(review.body["sync_pictures"]["width_px"],
                                                review.body["sync_pictures"]["height_px"])] * 2
    assert review.body["timings_s"]["review_s"] > 0
    merged = merge_review(result, review)  # as a result before 1.4 carried it
    assert result_sync_pictures(merged) == pictures and len(merged.buffers) == 4
    assert merged.body["motion"] == review.body["motion"] and "review_follows" not in merged.body



def test_the_review_libraries_load_at_server_start_beside_the_model(server):
    """matplotlib (its font cache: ~20 s on a fresh machine) and librosa's first onset call load
    on a thread of their own as the server starts, not in the first job."""
    deadline = time.monotonic() + 60
    while "matplotlib ready in" not in server.log():
        assert time.monotonic() < deadline, "no warm-up line in the server log"
        time.sleep(0.2)
    assert "librosa's onsets in" in server.log()


def test_a_1_3_client_gets_the_review_inside_the_result_and_no_review_message(server):
    old = RawClient(server.endpoint, minor=3)
    try:
        job_id = old.send(build_generate(moving_square_frames(24, 64, (8, 16)), **KNOCKS))
        received = old.read(0.0)
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while not any(m.type == "result" for m in received):
            assert time.monotonic() < deadline
            received += old.read(0.5)
        received += old.read(2.0)  # a review message would have come by now
    finally:
        old.close()
    mine = [m for m in received if m.parent == job_id]
    assert [m.type for m in mine if m.type != "progress"] == ["result"]
    body = mine[-1].body
    assert "review_follows" not in body
    assert body["motion"]["times_s"] == pytest.approx([1.0, 2.0])
    assert len(body["audio_onsets"]) == 2 and body["sync_pictures"]["buffers"] == [2, 3]
    assert body["timings_s"]["review_s"] > 0


def test_redraw_draws_the_take_with_the_edited_markers(server):
    with FoleyClient(server.endpoint) as client:
        wait_ready(client)
        job_id = client.generate(moving_square_frames(24, 64, (8, 16)), **KNOCKS)
        events = until_review(client, job_id)
        result = next(e for e in events if e.type == "result")
        original = result_sync_pictures(events[-1])[1]
        same = client.redraw(job_id, 1, result.body["onset_times_s"], 25.0)
        edited = client.redraw(job_id, 1, [1.0, 2.0 + 3 / 25], 25.0)  # one on time, one late
        replies = collect([client], [same, edited])
        with FoleyClient(server.endpoint) as stranger:  # another connection, no client key
            wait_ready(stranger)
            theirs = stranger.redraw(job_id, 0, [1.0], 25.0)
            refused = collect([stranger], [theirs])[theirs][-1]
        never = client.redraw("no-such-job", 0, [1.0], 25.0)
        unknown = collect([client], [never])[never][-1]
    same_reply, edited_reply = replies[same][-1], replies[edited][-1]
    assert same_reply.type == edited_reply.type == "redraw_reply", (same_reply.body,
                                                                    edited_reply.body)
    assert edited_reply.body["request_id"] == job_id and edited_reply.body["take"] == 1
    # the same markers draw the same picture; edited ones another, of the same size
    assert redraw_picture(same_reply) == original
    assert redraw_picture(edited_reply) != original
    assert png_size(redraw_picture(edited_reply)) == png_size(original)
    for refusal in (refused, unknown):
        assert refusal.type == "error" and refusal.body["code"] == "invalid_request"
        assert refusal.body["field"] == "body.request_id"


def test_a_keyed_client_that_comes_back_fetches_the_take_and_its_review(server):
    first = FoleyClient(server.endpoint, client_key="blend-review")
    wait_ready(first)
    job_id = first.generate(small_frames(), **QUICK, seed=4)
    first.poll(0.1)
    first.close()  # Blender closed while the job ran
    with FoleyClient(server.endpoint, client_key="blend-review") as second:
        wait_ready(second)
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while f"{job_id} (client" not in server.log() or ": done in" not in server.log():
            assert time.monotonic() < deadline
            second.poll(0.1)
        time.sleep(1.0)  # its review too
        fetch_id = second.fetch(job_id)
        events = until_review(second, job_id, also=(fetch_id,))
    assert [e.type for e in events if e.final] == ["fetch_reply", "result", "review"]
    assert events[-1].body["takes"] == 1 and "audio_onsets" in events[-1].body


def test_a_fetched_take_whose_review_was_lost_gets_a_review_that_says_so(tiny_model_dir,
                                                                        tmp_path):
    """The server stopped between a result and its review: the spool holds the result only."""
    from v2a_server.serving.server import REVIEW_LOST, spool_owner
    from v2a_server.serving.spool import ResultSpool

    proc = spool_server(tiny_model_dir, tmp_path)
    body = {"audio": {"encoding": "pcm_f32le", "sample_rate": 16000, "channels": 1,
                      "samples": 4, "buffers": [0]},
            "duration_s": 0.00025, "start_time_s": 0.0, "onset_times_s": [],
            "onset_probabilities": [], "onset_curve": {"rate_hz": 25.0, "values": []},
            "seed": 1, "steps": 1, "sampler": "dpmpp", "model_id": "m", "timings_s": {},
            "warnings": [], "review_follows": True}
    ResultSpool(tmp_path / "spool", 2**20, 3600).put(
        spool_owner("blend-lost"), "job-lost",
        Message("result", body, parent="job-lost", buffers=[np.zeros(4, "<f4").tobytes()]))
    started(proc)
    try:
        with FoleyClient(proc.endpoint, client_key="blend-lost") as client:
            wait_ready(client)
            fetch_id = client.fetch("job-lost")
            events = until_review(client, "job-lost", timeout_s=30, also=(fetch_id,))
    finally:
        proc.stop()
    assert [e.type for e in events if e.final] == ["fetch_reply", "result", "review"]
    assert events[0].body["was"] == "done"
    assert events[-1].body == {"takes": 1, "missing": REVIEW_LOST}


class Data:  # what picture_bytes reads of a SyncPictureData
    def __init__(self, n: int):
        self.audio = np.zeros(n, np.float32)
        self.motion_energy = np.zeros(8, np.float32)
        self.onset_envelope = None


def test_the_redraw_store_is_bounded_by_entries_and_bytes_oldest_unused_first():
    store = ReviewStore(max_entries=3, max_bytes=10 * picture_bytes([Data(10_000)]))
    for n in range(3):
        store.put(("key:k", f"job-{n}"), [Data(10_000)])
    assert store.get(("key:k", "job-0")) is not None  # used: now the newest
    store.put(("key:k", "job-3"), [Data(10_000)])
    assert store.get(("key:k", "job-1")) is None and len(store) == 3
    store.put(("key:k", "big"), [Data(10_000)] * 7)  # 7 of the 10 allowed
    assert store.get(("key:k", "job-2")) is None and len(store) == 3  # entries: job-2 out
    store.put(("key:k", "more"), [Data(10_000)] * 3)  # bytes: the oldest out until it fits
    assert store.bytes <= store.max_bytes
    assert store.get(("key:k", "job-0")) is None and store.get(("key:k", "job-3")) is None
    assert store.get(("key:k", "big")) is not None and store.get(("key:k", "more")) is not None
    store.put(("key:k", "huge"), [Data(10_000)] * 11)  # alone over the budget: not kept
    assert store.get(("key:k", "huge")) is None and store.bytes <= store.max_bytes
    off = ReviewStore(max_bytes=0)  # --review-store-mb 0: no redraws, nothing held
    off.put(("key:k", "job"), [Data(10)])
    assert len(off) == 0 and off.bytes == 0 and off.get(("key:k", "job")) is None


def test_nothing_of_1_4_reaches_a_1_3_peer():
    from foley_protocol.protocol import ProtocolError, for_minor

    review = Message("review", {"takes": 1, "missing": "x"}, parent="job")
    redraw = Message("redraw", {"request_id": "job", "take": 0, "marker_times_s": [1.0],
                                "frame_rate": 25.0})
    for message in (review, redraw):
        with pytest.raises(ProtocolError) as refused:
            for_minor(message, 3)
        assert refused.value.code == "unsupported_version"
        assert refused.value.field == "header.type" and "1.4" in refused.value.message
        assert for_minor(message, 4) is message
    result = Message("result", {"seed": 1, "review_follows": True, "warnings": []})
    assert "review_follows" not in for_minor(result, 3).body
    assert for_minor(result, 4).body["review_follows"] is True


def test_a_review_that_does_not_come_ends_as_a_review_without_data_never_an_error():
    """The client's own end of an awaited review (timeout here; server_lost likewise): the take
    arrived already, so the caller sees a ``review`` that says why it has no data."""
    from foley_protocol.client import Event, _Pending

    with FoleyClient("tcp://127.0.0.1:1", client_name="nobody") as client:
        client._pending["job-1"] = _Pending("review", time.monotonic() - 1.0)
        events = [e for e in client.poll(0.05) if e.request_id == "job-1"]
    assert [(e.type, e.final, e.local) for e in events] == [("review", True, True)]
    assert events[0].body["missing"].startswith("timeout: ")
    result = Message("result", {"warnings": [], "timings_s": {}, "review_follows": True})

    merged = merge_review(Event("result", "job-1", result.body, [], True), events[0])
    assert merged.body["warnings"] == [events[0].body["missing"]]
