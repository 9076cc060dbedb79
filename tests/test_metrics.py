"""AA-Align, AV-Align, onset F1: hand-computed cases, parity with the reference, `v2a eval`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from v2a_server.evaluation import metrics
from v2a_server.cli import main as v2a_main

REPO = Path(__file__).resolve().parents[1]
_CLIP_DIRS = [REPO.parent / "shared" / "data" / "vggsound", REPO / "shared" / "data" / "vggsound"]
CLIPS = next((d for d in _CLIP_DIRS if d.is_dir()), None)
needs_clips = pytest.mark.skipif(
    CLIPS is None,
    reason=f"real VGGSound clips not found (looked in {', '.join(map(str, _CLIP_DIRS))})",
)

# Clips with the ground-truth soundtrack muxed in; these two have the cheapest full-resolution flow.
AV_CLIPS = ("6pwhiA535q0_000166", "Ypt4OeuoDYo_000128")
# Clips of the reference demo: an .mp4 with a soundtrack plus the .wav published beside it.
DEMO_CLIPS = ("4dtlc2iiVjw_000013", "WguzItBThxY_000230")


def click_track(click_times_s, *, duration_s=3.0, sample_rate=16_000, seed=0) -> np.ndarray:
    """Mono float32 noise bursts (20 ms, decaying) at the given times over faint noise."""
    rng = np.random.default_rng(seed)
    y = 1e-5 * rng.standard_normal(int(duration_s * sample_rate))
    burst_len = int(0.02 * sample_rate)
    envelope = np.exp(-np.arange(burst_len) / (0.004 * sample_rate))
    for t in click_times_s:
        start = int(t * sample_rate)
        y[start : start + burst_len] += 0.8 * envelope * rng.standard_normal(burst_len)
    return y.astype(np.float32)


def decode_audio_to_wav(container: Path, wav: Path) -> Path:
    """Decode a clip's muxed soundtrack with PyAV into a float32 wav (lossless round trip)."""
    import av

    chunks = []
    with av.open(str(container)) as c:
        stream = c.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")
        for frame in c.decode(stream):
            chunks += [f.to_ndarray() for f in resampler.resample(frame)]
        chunks += [f.to_ndarray() for f in resampler.resample(None)]
        rate = stream.rate
    sf.write(str(wav), np.concatenate(chunks, axis=1).T, rate, subtype="FLOAT")
    return wav


# ---------------------------------------------------------------------------------------------
# Literal transcription of the specified algorithms (model.md §5), in the authors' loop style,
# kept independent of v2a_server.evaluation.metrics on purpose.
# ---------------------------------------------------------------------------------------------


def literal_detect_audio_peaks(audio_file):
    import librosa

    y, sr = librosa.load(audio_file)
    onset_env = librosa.onset.onset_strength(y=y, sr=sr)
    onset_frames = librosa.onset.onset_detect(onset_envelope=onset_env, sr=sr)
    return librosa.frames_to_time(onset_frames, sr=sr)


def literal_aa_iou(audio_peaks_gt, audio_peaks_gen, tim_win):
    intersection_length = 0
    for audio_peak_gen in audio_peaks_gen:
        for audio_peak_gt in audio_peaks_gt:
            if audio_peak_gt - tim_win < audio_peak_gen < audio_peak_gt + tim_win:
                intersection_length += 1
                break
    return intersection_length / (len(audio_peaks_gen) + len(audio_peaks_gt) - intersection_length)


def literal_extract_frames(video_path):
    import cv2

    frames = []
    cap = cv2.VideoCapture(video_path)
    frame_rate = cap.get(cv2.CAP_PROP_FPS)
    while True:
        ret, frame = cap.read()
        if not ret:
            break
        frames.append(frame)
    cap.release()
    return frames, frame_rate


