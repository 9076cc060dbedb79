"""Synthetic audio-visual world: determinism, audio/event alignment, silence, visible contacts, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from v2a_server.synth import make_clip, read_manifest, split_for_seed, write_dataset
from v2a_server.synth.dataset import SPLITS, clip_seeds, write_wav
from v2a_server.synth.render import LABEL_FLOOR, Camera, body_render_times, render_frames
from v2a_server.synth.scene import SOUND_ACTIONS, _contact_dx_m

DURATION_S = 3.0  # short clips keep the file fast
ONSET_TOLERANCE_S = 0.05
ISOLATION_S = 0.1


def _librosa_onsets(tmp_path: Path, clip) -> np.ndarray:
    """Onsets as the project's metrics see them: wav on disk, librosa.load defaults (22,050 Hz)."""
    import librosa

    path = tmp_path / f"clip_{clip.seed}.wav"
    write_wav(path, clip.audio, clip.sample_rate)
    y, sr = librosa.load(path)
    return librosa.onset.onset_detect(y=y, sr=sr, units="time")


def _event_dicts(clip) -> list[dict]:
    return [e.to_dict() for e in clip.events]


def test_same_seed_same_clip_different_seed_different_clip():
    a = make_clip(7, duration_s=DURATION_S)
    b = make_clip(7, duration_s=DURATION_S)
    c = make_clip(8, duration_s=DURATION_S)
    assert a.frames.shape == (75, 128, 128, 3) and a.frames.dtype == np.uint8
    assert a.audio.shape == (48000,) and a.audio.dtype == np.float32
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert _event_dicts(a) == _event_dicts(b) and a.caption == b.caption
    assert [s.to_dict() for s in a.silent] == [s.to_dict() for s in b.silent]
    assert not np.array_equal(a.frames, c.frames)
    assert not np.array_equal(a.audio, c.audio)
    assert _event_dicts(a) != _event_dicts(c)


def test_event_times_are_not_frame_aligned_and_have_fields():
    clip = make_clip(3, duration_s=DURATION_S)
    times = clip.event_times_s
    assert times.size > 0 and np.all(np.diff(times) >= 0)
    assert np.all((times > 0) & (times < DURATION_S))
    off_grid = np.abs(times * clip.fps - np.round(times * clip.fps))
    assert np.any(off_grid > 0.05), "physics-driven times should fall between frames"
    row = clip.events[0].to_dict()
    assert {"time_s", "material", "object", "action", "strength", "surface"} <= set(row)
    assert all(0.0 <= e.strength <= 1.0 for e in clip.events)


def test_sound_starts_at_the_exact_event_sample():
    clip = make_clip(5, duration_s=DURATION_S, noise_floor_db=-200.0)
    first = clip.events[0].time_s
    n0 = int(np.ceil(first * clip.sample_rate - 1e-9))
    assert np.all(clip.audio[:n0] == 0.0), "nothing may sound before the first event"
    assert np.max(np.abs(clip.audio[n0 : n0 + 8])) > 0.01, "the attack must be sharp"


def test_librosa_onsets_line_up_with_events(tmp_path):
    n_detected = n_matched = n_isolated = n_found = 0
    deviations = []
    for seed in range(8):
        clip = make_clip(seed, duration_s=DURATION_S)
        onsets = _librosa_onsets(tmp_path, clip)
        events = clip.event_times_s
        assert events.size, f"seed {seed} has no sounding event"
        diff = onsets[:, None] - events[None, :]
        nearest = diff[np.arange(onsets.size), np.abs(diff).argmin(axis=1)]
        n_detected += onsets.size
        n_matched += int(np.sum(np.abs(nearest) <= ONSET_TOLERANCE_S))
        deviations += list(nearest)
        for i, t in enumerate(events):
            if np.all(np.abs(np.delete(events, i) - t) > ISOLATION_S):
                n_isolated += 1
                n_found += int(onsets.size > 0 and np.min(np.abs(onsets - t)) <= ONSET_TOLERANCE_S)
    assert (
        n_matched == n_detected
    ), f"{n_detected - n_matched} onsets match no event (deviations {deviations})"
    assert n_isolated >= 20
    assert n_found / n_isolated >= 0.9, f"only {n_found}/{n_isolated} isolated events detected"
    assert np.max(np.abs(deviations)) <= ONSET_TOLERANCE_S


