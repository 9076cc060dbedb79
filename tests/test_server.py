"""v2a-server end to end: a real server subprocess on loopback with the tiny model, real
ZeroMQ sockets, the foley_protocol client. Every wait has a timeout; every server is killed
in teardown."""

from __future__ import annotations

import contextlib

import io
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

from foley_protocol.client import FoleyClient, RequestFailed, result_audio_numpy
from foley_protocol.protocol import (
    MAX_FRAME_COUNT,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    REQUEST_SCHEMAS,
    Message,
    Signer,
    decode,
    encode,
)

SAMPLE_RATE = 16000
READY_TIMEOUT_S = 120.0  # model load on a busy 2-core machine
JOB_TIMEOUT_S = 60.0


# ---- helpers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A `v2a-server` subprocess; logs to a file; always killed by ``stop``."""

    def __init__(self, model_dir: Path, log_dir: Path, *extra: str, bind: str | None = None):
        self.model_dir = model_dir
        self.port = free_port()
        self.bind = bind or f"tcp://127.0.0.1:{self.port}"
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.extra = list(extra)
        self.log_path = log_dir / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        # the checked-out code's server, not whatever an installed `v2a-server` script names
        head = [sys.executable, "-m", "v2a_server.commands.serve"]
        return [*head, "--model", str(self.model_dir), "--bind", self.bind, "--threads", "1",
                *self.extra]

    def start(self) -> "ServerProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def wait_listening(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while "listening on" not in self.log():
            assert self.proc is not None and self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, f"server not listening after {timeout_s} s"
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def wait_ready(client: FoleyClient, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        client.poll(0.1)
        if client.connected and client.server_info["state"] == "ready":
            return
    raise AssertionError(f"server not ready in {timeout_s} s (state {client.state}, "
                         f"info {client.server_info})")


def collect(clients, request_ids, timeout_s=JOB_TIMEOUT_S):
    """Poll ``clients`` until every id in ``request_ids`` has ended; returns id -> events (up
    to its final one)."""
    events = {rid: [] for rid in request_ids}
    open_ids = set(request_ids)
    deadline = time.monotonic() + timeout_s
    while open_ids:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(open_ids)} request(s) still open after {timeout_s} s")
        for client in clients:
            for event in client.poll(0.02 if len(clients) > 1 else 0.1):
                # an id's events up to its final one (a 1.4 result's review may come after)
                if event.request_id in open_ids:
                    events[event.request_id].append(event)
                    if event.final:
                        open_ids.discard(event.request_id)
    return events


