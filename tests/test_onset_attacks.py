"""Onset markers on the audible attack (issue 15.3): the attack definition, markers moved onto
it, the model's onset latency, and the default model's markers against its own audio."""

from __future__ import annotations

import json

import numpy as np
import pytest

from v2a_server.pipelines import attacks
from v2a_server.pipelines.attacks import find_attacks, refine_onsets

SR = 16_000


def floor(duration_s: float = 2.0, dbfs: float = -60.0, seed: int = 0) -> np.ndarray:
    """White noise at ``dbfs`` RMS: the default model's noise floor."""
    rng = np.random.default_rng(seed)
    return (10 ** (dbfs / 20) * rng.standard_normal(int(duration_s * SR))).astype(np.float32)


def hit(x: np.ndarray, time_s: float, peak: float = 0.3, freq_hz: float = 700.0,
        decay_s: float = 0.04) -> np.ndarray:
    """``x`` plus a damped sine starting exactly at ``time_s`` (an impact)."""
    n0 = int(np.ceil(time_s * SR))
    tau = np.arange(len(x) - n0) / SR
    x = x.copy()
    x[n0:] += (peak * np.exp(-tau / decay_s) * np.sin(2 * np.pi * freq_hz * tau)).astype(x.dtype)
    return x


# ---- the attack --------------------------------------------------------------------------------


def test_an_impact_has_its_attack_within_two_ms_of_its_start():
    x = hit(hit(floor(), 0.5), 1.3, peak=0.05)
    found = find_attacks(x, SR)
    assert len(found.times_s) == 2
    np.testing.assert_allclose(found.times_s, [0.5, 1.3], atol=0.002)
    assert (found.levels_dbfs >= attacks.AUDIBLE_DBFS).all()


def test_the_synthetic_worlds_impacts_are_found_where_the_physics_put_them():
    """The true soundtracks of the synthetic world: each attack pairs with a true impact time
    (the generator starts every impact on its sample), within ~1 ms."""
    from v2a_server.evaluation.metrics import match_events
    from v2a_server.synth.clip import make_clip

    offsets, n_attacks = [], 0
    for seed in (100, 103, 104, 105):
        clip = make_clip(seed)
        found = find_attacks(clip.audio, clip.sample_rate).times_s
        pairs = match_events(found, clip.event_times_s, 0.05, inclusive=True)
        offsets += [found[i] - clip.event_times_s[j] for i, j in pairs]
        n_attacks += len(found)
    assert n_attacks >= 15 and len(offsets) >= 0.9 * n_attacks
    assert np.median(np.abs(offsets)) < 0.002


@pytest.mark.parametrize("dbfs", [-60.0, -40.0])
def test_steady_noise_has_no_attack_however_loud(dbfs):
    # -40 dBFS passes the level test: only the rise tells a sound from a steady noise
    assert len(find_attacks(floor(4.0, dbfs), SR).times_s) == 0


def test_a_quiet_impact_is_not_audible():
    x = hit(floor(), 0.5, peak=0.002)  # ~ -62 dBFS over its 100 ms
    assert len(find_attacks(x, SR).times_s) == 0
    assert len(find_attacks(hit(floor(), 0.5, peak=0.05), SR).times_s) == 1


def test_a_sound_playing_at_the_first_sample_has_no_attack_there():
    x = hit(floor(), 0.0)  # an impact cut at the start: its decay fills the first frames
    assert len(find_attacks(x, SR).times_s) == 0
    tone = floor() + 0.1 * np.sin(2 * np.pi * 300 * np.arange(2 * SR) / SR).astype(np.float32)
    assert len(find_attacks(tone, SR).times_s) == 0
    started = hit(floor(), 0.05)  # a sound that starts in the first frames does
    np.testing.assert_allclose(find_attacks(started, SR).times_s, [0.05], atol=0.002)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="sample_rate"):
        find_attacks(floor(), 0)
    with pytest.raises(ValueError, match="waveform"):
        find_attacks(np.zeros((2, 2, 2)), SR)
    assert len(find_attacks(np.zeros(10, np.float32), SR).times_s) == 0


# ---- markers onto attacks ----------------------------------------------------------------------


def test_late_markers_move_onto_the_attack_and_silent_ones_go():
    x = hit(hit(floor(), 0.5), 1.3)
    times, probs = refine_onsets([0.52, 0.9, 1.33], [0.9, 0.8, 0.7], x, SR)
    np.testing.assert_allclose(times, [0.5, 1.3], atol=0.002)
    assert probs == [0.9, 0.7]  # each keeps its own probability


def test_no_marker_in_the_first_frames_unless_a_sound_starts_there():
    """Real footage: the onset head fires on the first latent frame (0.02 s) of most clips."""
    for take in (floor(), hit(floor(), 0.0), floor(dbfs=-30.0)):
        assert refine_onsets([0.02], [0.9], take, SR) == ([], [])
    times, _ = refine_onsets([0.02], [0.9], hit(floor(), 0.03), SR)
    np.testing.assert_allclose(times, [0.03], atol=0.002)