def test_silent_motion_makes_no_sound(tmp_path):
    import librosa

    clip = make_clip(11, duration_s=DURATION_S, silent_only=True)
    kinds = {s.kind for s in clip.silent}
    assert not clip.events and {"pan", "flicker"} <= kinds and kinds & {"slide", "drift"}
    assert clip.caption.startswith("silence")
    assert np.mean(np.abs(np.diff(clip.frames.astype(np.int16), axis=0))) > 0.5, "the picture must move"

    # Without the noise floor the soundtrack is digital silence: no onset at all.
    quiet = make_clip(11, duration_s=DURATION_S, silent_only=True, noise_floor_db=-200.0)
    np.testing.assert_array_equal(quiet.frames, clip.frames)
    assert np.all(quiet.audio == 0.0)
    assert _librosa_onsets(tmp_path, quiet).size == 0

    # With it, the audio is just the floor (-60 dBFS RMS) and an absolute-threshold detector finds
    # nothing, while the same detector finds the impacts of a sounding clip.
    rms_db = 20 * np.log10(np.sqrt(np.mean(clip.audio[clip.sample_rate :] ** 2)))
    assert abs(rms_db - (-60.0)) < 1.0

    def absolute_onsets(c) -> np.ndarray:
        path = tmp_path / f"abs_{c.seed}_{len(c.events)}.wav"
        write_wav(path, c.audio, c.sample_rate)
        y, sr = librosa.load(path)
        env = librosa.onset.onset_strength(y=y, sr=sr)  # mean positive dB rise per mel band
        return librosa.onset.onset_detect(onset_envelope=env, sr=sr, units="time", normalize=False, delta=3.0)

    assert absolute_onsets(clip).size == 0
    loud = make_clip(11, duration_s=DURATION_S)
    found = absolute_onsets(loud)
    assert found.size >= 1
    assert np.all(np.min(np.abs(found[:, None] - loud.event_times_s[None, :]), axis=1) <= ONSET_TOLERANCE_S)


def _pixel_gap(labels: np.ndarray, a: int, b: int) -> int:
    """Chebyshev distance in pixels between the nearest pixels of labels a and b (0 = overlap)."""
    pa = np.argwhere(labels == a)
    pb = np.argwhere(labels == b)
    assert pa.size and pb.size
    return int(np.min(np.max(np.abs(pa[:, None, :] - pb[None, :, :]), axis=2)))


@pytest.mark.parametrize("action", SOUND_ACTIONS)
def test_impacts_are_visible_at_the_nearest_frame(action):
    clip = make_clip(21, duration_s=DURATION_S, actions=(action,), flicker=False)
    scene = clip.scene
    camera = Camera.for_size(clip.frames.shape[1])
    frames, labels = render_frames(scene, clip.fps, clip.frames.shape[1], return_labels=True)
    np.testing.assert_array_equal(frames, clip.frames)
    times = np.arange(clip.frames.shape[0]) / clip.fps
    cam_px = np.round(scene.camera.positions(times)[:, 0] * camera.px_per_m)
    assert clip.events
    for event in clip.events:
        k = int(round(event.time_s * clip.fps))
        body = event.body
        # Geometry: the scene state at the event time is a contact.
        pos = body.trajectory.positions([event.time_s])[0]
        assert body_render_times(body, times, clip.fps)[k] == event.time_s
        if event.other is None:
            assert abs(pos[1]) < 1e-9, f"{action}: body bottom {pos[1]} m above the floor at contact"
            # Pixels: the body's own colour sits right on the floor's top row in frame k.
            col = int(np.floor(pos[0] * camera.px_per_m - cam_px[k]))
            assert labels[k, camera.floor_row - 1, col] == body.body_id
            assert labels[k, camera.floor_row, col] == LABEL_FLOOR
            assert tuple(clip.frames[k, camera.floor_row - 1, col]) == body.colour_rgb
        else:
            other = event.other
            opos = other.trajectory.positions([event.time_s])[0]
            if action == "hit":
                assert abs(pos[1] - (opos[1] + other.height_m)) < 1e-9 and abs(pos[0] - opos[0]) < 1e-9
                assert _pixel_gap(labels[k], body.body_id, other.body_id) <= 1
            else:
                assert abs(abs(opos[0] - pos[0]) - _contact_dx_m(body, other)) < 1e-9
                # Two round outlines touch at a single point: allow one pixel of rasterisation gap.
                assert _pixel_gap(labels[k], body.body_id, other.body_id) <= 2