def literal_compute_of(img1, img2):
    import cv2

    prev_gray = cv2.cvtColor(img1, cv2.COLOR_BGR2GRAY)
    curr_gray = cv2.cvtColor(img2, cv2.COLOR_BGR2GRAY)
    flow = cv2.calcOpticalFlowFarneback(prev_gray, curr_gray, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    magnitude = cv2.magnitude(flow[..., 0], flow[..., 1])
    return cv2.mean(magnitude)[0]


def literal_detect_video_peaks(frames, fps):
    flow_trajectory = [literal_compute_of(frames[0], frames[1])] + [
        literal_compute_of(frames[i - 1], frames[i]) for i in range(1, len(frames))
    ]
    video_peaks = []
    for i in range(1, len(flow_trajectory) - 1):
        if flow_trajectory[i - 1] < flow_trajectory[i] > flow_trajectory[i + 1]:
            if flow_trajectory[i] > 0.1:
                video_peaks.append(i / fps)
    return flow_trajectory, video_peaks


def literal_av_iou(audio_peaks, video_peaks, fps):
    intersection_length = 0
    for audio_peak in audio_peaks:
        for video_peak in video_peaks:
            if video_peak - 1 / fps < audio_peak < video_peak + 1 / fps:
                intersection_length += 1
                break
    return intersection_length / (len(audio_peaks) + len(video_peaks) - intersection_length)


def brute_force_max_matching(candidates, targets, tolerance_s) -> int:
    """Kuhn's augmenting paths over the strict window: the maximum matching size."""
    adjacency = [
        [j for j, t in enumerate(targets) if t - tolerance_s < c < t + tolerance_s]
        for c in candidates
    ]
    owner = [-1] * len(targets)

    def augment(i, seen):
        for j in adjacency[i]:
            if not seen[j]:
                seen[j] = True
                if owner[j] == -1 or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return sum(augment(i, [False] * len(targets)) for i in range(len(candidates)))


# ---------------------------------------------------------------------------------------------
# Hand-computed scores
# ---------------------------------------------------------------------------------------------


def test_aa_align_hand_computed():
    gt = [1.0, 2.0, 3.0]
    gen = [1.05, 2.2, 3.0625, 5.0]  # 1.05 and 3.0625 hit; 2.2 and 5.0 miss
    assert metrics.aa_align(gt, gen) == pytest.approx(2 / (4 + 3 - 2))
    assert metrics.aa_align_one_to_one(gt, gen) == pytest.approx(2 / (4 + 3 - 2))


def test_aa_align_reference_exceeds_one_and_one_to_one_does_not():
    gt = [0.5]
    gen = [0.45, 0.5, 0.55]  # all three within ±0.1 s of the single GT onset
    assert metrics.aa_align(gt, gen) == pytest.approx(3.0)  # 3 / (3 + 1 - 3)
    assert metrics.aa_align_one_to_one(gt, gen) == pytest.approx(1 / 3)  # 1 / (3 + 1 - 1)


def test_window_is_strict_for_align_and_inclusive_for_f1():
    # 0.25 and the times are exact in binary, so the boundary case is exact.
    assert metrics.aa_align([1.0], [1.25], tolerance_s=0.25) == 0.0
    assert metrics.aa_align_one_to_one([1.0], [1.25], tolerance_s=0.25) == 0.0
    assert metrics.onset_prf([1.0], [1.25], tolerance_s=0.25) == (1.0, 1.0, 1.0)


def test_one_to_one_is_optimal_not_greedy_by_distance():
    # Greedy-by-distance pairs 1.1↔1.09 first and leaves 1.0 alone; the optimum pairs both.
    gt = [1.09, 1.19]
    gen = [1.0, 1.1]
    assert len(metrics.match_events(gen, gt, 0.1)) == 2
    assert metrics.aa_align_one_to_one(gt, gen) == pytest.approx(1.0)


def test_empty_lists_are_defined():
    assert metrics.aa_align([], []) == 1.0
    assert metrics.aa_align_one_to_one([], []) == 1.0
    assert metrics.aa_align([1.0], []) == 0.0
    assert metrics.aa_align([], [1.0]) == 0.0
    assert metrics.av_align([], [], 25.0) == 1.0
    assert metrics.av_align_one_to_one([0.5], [], 25.0) == 0.0
    assert metrics.onset_prf([], []) == (1.0, 1.0, 1.0)
    assert metrics.onset_prf([1.0], []) == (0.0, 0.0, 0.0)
    assert metrics.onset_prf([], [1.0]) == (0.0, 0.0, 0.0)


def test_onset_prf_hand_computed():
    ref = [1.0, 2.0, 3.0]
    est = [1.0, 1.05, 2.04, 3.5, 7.0]  # 1.0↔1.0, 2.04↔2.0; 1.05 loses 1.0 to its twin
    scores = metrics.onset_prf(ref, est)
    assert scores.precision == pytest.approx(2 / 5)
    assert scores.recall == pytest.approx(2 / 3)
    assert scores.f1 == pytest.approx(2 * 0.4 * (2 / 3) / (0.4 + 2 / 3))
    assert metrics.onset_prf(ref, [10.0]) == (0.0, 0.0, 0.0)


def test_av_align_iou_core_hand_computed():
    fps = 25.0  # window ±0.04 s
    audio = [0.5, 1.0, 1.02]
    video = [0.52, 2.0]  # 0.5 hits 0.52; 1.0 and 1.02 have no event within 0.04 s
    assert metrics.av_align(audio, video, fps) == pytest.approx(1 / (3 + 2 - 1))
    assert metrics.av_align_one_to_one(audio, video, fps) == pytest.approx(1 / (3 + 2 - 1))
    crowd = [1.0, 1.01, 1.02]  # three onsets on one visual event
    assert metrics.av_align(crowd, [1.0], fps) == pytest.approx(3.0)
    assert metrics.av_align_one_to_one(crowd, [1.0], fps) == pytest.approx(1 / 3)


def test_flow_peaks_strict_maxima_above_threshold():
    energy = [0.5, 0.5, 0.05, 0.2, 0.1, 0.3, 0.3, 0.02, 0.1, 0.02, 0.4]
    # 3: 0.05 < 0.2 > 0.1 → event; 5/6: plateau, not strict; 8: 0.1 is not > 0.1; 10: last frame
    np.testing.assert_array_equal(metrics.flow_peaks(energy, 10.0), [0.3])
    assert metrics.flow_peaks([0.0, 1.0], 10.0).shape == (0,)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 60), max_size=8),
    st.lists(st.integers(0, 60), max_size=8),
)
def test_match_events_is_a_maximum_matching(cand_ticks, target_ticks):
    candidates = [t / 20 for t in cand_ticks]  # 0.05 s grid: many ties and boundary cases
    targets = [t / 20 for t in target_ticks]
    pairs = metrics.match_events(candidates, targets, 0.1)
    assert len({c for c, _ in pairs}) == len(pairs) == len({t for _, t in pairs})
    for c, t in pairs:
        assert targets[t] - 0.1 < candidates[c] < targets[t] + 0.1
    assert len(pairs) == brute_force_max_matching(candidates, targets, 0.1)
    one_to_one = metrics.aa_align_one_to_one(targets, candidates)
    assert 0.0 <= one_to_one <= 1.0
    assert one_to_one <= metrics.aa_align(targets, candidates) + 1e-12
    if candidates and targets:
        assert metrics.aa_align(targets, candidates) == pytest.approx(
            literal_aa_iou(targets, candidates, 0.1)
        )


