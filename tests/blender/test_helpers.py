"""The add-on's bpy-free helpers: timing maths, BMP/WAV/resampling, safe file writing.

Plain pytest; no Blender needed (``blender_addon/__init__.py`` imports nothing at module level).
"""

from __future__ import annotations

import io
import math
import os
import struct

import numpy as np
import pytest

from blender_addon import files, media, sync
from foley_protocol.client import wav_bytes

# ---- sync ----------------------------------------------------------------------------------


def test_scene_rate_uses_fps_base():
    assert sync.scene_rate(30, 1.001) == pytest.approx(29.97002997)
    assert sync.scene_rate(25, 1.0) == 25.0
    with pytest.raises(ValueError):
        sync.scene_rate(0, 1.0)


@pytest.mark.parametrize("scene_fps,model_fps", [(25, 4), (24, 4), (30 / 1.001, 4), (25, 25),
                                                 (24, 25), (60, 8)])
def test_capture_frames_sample_the_range_at_the_model_rate(scene_fps, model_fps):
    first, end = 37, 37 + 251
    frames = sync.capture_frames(first, end, scene_fps, model_fps)
    duration_s = (end - first) / scene_fps
    assert len(frames) == math.ceil(duration_s * model_fps - 1e-9)
    assert frames[0] == first and all(first <= f < end for f in frames)
    assert frames == sorted(frames)
    for i, f in enumerate(frames):  # nearest timeline frame to i / model_fps ...
        error_s = abs((f - first) / scene_fps - i / model_fps)
        if f < end - 1:
            assert error_s <= 0.5 / scene_fps + 1e-9
        else:  # ... or the last one, which is on screen until the range ends
            assert i / model_fps < duration_s


def test_capture_frames_exact_counts():
    assert len(sync.capture_frames(0, 250, 25, 4)) == 40  # 10 s at 4 fps, not 41
    assert sync.capture_frames(10, 20, 25, 25) == list(range(10, 20))
    assert sync.capture_frames(5, 6, 25, 4) == [5]


def test_render_percentage_keeps_the_short_side():
    assert sync.render_percentage(1920, 1080) == 21  # 403 x 226
    assert sync.render_percentage(320, 240) == 94
    assert sync.render_percentage(100, 100) == 100  # never upscales
    for w, h in [(1920, 1080), (1280, 720), (3840, 2160), (720, 576), (1080, 1920)]:
        pct = sync.render_percentage(w, h)
        assert min(w, h) * pct // 100 >= 224  # Blender floors the scaled size


def test_capture_side_follows_the_server_model():
    assert sync.capture_side_for({"model_image_size": 48}) == 48  # the default model: 5 % of 1080p
    assert sync.capture_side_for({"model_image_size": 224}) == 224  # CAVP
    assert sync.capture_side_for({"model_image_size": 8}) == sync.MIN_CAPTURE_SIDE_PX
    assert sync.capture_side_for({"model_image_size": None}) == sync.FALLBACK_CAPTURE_SIDE_PX
    assert sync.capture_side_for({}) == sync.FALLBACK_CAPTURE_SIDE_PX  # an older server
    assert sync.capture_side_for(None) == sync.FALLBACK_CAPTURE_SIDE_PX
    assert sync.render_percentage(1920, 1080, 48) == 5  # 96 x 54


def test_plan_sound_on_a_frame_needs_no_offset():
    plan = sync.plan_sound(101, 240, 25.0, has_sound_offset=True)
    assert plan == sync.SoundPlacement(101, 0.0, 341)


def test_plan_sound_sub_frame_start_uses_sound_offset():
    plan = sync.plan_sound(101.5, 100, 25.0, has_sound_offset=True)
    assert plan.frame_start == 101
    assert plan.sound_offset_s == pytest.approx(0.02)  # positive delays the audio
    assert plan.frame_end == 202  # ceil(201.5)
    old = sync.plan_sound(101.5, 100, 25.0, has_sound_offset=False)  # Blender 4.2
    assert (old.frame_start, old.sound_offset_s, old.frame_end) == (102, 0.0, 202)


