"""Sync review arithmetic shared by the server (sync picture), the add-on (review list) and
``v2a demo``.

One definition of "is this sound in sync with the picture": each onset marker is paired one to
one with a visual *contact event* (``review_sync``: within a window of a few frames, the least
total squared offset, a marker left unpaired costing the window squared) and gets a state: ``in_sync`` (within one timeline frame),
``late``, ``early`` or ``no_visual_cause`` (no contact within the window); strong contacts no
marker is paired with are "silent hits". Offsets are marker − contact (positive = the sound
comes after the picture), in seconds and in frames of the editor's timeline.

Results from servers before contact events (protocol 1.3) carry only motion events (AV-Align's
flow peaks); for those the older measure stays: the offset to the *nearest* motion event,
flagged above one frame (``nearest_event_offset_s``, ``is_flagged``).
Standard library only (the Blender add-on bundles this package).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

FLAG_TOLERANCE_FRAMES = 1.0
"""An onset is flagged when it lies more than this many timeline frames from every motion event."""

_EPS_FRAMES = 1e-6  # float32 seconds in the .blend must not flip a flag at exactly one frame
_EPS_S = 1e-6  # nor a pairing at exactly the window's edge


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


# ---- matching onset markers to contact events ---------------------------------------------

IN_SYNC = "in_sync"
LATE = "late"
EARLY = "early"
NO_VISUAL_CAUSE = "no_visual_cause"
MARKER_STATES = (IN_SYNC, LATE, EARLY, NO_VISUAL_CAUSE)
"""A marker's verdict: within one frame of its contact, after it, before it, or no contact."""

MATCH_WINDOW_FRAMES = 5.0
"""A marker and a contact further apart than this (timeline frames) are never paired. A sound
4 frames (160 ms at 25 fps) after a hit is still that hit's sound, only late; beyond 5 frames a
pairing would be a guess, so the marker has no visual cause."""

SILENT_HIT_STRENGTH = 0.5
"""A contact this strong (0..1, ``contacts.STRENGTH_FULL_SCALE`` = 1) that no marker is paired
with is a "silent hit": the picture shows an impact and no sound starts there."""


@dataclass(frozen=True)
class MarkerVerdict:
    """What the review says of one onset marker.

    Attributes:
        state: one of ``MARKER_STATES``.
        offset_s: marker − its contact (positive: the sound is late); None without a contact.
        contact: index of the paired contact event (into the list given), or None.
    """

    state: str
    offset_s: float | None
    contact: int | None


@dataclass(frozen=True)
class SyncReview:
    """The verdict of every marker (in the order given) and the contacts left silent."""

    verdicts: list[MarkerVerdict]
    silent_hits: list[int]  # indices of contacts, ascending by time


def _clusters(markers: list[tuple[float, int]], contacts: list[tuple[float, int]],
              window_s: float):
    """Split sorted (time, index) lists into runs no pair across which can be matched."""
    merged = sorted([(t, 0, i) for t, i in markers] + [(t, 1, i) for t, i in contacts])
    run: list[tuple[float, int, int]] = []
    for item in merged:
        if run and item[0] - run[-1][0] > window_s:
            yield run
            run = []
        run.append(item)
    if run:
        yield run