# ---------------------------------------------------------------------------------------------
# Audio onsets and AA-Align on real (or synthesized) audio
# ---------------------------------------------------------------------------------------------


def _test_audio() -> tuple[np.ndarray, int]:
    if CLIPS is not None:
        y, sr = sf.read(str(CLIPS / f"{DEMO_CLIPS[0]}.wav"), dtype="float32")
        return y, sr
    return click_track([0.3, 0.8, 1.25, 1.9, 2.4]), 16_000


def test_identical_audio_scores_one_and_shifted_audio_lower():
    y, sr = _test_audio()
    onsets = metrics.detect_onsets_waveform(y, sr)
    assert len(onsets) >= 3
    assert metrics.aa_align(onsets, onsets) == 1.0
    assert metrics.aa_align_one_to_one(onsets, onsets) == 1.0
    assert metrics.onset_prf(onsets, onsets) == (1.0, 1.0, 1.0)
    shifted = metrics.detect_onsets_waveform(
        np.concatenate([np.zeros(int(0.3 * sr), np.float32), y]), sr
    )
    assert metrics.aa_align(onsets, shifted) < 0.9
    assert metrics.aa_align_one_to_one(onsets, shifted) < 0.9


def test_click_track_onsets_land_on_clicks(tmp_path):
    clicks = [0.3, 0.8, 1.25, 1.9, 2.4]
    y = click_track(clicks)
    onsets = metrics.detect_onsets_waveform(y, 16_000)
    assert metrics.onset_prf(clicks, onsets, tolerance_s=0.05) == (1.0, 1.0, 1.0)
    # Path and waveform entry points agree, for float and for 16-bit files.
    sf.write(str(tmp_path / "c.wav"), y, 16_000, subtype="PCM_16")
    pcm, _ = sf.read(str(tmp_path / "c.wav"), dtype="int16")
    np.testing.assert_array_equal(
        metrics.detect_onsets(tmp_path / "c.wav"), metrics.detect_onsets_waveform(pcm, 16_000)
    )
    # --length truncation happens after resampling, like the authors' y[:int(length * sr)].
    assert metrics.detect_onsets(tmp_path / "c.wav", length_s=1.0).max() < 1.0