def test_two_markers_on_one_sound_keep_one():
    times, probs = refine_onsets([0.51, 0.55], [0.6, 0.9], hit(floor(), 0.5), SR)
    np.testing.assert_allclose(times, [0.5], atol=0.002)
    assert probs == [0.6]  # the nearer marker


def test_a_hit_inside_a_sustained_sound_keeps_its_marker_in_place():
    rng = np.random.default_rng(1)
    x = floor()
    x[: SR] += (0.03 * rng.standard_normal(SR)).astype(np.float32)  # a roll, steady
    bump = np.zeros_like(x)
    bump[int(0.6 * SR):int(0.65 * SR)] = 0.04 * rng.standard_normal(int(0.05 * SR))
    times, _ = refine_onsets([0.61], [0.8], x + bump, SR)  # +4 dB: no attack, a swell
    assert times == [0.61]
    assert refine_onsets([0.61], [0.8], x, SR) == ([], [])  # steady: nothing to mark


def test_markers_shared_by_takes_go_to_the_median_of_their_attacks():
    takes = np.stack([hit(floor(seed=s), t) for s, t in enumerate((0.50, 0.51, 0.53))])
    times, _ = refine_onsets([0.54], [1.0], takes, SR)
    np.testing.assert_allclose(times, [0.51], atol=0.002)
    one_heard = np.stack([floor(seed=5), hit(floor(seed=6), 0.5)])
    np.testing.assert_allclose(refine_onsets([0.53], [1.0], one_heard, SR)[0], [0.5], atol=0.002)


def test_the_level_line_is_the_near_silent_one():
    """An onset is audible by the same test as a take that is not near-silent (100 ms, -50
    dBFS): a near-silent take has no audible onset, whatever librosa finds in it."""
    from v2a_server.serving import result

    assert attacks.AUDIBLE_DBFS == result.NEAR_SILENT_DBFS
    assert attacks.LEVEL_WINDOW_S == result.LEVEL_WINDOW_S


# ---- the pipeline applies the model's latency, then the attacks ----------------------------


def test_the_pipeline_applies_its_models_onset_latency_then_the_attacks(tiny_model_dir, tmp_path):
    from v2a_server.model_store import load_pipeline
    from v2a_server.pipelines.onsets import pick_onsets

    assert load_pipeline(tiny_model_dir).config.onset_latency_s == 0.0
    late = tmp_path / "late"
    load_pipeline(tiny_model_dir).save_pretrained(str(late))
    index = late / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "onset_latency_s": 0.03}))
    pipe = load_pipeline(late)
    assert pipe.config.onset_latency_s == 0.03
    frames = np.random.default_rng(0).integers(0, 255, (25, 32, 32, 3), dtype=np.uint8)
    kwargs = {"frames": frames, "frames_fps": 25.0, "duration_s": 1.0, "seed": 0,
              "num_inference_steps": 2,
              "onset_threshold": 0.0}  # threshold 0: the random head gives peaks to move
    head = pipe(**kwargs, onsets_on_attacks=False)
    raw, strengths = pick_onsets(head.onset_probs, 1 / pipe.latent_fps, 0.0)
    assert raw, "the tiny head should give at least one peak"
    np.testing.assert_allclose(head.onset_times_s, np.maximum(np.array(raw) - 0.03, 0.0))
    on_attacks = pipe(**kwargs, onsets_on_attacks=True)
    assert (on_attacks.onset_times_s, on_attacks.onset_strengths) == refine_onsets(
        head.onset_times_s, strengths, on_attacks.audio, on_attacks.sample_rate)
    # The tiny test model makes digital silence, so its folder keeps the head's peaks ...
    assert not pipe.config.onsets_on_attacks
    assert pipe(**kwargs).onset_times_s == head.onset_times_s
    assert on_attacks.onset_times_s == []  # (where the attacks would take every marker)
    # ... while a model folder that says nothing moves them onto the attacks.
    data = {k: v for k, v in json.loads(index.read_text()).items() if k != "onsets_on_attacks"}
    index.write_text(json.dumps(data))
    plain = load_pipeline(late)
    assert plain.config.onsets_on_attacks
    assert plain(**kwargs).onset_times_s == on_attacks.onset_times_s


def test_the_default_model_stores_a_measured_onset_latency():
    from v2a_server.model_store import DEFAULT_MODEL_DIR

    index = DEFAULT_MODEL_DIR / "model_index.json"
    if not index.is_file():
        pytest.skip("the embedded default model is not installed")
    latency = json.loads(index.read_text())["onset_latency_s"]
    assert 0.005 <= latency <= 0.040  # librosa's label latency (bench/onset_latency.py)


