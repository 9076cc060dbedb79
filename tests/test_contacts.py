"""Visual contact events (``v2a_server.evaluation.contacts``) on drawn motion whose contacts are
known: bounces found at their frame, steady motion, a stopping pan and a smooth swing found as
nothing, a region restricting the search, and bad input named."""

from __future__ import annotations

import numpy as np
import pytest

from v2a_server.evaluation.contacts import contact_events

FPS = 25.0
SIZE = 128
RNG = np.random.default_rng(3)
WALL = (RNG.random((SIZE, SIZE * 2)) * 60 + 90).astype(np.uint8)  # textured, wider: pans
BALL = (RNG.random((16, 16)) * 120 + 10).astype(np.uint8)


def draw(positions: list[list[tuple[float, float]]], pan_px=None) -> np.ndarray:
    """[T, SIZE, SIZE, 3] frames: a textured wall (shifted by ``pan_px[k]``) with a textured
    16-pixel square at each (x, y) of ``positions[k]`` (top-left, pixels)."""
    frames = []
    for k, squares in enumerate(positions):
        shift = 0 if pan_px is None else int(round(pan_px[k]))
        image = WALL[:, shift:shift + SIZE].copy()
        for x, y in squares:
            x, y = int(round(x)), int(round(y))
            image[y:y + 16, x:x + 16] = BALL
        frames.append(np.repeat(image[..., None], 3, axis=2))
    return np.stack(frames)


def bouncing(frames: int, x: float, contacts: list[int], top: float = 20.0,
             floor: float = 100.0) -> list[tuple[float, float]]:
    """A square falling from ``top`` to ``floor`` (y grows downwards) and bouncing back up,
    touching the floor exactly in the ``contacts`` frames (a parabola between two of them)."""
    path = []
    for k in range(frames):
        before = max([c for c in contacts if c <= k], default=None)
        after = min([c for c in contacts if c >= k], default=None)
        if before is None or after is None or before == after:
            edge = after if before is None else before
            if edge is None or before == after == k:
                path.append((x, floor))
                continue
            half = 8.0  # frames of the flight before the first / after the last contact
            phase = 1.0 - min(abs(k - edge) / half, 1.0)
            path.append((x, top + (floor - top) * phase ** 2))
            continue
        middle, half = (before + after) / 2.0, (after - before) / 2.0
        phase = (k - middle) / half  # -1 at a contact, 0 at the top
        path.append((x, top + (floor - top) * phase ** 2))
    return path


def frame_of(times_s) -> list[int]:
    return [int(round(t * FPS)) for t in times_s]


def strong_frames(events, strength: float = 0.5) -> list[int]:
    """Frames of the events at least this strong (the review's silent-hit strength)."""
    return frame_of(events.times_s[events.strengths >= strength])


def assert_found(events, contacts: list[int]) -> None:
    """Every contact is found within one frame and strongly; whatever else is found is weak
    (a turn of a smooth motion: no silent hit)."""
    strong = strong_frames(events)
    assert len(strong) == len(contacts), (frame_of(events.times_s), events.strengths)
    assert all(abs(f - c) <= 1 for f, c in zip(strong, contacts)), (strong, contacts)


def test_bounces_are_found_at_their_contact_frames():
    contacts = [12, 28, 40]
    events = contact_events(draw([[p] for p in bouncing(50, 50, contacts)]), FPS)
    assert_found(events, contacts)
    assert np.all(events.strengths[events.strengths >= 0.5] > 0.9)
    assert np.all(events.strengths <= 1.0)
    assert len(events.score) == 50 and events.score[0] == events.score[-1] == 0.0


def test_steady_motion_a_smooth_swing_and_a_stopping_pan_are_no_contact():
    steady = draw([[(10 + 2.0 * k, 40)] for k in range(40)])
    assert len(contact_events(steady, FPS).times_s) == 0
    swing = draw([[(56 + 30 * np.sin(2 * np.pi * k / 30), 50)] for k in range(60)])
    assert strong_frames(contact_events(swing, FPS)) == []  # its turns are weak at most
    pan = [0.0] * 10 + [3.0 * k for k in range(1, 21)] + [60.0] * 10  # starts, stops dead
    panned = draw([[] for _ in pan], pan_px=pan)
    assert len(contact_events(panned, FPS).times_s) == 0


def test_a_region_keeps_only_its_own_contacts():
    left, right = bouncing(50, 10, [12, 30]), bouncing(50, 100, [20, 40])
    frames = draw([[a, b] for a, b in zip(left, right)])
    assert_found(contact_events(frames, FPS), [12, 20, 30, 40])
    mask = np.zeros((SIZE, SIZE), bool)
    mask[:, :64] = True
    assert_found(contact_events(frames, FPS, region_mask=mask), [12, 30])
    assert_found(contact_events(frames, FPS, region_mask=~mask), [20, 40])


def test_bad_input_is_named():
    frames = draw([[(10, 10)]] * 4)
    with pytest.raises(TypeError, match="uint8"):
        contact_events(frames.astype(np.float32), FPS)
    with pytest.raises(ValueError, match="fps"):
        contact_events(frames, 0.0)
    with pytest.raises(ValueError, match=r"region_mask must be \[H, W\] = \[128, 128\]"):
        contact_events(frames, FPS, region_mask=np.ones((64, 64), bool))
    with pytest.raises(ValueError, match="selects no pixel"):
        contact_events(frames, FPS, region_mask=np.zeros((SIZE, SIZE), bool))
    assert len(contact_events(frames[:2], FPS).times_s) == 0