def test_plan_sound_ignores_float_noise():
    # 100 frames at 29.97 computed through seconds and back is 100.0000000001 frames.
    length = (100 * 1.001 / 30) * (30 / 1.001)
    assert sync.plan_sound(0, length, 30 / 1.001, True).frame_end == 100


def test_onset_marker_frames_round_to_nearest_frame():
    # 0.5 s -> 60.5 -> 61; 0.519 -> 60.98 -> 61; 0.521 -> 61.03 -> 61 (one marker per frame);
    # 3.0 s -> 123 is past the end.
    frames = sync.onset_marker_frames([0.0, 0.5, 0.519, 0.521, 3.0], 48, 25.0, end_frame=120)
    assert frames == [48, 61]
    assert sync.onset_marker_frames([1.0], 0, 30 / 1.001) == [30]
    assert sync.onset_marker_frames([2.0], 10, 24, end_frame=58) == []  # on the end frame


def test_onset_marker_frames_same_for_float32_and_double():
    # The model's onsets sit on a 40 ms grid at (k + 0.5) * 40 ms: exactly between two
    # frames at 25 fps. Blender stores seconds as float32; the frame must not flip.
    for k in range(0, 1500):
        t = (k + 0.5) * 0.04
        as_float32 = float(np.float32(t))
        assert sync.onset_marker_frames([t], 1, 25.0) == sync.onset_marker_frames(
            [as_float32], 1, 25.0) == [1 + k + 1]


def test_free_channel_skips_overlaps_only():
    occupied = [(1, 0, 100), (2, 50, 150), (3, 200, 300), (5, 0, 1000)]
    assert sync.free_channel(occupied, above=1, start=0, end=100) == 3
    assert sync.free_channel(occupied, above=1, start=150, end=200) == 2  # touching is free
    assert sync.free_channel(occupied, above=4, start=0, end=10) == 6
    full = [(c, 0, 10) for c in range(1, 129)]
    assert sync.free_channel(full, above=1, start=0, end=10) is None


def test_follow_move_only_for_whole_strip_moves():
    assert sync.follow_move(48, 37.0, 150, 60, 49.0, 150) == 12
    assert sync.follow_move(48, 37.0, 150, 48, 37.0, 149) is None  # trimmed
    assert sync.follow_move(48, 37.0, 150, 50, 37.0, 150) is None  # slipped content


def test_format_eta():
    assert sync.format_eta(None) == ""
    assert sync.format_eta(4.4) == "ETA 4 s"
    assert sync.format_eta(65) == "ETA 1 min 05 s"


def test_regeneration_range_rules_in_order():
    take = (10, 110)  # frames [10, 110) at 25 fps
    # The preview range (inclusive end) wins over markers and the playhead.
    r = sync.regeneration_range(*take, 25.0, 60, preview=(20, 29), selected_marker_frames=[40, 80])
    assert (r.start, r.end, r.origin) == (20, 30, "preview range")
    assert r.seconds(10, 25.0) == pytest.approx((0.4, 0.8))
    r = sync.regeneration_range(*take, 25.0, 60, selected_marker_frames=[80, 40, 55])
    assert (r.start, r.end, r.origin) == (40, 80, "selected markers")
    # One marker (or two on the same frame) is no span: the playhead ± 1 s.
    r = sync.regeneration_range(*take, 25.0, 60, selected_marker_frames=[40, 40])
    assert (r.start, r.end) == (35, 85) and r.origin.startswith("current frame")
    r = sync.regeneration_range(*take, 30 / 1.001, 60)
    assert (r.start, r.end) == (30, 90)
    # Clipped to the take.
    r = sync.regeneration_range(*take, 25.0, 12)
    assert (r.start, r.end) == (10, 37)
    with pytest.raises(ValueError, match="does not overlap"):
        sync.regeneration_range(*take, 25.0, 200)
    with pytest.raises(ValueError, match="whole take"):
        sync.regeneration_range(*take, 25.0, 60, preview=(0, 500))


# ---- media ---------------------------------------------------------------------------------