def test_marker_hints_go_to_the_frame_the_model_learned_them_at(tiny_model_dir, tmp_path):
    """A marker sits on the attack; the model learned hints at its onset labels, its latency
    later: a hint at t marks the latent frame holding t + latency (none: t's own frame)."""
    from v2a_server.model_store import load_pipeline
    from v2a_server.serving.payload import prepare_inputs

    late = tmp_path / "late"
    load_pipeline(tiny_model_dir).save_pretrained(str(late))
    index = late / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "onset_latency_s": 0.019}))
    frames = np.zeros((50, 32, 32, 3), np.uint8)
    body = {"duration_s": 2.0, "frames": {"fps": 25.0}, "caption": "a knock",
            "onset_hints_s": [0.03, 1.0]}
    hints = {name: np.flatnonzero(prepare_inputs(load_pipeline(folder), body, [], frames)
                                  ["onset_hints"]).tolist()
             for name, folder in (("plain", tiny_model_dir), ("late", late))}
    assert hints == {"plain": [0, 25], "late": [1, 25]}  # 0.049 s is in frame 1, 1.019 in 25


# ---- the default model on held-out synthetic clips ------------------------------------------


@pytest.fixture(scope="module")
def default_model_takes():
    """Per held-out test clip: the default model's take, its head's raw marker times, the
    markers the pipeline returned and the clip's true impact times."""
    import torch

    from v2a_server.model_store import DEFAULT_MODEL_DIR, load_pipeline
    from v2a_server.pipelines.onsets import pick_onsets
    from v2a_server.synth.clip import make_clip
    from v2a_server.synth.dataset import clip_seeds

    if not (DEFAULT_MODEL_DIR / "model_index.json").is_file():
        pytest.skip("the embedded default model is not installed")
    torch.set_num_threads(2)
    pipe = load_pipeline("default")
    out = []
    for _, index, seed in clip_seeds(0, {"test": 4}):
        clip = make_clip(seed)
        result = pipe(frames=clip.frames, frames_fps=clip.fps, duration_s=clip.duration_s,
                      caption=clip.caption, seed=index)
        raw, _ = pick_onsets(result.onset_probs, 1 / pipe.latent_fps)
        out.append({"audio": result.audio[0], "raw": np.asarray(raw), "markers":
                    np.asarray(result.onset_times_s), "impacts": clip.event_times_s,
                    "latency": pipe.config.onset_latency_s})
    return out


def _offsets(markers, targets):
    from v2a_server.evaluation.metrics import match_events

    return [markers[i] - targets[j] for i, j in match_events(markers, targets, 0.1,
                                                             inclusive=True)]


def test_the_default_models_markers_sit_on_the_attacks_of_its_takes(default_model_takes):
    raw, calibrated, returned, kept = [], [], [], 0
    for take in default_model_takes:
        found = find_attacks(take["audio"], SR).times_s
        raw += _offsets(take["raw"], found)
        calibrated += _offsets(take["raw"] - take["latency"], found)
        returned += _offsets(take["markers"], found)
        kept += len(take["markers"])
    assert len(raw) >= 10
    assert np.median(np.abs(raw)) > 0.012  # the head alone runs late ...
    assert np.median(np.abs(calibrated)) <= 0.010  # ... its stored latency corrects it ...
    assert np.median(np.abs(returned)) <= 0.002  # ... and the pipeline puts them on the attack
    assert len(returned) >= 0.8 * kept


def test_the_default_models_markers_are_nearer_the_true_impacts(default_model_takes):
    """A check that does not use the attack definition: the physics' impact times."""
    raw = [d for t in default_model_takes for d in _offsets(t["raw"], t["impacts"])]
    returned = [d for t in default_model_takes for d in _offsets(t["markers"], t["impacts"])]
    assert np.median(np.abs(returned)) < np.median(np.abs(raw))


@pytest.mark.parametrize("clip", ["0_ixmalQrig_000100", "Ypt4OeuoDYo_000128"])
def test_no_first_frame_marker_on_real_footage_where_nothing_starts(clip):
    """Real footage: the default model's onset head fires on its first latent frame (0.02 s)
    of most clips while the take is its noise floor there; the marker must not reach the
    editor."""
    import torch

    from tests.conftest import shared_clip
    from v2a_server.media.video_io import read_video
    from v2a_server.model_store import DEFAULT_MODEL_DIR, load_pipeline
    from v2a_server.pipelines.onsets import pick_onsets

    if not (DEFAULT_MODEL_DIR / "model_index.json").is_file():
        pytest.skip("the embedded default model is not installed")
    torch.set_num_threads(2)
    pipe = load_pipeline("default")
    video = read_video(shared_clip(f"{clip}.mp4"), fps=pipe.model_fps, max_side=None,
                       max_duration_s=4.0)
    out = pipe(frames=video.frames, frames_fps=video.fps, duration_s=4.0, seed=0,
               caption="the sounds of the actions and impacts in the video",
               negative_caption="speech, music")
    head, _ = pick_onsets(out.onset_probs, 1 / pipe.latent_fps)
    assert head and head[0] < 0.1  # the case: the head's first-frame peak
    assert not (find_attacks(out.audio[0], SR).times_s < 0.1).any()  # nothing starts there
    assert all(t >= 0.1 for t in out.onset_times_s)