def _match_run(a: list[tuple[float, int]], b: list[tuple[float, int]], window_s: float):
    """Order-preserving matching of sorted markers ``a`` to sorted contacts ``b`` of least
    cost: each pair costs its offset squared, each marker left without a contact the window
    squared (a contact without a marker costs nothing: many contacts are silent). Squares
    prefer two sounds both a little early over one exact and one unexplained, but never push a
    marker off its contact to make two distant pairs out of one close one; ties go to more
    pairs. The cost is convex in the offset, so in one dimension some optimal matching never
    crosses (uncrossing two pairs keeps both inside the window and does not add to the total),
    and this DP is exact."""
    n, m = len(a), len(b)
    miss = window_s * window_s
    # best[i][j]: (cost, -pairs) of a[i:], b[j:]
    best = [[(miss * (n - i), 0)] * (m + 1) for i in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            skip_marker = best[i + 1][j]
            options = [(skip_marker[0] + miss, skip_marker[1]), best[i][j + 1]]
            gap = abs(a[i][0] - b[j][0])
            if gap <= window_s:
                cost, pairs = best[i + 1][j + 1]
                options.append((cost + gap * gap, pairs - 1))
            best[i][j] = min(options)
    pairs = []
    i = j = 0
    while i < n and j < m:
        gap = abs(a[i][0] - b[j][0])
        if gap <= window_s:
            cost, pairs_ = best[i + 1][j + 1]
            if best[i][j] == (cost + gap * gap, pairs_ - 1):
                pairs.append((a[i][1], b[j][1]))
                i, j = i + 1, j + 1
                continue
        skip_marker = best[i + 1][j]
        if best[i][j] == (skip_marker[0] + miss, skip_marker[1]):
            i += 1
        else:
            j += 1
    return pairs


def match_markers(markers_s: Sequence[float], contacts_s: Sequence[float],
                  window_s: float) -> list[int | None]:
    """Pair markers with contact events one to one, within ``window_s``.

    Least total cost, where a pair costs (marker − contact)² and a marker without a contact
    ``window_s``²; among equal costs, the most pairs.

    Args:
        markers_s: marker times (s), any order.
        contacts_s: contact event times (s) from the same origin, any order.
        window_s: the largest |marker − contact| of a pair (inclusive).
    Returns:
        For each marker (in the order given) the index of its contact, or None.
    """
    if not window_s >= 0:
        raise ValueError(f"window_s must be >= 0, got {window_s}")
    markers = sorted((float(t), i) for i, t in enumerate(markers_s))
    contacts = sorted((float(t), i) for i, t in enumerate(contacts_s))
    paired: list[int | None] = [None] * len(markers)
    for run in _clusters(markers, contacts, window_s + _EPS_S):
        a = [(t, i) for t, kind, i in run if kind == 0]
        b = [(t, i) for t, kind, i in run if kind == 1]
        if a and b:
            for marker, contact in _match_run(a, b, window_s + _EPS_S):
                paired[marker] = contact
    return paired


def marker_state(offset_s: float | None, frame_rate: float,
                 tolerance_frames: float = FLAG_TOLERANCE_FRAMES) -> str:
    """``in_sync`` within ``tolerance_frames`` of its contact, else ``late``/``early``;
    ``no_visual_cause`` without a contact (``offset_s`` None)."""
    frames = offset_frames(offset_s, frame_rate)
    if frames is None or math.isnan(frames):
        return NO_VISUAL_CAUSE
    if abs(frames) <= tolerance_frames + _EPS_FRAMES:
        return IN_SYNC
    return LATE if frames > 0 else EARLY


def review_sync(markers_s: Sequence[float], contacts_s: Sequence[float],
                contact_strengths: Sequence[float], frame_rate: float, *,
                window_frames: float = MATCH_WINDOW_FRAMES,
                silent_hit_strength: float = SILENT_HIT_STRENGTH) -> SyncReview:
    """The verdict of every onset marker against the picture's contact events.

    Args:
        markers_s: onset marker times (s from the take's first frame), any order.
        contacts_s: contact event times (s, same origin).
        contact_strengths: one 0..1 strength per contact.
        frame_rate: the editor's timeline rate (frames/s): the window and the tolerance are
            frames of it.
        window_frames: the largest |offset| of a pair, frames.
        silent_hit_strength: unpaired contacts at least this strong are silent hits.
    Returns:
        ``SyncReview``: one ``MarkerVerdict`` per marker, the silent hits' contact indices.
    """
    if not frame_rate > 0:
        raise ValueError(f"frame_rate must be > 0, got {frame_rate}")
    if len(contact_strengths) != len(contacts_s):
        raise ValueError(f"contact_strengths has {len(contact_strengths)} values for "
                         f"{len(contacts_s)} contacts")
    markers = [float(t) for t in markers_s]
    contacts = [float(t) for t in contacts_s]
    paired = match_markers(markers, contacts, window_frames / frame_rate)
    verdicts = []
    for time_s, contact in zip(markers, paired):
        offset = None if contact is None else time_s - contacts[contact]
        verdicts.append(MarkerVerdict(marker_state(offset, frame_rate), offset, contact))
    used = {c for c in paired if c is not None}
    silent = sorted((i for i, s in enumerate(contact_strengths)
                     if i not in used and float(s) >= silent_hit_strength),
                    key=lambda i: (contacts[i], i))
    return SyncReview(verdicts, silent)