def _bmp(rgb: np.ndarray, top_down: bool = False, bits: int = 24) -> bytes:
    height, width = rgb.shape[:2]
    channels = bits // 8
    stride = (width * channels + 3) & ~3
    rows = rgb if top_down else rgb[::-1]
    body = bytearray()
    for row in rows:
        bgr = row[:, ::-1]
        if channels == 4:
            bgr = np.concatenate([bgr, np.full((width, 1), 255, np.uint8)], axis=1)
        line = bgr.astype(np.uint8).tobytes()
        body += line + b"\0" * (stride - len(line))
    header = struct.pack("<2sIHHI", b"BM", 54 + len(body), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, -height if top_down else height, 1, bits, 0,
                       len(body), 2835, 2835, 0, 0)
    return header + info + bytes(body)


@pytest.mark.parametrize("top_down", [False, True])
@pytest.mark.parametrize("bits", [24, 32])
def test_read_bmp_rows_and_channels(top_down, bits):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)  # odd width: padded rows
    out = media.read_bmp(_bmp(rgb, top_down, bits))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, rgb)


def test_read_bmp_refuses_other_files():
    with pytest.raises(ValueError):
        media.read_bmp(b"\x89PNG" + b"\0" * 100)
    with pytest.raises(ValueError):
        media.read_bmp(_bmp(np.zeros((4, 4, 3), np.uint8))[:-10])


