"""Sync review of a take: its onset markers, their verdicts against the picture, hints.

A take's onset markers are timeline markers named ``<take.marker_tag><k>``; the take keeps one
``FoleyReviewMarker`` per marker (exact seconds, probability, the editor's decision) and the
server's measurements (``contacts``, ``motion_events``, ``audio_onsets``). The marker is the
truth for *where*: when the editor drags a marker in the timeline its frame wins over the
stored seconds, and the verdicts follow.

The verdict of a marker is defined once, in ``foley_protocol.review`` (shared with the server's
sync picture and ``v2a demo``): markers are paired one to one with the picture's contact events
(``in_sync`` / ``late`` / ``early`` / ``no_visual_cause``) and strong unpaired contacts are
silent hits. A take from a server before contact events (``take.has_contacts`` False) is judged
as it was: offset to the nearest motion event, flagged above one frame (``verdict`` "").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from foley_protocol.review import (
    IN_SYNC,
    is_flagged,
    nearest_event_offset_s,
    offset_frames,
    review_sync,
)

from . import compat


@dataclass(frozen=True)
class ReviewRow:
    """One line of the review list."""

    index: int  # in take.review_markers
    marker_name: str
    frame: int
    time_s: float  # seconds from the take's first frame
    probability: float
    state: str  # the editor's decision: UNREVIEWED, ACCEPTED, ADDED
    verdict: str  # foley_protocol.review state; "" for a take without contact events
    offset_s: float | None  # to its contact (or, without contacts, the nearest motion event)
    offset_frames: float | None
    flagged: bool  # needs attention: late, early, no visual cause (or off by > 1 frame)


@dataclass(frozen=True)
class SilentHit:
    """A strong contact event of the picture no marker is paired with."""

    index: int  # in take.contacts
    time_s: float  # seconds from the take's first frame
    frame: int  # timeline frame
    strength: float


# ---- finding takes ------------------------------------------------------------------------


def foley_takes(scene):
    """(strip, take) for every take of every Foley strip in the scene."""
    se = scene.sequence_editor
    if se is None:
        return []
    return [(strip, take) for strip in compat.all_strips(se) if strip.foley.is_foley
            for take in strip.foley.takes]


def active_take(scene):
    """(strip, take) of the active Foley strip's active take, or (None, None)."""
    se = scene.sequence_editor
    strip = se.active_strip if se is not None else None
    if strip is None or not strip.foley.is_foley:
        return None, None
    settings = strip.foley
    if not 0 <= settings.active_take < len(settings.takes):
        return strip, None
    return strip, settings.takes[settings.active_take]


def scene_fps(scene) -> float:
    return scene.render.fps / scene.render.fps_base


# ---- markers of a take --------------------------------------------------------------------


def take_markers(scene, take) -> dict[str, object]:
    """Name -> timeline marker for the markers of ``take`` (by its tag)."""
    if not take.marker_tag:
        return {}
    return {m.name: m for m in scene.timeline_markers if m.name.startswith(take.marker_tag)}


def marker_time_s(scene, take, item, marker=None) -> float:
    """Seconds from the take's t = 0: the stored exact time unless the marker was moved."""
    if marker is None or marker.frame == item.frame:
        return item.time_s
    return marker.frame / scene_fps(scene) - take.start_time_s


def _marker_times(scene, take) -> list[tuple[int, object, float]]:
    """(record index, timeline marker, seconds) of every record whose marker still exists."""
    found = []
    for index, item in enumerate(take.review_markers):
        marker = scene.timeline_markers.get(item.marker_name)
        if marker is not None:
            found.append((index, marker, marker_time_s(scene, take, item, marker)))
    return found


def _contacts(take) -> tuple[list[float], list[float]]:
    return [c.time_s for c in take.contacts], [c.strength for c in take.contacts]