@needs_clips
@pytest.mark.parametrize("clip", DEMO_CLIPS)
def test_onsets_and_aa_align_match_literal_reference(clip, tmp_path):
    wav = CLIPS / f"{clip}.wav"  # the demo's published audio, in the "generated" role
    gt_wav = decode_audio_to_wav(CLIPS / f"{clip}.mp4", tmp_path / "gt.wav")  # the mp4's soundtrack
    gen_lit, gt_lit = literal_detect_audio_peaks(str(wav)), literal_detect_audio_peaks(str(gt_wav))
    gen, gt = metrics.detect_onsets(wav), metrics.detect_onsets(gt_wav)
    np.testing.assert_allclose(gen, gen_lit, rtol=0, atol=1e-6)
    np.testing.assert_allclose(gt, gt_lit, rtol=0, atol=1e-6)
    # The waveform entry point and the mp4 itself (PyAV path) give the same onsets.
    y, sr = sf.read(str(wav), dtype="float32")
    np.testing.assert_array_equal(metrics.detect_onsets_waveform(y, sr), gen)
    np.testing.assert_array_equal(metrics.detect_onsets(CLIPS / f"{clip}.mp4"), gt)
    score = metrics.aa_align(gt, gen)
    assert abs(score - literal_aa_iou(gt_lit, gen_lit, 0.1)) <= 1e-6
    assert metrics.aa_align_one_to_one(gt, gen) <= score


# ---------------------------------------------------------------------------------------------
# Visual motion events and AV-Align
# ---------------------------------------------------------------------------------------------


def moving_square_frames(n_frames=12, jump_at=6, size=(48, 64)) -> np.ndarray:
    """RGB uint8 frames of a textured square that jumps 6 px at one frame and is still otherwise."""
    rng = np.random.default_rng(1)
    texture = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    frames = np.full((n_frames, *size, 3), 40, dtype=np.uint8)
    for i in range(n_frames):
        x = 20 + (6 if i >= jump_at else 0)
        frames[i, 16:32, x : x + 16] = texture
    return frames


