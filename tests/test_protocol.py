"""foley_protocol: codec round trips, every rejection path, signing, and the client's own
liveness/timeout logic against a real ROUTER socket on loopback (no server, no model)."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

from foley_protocol.client import (
    FoleyClient,
    build_generate,
    result_audio_numpy,
    result_audio_pcm,
    wav_bytes,
)
from foley_protocol.protocol import (
    LIMITS,
    MAX_CAPTION_CHARS,
    MAX_HEADER_BYTES,
    MINOR_ADDITIONS,
    PROTOCOL_MINOR,
    PROTOCOL_VERSION,
    REPLY_SCHEMAS,
    REQUEST_SCHEMAS,
    Message,
    ProtocolError,
    Signer,
    decode,
    encode,
    error_from_exception,
    error_message,
    for_minor,
    negotiate,
)

# ---- helpers ----------------------------------------------------------------------------


def generate_message(**overrides) -> Message:
    frames = bytes(range(256)) * 3  # 4 frames of 8x8x3
    msg = build_generate(frames, frame_shape=(4, 8, 8, 3), frames_fps=4.0, duration_s=1.0,
                         caption="a dog barks", seed=7, steps=2)
    msg.body.update(overrides)
    return msg


def header_of(frames) -> dict:
    return msgpack.unpackb(frames[1], raw=False)


def raw_frames(header: dict, *buffers: bytes, signature: bytes = b"") -> list[bytes]:
    return [signature, msgpack.packb(header, use_bin_type=True), *buffers]


def generate_header(**body_overrides) -> dict:
    msg = generate_message()
    body = {**msg.body, **body_overrides}
    return {"v": PROTOCOL_VERSION, "type": "generate", "id": "req-1", "parent": None,
            "body": body}


FRAMES_96 = b"\x00" * (4 * 8 * 8 * 3)


def rejected(frames, direction="request", signer=None) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(frames, signer, direction)
    return info.value


# ---- round trips ------------------------------------------------------------------------

REPLIES = [
    Message("hello_reply", {"version": 1, "server": "v2a-server test", "state": "ready",
                            "model_id": "tiny", "model_fps": 4.0, "sample_rate": 16000,
                            "heartbeat_interval_s": 1.0, "heartbeat_liveness": 3,
                            "limits": dict(LIMITS)}, parent="abc"),
    Message("progress", {"stage": "denoise", "queue_position": 0, "step": 3, "total_steps": 25,
                         "eta_s": 1.5, "elapsed_s": 0.2}, parent="abc"),
    Message("result", {
        "audio": {"encoding": "pcm_f32le", "sample_rate": 16000, "channels": 1, "samples": 4,
                  "buffers": [0, 1]},
        "duration_s": 0.00025, "start_time_s": 12.5,
        "onset_times_s": [0.0], "onset_probabilities": [0.9],
        "onset_curve": {"rate_hz": 25.0, "values": [0.9]},
        "seed": 5, "steps": 2, "sampler": "dpmpp", "model_id": "tiny",
        "timings_s": {"denoise": 0.1}, "warnings": []}, parent="abc",
        buffers=[b"\x00\x00\x80\x3f" * 4, b"\x00" * 16]),
    Message("result", {
        "audio": {"encoding": "pcm_f32le", "sample_rate": 16000, "channels": 1, "samples": 4,
                  "buffers": [0, 1]},
        "duration_s": 0.00025, "start_time_s": 0.0,
        "onset_times_s": [0.0], "onset_probabilities": [0.9],
        "onset_curve": {"rate_hz": 25.0, "values": [0.9]},
        "seed": 5, "steps": 2, "sampler": "dpmpp", "model_id": "tiny",
        "timings_s": {}, "warnings": [],
        "motion": {"fps": 25.0, "energy": [0.5, 0.5, 2.0, 0.1], "times_s": [0.08],
                   "strengths": [1.0]},
        "audio_onsets": [{"times_s": [0.0], "strengths": [1.0]},
                         {"times_s": [], "strengths": []}],
        "sync_pictures": {"encoding": "png", "width_px": 1280, "height_px": 720,
                          "buffers": [2, 3]}}, parent="abc",
        buffers=[b"\x00" * 16, b"\x00" * 16, b"\x89PNG\r\n\x1a\n take 1",
                 b"\x89PNG\r\n\x1a\n take 2"]),
    Message("error", {"code": "busy", "message": "queue full", "field": None}, parent="abc"),
    Message("cancel_reply", {"request_id": "abc", "was": "running"}, parent="c1"),
    Message("pong", {"state": "ready", "queue_length": 0}, parent="p1"),
    Message("status_reply", {"state": "ready", "server": "s", "model_id": "tiny",
                             "model_fps": 4.0, "sample_rate": 16000, "uptime_s": 3.0,
                             "queue_length": 0, "queue_max": 16, "clients": 1,
                             "workers": [{"device": "cpu", "state": "idle", "job_id": None,
                                          "memory_used_bytes": 1, "memory_total_bytes": 2}]},
            parent="s1"),
    Message("hello_reply", {"version": 1, "server": "v2a-server test", "state": "ready",
                            "model_id": "tiny", "model_fps": 4.0, "sample_rate": 16000,
                            "model_image_size": 48, "reads_local_files": True,
                            "heartbeat_interval_s": 1.0, "heartbeat_liveness": 3,
                            "limits": dict(LIMITS)}, parent="abc"),
    Message("prepare_reply", {"frames": 250, "cached": False, "read_s": 1.7}, parent="p1"),
]

REQUESTS = [
    Message("hello", {"client": "test", "versions": [1], "heartbeat_interval_s": 1.0}),
    generate_message(),
    Message("cancel", {"request_id": "abc"}),
    Message("ping", {}),
    Message("status", {}),
    Message("prepare", {"source": {"path": "/clips/a.mov", "size_bytes": 10, "mtime_ns": 5,
                                   "stream_index": 0, "source_fps": 25.0,
                                   "frame_indices": [0, 1], "width": 96, "height": 54,
                                   "scale": 0.05}}),
]


@pytest.mark.parametrize("message", REQUESTS + REPLIES, ids=lambda m: m.type)
def test_round_trip_over_inproc(message):
    """encode -> real DEALER/ROUTER over inproc -> decode gives back every field."""
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        router.bind("inproc://roundtrip")
        dealer.connect("inproc://roundtrip")
        direction = "request" if message in REQUESTS else "reply"
        dealer.send_multipart(encode(message), copy=False)
        assert router.poll(2000)
        frames = router.recv_multipart(copy=False)
        got = decode(frames[1:], direction=direction)
    finally:
        dealer.close(0)
        router.close(0)
        ctx.term()
    assert (got.type, got.id, got.parent, got.version) == (message.type, message.id,
                                                           message.parent, PROTOCOL_VERSION)
    assert got.body == message.body
    assert [bytes(b) for b in got.buffers] == [bytes(memoryview(b)) for b in message.buffers]


def test_generate_from_numpy_frames_and_inpaint_audio():
    np = pytest.importorskip("numpy")
    frames = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    audio = np.linspace(-1, 1, 16000, dtype=np.float32)
    msg = build_generate(frames, frames_fps=4.0, duration_s=1.0, caption="x",
                         onset_hints_s=[0.1, 0.5], inpaint_audio=audio,
                         inpaint_sample_rate=16000, inpaint_range_s=(0.2, 0.6))
    got = decode(encode(msg))
    assert got.body["frames"]["shape"] == [2, 4, 6, 3]
    assert got.body["inpaint"] == {"buffer": 1, "sample_rate": 16000, "samples": 16000,
                                   "start_s": 0.2, "end_s": 0.6}
    assert bytes(got.buffers[0]) == frames.tobytes()
    assert np.array_equal(np.frombuffer(got.buffers[1], "<f4"), audio)


def test_jpeg_frames_one_buffer_each():
    images = [b"\xff\xd8\xff fake jpeg %d" % i for i in range(3)]
    msg = build_generate(images, frame_encoding="jpeg", frames_fps=4.0, duration_s=0.75,
                         caption="x")
    got = decode(encode(msg))
    assert got.body["frames"]["buffers"] == [0, 1, 2]
    assert [bytes(b) for b in got.buffers] == images


SOURCE = {"path": "/media/take 3.mov", "size_bytes": 12345, "mtime_ns": 1_700_000_000_123_456_789,
          "stream_index": 0, "source_fps": 30 / 1.001, "frame_indices": [5, 6, 7, 7],
          "width": 96, "height": 54, "scale": 0.05}


def test_source_frames_name_a_file_and_carry_no_buffers():
    msg = build_generate(SOURCE, frame_encoding="source", frames_fps=25.0, duration_s=0.16,
                         caption="x")
    assert msg.buffers == []
    got = decode(encode(msg))
    assert got.body["frames"]["encoding"] == "source"
    assert got.body["frames"]["source"] == SOURCE and got.body["frames"]["buffers"] == []


@pytest.mark.parametrize("frames_body, code, field", [
    ({"encoding": "source", "buffers": [], "fps": 25.0}, "missing_field", "body.frames.source"),
    ({"encoding": "source", "buffers": [0], "fps": 25.0, "source": SOURCE}, "unknown_field",
     "body.frames.buffers"),
    ({"encoding": "rgb24", "shape": [4, 8, 8, 3], "buffers": [0], "fps": 25.0,
      "source": SOURCE}, "unknown_field", "body.frames.source"),
    ({"encoding": "source", "buffers": [], "fps": 25.0, "source": {**SOURCE, "path": ""}},
     "out_of_range", "body.frames.source.path"),
    ({"encoding": "source", "buffers": [], "fps": 25.0,
      "source": {**SOURCE, "frame_indices": []}}, "out_of_range",
     "body.frames.source.frame_indices"),
    ({"encoding": "source", "buffers": [], "fps": 25.0,
      "source": {**SOURCE, "width": 2048, "height": 2048, "frame_indices": [0] * 3600}},
     "too_large", "body.frames.source"),
    ({"encoding": "jpeg", "buffers": [], "fps": 25.0}, "missing_field", "body.frames.buffers"),
])
def test_bad_source_frames_are_named(frames_body, code, field):
    header = generate_header(frames=frames_body)
    buffers = [FRAMES_96] if frames_body["buffers"] else []
    error = rejected(raw_frames(header, *buffers))
    assert (error.code, error.field) == (code, field), error


def test_result_audio_helpers():
    pytest.importorskip("numpy")
    result = REPLIES[2]
    event = type("E", (), {"body": result.body, "buffers": result.buffers})()
    pcm = result_audio_pcm(event)
    assert [len(p) for p in pcm] == [16, 16]
    arrays = result_audio_numpy(event)
    assert arrays[0].tolist() == [1.0, 1.0, 1.0, 1.0]
    wav = wav_bytes(pcm[0], 16000)
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE" and wav.endswith(bytes(pcm[0]))
    sf = pytest.importorskip("soundfile")
    import io

    data, rate = sf.read(io.BytesIO(wav), dtype="float32")
    assert rate == 16000 and data.tolist() == [1.0, 1.0, 1.0, 1.0]


def review_result(**overrides) -> Message:
    """The sync-review result of ``REPLIES`` with some body fields replaced."""
    base = REPLIES[3]
    return Message("result", {**base.body, **overrides}, parent="abc",
                   buffers=list(base.buffers))


def test_generate_asks_for_sync_pictures_at_the_timeline_rate():
    msg = build_generate(FRAMES_96, frame_shape=(4, 8, 8, 3), frames_fps=4.0, duration_s=1.0,
                         caption="x", sync_picture_frame_rate=30 / 1.001)
    assert decode(encode(msg)).body["sync_picture"] == {"frame_rate": 30 / 1.001}
    assert "sync_picture" not in build_generate(FRAMES_96, frame_shape=(4, 8, 8, 3),
                                                frames_fps=4.0, duration_s=1.0,
                                                caption="x").body
    bad = generate_header(sync_picture={"frame_rate": 0.0})
    err = rejected(raw_frames(bad, FRAMES_96))
    assert (err.code, err.field) == ("out_of_range", "body.sync_picture.frame_rate")


def test_sync_pictures_come_back_as_png_bytes_per_take():
    from foley_protocol.client import result_sync_pictures

    got = decode(encode(REPLIES[3]), direction="reply")
    event = type("E", (), {"body": got.body, "buffers": got.buffers})()
    assert [p[:8] for p in result_sync_pictures(event)] == [b"\x89PNG\r\n\x1a\n"] * 2
    event.body = REPLIES[2].body  # a result without review data
    assert result_sync_pictures(event) == []


PICTURES = {"encoding": "png", "width_px": 1280, "height_px": 720, "buffers": [2, 3]}


def test_contact_events_go_only_to_a_client_of_1_4_and_motion_events_to_every_one():
    result = review_result(contacts={"times_s": [0.04, 0.12], "strengths": [1.0, 0.4]})
    assert decode(encode(result), direction="reply").body["contacts"] == {
        "times_s": [0.04, 0.12], "strengths": [1.0, 0.4]}
    old = for_minor(result, 3)
    assert "contacts" not in old.body and "contacts" in result.body
    assert old.body["motion"] == result.body["motion"]  # an old client reviews against these
    decode(encode(old), direction="reply")
    assert for_minor(result, 4).body["contacts"] == result.body["contacts"]


@pytest.mark.parametrize("overrides, n_buffers, code, field", [
    ({"audio_onsets": [{"times_s": [0.0], "strengths": [1.0]}]}, 4, "out_of_range",
     "body.audio_onsets"),
    ({"audio_onsets": [{"times_s": [0.0], "strengths": []}, {"times_s": [], "strengths": []}]},
     4, "out_of_range", "body.audio_onsets[0].strengths"),
    ({"motion": {"fps": 25.0, "energy": [], "times_s": [0.1], "strengths": []}}, 4,
     "out_of_range", "body.motion.strengths"),
    ({"motion": {"fps": 25.0, "energy": [-1.0], "times_s": [], "strengths": []}}, 4,
     "out_of_range", "body.motion.energy[0]"),
    ({"contacts": {"times_s": [0.1, 0.2], "strengths": [1.0]}}, 4, "out_of_range",
     "body.contacts.strengths"),
    ({"contacts": {"times_s": [0.1], "strengths": [1.5]}}, 4, "out_of_range",
     "body.contacts.strengths[0]"),
    ({"sync_pictures": {**PICTURES, "buffers": [2]}}, 3, "out_of_range",
     "body.sync_pictures.buffers"),
    ({"sync_pictures": {**PICTURES, "buffers": [2, 2]}}, 4, "bad_buffer",
     "body.sync_pictures.buffers[1]"),
    ({"sync_pictures": {**PICTURES, "encoding": "jpeg"}}, 4, "out_of_range",
     "body.sync_pictures.encoding"),
    ({"sync_pictures": {**PICTURES, "buffers": [2, 7]}}, 4, "bad_buffer",
     "body.sync_pictures.buffers[1]"),
])
def test_bad_review_fields_are_rejected(overrides, n_buffers, code, field):
    base = REPLIES[3]
    header = {"v": PROTOCOL_VERSION, "type": "result", "id": "r1", "parent": "abc",
              "body": {**base.body, **overrides}}
    err = rejected(raw_frames(header, *[bytes(b) for b in base.buffers[:n_buffers]]),
                   direction="reply")
    assert (err.code, err.field) == (code, field)


def test_unreferenced_sync_picture_buffer_is_rejected():
    base = REPLIES[3]
    body = {k: v for k, v in base.body.items() if k != "sync_pictures"}
    header = {"v": PROTOCOL_VERSION, "type": "result", "id": "r1", "parent": "abc", "body": body}
    err = rejected(raw_frames(header, *[bytes(b) for b in base.buffers]), direction="reply")
    assert (err.code, err.field) == ("bad_buffer", "buffers[2]")


def test_package_imports_without_numpy_or_torch():
    code = ("import sys, foley_protocol, foley_protocol.client, foley_protocol.protocol; "
            "bad = [m for m in ('numpy', 'torch', 'soundfile') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---- rejections: each names its code and field ------------------------------------------

CASES = [
    # (description, frames, code, field)
    ("one frame", [b""], "bad_message", "frames"),
    ("garbage header", [b"", b"\xc1\xc1"], "bad_message", "header"),
    ("truncated msgpack", [b"", b"\x85\xa1v"], "bad_message", "header"),
    ("header is a list", raw_frames([1, 2, 3]), "bad_message", "header"),
    ("huge declared array", [b"", b"\xdd\xff\xff\xff\xff"], "bad_message", "header"),
    ("huge declared string", [b"", b"\xdb\x7f\xff\xff\xff"], "bad_message", "header"),
    ("oversized header", [b"", b"\x00" * (MAX_HEADER_BYTES + 1)], "too_large", "header"),
    ("deep nesting", [b"", b"\x91" * 5000 + b"\x01"], "bad_message", "header"),
    ("ext type", [b"", msgpack.packb(msgpack.ExtType(5, b"x" * 10))], "bad_message", "header"),
    ("missing id", raw_frames({"v": 1, "type": "ping", "parent": None, "body": {}}),
     "missing_field", "header.id"),
    ("extra header key", raw_frames({"v": 1, "type": "ping", "id": "a", "parent": None,
                                     "body": {}, "x": 1}), "unknown_field", "header.x"),
    ("wrong version", raw_frames({"v": 2, "type": "ping", "id": "a", "parent": None,
                                  "body": {}}), "unsupported_version", "header.v"),
    ("version is a string", raw_frames({"v": "1", "type": "ping", "id": "a", "parent": None,
                                        "body": {}}), "wrong_type", "header.v"),
    ("bad id", raw_frames({"v": 1, "type": "ping", "id": "../etc", "parent": None,
                           "body": {}}), "bad_message", "header.id"),
    ("unknown type", raw_frames({"v": 1, "type": "rm -rf", "id": "a", "parent": None,
                                 "body": {}}), "unknown_type", "header.type"),
    ("reply type sent as request", raw_frames({"v": 1, "type": "result", "id": "a",
                                               "parent": None, "body": {}}),
     "unknown_type", "header.type"),
    ("request with parent", raw_frames({"v": 1, "type": "ping", "id": "a", "parent": "b",
                                        "body": {}}), "wrong_type", "header.parent"),
    ("body not a map", raw_frames({"v": 1, "type": "ping", "id": "a", "parent": None,
                                   "body": []}), "wrong_type", "body"),
    ("ping with a field", raw_frames({"v": 1, "type": "ping", "id": "a", "parent": None,
                                      "body": {"x": 1}}), "unknown_field", "body.x"),
    ("missing caption", raw_frames({**generate_header(), "body": {
        k: v for k, v in generate_header()["body"].items() if k != "caption"}}, FRAMES_96),
     "missing_field", "body.caption"),
    ("caption too long", raw_frames(generate_header(caption="a" * (MAX_CAPTION_CHARS + 1)),
                                    FRAMES_96), "too_large", "body.caption"),
    ("caption is bytes", raw_frames(generate_header(caption=b"dog"), FRAMES_96),
     "wrong_type", "body.caption"),
    ("duration NaN", raw_frames(generate_header(duration_s=math.nan), FRAMES_96),
     "out_of_range", "body.duration_s"),
    ("duration zero", raw_frames(generate_header(duration_s=0), FRAMES_96),
     "out_of_range", "body.duration_s"),
    ("duration 1 hour", raw_frames(generate_header(duration_s=3600.0), FRAMES_96),
     "out_of_range", "body.duration_s"),
    ("steps is bool", raw_frames(generate_header(steps=True), FRAMES_96),
     "wrong_type", "body.steps"),
    ("variations 100", raw_frames(generate_header(variations=100), FRAMES_96),
     "out_of_range", "body.variations"),
    ("seed negative", raw_frames(generate_header(seed=-1), FRAMES_96),
     "out_of_range", "body.seed"),
    ("sampler unknown", raw_frames(generate_header(sampler="euler"), FRAMES_96),
     "out_of_range", "body.sampler"),
    ("guidance inf", raw_frames(generate_header(guidance=math.inf), FRAMES_96),
     "out_of_range", "body.guidance"),
    ("unknown body field", raw_frames(generate_header(path="/etc/passwd"), FRAMES_96),
     "unknown_field", "body.path"),
    ("huge declared frame count", raw_frames(generate_header(frames={
        "encoding": "rgb24", "shape": [10**9, 8, 8, 3], "buffers": [0], "fps": 4.0}),
        FRAMES_96), "out_of_range", "body.frames.shape[0]"),
    ("frames too many bytes", raw_frames(generate_header(frames={
        "encoding": "rgb24", "shape": [3600, 2048, 2048, 3], "buffers": [0], "fps": 4.0}),
        FRAMES_96), "too_large", "body.frames.shape"),
    ("4 channels", raw_frames(generate_header(frames={
        "encoding": "rgb24", "shape": [3, 8, 8, 4], "buffers": [0], "fps": 4.0}), FRAMES_96),
     "out_of_range", "body.frames.shape[3]"),
    ("frame buffer short", raw_frames(generate_header(), FRAMES_96[:-1]),
     "bad_buffer", "body.frames.buffers[0]"),
    ("frame buffer missing", raw_frames(generate_header()),
     "bad_buffer", "body.frames.buffers[0]"),
    ("extra frame", raw_frames(generate_header(), FRAMES_96, b"extra"),
     "bad_buffer", "buffers[1]"),
    ("buffer used twice", raw_frames(generate_header(frames={
        "encoding": "jpeg", "buffers": [0, 0], "fps": 4.0}), b"\xff\xd8"),
     "bad_buffer", "body.frames.buffers[1]"),
    ("rgb24 without shape", raw_frames(generate_header(frames={
        "encoding": "rgb24", "buffers": [0], "fps": 4.0}), FRAMES_96),
     "missing_field", "body.frames.shape"),
    ("fps zero", raw_frames(generate_header(frames={
        "encoding": "rgb24", "shape": [4, 8, 8, 3], "buffers": [0], "fps": 0}), FRAMES_96),
     "out_of_range", "body.frames.fps"),
    ("onset hint after end", raw_frames(generate_header(onset_hints_s=[0.5, 2.0]), FRAMES_96),
     "out_of_range", "body.onset_hints_s[1]"),
    ("inpaint range reversed", raw_frames(generate_header(inpaint={
        "buffer": 1, "sample_rate": 16000, "samples": 4, "start_s": 0.5, "end_s": 0.2}),
        FRAMES_96, b"\x00" * 16), "out_of_range", "body.inpaint.end_s"),
    ("inpaint size mismatch", raw_frames(generate_header(inpaint={
        "buffer": 1, "sample_rate": 16000, "samples": 5, "start_s": 0.1, "end_s": 0.2}),
        FRAMES_96, b"\x00" * 16), "bad_buffer", "body.inpaint.buffer"),
    ("cancel id with slash", raw_frames({"v": 1, "type": "cancel", "id": "a", "parent": None,
                                         "body": {"request_id": "a/b"}}),
     "out_of_range", "body.request_id"),
    ("signed but no key", raw_frames({"v": 1, "type": "ping", "id": "a", "parent": None,
                                      "body": {}}, signature=b"00ff"), "auth_failed",
     "frames[0]"),
]


@pytest.mark.parametrize("description, frames, code, field", CASES,
                         ids=[c[0] for c in CASES])
def test_rejections_name_code_and_field(description, frames, code, field):
    err = rejected(frames)
    assert (err.code, err.field) == (code, field), str(err)
    assert err.message
    reply = error_message(err.code, err.message, field=err.field, parent=err.request_id)
    decode(encode(reply), direction="reply")  # the error itself is a valid reply


def test_rejection_keeps_request_id_when_readable():
    err = rejected(raw_frames(generate_header(variations=9), FRAMES_96))
    assert err.request_id == "req-1"
    err = rejected([b"", b"\xc1"])
    assert err.request_id is None


def test_encode_validates_before_sending():
    with pytest.raises(ProtocolError) as info:
        encode(generate_message(caption=None))
    assert info.value.field == "body.caption"


# ---- signing ----------------------------------------------------------------------------


def test_signed_messages_verify_and_reject_tampering_and_replay():
    sender, receiver = Signer(b"secret"), Signer(b"secret")
    frames = encode(Message("ping", {}), sender)
    decode(frames, receiver)
    assert rejected(frames, signer=receiver).message.startswith("replayed")
    tampered = encode(Message("ping", {}), sender)
    tampered[1] = tampered[1].replace(b"ping", b"pong")
    assert rejected(tampered, signer=receiver).code == "auth_failed"
    unsigned = encode(Message("ping", {}))
    assert "not signed" in rejected(unsigned, signer=receiver).message
    wrong_key = encode(Message("ping", {}), Signer(b"other"))
    assert rejected(wrong_key, signer=receiver).message == "signature does not match"



def test_the_signature_covers_frame_lengths_so_re_split_buffers_do_not_verify():
    """Issue 14: the pre-1.3 HMAC covered the frames concatenated, so b"abcd" + b"ef" signed
    b"abc" + b"def" too."""
    signer = Signer(b"secret")
    header = b"\x80"
    signature = signer.sign([header, b"abcd", b"ef"])
    with pytest.raises(ProtocolError, match="does not match"):
        Signer(b"secret").verify(signature, [header, b"abc", b"def"])
    with pytest.raises(ProtocolError, match="does not match"):
        Signer(b"secret").verify(signature, [header + b"abcd", b"ef"])
    Signer(b"secret").verify(signature, [header, b"abcd", b"ef"])


def test_a_pre_1_3_signature_is_refused_with_a_reason_the_old_peer_can_verify():
    sender = Signer(b"secret")
    old_style = encode(Message("ping", {}), sender, legacy=True)
    assert not old_style[0].startswith(b"s2:")
    error = rejected(old_style, signer=Signer(b"secret"))
    assert error.code == "auth_failed" and "pre-1.3" in error.message and "update" in \
        error.message
    reply = encode(error_from_exception(error), Signer(b"secret"), legacy=True)
    assert reply[0] == Signer(b"secret").sign_legacy(reply[1:])  # what a 1.1 peer checks

# ---- fuzz: nothing but ProtocolError escapes decode --------------------------------------

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), min_size=0, max_size=5))
def test_fuzz_garbage_frames_only_raise_protocol_error(frames):
    try:
        decode(frames)
    except ProtocolError as err:
        assert err.code and err.message


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["header", "body", "field"]), st.sampled_from(sorted(
    generate_header()["body"])), msgpack_values)
def test_fuzz_wrong_values_only_raise_protocol_error(where, name, value):
    header = generate_header()
    if where == "header":
        header = value
    elif where == "body":
        header["body"] = value
    else:
        header["body"][name] = value
    try:
        msg = decode(raw_frames(header, FRAMES_96))
    except ProtocolError as err:
        assert err.code and err.message
    else:  # accepted: must still satisfy the schema (e.g. an int where a float is allowed)
        decode(encode(msg))


# ---- the client's own logic against a silent or slow ROUTER --------------------------------


@pytest.fixture()
def router():
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, f"tcp://127.0.0.1:{port}"
    sock.close(0)


def poll_until(client, predicate, timeout_s):
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        for event in client.poll(0.05):
            seen.append(event)
            if predicate(event):
                return event, seen
    raise AssertionError(f"no matching event in {timeout_s} s; saw {[e.type for e in seen]}")


def test_client_reports_silent_server_lost_within_liveness(router):
    sock, endpoint = router
    client = FoleyClient(endpoint, heartbeat_interval_s=0.2, liveness=3)
    try:
        t0 = time.monotonic()
        request_id = client.ping(timeout_s=30.0)
        event, _ = poll_until(client, lambda e: e.request_id == request_id, 5.0)
        elapsed = time.monotonic() - t0
        assert event.type == "error" and event.body["code"] == "server_lost" and event.local
        assert 0.5 <= elapsed < 1.5  # 3 x 0.2 s plus scheduling
        assert sock.poll(100)  # the hello and pings did reach the ROUTER
    finally:
        client.close()


def test_client_request_timeout_sends_cancel(router):
    sock, endpoint = router
    client = FoleyClient(endpoint, heartbeat_interval_s=0.1)
    try:
        request_id = client.send(generate_message(), timeout_s=0.4)
        deadline = time.monotonic() + 5.0
        cancelled = timed_out = False
        while time.monotonic() < deadline and not (cancelled and timed_out):
            for event in client.poll(0.02):
                if event.request_id == request_id:
                    assert event.body["code"] == "timeout" and event.final
                    timed_out = True
            while sock.poll(0):  # play a live server: answer pings so only the deadline fires
                identity, *frames = sock.recv_multipart()
                msg = decode(frames)
                if msg.type == "ping":
                    reply = Message("pong", {"state": "ready", "queue_length": 0},
                                    parent=msg.id)
                    sock.send_multipart([identity, *encode(reply)])
                cancelled |= msg.type == "cancel" and msg.body["request_id"] == request_id
        assert timed_out and cancelled
    finally:
        client.close()


def test_client_drops_invalid_replies(router):
    sock, endpoint = router
    client = FoleyClient(endpoint, heartbeat_interval_s=0.1)
    try:
        assert sock.poll(2000)
        identity, *frames = sock.recv_multipart()
        hello = decode(frames)
        sock.send_multipart([identity, b"", b"\xc1not msgpack"])
        bad = encode(Message("pong", {"state": "ready", "queue_length": 0}, parent=hello.id))
        bad[1] = msgpack.packb({**header_of(bad), "body": {"state": "sleepy",
                                                           "queue_length": 0}})
        sock.send_multipart([identity, *bad])
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and client.bad_replies < 2:
            client.poll(0.05)
        assert client.bad_replies == 2
    finally:
        client.close()


def answer_hello(sock, client) -> bytes:
    """Reply to the client's hello from the raw ROUTER ``sock``; returns its identity once
    the client is connected."""
    assert sock.poll(2000)
    identity, *frames = sock.recv_multipart()
    hello = decode(frames)
    sock.send_multipart([identity, *encode(Message("hello_reply", HELLO_REPLY,
                                                   parent=hello.id))])
    poll_until(client, lambda e: e.type == "connected", 2.0)
    return identity


def test_client_that_stops_polling_does_not_declare_the_server_lost(router):
    sock, endpoint = router
    client = FoleyClient(endpoint, heartbeat_interval_s=0.2, liveness=3)
    try:
        answer_hello(sock, client)
        time.sleep(1.5)  # the caller is busy (7 intervals) and sends no pings
        assert [e.type for e in client.poll(0)] == []
        assert client.connected
        # ... but a server that stays silent while the caller polls is still found lost
        t0 = time.monotonic()
        poll_until(client, lambda e: e.type == "disconnected", 3.0)
        assert time.monotonic() - t0 < 1.5
    finally:
        client.close()


# ---- minor versions: the table, negotiation, and what a client sends to an older server ------


def hello_message(**extra) -> Message:
    return Message("hello", {"client": "t", "versions": [PROTOCOL_VERSION], **extra})


def test_every_minor_addition_names_a_type_field_or_value_of_the_schema():
    for minor, entries in MINOR_ADDITIONS.items():
        assert 1 <= minor <= PROTOCOL_MINOR
        for entry in entries:
            mtype, _, path = entry.partition(".")
            fields = {**REQUEST_SCHEMAS, **REPLY_SCHEMAS}[mtype]
            path, _, value = path.partition("=")
            spec = None
            for part in path.split(".") if path else ():
                spec = fields[part]  # a map's fields, or those of a list's map items
                fields = spec.fields if spec.item is None else spec.item.fields
            if value:  # a choice of the field, or a name in an open one (progress.stage)
                assert spec.kind == "str" and value in (spec.choices or (value,)), entry
            elif spec is not None:
                assert not spec.required or mtype in entries, entry  # a new field is optional


def test_negotiate_picks_the_highest_major_and_the_lower_minor():
    assert negotiate(hello_message()) == {"version": PROTOCOL_VERSION}  # an x.0 hello
    assert negotiate(hello_message(minor=0)) == {"version": PROTOCOL_VERSION, "minor": 0}
    assert negotiate(hello_message(minor=PROTOCOL_MINOR + 5)) == {
        "version": PROTOCOL_VERSION, "minor": PROTOCOL_MINOR}
    newer = Message("hello", {"client": "t", "versions": [PROTOCOL_VERSION, 7], "minor": 3})
    assert negotiate(newer) == {"version": PROTOCOL_VERSION, "minor": 0}  # its minor is 7's
    with pytest.raises(ProtocolError) as err:
        negotiate(Message("hello", {"client": "t", "versions": [99]}))
    assert (err.value.code, err.value.field) == ("unsupported_version", "body.versions")


def test_for_minor_leaves_out_later_optional_fields_and_refuses_later_types_and_values():
    msg = build_generate(bytes(96), frame_shape=(1, 4, 8, 3), frames_fps=4.0, duration_s=1.0,
                         caption="c", sync_picture_frame_rate=24.0)
    old = for_minor(msg, 0)
    assert "sync_picture" not in old.body and "sync_picture" in msg.body  # a copy
    assert (old.id, old.buffers) == (msg.id, msg.buffers)
    assert for_minor(msg, PROTOCOL_MINOR) is msg
    decode(encode(old))
    source = {"path": "/m.mp4", "size_bytes": 1, "mtime_ns": 1, "stream_index": 0,
              "source_fps": 24.0, "frame_indices": [0], "width": 4, "height": 4, "scale": 1.0}
    for message, field in ((Message("prepare", {"source": source}), "header.type"),
                           (build_generate(source, frame_encoding="source", frames_fps=4.0,
                                           duration_s=1.0, caption="c"),
                            "body.frames.encoding")):
        with pytest.raises(ProtocolError) as err:
            for_minor(message, 0)
        assert (err.value.code, err.value.field) == ("unsupported_version", field)
        assert "1.1" in err.value.message and "1.0" in err.value.message
    reply = Message("hello_reply", {**HELLO_REPLY, "minor": 1, "reads_local_files": True,
                                    "model_image_size": 48})
    assert for_minor(reply, 0).body == HELLO_REPLY


HELLO_REPLY = {"version": 1, "server": "t", "state": "ready", "model_id": "m",
               "model_fps": 4.0, "sample_rate": 16000, "heartbeat_interval_s": 1.0,
               "heartbeat_liveness": 3, "limits": {}}


def play_server(sock, client, *, minor_field: str, until, timeout_s: float = 5.0) -> list:
    """Answer the client's hellos and pings on ``sock`` as a server of the given kind does
    ("negotiates": this code's server; "answers 0": one that speaks x.0 of a hello with minor;
    "refuses": a server from before minors, whose schema has no hello.minor) until
    ``until(received)``; returns the requests received."""
    received = []
    deadline = time.monotonic() + timeout_s
    while not until(received):
        assert time.monotonic() < deadline, [m.type for m in received]
        client.poll(0.02)
        while sock.poll(0):
            identity, *frames = sock.recv_multipart()
            msg = decode(frames)
            received.append(msg)
            if msg.type == "hello":
                if minor_field == "refuses" and "minor" in msg.body:
                    reply = error_message("unknown_field", "body has no field 'minor'",
                                          field="body.minor", parent=msg.id)
                else:
                    versions = negotiate(msg)
                    if minor_field == "answers 0" and "minor" in versions:
                        versions["minor"] = 0
                    reply = Message("hello_reply", {**HELLO_REPLY, **versions,
                                                    "reads_local_files": True}, parent=msg.id)
            elif msg.type == "ping":
                reply = Message("pong", {"state": "ready", "queue_length": 0}, parent=msg.id)
            else:
                continue
            sock.send_multipart([identity, *encode(reply)])
    return received


def test_new_client_and_new_server_agree_on_this_minor(router):
    sock, endpoint = router
    client = FoleyClient(endpoint, heartbeat_interval_s=0.2)
    try:
        seen = play_server(sock, client, minor_field="negotiates",
                           until=lambda _: client.connected)
        assert seen[0].body["minor"] == PROTOCOL_MINOR
        assert client.protocol_minor == PROTOCOL_MINOR
        assert client.server_info["reads_local_files"] is True
    finally:
        client.close()


@pytest.mark.parametrize("server_kind", ["refuses", "answers 0"])
def test_new_client_sends_an_old_server_nothing_newer(router, server_kind):
    sock, endpoint = router
    client = FoleyClient(endpoint, heartbeat_interval_s=0.2)
    try:
        hellos = [m for m in play_server(sock, client, minor_field=server_kind,
                                         until=lambda _: client.connected) if m.type == "hello"]
        if server_kind == "refuses":  # asked again as x.0
            assert ["minor" in m.body for m in hellos] == [True, False]
        assert client.protocol_minor == 0
        assert "reads_local_files" not in client.server_info  # 1.0's hello_reply has none
        source = {"path": "/m.mp4", "size_bytes": 1, "mtime_ns": 1, "stream_index": 0,
                  "source_fps": 24.0, "frame_indices": [0], "width": 4, "height": 4,
                  "scale": 1.0}
        with pytest.raises(ProtocolError, match="added in protocol 1.1"):
            client.prepare(source)
        with pytest.raises(ProtocolError, match="added in protocol 1.1"):
            client.generate(source, frame_encoding="source", frames_fps=4.0, duration_s=1.0,
                            caption="c")
        request_id = client.generate(bytes(96), frame_shape=(1, 4, 8, 3), frames_fps=4.0,
                                     duration_s=1.0, caption="c", sync_picture_frame_rate=24.0)
        sent = play_server(sock, client, minor_field=server_kind,
                           until=lambda got: any(m.id == request_id for m in got))
        generate = next(m for m in sent if m.id == request_id)
        assert "sync_picture" not in generate.body and generate.body["caption"] == "c"
        assert not any(m.type == "prepare" for m in sent)
    finally:
        client.close()


def test_old_client_and_new_server_speak_1_0():
    # Today's client before minors: a DEALER whose hello has no minor and whose schema would
    # refuse a hello_reply.minor; the server answers with negotiate() over a real socket pair.
    ctx = zmq.Context.instance()
    server, old_client = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    try:
        server.bind("inproc://minor-negotiation")
        old_client.connect("inproc://minor-negotiation")
        old_client.send_multipart(raw_frames({"v": 1, "type": "hello", "id": "h1",
                                              "parent": None,
                                              "body": {"client": "old", "versions": [1]}}))
        identity, *frames = server.recv_multipart()
        hello = decode(frames)
        reply = Message("hello_reply", {**HELLO_REPLY, **negotiate(hello)}, parent=hello.id)
        server.send_multipart([identity, *encode(reply)])
        assert old_client.poll(2000)
        header = header_of(old_client.recv_multipart())
        assert header["v"] == 1 and header["parent"] == "h1"
        assert "minor" not in header["body"] and header["body"]["version"] == 1
    finally:
        server.close(0)
        old_client.close(0)


def test_what_a_closing_server_sent_before_it_closed_is_read_first(router):
    """A stopping server tells each open request why (shutting_down) and closes; when the
    reply and the close are both waiting, the client reads the reply, then reports the loss."""
    sock, endpoint = router
    client = FoleyClient(endpoint, heartbeat_interval_s=0.2, liveness=50)
    try:
        answer_hello(sock, client)
        request_id = client.ping(timeout_s=30.0)
        while True:  # skip the client's heartbeats
            assert sock.poll(2000)
            identity, *frames = sock.recv_multipart()
            if decode(frames).id == request_id:
                break
        refusal = Message("error", {"code": "shutting_down", "message": "stopping",
                                    "field": None}, parent=request_id)
        sock.send_multipart([identity, *encode(refusal)])
        sock.close(linger=1000)  # flushed, then closed: both reach the client
        time.sleep(0.5)
        _, seen = poll_until(client, lambda e: e.type == "disconnected", 2.0)
        [event] = [e for e in seen if e.request_id == request_id]
        assert event.type == "error" and event.body["code"] == "shutting_down", event.body
        assert not event.local
        assert seen.index(event) < len(seen) - 1  # then the loss
        assert seen[-1].body["code"] == "server_lost"
    finally:
        client.close()
