"""Onset hints on the embedded default model (issue 7), on held-out synthetic test clips.

Hints are the model's input for an editor's markers: at the true onsets they must help, moved
they must move the sound, removed from a region they must take its onsets away. The 200-clip
numbers are in docs/default-model.md (``bench/model_card.py``); this checks the same effects
on a few clips so that a model or pipeline change that breaks them fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from v2a_server.model_store import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model_index.json").is_file(),
                                reason="the embedded default model is not installed")

SHIFT_S = 0.2
CLIPS = 4


@pytest.fixture(scope="module")
def runs():
    """Per test clip: reference onsets, and generated onsets with no / true / shifted /
    first-half-only hints."""
    import torch

    from v2a_server.evaluation.metrics import detect_onsets_waveform
    from v2a_server.model_store import load_pipeline
    from v2a_server.synth import make_clip
    from v2a_server.synth.dataset import split_for_seed

    torch.set_num_threads(2)
    pipe = load_pipeline("default")
    seeds = [s for s in range(200) if split_for_seed(s) == "test"][:CLIPS]
    out = []
    for seed in seeds:
        clip = make_clip(seed)
        duration = clip.duration_s
        n_frames = pipe.window_plan(duration).total_frames
        events = np.asarray(clip.event_times_s)

        def hints(times):
            h = np.zeros(n_frames, np.float32)
            idx = np.floor(np.asarray(times) * pipe.latent_fps).astype(int)
            h[idx[(idx >= 0) & (idx < n_frames)]] = 1
            return h

        def onsets(h):
            result = pipe(frames=clip.frames, frames_fps=clip.fps, duration_s=duration,
                          caption=clip.caption, seed=seed, onset_hints=h)
            return detect_onsets_waveform(result.audio[0], result.sample_rate)

        out.append({
            "duration": duration,
            "reference": detect_onsets_waveform(clip.audio, clip.sample_rate),
            "none": onsets(None), "true": onsets(hints(events)),
            "shifted": onsets(hints(events + SHIFT_S)),
            "first_half": onsets(hints(events[events < duration / 2])),
        })
    return out


def test_hints_at_the_true_onsets_raise_one_to_one_aa_align(runs):
    from v2a_server.evaluation.metrics import aa_align_one_to_one

    without = np.mean([aa_align_one_to_one(r["reference"], r["none"]) for r in runs])
    with_hints = np.mean([aa_align_one_to_one(r["reference"], r["true"]) for r in runs])
    assert with_hints > without, (with_hints, without)


def test_hints_moved_200_ms_later_move_the_sound_by_200_ms(runs):
    from v2a_server.evaluation.metrics import match_events

    offsets = []
    for r in runs:
        ref, gen = np.asarray(r["reference"]), np.asarray(r["shifted"])
        offsets += [gen[j] - ref[i] for i, j in match_events(ref, gen, 0.35)]
    frame_s = 0.04  # one latent frame
    assert len(offsets) >= 10
    assert abs(np.median(offsets) - SHIFT_S) <= frame_s, np.median(offsets)


def test_hints_removed_from_a_region_take_its_onsets_away(runs):
    second_half = lambda r, key: int(np.sum(np.asarray(r[key]) >= r["duration"] / 2))  # noqa: E731
    kept = sum(second_half(r, "true") for r in runs)
    removed = sum(second_half(r, "first_half") for r in runs)
    assert kept >= 4 and removed <= kept / 2, (removed, kept)