def test_motion_events_synthetic_jump():
    import cv2

    frames = moving_square_frames()
    energy, times_s = metrics.motion_events(frames, 10.0)
    assert energy.shape == (12,)
    assert energy[0] == energy[1]
    assert int(np.argmax(energy)) == 6
    np.testing.assert_allclose(times_s, [0.6])
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
    # OpenCV's threaded Farneback is reproducible only to ~1e-13, hence allclose, not equality.
    np.testing.assert_allclose(metrics.motion_events(gray, 10.0).energy, energy, rtol=0, atol=1e-9)
    bgr = np.ascontiguousarray(frames[..., ::-1])
    np.testing.assert_allclose(
        metrics.motion_events(bgr, 10.0, channel_order="bgr").energy, energy, rtol=0, atol=1e-9
    )
    assert metrics.motion_events(frames[:1], 10.0).energy.tolist() == [0.0]
    with pytest.raises(TypeError, match="uint8"):
        metrics.motion_events(frames.astype(np.float32), 10.0)


@needs_clips
@pytest.mark.parametrize("clip", AV_CLIPS)
def test_av_align_matches_literal_reference(clip, tmp_path):
    video = CLIPS / f"{clip}.mp4"
    audio = decode_audio_to_wav(video, tmp_path / "gt.wav")
    frames, fps = literal_extract_frames(str(video))
    trajectory, video_peaks = literal_detect_video_peaks(frames, fps)
    audio_peaks = literal_detect_audio_peaks(str(audio))
    expected = literal_av_iou(audio_peaks, video_peaks, fps)

    motion = metrics.video_motion_events(video)
    assert motion.fps == fps
    np.testing.assert_allclose(motion.energy, trajectory, rtol=0, atol=1e-6)
    np.testing.assert_allclose(motion.times_s, video_peaks, rtol=0, atol=1e-6)
    score = metrics.av_align(metrics.detect_onsets(audio), motion.times_s, motion.fps)
    assert abs(score - expected) <= 1e-6
    assert metrics.av_align_one_to_one(audio_peaks, video_peaks, fps) <= score
    if clip != AV_CLIPS[0]:
        return  # one clip is enough for the array entry point (a third full-resolution flow pass)
    # The frame-array entry point (what the server runs on client frames) agrees too.
    array_events = metrics.motion_events(np.stack(frames), fps, channel_order="bgr")
    np.testing.assert_allclose(array_events.energy, motion.energy, rtol=0, atol=1e-9)


def test_missing_and_unreadable_inputs_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        metrics.detect_onsets(tmp_path / "nope.wav")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match="junk.mp4"):
        metrics.video_motion_events(junk)
    with pytest.raises(ValueError, match="junk.mp4"):
        metrics.detect_onsets(junk)


# ---------------------------------------------------------------------------------------------
# `v2a eval`
# ---------------------------------------------------------------------------------------------


def _write_video(path: Path, frames_rgb: np.ndarray, fps: float) -> Path:
    import cv2

    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frames_rgb.shape[2:0:-1]
    )
    assert writer.isOpened(), "OpenCV cannot write MJPG .avi here"
    for frame in frames_rgb:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path


@pytest.fixture
def eval_tree(tmp_path):
    for name in ("gen", "ref", "vid"):
        (tmp_path / name).mkdir()
    clicks = [0.3, 0.8, 1.25, 1.9, 2.4]
    sf.write(str(tmp_path / "ref" / "a.wav"), click_track(clicks), 16_000)
    sf.write(str(tmp_path / "gen" / "a.wav"), click_track(clicks, seed=5), 16_000)
    sf.write(str(tmp_path / "ref" / "b.wav"), click_track([0.5, 1.5]), 16_000)
    sf.write(str(tmp_path / "gen" / "b.wav"), click_track([1.0, 2.0, 2.5]), 16_000)
    frames = moving_square_frames(n_frames=30, jump_at=8)
    _write_video(tmp_path / "vid" / "a.avi", frames, 10.0)
    _write_video(tmp_path / "vid" / "b.avi", frames, 10.0)
    return tmp_path