def review_rows(scene, take) -> list[ReviewRow]:
    """The review list of ``take``: its markers in time order with verdicts and offsets.

    Markers deleted in the timeline are left out (their record stays until the next review).
    """
    fps = scene_fps(scene)
    found = _marker_times(scene, take)
    rows = []
    if take.has_contacts:
        contacts_s, strengths = _contacts(take)
        verdicts = review_sync([t for _i, _m, t in found], contacts_s, strengths, fps).verdicts
        for (index, marker, time_s), verdict in zip(found, verdicts):
            item = take.review_markers[index]
            rows.append(ReviewRow(index, item.marker_name, marker.frame, time_s,
                                  item.probability, item.state, verdict.state,
                                  verdict.offset_s, offset_frames(verdict.offset_s, fps),
                                  verdict.state != IN_SYNC))
    else:  # a take from a server before contact events: the nearest motion event
        events_s = sorted(e.time_s for e in take.motion_events)
        for index, marker, time_s in found:
            item = take.review_markers[index]
            offset = nearest_event_offset_s(time_s, events_s)
            rows.append(ReviewRow(index, item.marker_name, marker.frame, time_s,
                                  item.probability, item.state, "", offset,
                                  offset_frames(offset, fps), is_flagged(offset, fps)))
    rows.sort(key=lambda r: (r.frame, r.time_s, r.marker_name))
    return rows


def review_row(scene, take, index: int) -> ReviewRow | None:
    """The review line of ``take.review_markers[index]``; None when its marker was deleted."""
    return next((row for row in review_rows(scene, take) if row.index == index), None)


def silent_hits(scene, take) -> list[SilentHit]:
    """The take's silent hits (none for a take without contact events), in time order."""
    if not take.has_contacts:
        return []
    fps = scene_fps(scene)
    contacts_s, strengths = _contacts(take)
    found = review_sync([t for _i, _m, t in _marker_times(scene, take)], contacts_s, strengths,
                        fps)
    return [SilentHit(i, contacts_s[i], contact_frame(take, contacts_s[i], fps), strengths[i])
            for i in found.silent_hits]


def contact_frame(take, time_s: float, fps: float) -> int:
    """The timeline frame showing take time ``time_s`` (halves up, as markers are placed)."""
    return math.floor(round((take.start_time_s + time_s) * fps, 4) + 0.5)


def hint_times_s(scene, take) -> list[float]:
    """The onset hints a take's markers give: their times, inside the take, sorted."""
    return sorted(min(max(r.time_s, 0.0), take.duration_s) for r in review_rows(scene, take)
                  if 0.0 <= r.time_s <= take.duration_s)


def next_marker_name(scene, take) -> str:
    """``<tag><k>`` with k one above every number the take's markers and records use."""
    pattern = re.compile(re.escape(take.marker_tag) + r"(\d+)$")
    used = [m.name for m in scene.timeline_markers] + [i.marker_name for i in take.review_markers]
    highest = max((int(m.group(1)) for name in used if (m := pattern.match(name))), default=0)
    return f"{take.marker_tag}{highest + 1}"


def add_review_marker(scene, take, frame: int, time_s: float, probability: float,
                      state: str, name: str | None = None):
    """A timeline marker for the take and its review record; returns the record."""
    name = name or next_marker_name(scene, take)
    marker = scene.timeline_markers.new(name, frame=int(frame))
    marker.select = False
    item = take.review_markers.add()
    item.marker_name = marker.name
    item.frame = int(frame)
    item.time_s = float(time_s)
    item.probability = float(probability)
    item.state = state
    return item


def remove_review_marker(scene, take, index: int) -> None:
    """Remove the record ``index`` and its timeline marker."""
    item = take.review_markers[index]
    marker = scene.timeline_markers.get(item.marker_name)
    if marker is not None:
        scene.timeline_markers.remove(marker)
    take.review_markers.remove(index)
    take.active_review_marker = max(0, min(take.active_review_marker,
                                           len(take.review_markers) - 1))


