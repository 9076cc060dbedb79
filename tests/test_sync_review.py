"""The sync review's verdicts (``foley_protocol.review.review_sync``): onset markers paired one
to one with the picture's contact events; states, offsets, silent hits."""

from __future__ import annotations

import itertools
import random

import pytest

from foley_protocol.review import (
    EARLY,
    IN_SYNC,
    LATE,
    MATCH_WINDOW_FRAMES,
    NO_VISUAL_CAUSE,
    match_markers,
    review_sync,
)

FPS = 25.0
FRAME = 1 / FPS


def states(review):
    return [v.state for v in review.verdicts]


def test_markers_within_a_frame_are_in_sync_and_a_shifted_one_is_late_or_early():
    contacts = [0.4, 1.0, 1.6, 2.2]
    markers = [0.4 + 0.5 * FRAME, 1.0 - FRAME, 1.6 + 4 * FRAME, 2.2 - 3 * FRAME]
    review = review_sync(markers, contacts, [1.0] * 4, FPS)
    assert states(review) == [IN_SYNC, IN_SYNC, LATE, EARLY]
    assert review.verdicts[2].offset_s == pytest.approx(0.16)
    assert review.verdicts[2].contact == 2
    assert review.verdicts[3].offset_s == pytest.approx(-0.12)
    assert review.silent_hits == []


def test_a_sound_far_from_every_contact_has_no_visual_cause():
    review = review_sync([0.4, 3.0], [0.42], [1.0], FPS)
    assert states(review) == [IN_SYNC, NO_VISUAL_CAUSE]
    assert review.verdicts[1].offset_s is None and review.verdicts[1].contact is None
    # exactly at the window's edge still pairs, one frame past it does not
    edge = MATCH_WINDOW_FRAMES * FRAME
    assert states(review_sync([1.0 + edge], [1.0], [1.0], FPS)) == [LATE]
    assert states(review_sync([1.0 + edge + FRAME], [1.0], [1.0], FPS)) == [NO_VISUAL_CAUSE]


def test_one_contact_explains_one_marker_only():
    """Nearest-event review let three sounds share one hit; pairing leaves two unexplained."""
    review = review_sync([1.0, 1.04, 1.08], [1.04], [1.0], FPS)
    assert states(review) == [NO_VISUAL_CAUSE, IN_SYNC, NO_VISUAL_CAUSE]


def test_pairing_is_optimal_where_nearest_first_would_lose_a_pair():
    # marker 1 is nearest to contact 0; taking that pair first would leave marker 0 alone
    markers, contacts = [0.0, 0.1], [0.08, 0.18]
    assert match_markers(markers, contacts, 0.12) == [0, 1]
    review = review_sync(markers, contacts, [1.0, 1.0], FPS, window_frames=3)
    assert states(review) == [EARLY, EARLY]  # each sound 2 frames before its contact


def test_strong_unpaired_contacts_are_silent_hits_and_weak_ones_are_not():
    review = review_sync([1.0], [0.2, 1.0, 2.0, 3.0], [0.9, 1.0, 0.3, 0.5], FPS)
    assert states(review) == [IN_SYNC]
    assert review.silent_hits == [0, 3]


def test_a_marker_on_a_contact_keeps_it_rather_than_make_two_distant_pairs():
    # the demo's case: a stray onset 4 frames before a footstep, the footstep's own onset on
    # it, a false contact 5 frames after. Most pairs would pair both onsets 4-5 frames off;
    # the editor sees the onset on its footstep in sync and the stray one without a cause.
    review = review_sync([3.73, 3.893], [3.88, 4.08], [1.0, 0.3], FPS)
    assert states(review) == [NO_VISUAL_CAUSE, IN_SYNC]
    assert [v.contact for v in review.verdicts] == [None, 0]
    assert review.silent_hits == []  # the unpaired contact is weak


def test_verdicts_follow_the_markers_order_given():
    review = review_sync([2.0, 0.5], [0.5, 2.08], [1.0, 1.0], FPS)
    assert states(review) == [EARLY, IN_SYNC]
    assert [v.contact for v in review.verdicts] == [1, 0]


def _brute_force(markers, contacts, window):
    """(pairs, total |offset|) of the least-cost matching: a pair costs its gap squared, an
    unpaired marker the window squared; ties to more pairs."""
    best = (window * window * len(markers), 0, 0.0)  # (cost, -pairs, gaps)
    for k in range(1, min(len(markers), len(contacts)) + 1):
        for ms in itertools.combinations(range(len(markers)), k):
            for cs in itertools.permutations(range(len(contacts)), k):
                gaps = [abs(markers[m] - contacts[c]) for m, c in zip(ms, cs)]
                if max(gaps) <= window + 1e-6:
                    cost = sum(g * g for g in gaps) + window * window * (len(markers) - k)
                    if (round(cost, 9), -k) < (round(best[0], 9), best[1]):
                        best = (cost, -k, sum(gaps))
    return -best[1], best[2]


def test_pairing_matches_an_exhaustive_search():
    rng = random.Random(7)
    for _ in range(300):
        markers = [round(rng.uniform(0, 1.0), 3) for _ in range(rng.randint(0, 5))]
        contacts = [round(rng.uniform(0, 1.0), 3) for _ in range(rng.randint(0, 5))]
        paired = match_markers(markers, contacts, 0.15)
        used = [c for c in paired if c is not None]
        assert len(used) == len(set(used))
        gaps = [abs(markers[m] - contacts[c]) for m, c in enumerate(paired) if c is not None]
        assert all(g <= 0.15 + 1e-6 for g in gaps)
        count, cost = _brute_force(markers, contacts, 0.15)
        assert len(gaps) == count
        assert sum(gaps) == pytest.approx(cost, abs=1e-9)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="contact_strengths has 1 values for 2 contacts"):
        review_sync([0.1], [0.1, 0.2], [1.0], FPS)
    with pytest.raises(ValueError, match="frame_rate"):
        review_sync([0.1], [0.1], [1.0], 0.0)