def test_eval_folder_mode_writes_json(eval_tree, capsys):
    out = eval_tree / "report.json"
    rc = v2a_main(
        ["eval", "--generated", str(eval_tree / "gen"), "--reference", str(eval_tree / "ref"),
         "--videos", str(eval_tree / "vid"), "--json", str(out), "--quiet"]
    )  # fmt: skip
    assert rc == 0
    report = json.loads(out.read_text())
    files = {f["id"]: f for f in report["files"]}
    assert sorted(files) == ["a", "b"]
    a, b = files["a"]["metrics"], files["b"]["metrics"]
    assert a["aa_align"] == 1.0 and a["onset_f1"] == 1.0 and a["n_onsets_generated"] == 5
    assert b["aa_align"] == 0.0 and b["onset_precision"] == 0.0
    for m in (a, b):
        assert {
            "av_align",
            "av_align_one_to_one",
            "av_align_reference",
            "n_video_events",
            "fps",
        } <= set(m)
        assert m["fps"] == pytest.approx(10.0) and m["n_video_events"] == 1
    assert report["mean"]["aa_align"] == pytest.approx(0.5)
    assert report["count"]["aa_align"] == 2
    table = capsys.readouterr().out
    assert "MEAN" in table and "AA 1:1" in table and "0.5000" in table