@pytest.mark.parametrize("rate_out", [48000, 44100, 16000, 96000])
def test_resample_keeps_pitch_and_exact_length(rate_out):
    rate_in = 16000
    t = np.arange(rate_in) / rate_in
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)  # 1 s of 440 Hz
    samples_out = sync.target_samples(100 * 1.001 / 30, rate_out)  # 100 frames at 29.97
    out = media.resample(tone, rate_in, rate_out, samples_out)
    assert out.dtype == np.float32 and out.shape == (samples_out,)
    spectrum = np.abs(np.fft.rfft(out[:rate_out // 2] * np.hanning(rate_out // 2)))
    peak_hz = np.argmax(spectrum) * rate_out / (rate_out // 2)
    assert abs(peak_hz - 440) < 3  # a relabelled rate would move the pitch
    assert np.all(out[len(out) - 5:] == 0) or len(out) <= rate_out  # padding only past 1 s


def test_wav_bytes_reads_back():
    """The take files' writer (the protocol package's, the one WAV writer)."""
    soundfile = pytest.importorskip("soundfile")
    audio = np.linspace(-1, 1, 4801, dtype=np.float32)
    data, rate = soundfile.read(io.BytesIO(wav_bytes(audio, 48000)), dtype="float32")
    assert rate == 48000
    np.testing.assert_array_equal(data, audio)


@pytest.mark.parametrize("subtype", ["FLOAT", "PCM_16", "PCM_24", "PCM_32"])
def test_read_wav_decodes_what_soundfile_writes(tmp_path, subtype):
    soundfile = pytest.importorskip("soundfile")
    rng = np.random.default_rng(1)
    stereo = (rng.uniform(-0.9, 0.9, (1000, 2))).astype(np.float32)
    path = tmp_path / "x.wav"
    soundfile.write(str(path), stereo, 44100, subtype=subtype)
    audio, rate = media.read_wav(path.read_bytes())
    expected, _ = soundfile.read(str(path), dtype="float32")
    assert rate == 44100 and audio.dtype == np.float32
    np.testing.assert_allclose(audio, expected.mean(axis=1), atol=1e-6)
    ours = np.linspace(-1, 1, 333, dtype=np.float32)
    assert np.array_equal(media.read_wav(wav_bytes(ours, 48000))[0], ours)
    with pytest.raises(ValueError, match="not a WAV"):
        media.read_wav(b"RIFF0000AVI LIST")


def test_keep_outside_puts_the_old_samples_back_outside_range_and_margin():
    old = np.arange(100, dtype=np.float32)
    new = -np.ones(100, np.float32)
    out = media.keep_outside(new, old, 10, 3.0, 5.0, 0.5)  # 10 Hz: samples [25, 55) are new
    assert np.array_equal(out[:25], old[:25]) and np.array_equal(out[55:], old[55:])
    assert np.all(out[25:55] == -1)
    assert np.all(new == -1)  # not modified in place


# ---- files ---------------------------------------------------------------------------------


def test_output_dir_next_to_the_blend(tmp_path):
    blend = tmp_path / "shots" / "edit.blend"
    assert files.resolve_output_dir("//foley/", str(blend)) == str(tmp_path / "shots" / "foley")
    assert files.resolve_output_dir(str(tmp_path / "abs"), "") == str(tmp_path / "abs")


def test_output_dir_refusals(tmp_path):
    with pytest.raises(files.OutputFolderError, match="Save the .blend file first"):
        files.resolve_output_dir("//foley/", "")
    with pytest.raises(files.OutputFolderError, match="absolute"):
        files.resolve_output_dir("foley/", str(tmp_path / "a.blend"))
    temp = tmp_path / "blender_tmp"
    with pytest.raises(files.OutputFolderError, match="temporary"):
        files.resolve_output_dir(str(temp / "x"), "", blender_tempdir=str(temp))
    with pytest.raises(files.OutputFolderError):
        files.resolve_output_dir("  ", "")


def test_take_filenames_are_safe():
    assert files.take_filename("Clip 01.mp4", 3) == "Clip_01.mp4_take003.wav"
    assert files.take_filename("../../etc/passwd", 1) == "etc_passwd_take001.wav"
    assert files.take_filename("///", 12) == "strip_take012.wav"


def _names(n: int) -> str:
    return files.take_filename("Clip", n)


def test_write_new_file_never_overwrites(tmp_path):
    folder = tmp_path / "foley"
    folder.mkdir()
    (folder / "Clip_take001.wav").write_bytes(b"old 1")
    (folder / "Clip_take002.wav").write_bytes(b"old 2")
    path, n = files.write_new_file(str(folder), _names, 1, b"new")
    assert (os.path.basename(path), n) == ("Clip_take003.wav", 3)
    assert (folder / "Clip_take001.wav").read_bytes() == b"old 1"
    assert (folder / "Clip_take002.wav").read_bytes() == b"old 2"
    assert (folder / "Clip_take003.wav").read_bytes() == b"new"
    assert sorted(p.name for p in folder.iterdir()) == [
        "Clip_take001.wav", "Clip_take002.wav", "Clip_take003.wav"]  # no temp file left


def test_write_new_file_without_hard_links(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError("links not supported")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "Clip_take001.wav").write_bytes(b"old")
    path, n = files.write_new_file(str(tmp_path), _names, 1, b"new")
    assert n == 2 and open(path, "rb").read() == b"new"
    assert (tmp_path / "Clip_take001.wav").read_bytes() == b"old"
    assert len(list(tmp_path.iterdir())) == 2


def test_write_new_file_creates_the_folder(tmp_path):
    path, n = files.write_new_file(str(tmp_path / "a" / "b"), _names, 5, b"x")
    assert n == 5 and path.endswith("Clip_take005.wav")


# ---- sync review (foley_protocol.review) and WAV reading ------------------------------------


def test_offsets_are_to_the_nearest_motion_event():
    from foley_protocol.review import nearest_event_offset_s, offsets_s

    assert offsets_s([0.9, 1.04, 1.6, 3.0], [2.0, 1.0]) == pytest.approx([-0.1, 0.04, -0.4, 1.0])
    assert nearest_event_offset_s(1.5, [1.0, 2.0]) == 0.5  # a tie goes to the earlier event
    assert offsets_s([1.0], []) == [None]


@pytest.mark.parametrize("frames, flagged", [(0.0, False), (0.99, False), (1.0, False),
                                             (-1.0, False), (1.01, True), (-2.0, True)])
def test_flags_only_beyond_one_frame(frames, flagged):
    from foley_protocol.review import is_flagged, offset_frames

    fps = 30 / 1.001
    offset_s = float(np.float32(frames / fps))  # as stored in the .blend (float32)
    assert offset_frames(offset_s, fps) == pytest.approx(frames, abs=1e-5)
    assert is_flagged(offset_s, fps) is flagged
    assert is_flagged(None, fps) is False  # no motion event: nothing to be out of sync with