def small_frames(n=2, side=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


QUICK = dict(frames_fps=4.0, duration_s=0.5, caption="a door closes", steps=1, guidance=1.0)
SLOW = dict(frames_fps=4.0, duration_s=1.0, caption="rain", steps=40, guidance=3.0)


@contextlib.contextmanager
def ready_server(model_dir, log_dir, *extra: str):
    """A started ``v2a-server`` whose model has loaded; always stopped afterwards."""
    proc = ServerProcess(model_dir, log_dir, *extra).start()
    try:
        with FoleyClient(proc.endpoint, client_name="fixture") as client:
            wait_ready(client)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    with ready_server(tiny_model_dir, tmp_path_factory.mktemp("server-log"),
                      "--max-queue", "64") as proc:
        yield proc


@pytest.fixture()
def client(server):
    with FoleyClient(server.endpoint, client_name="test") as c:
        wait_ready(c, 30.0)
        yield c


# ---- round trip -------------------------------------------------------------------------


def test_round_trip_frames_to_audio_and_onsets(client, tiny_model_dir):
    duration_s = 1.5
    rid = client.generate(small_frames(6), frames_fps=4.0, duration_s=duration_s,
                          caption="footsteps on gravel", seed=123, steps=3, variations=2,
                          start_time_s=12.0, onset_hints_s=[0.5, 1.0], timeout_s=JOB_TIMEOUT_S)
    events = collect([client], [rid])[rid]
    result = events[-1]
    assert result.type == "result", result.body
    progress = [e.body for e in events[:-1]]
    assert all(e.type == "progress" for e in events[:-1])
    stages = [p["stage"] for p in progress]
    assert stages[0] == "queued" and progress[0]["queue_position"] >= 1
    # A job still finishing from an earlier test may hold the worker: the queue position is
    # then re-announced, so "queued" may come more than once before "preparing".
    waiting = stages.index("preparing")
    assert waiting >= 1 and stages[:waiting] == ["queued"] * waiting
    denoise = [p for p in progress if p["stage"] == "denoise"]
    assert [p["step"] for p in denoise] == [1, 2, 3]
    assert all(p["total_steps"] == 3 and p["queue_position"] == 0 for p in denoise)
    assert stages[-1] == "finishing"
    # all steps done, counted as in denoise (docs/protocol.md 4.2; issue 14: the doc said 0)
    assert (progress[-1]["step"], progress[-1]["total_steps"]) == (3, 3)
    body = result.body
    samples = round(duration_s * SAMPLE_RATE)
    assert body["audio"] == {"encoding": "pcm_f32le", "sample_rate": SAMPLE_RATE,
                             "channels": 1, "samples": samples, "buffers": [0, 1]}
    audio = result_audio_numpy(result)
    assert [a.shape for a in audio] == [(samples,), (samples,)]
    assert all(np.isfinite(a).all() for a in audio)
    assert body["seed"] == 123 and body["steps"] == 3 and body["start_time_s"] == 12.0
    assert body["model_id"] == tiny_model_dir.name
    assert len(body["onset_times_s"]) == len(body["onset_probabilities"])
    assert all(0 <= t <= duration_s for t in body["onset_times_s"])
    assert body["onset_curve"]["rate_hz"] == 25.0
    assert len(body["onset_curve"]["values"]) >= math.floor(duration_s * 25)
    assert body["timings_s"]["pipeline_s"] > 0


def test_flac_on_request_and_jpeg_frames(client):
    from PIL import Image

    jpegs = []
    for frame in small_frames(4):
        stream = io.BytesIO()
        Image.fromarray(frame).save(stream, format="JPEG")
        jpegs.append(stream.getvalue())
    result = client.generate_blocking(jpegs, frame_encoding="jpeg", audio_format="flac",
                                      timeout_s=JOB_TIMEOUT_S, **QUICK)
    assert result.body["audio"]["encoding"] == "flac"
    (audio,) = result_audio_numpy(result)
    assert audio.shape == (round(QUICK["duration_s"] * SAMPLE_RATE),)


def test_inpaint_and_onset_hints(client):
    duration_s = 2.0
    source = np.full(round(duration_s * 48000), 0.25, np.float32)  # resampled to 16 kHz
    result = client.generate_blocking(small_frames(), inpaint_audio=source,
                                      inpaint_sample_rate=48000, inpaint_range_s=(1.2, 1.4),
                                      onset_hints_s=[0.1, 1.3], timeout_s=JOB_TIMEOUT_S,
                                      **{**QUICK, "duration_s": duration_s})
    (audio,) = result_audio_numpy(result)
    assert audio.shape == (round(duration_s * SAMPLE_RATE),)
    # kept outside the range and its 0.2 s margin (skip the resampler's edge ringing)
    assert np.allclose(audio[1600:14400], 0.25, atol=1e-2)
    assert not np.allclose(audio[19500:22000], 0.25, atol=1e-2)  # regenerated


def moving_square_frames(n: int, side: int, jumps: tuple[int, ...]) -> np.ndarray:
    """A textured square that stands still except for one big jump into each frame in ``jumps``."""
    rng = np.random.default_rng(3)
    texture = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    frames = np.full((n, side, side, 3), 40, np.uint8)
    x = 4
    for i in range(n):
        if i in jumps:
            x = 40 if x == 4 else 4
        frames[i, 20:36, x:x + 16] = texture
    return frames


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_result_carries_motion_events_audio_onsets_and_sync_pictures(client):
    from foley_protocol.client import result_sync_pictures
    from v2a_server.evaluation.metrics import detect_onsets_waveform, gate_onsets, motion_events
    from v2a_server.evaluation.sync_picture import HEIGHT_PX, WIDTH_PX

    fps, jumps = 8.0, (8, 16)
    frames = moving_square_frames(24, 64, jumps)
    result = client.generate_blocking(frames, frames_fps=fps, duration_s=3.0, caption="knocks",
                                      seed=5, steps=1, guidance=1.0, variations=2,
                                      sync_picture_frame_rate=25.0, timeout_s=JOB_TIMEOUT_S)
    body = result.body
    motion = body["motion"]
    expected = motion_events(frames, fps)  # the frames as sent: the same code as AV-Align
    assert motion["fps"] == fps
    assert motion["times_s"] == pytest.approx(expected.times_s.tolist())
    assert motion["times_s"] == pytest.approx([j / fps for j in jumps])
    assert np.allclose(motion["energy"], expected.energy, rtol=1e-6, atol=1e-9)
    assert len(motion["strengths"]) == 2 and max(motion["strengths"]) == pytest.approx(1.0)
    # the contact events the review pairs onsets with: the same code on the same frames
    from v2a_server.evaluation.contacts import contact_events

    contacts = contact_events(frames, fps)
    assert body["contacts"]["times_s"] == pytest.approx(contacts.times_s.tolist())
    assert body["contacts"]["strengths"] == pytest.approx(contacts.strengths.tolist())

    audio = result_audio_numpy(result)
    assert len(body["audio_onsets"]) == 2
    for take, onsets in zip(audio, body["audio_onsets"]):
        found = detect_onsets_waveform(take, SAMPLE_RATE)  # those with audible energy:
        assert onsets["times_s"] == pytest.approx(found[gate_onsets(found, take, SAMPLE_RATE)]
                                                  .tolist())
        assert len(onsets["strengths"]) == len(onsets["times_s"])
        assert all(0.0 <= v <= 1.0 for v in onsets["strengths"])

    pictures = result_sync_pictures(result)
    assert body["sync_pictures"]["width_px"] == WIDTH_PX
    assert [png_size(p) for p in pictures] == [(WIDTH_PX, HEIGHT_PX)] * 2
    assert pictures[0] != pictures[1]  # each take draws its own waveform
    assert body["timings_s"]["review_s"] > 0


def test_no_sync_picture_unless_asked(client):
    result = client.generate_blocking(small_frames(), timeout_s=JOB_TIMEOUT_S, **QUICK)
    assert "sync_pictures" not in result.body and len(result.buffers) == 1
    assert result.body["motion"]["times_s"] == []  # two frames have no peak
    assert len(result.body["audio_onsets"]) == 1


def test_bad_jpeg_is_reported_as_bad_media(client):
    with pytest.raises(RequestFailed) as info:
        client.generate_blocking([b"\xff\xd8\xff not really a jpeg"], frame_encoding="jpeg",
                                 timeout_s=JOB_TIMEOUT_S, **QUICK)
    assert info.value.code == "bad_media" and info.value.field == "body.frames.buffers[0]"


@pytest.fixture(scope="module")
def index_movie(tmp_path_factory):
    from fractions import Fraction

    from tests.blender.clips import write_index_movie

    return write_index_movie(tmp_path_factory.mktemp("movie") / "index-25.mp4", 40, Fraction(25))


def movie_source(path, indices, **overrides) -> dict:
    stat = os.stat(path)
    return {"path": str(path), "size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "stream_index": 0, "source_fps": 25.0, "frame_indices": list(indices),
            "width": 32, "height": 24, "scale": 0.1, **overrides}


def test_a_loopback_server_reads_the_named_movie_frames_itself(client, index_movie):
    """Frames named by file give the same take as the same pixels sent (same seed), and a
    second request for them reads nothing."""
    from v2a_server.serving.source_frames import read_source_frames

    assert client.server_info["reads_local_files"] is True
    source = movie_source(index_movie, [0, 6, 12, 18])
    kwargs = dict(frames_fps=4.0, duration_s=1.0, caption="taps", seed=5, steps=2,
                  timeout_s=JOB_TIMEOUT_S)
    stages = []
    by_file = client.generate_blocking(source, frame_encoding="source",
                                       on_progress=lambda e: stages.append(e.body.get("stage")),
                                       **kwargs)
    assert "reading frames" in stages  # the panel says what the wait is for
    pixels, _ = read_source_frames(source)  # what the server read, read here the same way
    by_pixels = client.generate_blocking(np.ascontiguousarray(pixels), **kwargs)
    assert np.array_equal(result_audio_numpy(by_file)[0], result_audio_numpy(by_pixels)[0])
    assert by_file.body["timings_s"]["source_read_s"] > 0  # read (or waited for) by this job
    again = client.generate_blocking(source, frame_encoding="source", **kwargs)
    assert again.body["timings_s"]["source_cached"] == 1.0


def test_prepare_reads_the_frames_ahead_of_the_generate(client, index_movie):
    source = movie_source(index_movie, [1, 7, 13, 19, 25])
    ready = client.wait(client.prepare(source), timeout_s=JOB_TIMEOUT_S)
    assert ready.type == "prepare_reply", ready.body
    assert ready.body["frames"] == 5 and ready.body["cached"] is False
    assert ready.body["read_s"] > 0
    result = client.generate_blocking(source, frame_encoding="source", frames_fps=4.0,
                                      duration_s=1.25, caption="taps", steps=1,
                                      timeout_s=JOB_TIMEOUT_S)
    assert result.body["timings_s"]["source_cached"] == 1.0
    stale = client.wait(client.prepare({**source, "size_bytes": 1}), timeout_s=JOB_TIMEOUT_S)
    assert stale.type == "error" and stale.body["code"] == "source_unavailable"
    assert stale.body["field"] == "body.source"


def test_queued_jobs_have_their_frames_read_while_earlier_jobs_run(client, index_movie):
    """Several strips make several jobs: each one's frames are read while the one before it
    generates, so a job in the queue starts with its frames ready."""
    first = client.generate(small_frames(), timeout_s=JOB_TIMEOUT_S, **SLOW)
    source = movie_source(index_movie, [2, 8, 14, 20])
    second = client.generate(source, frame_encoding="source", frames_fps=4.0, duration_s=1.0,
                             caption="taps", steps=1, timeout_s=JOB_TIMEOUT_S)
    events = collect([client], [first, second])
    result = events[second][-1]
    assert result.type == "result", result.body
    assert result.body["timings_s"]["source_cached"] == 1.0
    assert result.body["timings_s"]["source_read_s"] < 0.05  # nothing left to read


def test_a_file_the_server_sees_otherwise_is_refused_and_the_server_serves_on(server, client,
                                                                              index_movie):
    stale = movie_source(index_movie, [0, 6], mtime_ns=1)
    with pytest.raises(RequestFailed) as info:
        client.generate_blocking(stale, frame_encoding="source", timeout_s=JOB_TIMEOUT_S,
                                 **QUICK)
    assert info.value.code == "source_unavailable" and info.value.field == "body.frames.source"
    # the client is told to render; what the server sees (size, mtime) goes only to its log
    # (issue 14: refusals told any local client the size and mtime of any path)
    assert "render the frames" in str(info.value)
    assert str(os.stat(index_movie).st_size) not in str(info.value)
    assert f"the server sees another {index_movie}" in server.log()
    result = client.generate_blocking(small_frames(), timeout_s=JOB_TIMEOUT_S, **QUICK)
    assert result.type == "result"


def test_a_server_told_not_to_read_files_refuses_at_once(tiny_model_dir, tmp_path, index_movie):
    with ready_server(tiny_model_dir, tmp_path, "--no-local-files") as proc:
        with FoleyClient(proc.endpoint, client_name="test") as c:
            wait_ready(c, 30.0)
            assert c.server_info["reads_local_files"] is False
            refused = c.wait(c.prepare(movie_source(index_movie, [0])), timeout_s=10.0)
            assert refused.type == "error" and refused.body["code"] == "source_unavailable"
            with pytest.raises(RequestFailed) as info:
                c.generate_blocking(movie_source(index_movie, [0]), frame_encoding="source",
                                    timeout_s=JOB_TIMEOUT_S, **QUICK)
    assert info.value.code == "source_unavailable" and "--no-local-files" in str(info.value)
    assert "queued" not in proc.log().split("hello from")[-1]  # refused before the queue


def test_a_fifo_is_refused_promptly_and_other_clients_are_served_meanwhile(server, client,
                                                                            index_movie,
                                                                            tmp_path):
    """Issue 14: a FIFO with no writer used to block the one reader thread forever, and with
    it every other client's prepare and source job."""
    fifo = tmp_path / "wedge.mp4"
    os.mkfifo(fifo)
    wedge = movie_source(fifo, [0, 1], source_fps=25.0)
    prepare_fifo = client.prepare(wedge, timeout_s=JOB_TIMEOUT_S)
    generate_fifo = client.generate(wedge, frame_encoding="source", timeout_s=JOB_TIMEOUT_S,
                                    **QUICK)
    with FoleyClient(server.endpoint, client_name="other") as other:
        wait_ready(other, 30.0)
        other_prepare = other.prepare(movie_source(index_movie, [3, 9]), timeout_s=JOB_TIMEOUT_S)
        other_job = other.generate(small_frames(), timeout_s=JOB_TIMEOUT_S, **QUICK)
        t0 = time.monotonic()
        events = collect([client, other], [prepare_fifo, generate_fifo, other_prepare,
                                           other_job])
    for rid in (prepare_fifo, generate_fifo):
        refused = events[rid][-1]
        assert refused.type == "error" and refused.body["code"] == "source_unavailable"
        assert "render the frames" in refused.body["message"]
        assert "bytes" not in refused.body["message"]  # nothing about the file is told
    assert events[other_prepare][-1].type == "prepare_reply", events[other_prepare][-1].body
    assert events[other_job][-1].type == "result", events[other_job][-1].body
    assert time.monotonic() - t0 < JOB_TIMEOUT_S / 2
    assert "not a regular file" in server.log()  # the reason is in the server's log


def vm_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def raw_socket(endpoint: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def test_a_message_over_the_total_limit_gets_too_large_and_the_server_serves_on(server):
    """Issue 14: 12 x 50 MB buffers in one ping were answered only after the server had kept
    them all (and then as bad_buffer). Now the frames past the limit are dropped as read and
    the answer names the limit. (libzmq itself holds a message whole until its last frame
    arrives, so the peak while receiving is the message; what the server keeps is not.)"""
    pid = server.proc.pid
    rss_before = vm_kib(pid, "VmRSS")
    block = bytes(50 * 1024 * 1024)  # one buffer sent 12 times: the test holds 50 MB
    assert 12 * len(block) > MAX_MESSAGE_BYTES
    sock = raw_socket(server.endpoint)
    try:
        sock.send_multipart([b"", msgpack.packb(header_for_ping("big-1"), use_bin_type=True),
                             *[block] * 12], copy=False)
        assert sock.poll(60_000), "no reply to the oversize message"
        reply = decode(sock.recv_multipart(), direction="reply")
        assert reply.type == "error" and reply.body["code"] == "too_large", reply.body
        assert "max_message_bytes" in reply.body["message"] and reply.body["field"] == "frames"
        assert str(MAX_MESSAGE_BYTES) in reply.body["message"]
        grown_mib = (vm_kib(pid, "VmRSS") - rss_before) / 1024
        assert grown_mib < 200, f"the server kept {grown_mib:.0f} MiB after answering"
        sock.send_multipart([b"", msgpack.packb(header_for_ping("big-2"), use_bin_type=True)])
        assert sock.poll(10_000)
        assert decode(sock.recv_multipart(), direction="reply").type == "pong"
    finally:
        sock.close(0)


def header_for_ping(rid: str) -> dict:
    return {"v": PROTOCOL_VERSION, "type": "ping", "id": rid, "parent": None, "body": {}}


def test_a_ping_reusing_an_open_jobs_id_gets_duplicate_id_not_a_pong(server):
    """Issue 14: the pong's parent was the job's id, which a client takes for the job's final
    reply."""
    sock = raw_socket(server.endpoint)
    try:
        rid = "open-job-1"
        job = Message("generate", {"frames": {"encoding": "rgb24", "shape": [2, 8, 8, 3],
                                              "buffers": [0], "fps": 4.0},
                                   "duration_s": 1.0, "caption": "rain", "steps": 40},
                      id=rid, buffers=[bytes(2 * 8 * 8 * 3)])
        sock.send_multipart(encode(job))
        for request in (Message("ping", {}, id=rid), Message("status", {}, id=rid),
                        Message("cancel", {"request_id": rid}, id=rid)):
            sock.send_multipart(encode(request))
        replies = []
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while len([r for r in replies if r.type == "error"]) < 3:
            assert time.monotonic() < deadline, [(r.type, r.body) for r in replies]
            if sock.poll(1000):
                replies.append(decode(sock.recv_multipart(), direction="reply"))
        assert not [r for r in replies if r.type in ("pong", "status_reply", "cancel_reply")]
        errors = [r for r in replies if r.type == "error"]
        assert all(e.body["code"] == "duplicate_id" and e.body["field"] == "header.id"
                   and e.parent == rid for e in errors), [e.body for e in errors]
        sock.send_multipart(encode(Message("cancel", {"request_id": rid})))
    finally:
        sock.close(0)


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_an_ipv6_loopback_bind_serves(tiny_model_dir, tmp_path):
    """Issue 14: tcp://[::1] is a loopback bind (no CURVE needed) but failed with "No such
    device": neither socket enabled IPv6."""
    port = free_port()
    proc = ServerProcess(tiny_model_dir, tmp_path, bind=f"tcp://[::1]:{port}").start()
    try:
        proc.wait_listening()
        with FoleyClient(f"tcp://[::1]:{port}", client_name="v6") as c:
            pong = c.wait(c.ping(), timeout_s=20.0)
            assert pong.type == "pong", pong.body
    finally:
        proc.stop()


def test_queue_positions_reported_to_second_client(server, client):
    with FoleyClient(server.endpoint, client_name="second") as other:
        wait_ready(other, 30.0)
        first = client.generate(small_frames(), timeout_s=JOB_TIMEOUT_S,
                                **{**SLOW, "steps": 8})
        first_events = []
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while not any(e.body.get("stage") == "denoise" for e in first_events):
            assert time.monotonic() < deadline
            first_events += client.poll(0.05)
        waiting = [other.generate(small_frames(), timeout_s=JOB_TIMEOUT_S, **QUICK)
                   for _ in range(2)]
        events = collect([client, other], [first, *waiting])
    positions = {rid: [e.body["queue_position"] for e in events[rid]
                       if e.type == "progress" and e.body["stage"] == "queued"]
                 for rid in waiting}
    assert positions[waiting[0]] == [1]
    assert positions[waiting[1]] == [2, 1]  # moves up when the first waiting job starts
    assert all(events[rid][-1].type == "result" for rid in [first, *waiting])


# ---- cancel and vanished clients --------------------------------------------------------


def status(client: FoleyClient) -> dict:
    event = client.wait(client.status(), timeout_s=10.0)
    assert event.type == "status_reply", event.body
    return event.body


def idle_looks_before_the_result(client: FoleyClient, timeout_s: float = JOB_TIMEOUT_S,
                                 **job) -> list[dict]:
    """Run a job while asking ``status`` again and again; the replies that said every worker
    idle after one had said a worker busy with this job but came before the job's result
    (none: a worker seen idle has its result on the way ahead of the reply). Returns them.
    (Busy with this job: a cluster replica's record may still say busy with the job before,
    and a job not yet started on a replica is in neither the queue nor a worker.)"""
    job_id = client.generate(small_frames(), **job)
    status_id, got_result, seen_busy, early = client.status(), False, False, []
    deadline = time.monotonic() + timeout_s
    while not got_result or status_id is not None:
        assert time.monotonic() < deadline, "the job or its status did not end"
        for event in client.poll(0.005):
            if event.request_id == job_id and event.type in ("result", "error"):
                assert event.type == "result", event.body
                got_result = True
            elif event.request_id == status_id:
                workers = event.body["workers"]
                idle = all(w["state"] == "idle" for w in workers)
                seen_busy = seen_busy or any(w["state"] == "busy" and w["job_id"] == job_id
                                             for w in workers)
                if idle and seen_busy and not got_result:
                    early.append(event.body)
                status_id = None if got_result else client.status()
    assert seen_busy, "no status saw a worker busy with the job"
    return early


def test_hello_and_status_say_what_image_size_the_model_reads(client, tiny_model_dir):
    """The add-on captures frames no larger than the model reads (its capture-size default)."""
    from v2a_server.model_store import load_pipeline

    side = load_pipeline(tiny_model_dir).video_encoder.config.image_size
    assert client.server_info["model_image_size"] == side
    assert status(client)["model_image_size"] == side


# ---- what the model knows, near-silent takes, peak memory (protocol 1.2) ----------------


DEFAULT_CARD = Path(__file__).resolve().parents[1] / "v2a_server" / "default_model" / \
    "model_card.json"


@pytest.fixture(scope="module")
def carded_server(tiny_model_dir, tmp_path_factory):
    """The tiny model (its random weights make near-silent audio) with the embedded default
    model's card: what the editor of the default model sees."""
    import shutil

    folder = tmp_path_factory.mktemp("carded") / "carded-tiny"
    shutil.copytree(tiny_model_dir, folder)
    shutil.copy(DEFAULT_CARD, folder / "model_card.json")
    with ready_server(folder, tmp_path_factory.mktemp("server-log")) as proc:
        yield proc


def test_the_take_level_detector_flags_only_a_noise_floor():
    from v2a_server.serving.result import NEAR_SILENT_DBFS, take_level

    rate, rng = 16000, np.random.default_rng(0)
    floor = 10 ** (-60 / 20) * rng.standard_normal(rate * 4)  # the default model's floor
    assert take_level(floor, rate).near_silent
    assert abs(take_level(floor, rate).rms_dbfs + 60) < 0.5
    silence = take_level(np.zeros(rate), rate)
    assert silence.near_silent and silence.loudest_dbfs == silence.peak_dbfs == -120.0
    # one soft 100 ms tap at -45 dBFS rms on the floor: quiet, but a sound
    tap = floor.copy()
    tap[rate: rate + rate // 10] += 10 ** (-45 / 20) * np.sqrt(2) * np.sin(
        2 * np.pi * 440 * np.arange(rate // 10) / rate)
    assert not take_level(tap, rate).near_silent
    assert NEAR_SILENT_DBFS < take_level(tap, rate).loudest_dbfs < -40
    loud = take_level(0.5 * np.sin(np.arange(rate) / 5), rate)
    assert not loud.near_silent and abs(loud.peak_dbfs - 20 * math.log10(0.5)) < 0.01


def test_hello_and_status_name_the_model_scope_for_a_client_of_1_2_or_later(carded_server, server):
    with FoleyClient(carded_server.endpoint, client_name="1.2") as client:
        wait_ready(client, 30.0)
        assert client.protocol_minor >= 2  # 1.2 added model_scope
        assert client.server_info["model_scope"] == "synthetic impacts only"
        assert status(client)["model_scope"] == "synthetic impacts only"
    with FoleyClient(server.endpoint, client_name="1.2") as client:  # a folder without a card
        wait_ready(client, 30.0)
        assert client.server_info["model_scope"] is None and status(client)["model_scope"] is None


def test_a_near_silent_take_is_flagged_with_the_scope_and_a_loud_one_is_not(carded_server):
    with FoleyClient(carded_server.endpoint, client_name="1.2") as client:
        wait_ready(client, 30.0)
        silent = client.generate_blocking(small_frames(), timeout_s=JOB_TIMEOUT_S, variations=2,
                                          **QUICK)
        levels = silent.body["audio_levels"]
        assert [level["near_silent"] for level in levels] == [True, True]
        assert all(level["loudest_dbfs"] < -50 for level in levels)
        warning = silent.body["warnings"][-1]
        assert warning.startswith("takes 1, 2 of 2 are near-silent")
        assert "the model heard nothing it knows in this picture (it knows synthetic impacts " \
               "only): install the full model (`v2a model pull sta-v2a`)" in warning
        # the same model, but the take is mostly audio the client sent (kept outside the range)
        duration_s = 2.0
        source = 0.25 * np.sin(np.arange(round(duration_s * SAMPLE_RATE)) / 3).astype(np.float32)
        loud = client.generate_blocking(small_frames(), inpaint_audio=source,
                                        inpaint_sample_rate=SAMPLE_RATE,
                                        inpaint_range_s=(1.2, 1.4), timeout_s=JOB_TIMEOUT_S,
                                        **{**QUICK, "duration_s": duration_s})
        (level,) = loud.body["audio_levels"]
        assert not level["near_silent"] and level["peak_dbfs"] > -13
        assert not any("near-silent" in w for w in loud.body["warnings"])


def test_status_reports_each_jobs_peak_memory(client, cpu_peak_reset_works):
    rid = client.generate(small_frames(), timeout_s=JOB_TIMEOUT_S, **SLOW)
    seen, deadline = [], time.monotonic() + JOB_TIMEOUT_S
    while not any(e.body.get("stage") == "denoise" for e in seen):
        assert time.monotonic() < deadline
        seen += client.poll(0.05)
    (running,) = status(client)["workers"]
    assert running["job_id"] == rid
    # unknown (None) only where the kernel keeps the peak RSS across a reset
    assert running["job_peak_memory_bytes"] is None and not cpu_peak_reset_works \
        or running["job_peak_memory_bytes"] > 0
    collect([client], [rid])
    (idle,) = status(client)["workers"]
    assert idle["job_id"] is None and idle["job_peak_memory_bytes"] is None
    assert idle["last_job_id"] == rid
    # on CPU: the process's peak RSS during the job, at least what it holds now (model included)
    if idle["last_job_peak_memory_bytes"] is not None or cpu_peak_reset_works:
        assert idle["last_job_peak_memory_bytes"] >= running["memory_used_bytes"] > 0


def test_a_1_1_client_receives_none_of_the_1_2_fields(carded_server):
    """Hello with minor 1 (as the 1.1 add-on says it): every reply is as 1.1 has it, even from a
    1.2 server with a card; the near-silent warning still reaches it, in ``warnings``."""
    from foley_protocol.client import build_generate
    from foley_protocol.protocol import encode, for_minor

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(carded_server.endpoint)

    def ask(message: Message) -> Message:
        sock.send_multipart(encode(message))
        while True:
            assert sock.poll(int(JOB_TIMEOUT_S * 1000)), f"no reply to {message.type}"
            reply = decode(sock.recv_multipart(), direction="reply")
            if reply.type != "progress":
                return reply

    try:
        hello = ask(Message("hello", {"client": "1.1 add-on", "versions": [1], "minor": 1}))
        result = ask(build_generate(small_frames(), **QUICK))
        replies = [hello, ask(Message("status", {})), result]
        assert [r.type for r in replies] == ["hello_reply", "status_reply", "result"]
        assert hello.body["minor"] == 1 and hello.body["model_id"] == "carded-tiny"
        for reply in replies:
            assert for_minor(reply, 1) is reply, reply.type  # nothing newer than 1.1 in it
        assert "model_scope" not in hello.body and "audio_levels" not in result.body
        assert "last_job_peak_memory_bytes" not in replies[1].body["workers"][0]
        assert any("heard nothing it knows" in w for w in result.body["warnings"])
    finally:
        sock.close(0)


def test_cancel_during_denoising_stops_within_one_step(client):
    rid = client.generate(small_frames(), timeout_s=JOB_TIMEOUT_S, **SLOW)
    seen, deadline = [], time.monotonic() + JOB_TIMEOUT_S
    while not any(e.body.get("stage") == "denoise" and e.body["step"] >= 2 for e in seen):
        assert time.monotonic() < deadline
        seen += [e for e in client.poll(0.02) if e.request_id == rid]
    step_at_cancel = max(e.body["step"] for e in seen if e.body.get("stage") == "denoise")
    t_cancel = time.monotonic()
    cancel_id = client.cancel(rid)
    events = collect([client], [rid, cancel_id])
    t_end = time.monotonic()
    assert events[cancel_id][-1].body == {"request_id": rid, "was": "running"}
    final = events[rid][-1]
    assert final.type == "error" and final.body["code"] == "cancelled"
    later_steps = [e.body["step"] for e in events[rid] if e.body.get("stage") == "denoise"]
    assert len(later_steps) <= 1 and all(s <= step_at_cancel + 1 for s in later_steps)
    elapsed = [e.body["elapsed_s"] for e in seen if e.body.get("stage") == "denoise"]
    step_s = max(b - a for a, b in zip(elapsed, elapsed[1:]))
    # the step in flight finishes, then the job ends (plus slack for a loaded 2-core machine)
    assert t_end - t_cancel < 2 * step_s + 1.0, (t_end - t_cancel, step_s)
    print(f"cancel ended the job {t_end - t_cancel:.2f} s after the request (step {step_s:.2f} s)")
    workers = status(client)["workers"]
    assert [w["state"] for w in workers] == ["idle"] and workers[0]["job_id"] is None
    assert client.generate_blocking(small_frames(), timeout_s=JOB_TIMEOUT_S, **QUICK)


def test_a_status_that_says_idle_comes_after_the_result(client):
    """What a client waiting for an idle server relies on (tests/test_worker_state.py shows
    the worker's side of it)."""
    assert idle_looks_before_the_result(client, **dict(SLOW, steps=20)) == []


def test_vanished_client_has_its_job_cancelled(server, client):
    gone = FoleyClient(server.endpoint, client_name="vanishing")
    wait_ready(gone, 30.0)
    # Long enough to outlast the heartbeat liveness (3 s) on a warm, unloaded CPU too: 40 steps
    # once took 2.8 s, and a job that ends first is never cancelled.
    rid = gone.generate(small_frames(), timeout_s=JOB_TIMEOUT_S, **{**SLOW, "steps": 200})
    seen, deadline = [], time.monotonic() + JOB_TIMEOUT_S
    while not any(e.body.get("stage") == "denoise" for e in seen):
        assert time.monotonic() < deadline
        seen += gone.poll(0.05)
    gone.close()  # no goodbye: the server only notices the missing heartbeats
    t_gone = time.monotonic()
    while status(client)["workers"][0]["state"] != "idle":
        assert time.monotonic() - t_gone < 10.0, "job of a vanished client kept running"
        time.sleep(0.2)
    freed_after_s = time.monotonic() - t_gone
    assert 2.5 < freed_after_s < 8.0  # liveness 3 x 1 s, then at most one step
    assert f"{rid}" in server.log() and "no heartbeat" in server.log()
    assert client.generate_blocking(small_frames(), timeout_s=JOB_TIMEOUT_S, **QUICK)


# ---- concurrency ------------------------------------------------------------------------


@pytest.mark.slow
def test_8_clients_5_jobs_all_complete_in_fifo_order(server):
    clients = [FoleyClient(server.endpoint, client_name=f"c{i}") for i in range(8)]
    try:
        for c in clients:
            wait_ready(c, 30.0)
        submitted = {c: [c.generate(small_frames(seed=i), timeout_s=120.0, seed=i, **QUICK)
                         for i in range(5)] for c in clients}
        all_ids = [rid for ids in submitted.values() for rid in ids]
        events = collect(clients, all_ids, timeout_s=120.0)
    finally:
        for c in clients:
            c.close()
    finals = {rid: evs[-1] for rid, evs in events.items()}
    assert len(finals) == 40
    assert all(f.type == "result" for f in finals.values()), \
        [f.body for f in finals.values() if f.type != "result"]
    timings = {rid: finals[rid].body["timings_s"] for rid in all_ids}
    for ids in submitted.values():  # each client's jobs were accepted in submit order
        accepted = [timings[rid]["accepted_at_s"] for rid in ids]
        assert accepted == sorted(accepted)
    by_acceptance = sorted(all_ids, key=lambda rid: timings[rid]["accepted_at_s"])
    started = [timings[rid]["started_at_s"] for rid in by_acceptance]
    assert started == sorted(started), "jobs did not start in arrival order"


# ---- hostile messages -------------------------------------------------------------------

GENERATE_BODY = {
    "frames": {"encoding": "rgb24", "shape": [2, 8, 8, 3], "buffers": [0], "fps": 4.0},
    "duration_s": 0.5, "caption": "x", "steps": 1,
}
FRAMES = b"\x00" * (2 * 8 * 8 * 3)
REQUIRED = [name for name, spec in REQUEST_SCHEMAS["generate"].items() if spec.required]
OPTIONAL = [name for name, spec in REQUEST_SCHEMAS["generate"].items() if not spec.required]


def header(body=None, **overrides) -> dict:
    return {"v": PROTOCOL_VERSION, "type": "generate", "id": "fuzz-1", "parent": None,
            "body": dict(GENERATE_BODY if body is None else body), **overrides}


def packed(h) -> bytes:
    return msgpack.packb(h, use_bin_type=True)




HUGE_DECLARATIONS = {  # msgpack prefixes that announce ~2 GiB, and a nesting bomb
    "array32": b"\xdd\x7f\xff\xff\xff", "str32": b"\xdb\x7f\xff\xff\xff",
    "bin32": b"\xc6\x7f\xff\xff\xff", "map32": b"\xdf\x7f\xff\xff\xff",
    "nesting": b"\x91" * 3000,
}


def wrong_value(name: str):
    """Values that can never be valid for generate field ``name``."""
    kind = REQUEST_SCHEMAS["generate"][name].kind
    options = [st.binary(max_size=8), st.booleans()]
    if kind != "list":
        options.append(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3))
    if kind != "object":
        options.append(st.dictionaries(st.text(max_size=4), st.integers(-(2**63), 2**63 - 1),
                                       max_size=2))
    return st.one_of(*options).map(lambda value: (name, value))


hostile = st.one_of(
    # garbage bytes (expected code unknown, but the reply must be an error naming a field)
    st.lists(st.binary(max_size=120), min_size=1, max_size=4).map(
        lambda frames: ([b"", *frames], None, None)),
    # declared sizes far beyond the limits in the msgpack header itself
    st.sampled_from(sorted(HUGE_DECLARATIONS)).map(
        lambda name: ([b"", HUGE_DECLARATIONS[name]], "bad_message", "header")),
    # declared frame geometry far beyond the limits
    st.tuples(st.integers(MAX_FRAME_COUNT + 1, 2**40), st.integers(1, 2**40)).map(
        lambda tw: ([b"", packed(header({**GENERATE_BODY, "frames": {
            **GENERATE_BODY["frames"], "shape": [tw[0], tw[1], 8, 3]}})), FRAMES],
            "out_of_range", "body.frames.shape[0]")),
    # wrong protocol version
    st.integers(-(2**31), 2**31).filter(lambda v: v != PROTOCOL_VERSION).map(
        lambda v: ([b"", packed(header(v=v)), FRAMES], "unsupported_version", "header.v")),
    # unknown message type
    st.text(max_size=12).filter(lambda t: t not in REQUEST_SCHEMAS).map(
        lambda t: ([b"", packed(header(type=t)), FRAMES], "unknown_type", "header.type")),
    # a required field missing
    st.sampled_from(REQUIRED).map(
        lambda name: ([b"", packed(header({k: v for k, v in GENERATE_BODY.items()
                                            if k != name})), FRAMES],
                      "missing_field", f"body.{name}")),
    # an extra field
    st.text(min_size=1, max_size=10).filter(lambda k: k not in REQUEST_SCHEMAS["generate"]).map(
        lambda k: ([b"", packed(header({**GENERATE_BODY, k: 1})), FRAMES],
                   "unknown_field", f"body.{k}")),
    # a field of the wrong type
    st.sampled_from(REQUIRED + OPTIONAL).flatmap(wrong_value).map(
        lambda nv: ([b"", packed(header({**GENERATE_BODY, nv[0]: nv[1]})), FRAMES],
                    None, f"body.{nv[0]}")),
    # extra raw frames
    st.lists(st.binary(max_size=16), min_size=1, max_size=3).map(
        lambda extra: ([b"", packed(header()), FRAMES, *extra], "bad_buffer", "buffers[1]")),
    # a frame buffer of the wrong size
    st.binary(max_size=300).filter(lambda b: len(b) != len(FRAMES)).map(
        lambda b: ([b"", packed(header()), b], "bad_buffer", "body.frames.buffers[0]")),
)

FUZZ_COUNT = {"sent": 0}


@pytest.fixture(scope="module")
def raw_dealer(server):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(server.endpoint)
    yield sock
    sock.close(0)


@settings(max_examples=1100, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=hostile)
def test_hostile_messages_each_get_an_error(raw_dealer, case):
    frames, code, field = case
    raw_dealer.send_multipart(frames)
    assert raw_dealer.poll(5000), f"no reply to {frames!r:.200}"
    reply = decode(raw_dealer.recv_multipart(), direction="reply")
    FUZZ_COUNT["sent"] += 1
    assert reply.type == "error", reply.body
    assert reply.body["message"] and reply.body["field"]
    if code is not None:
        assert reply.body["code"] == code, reply.body
    if field is not None:  # exact, or inside the named field (e.g. body.frames.encoding)
        assert reply.body["field"] == field or reply.body["field"].startswith(field + "."), \
            reply.body
    if code not in (None, "bad_message"):
        assert reply.parent == "fuzz-1", reply.parent


def test_server_still_serves_after_hostile_messages(server, client):
    assert FUZZ_COUNT["sent"] >= 1000 or FUZZ_COUNT["sent"] == 0  # 0: fuzz test deselected
    hello = client.wait(client.send(Message("hello", {"client": "old", "versions": [99]})), 10)
    assert hello.body["code"] == "unsupported_version" and hello.body["field"] == "body.versions"
    result = client.generate_blocking(small_frames(), timeout_s=JOB_TIMEOUT_S, **QUICK)
    assert result.body["audio"]["samples"] == round(QUICK["duration_s"] * SAMPLE_RATE)
    assert server.proc.poll() is None


# ---- server lifetime: kill -9, SIGTERM, busy --------------------------------------------


@pytest.mark.slow
def test_kill9_is_detected_and_the_same_client_reconnects(tiny_model_dir, tmp_path):
    proc = ServerProcess(tiny_model_dir, tmp_path).start()
    try:
        with FoleyClient(proc.endpoint, client_name="survivor") as client:
            wait_ready(client)
            rid = client.generate(small_frames(), timeout_s=JOB_TIMEOUT_S, **SLOW)
            seen, deadline = [], time.monotonic() + JOB_TIMEOUT_S
            while not any(e.body.get("stage") == "denoise" for e in seen):
                assert time.monotonic() < deadline
                seen += client.poll(0.05)
            proc.signal(signal.SIGKILL)
            t_kill = time.monotonic()
            events = collect([client], [rid], timeout_s=10.0)
            detected_s = time.monotonic() - t_kill
            lost = events[rid][-1]
            assert lost.type == "error" and lost.body["code"] == "server_lost" and lost.local
            assert detected_s < 5.0, f"loss reported after {detected_s:.2f} s"
            print(f"kill -9 detected after {detected_s:.2f} s")
            proc.wait(5)
            proc.start()  # same port
            wait_ready(client)
            result = client.generate_blocking(small_frames(), timeout_s=JOB_TIMEOUT_S, **QUICK)
            assert result.body["audio"]["samples"] == round(QUICK["duration_s"] * SAMPLE_RATE)
    finally:
        proc.stop()


def test_busy_then_sigterm_tells_waiting_clients(tiny_model_dir, tmp_path):
    proc = ServerProcess(tiny_model_dir, tmp_path, "--max-queue", "2").start()
    try:
        with FoleyClient(proc.endpoint, client_name="shutdown") as client:
            wait_ready(client)
            running = client.generate(small_frames(), timeout_s=JOB_TIMEOUT_S, **SLOW)
            seen, deadline = [], time.monotonic() + JOB_TIMEOUT_S
            while not any(e.body.get("stage") == "denoise" for e in seen):
                assert time.monotonic() < deadline
                seen += client.poll(0.05)
            waiting = [client.generate(small_frames(), timeout_s=JOB_TIMEOUT_S, **QUICK)
                       for _ in range(2)]
            refused = client.generate(small_frames(), timeout_s=JOB_TIMEOUT_S, **QUICK)
            busy = collect([client], [refused], timeout_s=10.0)[refused][-1]
            assert busy.body["code"] == "busy" and "full" in busy.body["message"]
            t_term = time.monotonic()
            proc.signal(signal.SIGTERM)
            events = collect([client], [running, *waiting], timeout_s=15.0)
            for rid in [running, *waiting]:
                assert events[rid][-1].body["code"] == "shutting_down", events[rid][-1].body
            assert proc.wait(15.0) == 0
            assert time.monotonic() - t_term < 10.0
            assert "stopping" in proc.log() and "stopped (exit code 0)" in proc.log()
    finally:
        proc.stop()


# ---- binding and CURVE ------------------------------------------------------------------


def test_non_loopback_bind_without_keys_is_refused(tiny_model_dir, tmp_path):
    proc = ServerProcess(tiny_model_dir, tmp_path, bind="tcp://0.0.0.0:0")
    done = subprocess.run(proc.command(), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "refusing to bind tcp://0.0.0.0:0" in done.stderr
    assert "CURVE" in done.stderr and "v2a keys" in done.stderr


def test_curve_server_answers_only_the_right_key(tiny_model_dir, tmp_path):
    keys = tmp_path / "keys"
    v2a = Path(sys.executable).with_name("v2a")
    subprocess.run([str(v2a), "keys", "--out", str(keys)], check=True, timeout=60,
                   capture_output=True)
    assert oct(os.stat(keys / "server.key_secret").st_mode & 0o777) == "0o600"
    port = free_port()
    proc = ServerProcess(tiny_model_dir, tmp_path, "--curve-secret-key",
                         str(keys / "server.key_secret"), bind=f"tcp://0.0.0.0:{port}")
    proc.port, proc.endpoint = port, f"tcp://127.0.0.1:{port}"
    proc.start()
    try:
        proc.wait_listening()
        wrong_public, _ = zmq.curve_keypair()
        with FoleyClient(proc.endpoint, server_public_key=str(keys / "server.key")) as good, \
                FoleyClient(proc.endpoint, server_public_key=wrong_public) as bad, \
                FoleyClient(proc.endpoint) as plain:
            ids = {c: c.status(timeout_s=20.0) for c in (good, bad, plain)}
            events = collect([good, bad, plain], list(ids.values()), timeout_s=30.0)
        assert events[ids[good]][-1].type == "status_reply"
        for c in (bad, plain):
            final = events[ids[c]][-1]
            assert final.type == "error" and final.body["code"] == "server_lost" and final.local
        assert good.server_info is not None and bad.server_info is None
    finally:
        proc.stop()


def test_signing_key_required_when_configured(tiny_model_dir, tmp_path):
    key_file = tmp_path / "signing.key"
    key_file.write_text("0123456789abcdef" * 4 + "\n")
    proc = ServerProcess(tiny_model_dir, tmp_path, "--signing-key-file", str(key_file)).start()
    try:
        proc.wait_listening()
        with FoleyClient(proc.endpoint, signing_key=b"0123456789abcdef" * 4) as signed, \
                FoleyClient(proc.endpoint, signing_key=b"wrong") as wrong, \
                FoleyClient(proc.endpoint) as unsigned:
            pong = signed.wait(signed.ping(), timeout_s=20.0)
            assert pong.type == "pong"
            for c, text in ((wrong, "does not match"), (unsigned, "no signing key")):
                rid = c.ping()
                t0 = time.monotonic()
                event = c.wait(rid, timeout_s=10.0)
                assert event.body["code"] == "auth_failed" and text in event.body["message"]
                assert event.local and time.monotonic() - t0 < 3.0
    finally:
        proc.stop()



def test_a_pre_1_3_signed_client_is_told_to_update_in_a_reply_it_can_verify(tiny_model_dir,
                                                                              tmp_path):
    """Issue 14: the 1.3 signature covers frame lengths; a peer signing the old way gets a
    clear error, not a silent mismatch."""
    key = b"0123456789abcdef" * 4
    key_file = tmp_path / "signing.key"
    key_file.write_bytes(key + b"\n")
    proc = ServerProcess(tiny_model_dir, tmp_path, "--signing-key-file", str(key_file)).start()
    sock = None
    try:
        proc.wait_listening()
        sock = raw_socket(proc.endpoint)
        sock.send_multipart(encode(Message("ping", {}), Signer(key), legacy=True))
        assert sock.poll(20_000)
        frames = sock.recv_multipart()
        assert frames[0] == Signer(key).sign_legacy(frames[1:])  # what the old client checks
        reply = msgpack.unpackb(frames[1], raw=False)
        assert reply["type"] == "error" and reply["body"]["code"] == "auth_failed"
        assert "pre-1.3" in reply["body"]["message"] and "update" in reply["body"]["message"]
    finally:
        if sock is not None:
            sock.close(0)
        proc.stop()


def test_console_scripts_name_functions_that_exist():
    """The tests start the server with ``-m``; this keeps pyproject's scripts honest too."""
    import importlib
    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    assert set(scripts) == {"v2a", "v2a-server"}
    for name, target in scripts.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name