def test_eval_manifest_partial_fields(eval_tree, capsys):
    manifest = eval_tree / "m.jsonl"
    lines = [
        {"id": "both", "generated_audio": "gen/a.wav", "reference_audio": "ref/a.wav"},
        {"generated_audio": "gen/b.wav", "video": "vid/b.avi"},
        {
            "reference_audio": str(eval_tree / "ref" / "b.wav"),
            "video": "vid/b.avi",
            "generated_audio": None,
        },
    ]
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert v2a_main(["eval", "--manifest", str(manifest), "--stdout", "json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    both, gen_video, ref_video = (f["metrics"] for f in report["files"])
    assert [f["id"] for f in report["files"]] == ["both", "b", "b"]
    assert both["aa_align"] == 1.0 and "av_align" not in both
    assert "aa_align" not in gen_video and "av_align" in gen_video
    assert "av_align" not in ref_video and "av_align_reference" in ref_video
    assert report["count"]["aa_align"] == 1 and report["count"]["av_align"] == 1


def test_eval_errors_name_the_missing_file(eval_tree, capsys):
    (eval_tree / "gen" / "c.wav").write_bytes((eval_tree / "gen" / "a.wav").read_bytes())
    rc = v2a_main(
        [
            "eval",
            "--generated",
            str(eval_tree / "gen"),
            "--reference",
            str(eval_tree / "ref"),
            "--quiet",
        ]
    )
    assert rc == 2
    assert "c.wav" in capsys.readouterr().err
    manifest = eval_tree / "m.jsonl"
    manifest.write_text(
        json.dumps({"generated_audio": "gen/a.wav", "reference_audio": "ref/zzz.wav"}) + "\n"
    )
    assert v2a_main(["eval", "--manifest", str(manifest), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "zzz.wav" in err and "m.jsonl:1" in err
    (eval_tree / "gen" / "bad.wav").write_bytes(b"RIFF nonsense")
    manifest.write_text(
        json.dumps({"generated_audio": "gen/bad.wav", "reference_audio": "ref/a.wav"}) + "\n"
    )
    assert v2a_main(["eval", "--manifest", str(manifest), "--quiet"]) == 2
    assert "bad.wav" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Gated onsets: an onset needs audible energy around it (issue 15.5)
# ---------------------------------------------------------------------------------------------


def noise_floor(duration_s=4.0, dbfs=-60.0, sample_rate=16_000, seed=3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (10 ** (dbfs / 20) * rng.standard_normal(int(duration_s * sample_rate))).astype(
        np.float32)


def test_a_noise_floor_has_librosa_onsets_but_no_gated_ones():
    noise = noise_floor()
    found = metrics.detect_onsets_waveform(noise, 16_000)
    assert len(found) >= 10  # the normalised detector finds "onsets" in -60 dBFS noise
    assert not metrics.gate_onsets(found, noise, 16_000).any()
    clicks = click_track([0.3, 0.8, 1.25, 1.9, 2.4], duration_s=4.0) + noise
    found = metrics.detect_onsets_waveform(clicks, 16_000)
    kept = found[metrics.gate_onsets(found, clicks, 16_000)]
    assert metrics.onset_prf([0.3, 0.8, 1.25, 1.9, 2.4], kept, tolerance_s=0.05) == (1, 1, 1)
    # the review's onsets: the same gate, strengths and envelope carried along
    whole = metrics.audio_onsets_waveform(clicks, 16_000)
    gated = metrics.gated_audio_onsets(whole, clicks, 16_000)
    np.testing.assert_array_equal(gated.times_s, kept)
    assert len(gated.strengths) == len(kept) and gated.envelope is whole.envelope
    assert len(metrics.gated_audio_onsets(metrics.audio_onsets_waveform(noise, 16_000), noise,
                                          16_000).times_s) == 0


def test_gated_scores_rank_real_audio_above_a_noise_floor_and_silence(tmp_path):
    """The baselines: against a real (click) soundtrack, a -60 dBFS take and digital silence
    score 0 gated; the same soundtrack scores 1; the reference-exact scores stay as they were."""
    clicks = [0.3, 0.8, 1.25, 1.9, 2.4, 3.1]
    real = click_track(clicks, duration_s=4.0)
    sf.write(str(tmp_path / "ref.wav"), real, 16_000, subtype="FLOAT")
    takes = {"real": real, "noise": noise_floor(), "silence": np.zeros(4 * 16_000, np.float32),
             "other": click_track([0.5, 1.5, 2.7], duration_s=4.0, seed=9)}
    scores = {}
    for name, take in takes.items():
        sf.write(str(tmp_path / f"{name}.wav"), take, 16_000, subtype="FLOAT")
        scores[name] = metrics.evaluate_clip(generated_audio=tmp_path / f"{name}.wav",
                                             reference_audio=tmp_path / "ref.wav")
    noise, real_s = scores["noise"], scores["real"]
    assert noise["n_onsets_generated"] >= 10 and noise["n_onsets_generated_gated"] == 0
    assert noise["aa_align"] > 0  # level-blind: noise "onsets" hit real ones by chance
    for name in ("noise", "silence"):
        assert scores[name]["aa_align_gated"] == 0.0 and scores[name]["onset_f1_gated"] == 0.0
    assert real_s["aa_align_gated"] == 1.0 and real_s["onset_f1_gated"] == 1.0
    assert 0 <= scores["other"]["aa_align_gated"] < real_s["aa_align_gated"]
    for key in ("aa_align", "aa_align_one_to_one", "onset_f1"):  # the reference-exact ones
        ref = metrics.detect_onsets(tmp_path / "ref.wav")
        gen = metrics.detect_onsets(tmp_path / "noise.wav")
        exact = {"aa_align": metrics.aa_align(ref, gen),
                 "aa_align_one_to_one": metrics.aa_align_one_to_one(ref, gen),
                 "onset_f1": metrics.onset_prf(ref, gen).f1}
        assert noise[key] == exact[key]


def test_eval_reports_gated_scores_beside_the_reference_ones(eval_tree, capsys):
    noise_dir = eval_tree / "noise"
    noise_dir.mkdir()
    sf.write(str(noise_dir / "a.wav"), noise_floor(3.0), 16_000, subtype="FLOAT")
    rc = v2a_main(["eval", "--generated", str(noise_dir), "--reference", str(eval_tree / "ref"),
                   "--videos", str(eval_tree / "vid"), "--skip-missing", "--quiet"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "AA g" in table and "#on gen g" in table and "-50 dBFS" in table
    out = eval_tree / "r.json"
    assert v2a_main(["eval", "--generated", str(noise_dir), "--reference", str(eval_tree / "ref"),
                     "--videos", str(eval_tree / "vid"), "--json", str(out), "--quiet",
                     "--stdout", "none"]) == 0
    m = json.loads(out.read_text())["files"][0]["metrics"]
    assert m["aa_align_gated"] == 0.0 and m["av_align_gated"] == 0.0
    assert m["n_onsets_generated"] > m["n_onsets_generated_gated"] == 0
    assert m["av_align_reference_gated"] == m["av_align_reference"]  # clicks are all audible