def test_captions_name_object_action_and_material():
    bounce = make_clip(2, duration_s=DURATION_S, actions=("bounce",), floor="wood")
    assert "bouncing on a wooden floor" in bounce.caption
    assert bounce.events[0].body.material in bounce.caption
    drop = make_clip(2, duration_s=DURATION_S, actions=("drop",), floor="ceramic")
    assert "dropped onto a ceramic tile floor" in drop.caption
    steps = make_clip(2, duration_s=DURATION_S, actions=("step",), floor="gravel")
    assert steps.caption == "footsteps on gravel" and {e.action for e in steps.events} == {"step"}


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="seed"):
        make_clip(-1)
    with pytest.raises(ValueError, match="fps"):
        make_clip(0, fps=0.5)
    with pytest.raises(ValueError, match="lane units"):
        make_clip(0, actions=("collide", "step", "hit"))


def test_splits_are_deterministic_and_independent_of_other_counts():
    seeds = range(4000)
    splits = [split_for_seed(s) for s in seeds]
    assert splits == [split_for_seed(s) for s in seeds]
    share = {s: splits.count(s) / len(splits) for s in SPLITS}
    assert 0.77 < share["train"] < 0.83 and 0.08 < share["val"] < 0.12 and 0.08 < share["test"] < 0.12
    alone = [seed for _, _, seed in clip_seeds(3, {"test": 5})]
    mixed = [seed for split, _, seed in clip_seeds(3, {"train": 30, "test": 5}) if split == "test"]
    assert alone == mixed and all(split_for_seed(s) == "test" for s in alone)


def test_dataset_files_decode_and_manifest_is_complete(tmp_path):
    import av
    import soundfile as sf

    out = tmp_path / "ds"
    manifest = write_dataset(
        out, {"train": 2, "val": 1, "test": 1}, base_seed=4, duration_s=2.0, fps=12.5, size_px=64
    )
    assert manifest == out / "manifest.jsonl"
    rows = read_manifest(manifest)
    assert sorted(r["split"] for r in rows) == ["test", "train", "train", "val"]
    assert [r["seed"] for r in rows] == sorted(r["seed"] for r in rows)  # seed order, whatever the split
    for row in rows:
        for key in (
            "id",
            "split",
            "seed",
            "caption",
            "video",
            "audio",
            "duration_s",
            "fps",
            "events",
            "silent_events",
        ):
            assert key in row, key
        assert row["split"] == split_for_seed(row["seed"])
        video, audio = out / row["video"], out / row["audio"]
        assert video.is_file() and audio.is_file() and row["video"].startswith(row["split"] + "/")
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            assert float(stream.average_rate) == pytest.approx(12.5)
            assert stream.codec_context.name in ("h264", "mpeg4")
        assert len(decoded) == 25 == row["num_frames"]
        assert decoded[0].shape == (64, 64, 3)
        # The encoded pictures are the generated ones (lossy but close).
        clip = make_clip(row["seed"], duration_s=2.0, fps=12.5, size_px=64)
        assert np.mean(np.abs(np.stack(decoded).astype(np.float32) - clip.frames)) < 6.0
        data, sr = sf.read(audio)
        assert sr == 16000 and data.shape == (32000,)
        np.testing.assert_allclose(data, clip.audio, atol=1.0 / 32768 + 1e-6)
        assert row["events"] == [e.to_dict() for e in clip.events]
        assert all({"time_s", "material", "object", "action", "strength"} <= set(e) for e in row["events"])
        json.dumps(row)  # plain JSON types only


def test_cli_writes_a_dataset(tmp_path):
    from v2a_server.cli import main

    out = tmp_path / "cli"
    assert (
        main(["synth", "--out", str(out), "--test", "1", "--duration", "1.5", "--size", "32", "--fps", "8"])
        == 0
    )
    rows = read_manifest(out / "manifest.jsonl")
    assert len(rows) == 1 and rows[0]["split"] == "test" and rows[0]["num_frames"] == 12
    assert (out / rows[0]["video"]).is_file()
