"""Sync review arithmetic shared by the server (sync picture) and the add-on (review list).

One definition of "how far is a sound onset from the picture's motion": the signed offset of an
onset to the *nearest* visual motion event (positive = the sound comes after the motion), in
seconds and in frames of the editor's timeline, and the flag for offsets larger than one frame.
Standard library only (the Blender add-on bundles this package).
"""

from __future__ import annotations

import bisect
import math
from typing import Iterable, Sequence

FLAG_TOLERANCE_FRAMES = 1.0
"""An onset is flagged when it lies more than this many timeline frames from every motion event."""

_EPS_FRAMES = 1e-6  # float32 seconds in the .blend must not flip a flag at exactly one frame


def nearest_event_offset_s(onset_s: float, events_s: Sequence[float]) -> float | None:
    """Signed seconds from the nearest motion event to ``onset_s`` (``onset - event``).

    Args:
        onset_s: onset time in seconds from the take's first frame.
        events_s: motion event times in seconds from the same origin, sorted ascending.
    Returns:
        The offset (positive: the sound is late), or None when there is no motion event.
    """
    if not events_s:
        return None
    i = bisect.bisect_left(events_s, onset_s)
    candidates = [events_s[j] for j in (i - 1, i) if 0 <= j < len(events_s)]
    nearest = min(candidates, key=lambda e: (abs(onset_s - e), e))
    return onset_s - nearest


def offsets_s(onsets_s: Iterable[float], events_s: Iterable[float]) -> list[float | None]:
    """``nearest_event_offset_s`` for every onset (events need not be sorted)."""
    events = sorted(float(e) for e in events_s)
    return [nearest_event_offset_s(float(t), events) for t in onsets_s]


def offset_frames(offset_s: float | None, frame_rate: float) -> float | None:
    """An offset in (fractional) frames of a timeline running at ``frame_rate`` frames/s."""
    if offset_s is None:
        return None
    if not frame_rate > 0:
        raise ValueError(f"frame_rate must be > 0, got {frame_rate}")
    return offset_s * frame_rate


def is_flagged(offset_s: float | None, frame_rate: float,
               tolerance_frames: float = FLAG_TOLERANCE_FRAMES) -> bool:
    """True when the onset is more than ``tolerance_frames`` from the nearest motion event.

    No motion event at all gives no offset and no flag (there is nothing to be in sync with).
    """
    frames = offset_frames(offset_s, frame_rate)
    if frames is None or math.isnan(frames):
        return False
    return abs(frames) > tolerance_frames + _EPS_FRAMES