def record_placed_take(take, body: dict, variation: int,
                       onset_frames: list[tuple[float, float, int]],
                       marker_names: dict[int, str]) -> None:
    """Fill a just placed take's review records from the server's result (and its review
    data, when the result carries it: servers before protocol 1.4).

    Args:
        take: the new ``FoleyTake``.
        body: the result body (``motion``, ``audio_onsets`` are optional: older servers, and
            1.4 servers, which send them in a ``review`` message after the result).
        variation: which take of the result.
        onset_frames: (time_s, probability, marker frame) of every onset that got a marker.
        marker_names: marker frame -> marker name.
    """
    record_review_data(take, body, variation)
    # Several onsets can round to one marker frame: the marker keeps the first onset's time and
    # the highest probability.
    by_frame: dict[int, tuple[float, float]] = {}
    for time_s, probability, frame in onset_frames:
        first_time, best = by_frame.get(frame, (time_s, 0.0))
        by_frame[frame] = (first_time, max(best, probability))
    for frame in sorted(by_frame):
        time_s, probability = by_frame[frame]
        item = take.review_markers.add()
        item.marker_name = marker_names[frame]
        item.frame = frame
        item.time_s = time_s
        item.probability = probability
        item.state = "UNREVIEWED"


def record_review_data(take, body: dict, variation: int) -> None:
    """Fill ``take``'s review data (contact events, motion events, audio onsets) from a result or a ``review``
    body (fields absent: nothing to fill), replacing what it had."""
    contacts = body.get("contacts")
    if contacts is not None:
        take.has_contacts = True
        take.contacts.clear()
        for time_s, strength in zip(contacts.get("times_s", []), contacts.get("strengths", [])):
            contact = take.contacts.add()
            contact.time_s, contact.strength = float(time_s), float(strength)
    motion = body.get("motion")
    if motion is not None:
        take.motion_events.clear()
        for time_s, strength in zip(motion.get("times_s", []), motion.get("strengths", [])):
            event = take.motion_events.add()
            event.time_s, event.strength = float(time_s), float(strength)
    onsets = body.get("audio_onsets")
    if onsets is not None and variation < len(onsets):
        take.audio_onsets.clear()
        for time_s, strength in zip(onsets[variation]["times_s"], onsets[variation]["strengths"]):
            onset = take.audio_onsets.add()
            onset.time_s, onset.strength = float(time_s), float(strength)


def review_marker_times_s(scene, take) -> list[float]:
    """The take's onset markers as the editor has them now (moved, added, deleted), seconds
    from its first frame, within the take: what a redrawn sync picture shows."""
    return sorted(min(max(r.time_s, 0.0), take.duration_s) for r in review_rows(scene, take))


def onset_frames_in_scene(scene, take=None) -> list[int]:
    """Sorted unique frames of Foley onset markers: of ``take``, or of every take."""
    takes = [take] if take is not None else [t for _s, t in foley_takes(scene)]
    frames = set()
    for each in takes:
        frames.update(m.frame for m in take_markers(scene, each).values())
    return sorted(frames)


def step_frame(frames: list[int], current: int, forward: bool) -> int | None:
    """The first frame after (``forward``) or before ``current``; None at the end."""
    if forward:
        return next((f for f in frames if f > current), None)
    return next((f for f in reversed(frames) if f < current), None)


def row_for_frame(scene, take, frame: int) -> ReviewRow | None:
    return next((r for r in review_rows(scene, take) if r.frame == frame), None)


def filter_and_order(scene, take, needs_attention: bool) -> tuple[list[bool], list[int]]:
    """For a UIList over ``take.review_markers``: shown flags and the time order.

    Returns:
        (visible per record, new position per record), as ``UIList.filter_items`` wants them
        (records whose marker was deleted are hidden and go last).
    """
    rows = review_rows(scene, take)
    count = len(take.review_markers)
    visible = [False] * count
    order = [0] * count
    position = 0
    for row in rows:
        visible[row.index] = row.flagged or not needs_attention
        order[row.index] = position
        position += 1
    listed = {row.index for row in rows}
    for index in range(count):
        if index not in listed:
            order[index] = position
            position += 1
    return visible, order
