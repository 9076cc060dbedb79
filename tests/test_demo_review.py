"""The sync review ``v2a demo`` writes into ``demo_result.json`` (``commands.demo.review_summary``)
on a synthetic clip of clear impacts (bounces and hammer hits; true impact times known from
the physics): contact events from its frames (``evaluation.contacts``), markers placed as a
take's onsets would be. (The demo's own clip, footsteps and collisions, is checked end to end
in ``tests/blender/test_bpy_demo.py``.)"""

from __future__ import annotations

import numpy as np
import pytest

from v2a_server.commands.demo import review_summary
from v2a_server.evaluation.contacts import contact_events
from v2a_server.synth import make_clip

FPS = 25.0
DURATION_S = 6.0


@pytest.fixture(scope="module")
def demo():
    """(true impact times, contact events) of a clip of bounces and hits."""
    clip = make_clip(2, duration_s=DURATION_S, fps=FPS, size_px=128, actions=("bounce", "hit"),
                     pan=False, flicker=False)
    return clip.event_times_s, contact_events(clip.frames, FPS)


def verdicts(markers, contacts):
    return review_summary(markers, contacts.times_s.tolist(), contacts.strengths.tolist(), FPS)


def test_markers_on_the_true_impacts_are_all_in_sync(demo):
    truth, contacts = demo
    assert len(truth) >= 5
    summary = verdicts(truth, contacts)
    assert [r["state"] for r in summary["review"]] == ["in_sync"] * len(truth)
    assert all(abs(r["offset_ms"]) <= 40.0 + 1e-6 for r in summary["review"])
    assert summary["silent_hits"] == []
    # within one frame of the impact, either side, is still in sync
    jittered = truth + np.where(np.arange(len(truth)) % 2, 0.5, -0.5) / FPS
    assert {r["state"] for r in verdicts(jittered, contacts)["review"]} == {"in_sync"}


@pytest.mark.parametrize("which", [0, 1, -1])  # not 3: +4 frames lands on the next hit
def test_one_onset_four_frames_late_is_that_marker_flagged_late(demo, which):
    truth, contacts = demo
    markers = truth.copy()
    markers[which] += 4 / FPS
    summary = verdicts(markers, contacts)
    states = [r["state"] for r in summary["review"]]
    moved = sorted(markers).index(markers[which])
    assert states == ["late" if i == moved else "in_sync" for i in range(len(truth))]
    assert summary["review"][moved]["offset_ms"] == pytest.approx(160.0, abs=40.0)


def test_a_sound_where_nothing_happens_has_no_visual_cause(demo):
    truth, contacts = demo
    busy = np.concatenate([truth, contacts.times_s])
    quiet = next(t for t in np.arange(0.5, DURATION_S - 0.5, 0.04)
                 if np.min(np.abs(busy - t)) > 8 / FPS)
    summary = verdicts(np.append(truth, quiet), contacts)
    states = {r["time_s"]: r["state"] for r in summary["review"]}
    assert states.pop(float(quiet)) == "no_visual_cause"
    assert set(states.values()) == {"in_sync"}


def test_a_hit_without_sound_is_a_silent_hit(demo):
    truth, contacts = demo
    strong = [i for i, t in enumerate(truth)
              if np.any((np.abs(contacts.times_s - t) <= 1 / FPS) & (contacts.strengths >= 0.5))]
    assert strong, "the demo clip's impacts are strong contacts"
    gone = strong[len(strong) // 2]
    summary = verdicts(np.delete(truth, gone), contacts)
    assert [r["state"] for r in summary["review"]] == ["in_sync"] * (len(truth) - 1)
    [hit] = summary["silent_hits"]
    assert hit == pytest.approx(truth[gone], abs=1 / FPS + 1e-6)
