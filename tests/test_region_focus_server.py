"""A focus region on the wire and in the server: validated, never silently dropped for an older
server, and applied on both frame routes (pixels sent, movie read by the server), the sync
review included. Real sockets, a real ``v2a-server`` subprocess with the tiny model."""

from __future__ import annotations

import time

import numpy as np
import pytest
from foley_protocol.client import FoleyClient, build_generate
from foley_protocol.protocol import (
    PROTOCOL_MINOR,
    Message,
    ProtocolError,
    decode,
    encode,
    for_minor,
    negotiate,
)

from tests.test_protocol import HELLO_REPLY, router  # noqa: F401  (router: a fixture)
from tests.test_server import JOB_TIMEOUT_S, movie_source, ready_server, wait_ready

REGION = {"boxes": [[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 0.5, 1.0]], "times_s": [0.0, 1.0]}


def generate_with(region, **extra) -> Message:
    return build_generate(bytes(96), frame_shape=(1, 4, 8, 3), frames_fps=4.0, duration_s=2.0,
                          caption="c", focus_region=region, **extra)


def test_a_region_round_trips_and_bad_ones_name_the_box_or_time():
    msg = generate_with(REGION)
    assert decode(encode(msg)).body["focus_region"] == REGION
    assert decode(encode(generate_with({"boxes": [[0.1, 0.2, 0.3, 0.4]]}))).body["focus_region"] == {
        "boxes": [[0.1, 0.2, 0.3, 0.4]]}
    bad = [
        ({"boxes": [[0.6, 0.0, 0.5, 1.0]]}, "body.focus_region.boxes[0]"),
        ({"boxes": [[0.1, 0.1, 0.0, 0.5]]}, "body.focus_region.boxes[0]"),
        ({"boxes": [[0.1, 0.1, 0.1, 0.1], [0.2, 0.1, 0.1, 0.1]]}, "body.focus_region.times_s"),
        ({**REGION, "times_s": [0.0]}, "body.focus_region.times_s"),
        ({**REGION, "times_s": [1.0, 1.0]}, "body.focus_region.times_s[1]"),
        ({"boxes": [[0.1, 0.1, 0.1]]}, "body.focus_region.boxes[0]"),
    ]
    for region, field in bad:
        with pytest.raises(ProtocolError) as err:
            encode(generate_with(region))
        assert err.value.field == field, region


def test_for_minor_refuses_a_region_to_a_server_before_1_6_but_drops_a_nil_one():
    for minor in (0, 3, 5):
        with pytest.raises(ProtocolError) as err:
            for_minor(generate_with(REGION), minor)
        assert (err.value.code, err.value.field) == ("unsupported_version", "body.focus_region")
        assert "1.6" in err.value.message and f"1.{minor}" in err.value.message
        nil = generate_with(None)
        nil.body["focus_region"] = None
        assert "focus_region" not in for_minor(nil, minor).body  # nothing to honour: no harm
    msg = generate_with(REGION)
    assert for_minor(msg, 6) is msg


def test_the_client_refuses_a_region_to_a_1_3_server_before_sending_anything(router):
    sock, endpoint = router
    client = FoleyClient(endpoint, heartbeat_interval_s=0.2)
    received = []
    try:
        deadline = time.monotonic() + 5.0
        while not client.connected:
            assert time.monotonic() < deadline
            client.poll(0.02)
            while sock.poll(0):
                identity, *frames = sock.recv_multipart()
                msg = decode(frames)
                received.append(msg)
                if msg.type == "hello":  # a 1.3 server: the minor it answers is 3
                    reply = Message("hello_reply", {**HELLO_REPLY, **negotiate(msg), "minor": 3,
                                                    "reads_local_files": True}, parent=msg.id)
                    sock.send_multipart([identity, *encode(reply)])
        assert client.protocol_minor == 3
        with pytest.raises(ProtocolError, match=r"focus_region was added in protocol 1\.6; the "
                                                r"peer speaks 1\.3") as err:
            client.generate(bytes(96), frame_shape=(1, 4, 8, 3), frames_fps=4.0, duration_s=1.0,
                            caption="c", focus_region=REGION)
        assert err.value.field == "body.focus_region"
        time.sleep(0.2)
        while sock.poll(0):
            received.append(decode(sock.recv_multipart()[1:]))
        assert not any(m.type == "generate" for m in received), "nothing may reach the server"
    finally:
        client.close()


# ---- the real server: both frame routes, the review on the focused frames ------------------


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    with ready_server(tiny_model_dir, tmp_path_factory.mktemp("server-log")) as proc:
        yield proc


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """A two-source clip at 8 fps, 3 s, and the same frames as an mp4 the server may read."""
    from v2a_server.synth.dataset import write_mp4
    from v2a_server.synth.two_source import make_two_source_clip

    pair = make_two_source_clip(1, duration_s=3.0, fps=8.0, size_px=64)
    path = tmp_path_factory.mktemp("two") / "two.mp4"
    write_mp4(path, pair.clip.frames, 8.0)
    return pair, path


def expected_motion(frames: np.ndarray, region: dict | None, fps: float) -> list[float]:
    from v2a_server.evaluation.metrics import motion_events
    from v2a_server.serving.focus_region import focused_frames

    shown = frames if region is None else focused_frames(frames, region, fps)
    return [float(t) for t in motion_events(shown, fps).times_s]


def test_both_frame_routes_apply_the_region_and_the_review_follows_it(server, two_sources):
    from v2a_server.serving.source_frames import read_source_frames

    pair, path = two_sources
    n = len(pair.clip.frames)
    source = movie_source(path, range(n), source_fps=8.0, width=64, height=64, scale=1.0)
    pixels, _ = read_source_frames(source)  # what the server reads, read here the same way
    left = {"boxes": [list(pair.left.box)]}
    right = {"boxes": [[float(v) for v in b] for b in pair.right.boxes],
             "times_s": [k / 8.0 for k in range(n)]}
    kwargs = dict(frames_fps=8.0, duration_s=3.0, caption="two", seed=3, steps=2,
                  sync_picture_frame_rate=8.0, timeout_s=JOB_TIMEOUT_S)
    with FoleyClient(server.endpoint, client_name="region") as client:
        wait_ready(client, 60.0)
        assert client.protocol_minor == PROTOCOL_MINOR
        motions = {}
        for name, region in (("none", None), ("left", left), ("right", right)):
            by_pixels = client.generate_blocking(np.ascontiguousarray(pixels), focus_region=region, **kwargs)
            by_file = client.generate_blocking(source, frame_encoding="source", focus_region=region, **kwargs)
            expected = expected_motion(np.asarray(pixels), region, 8.0)
            for result in (by_pixels, by_file):
                assert result.body["motion"]["times_s"] == pytest.approx(expected, abs=1e-6), name
            assert by_file.body["onset_times_s"] == by_pixels.body["onset_times_s"]
            motions[name] = expected
    # The focus changes what the review sees: each side's motion is not the whole frame's.
    assert motions["left"] != motions["none"] and motions["right"] != motions["none"]
    assert motions["left"] != motions["right"]
