"""Placement of a regenerated range (Regenerate Range, Regenerate with Markers): new takes
on an existing Foley strip, all of them or nothing (see ``placement``)."""

from __future__ import annotations

import bpy
import numpy as np
from foley_protocol.protocol import INPAINT_MARGIN_S

from . import compat, markers, media, review, sync, takes
from .placement import (
    PlacedTake,
    PlacementError,
    RegenRequest,
    Snapshot,
    add_take_record,
    roll_back,
    stored_path,
    write_sync_picture,
    write_take_file,
)


def place_range_takes(snapshot: Snapshot, regen: RegenRequest, result: dict,
                      audio: list[np.ndarray], settings,
                      pictures: list[bytes] | None = None) -> tuple[list[PlacedTake], list[str]]:
    """Add one take per variation of a range regeneration to the Foley strip; play the first.

    Each new take keeps the old take's onsets outside the range (a marker the editor moved
    counts where it is now) and gets the result's onsets inside it. The strip switches to the
    first new take: the old take's markers inside the range are replaced by the new onsets,
    those outside keep their frames (renamed to the new take's tag). The old take's file and
    record stay as they were.

    Raises:
        PlacementError: nothing was placed (and nothing was left behind).
    """
    scene = bpy.data.scenes.get(snapshot.scene_name)
    if scene is None or scene.sequence_editor is None:
        raise PlacementError(f"Scene {snapshot.scene_name!r} was deleted while generating")
    strip = compat.all_strips(scene.sequence_editor).get(regen.strip_name)
    if strip is None or not strip.foley.is_foley:
        raise PlacementError(f"The Foley strip {regen.strip_name!r} was deleted or renamed "
                             "while generating")
    record = strip.foley
    base_index = takes.find_take(record, regen.take_id)
    if base_index < 0:
        raise PlacementError(f"Take {regen.take_id} of {regen.strip_name!r} was deleted while "
                             "generating")
    base = record.takes[base_index]
    fps = snapshot.scene_fps
    mix_rate = base.sample_rate or int(scene.render.ffmpeg.audio_mixrate)
    samples_out = sync.target_samples(base.duration_s, mix_rate)
    rate_in = int(result["audio"]["sample_rate"])
    start_s, end_s = regen.range_s
    range_lo, range_hi = regen.frames
    active = record.takes[record.active_take] if record.active_take < len(record.takes) else None
    base_active = active is not None and active.take_id == base.take_id
    if base_active:
        # The old take is on the timeline: its markers outside the range stay where they are
        # now (also one the editor moved), the ones inside make way for the new onsets.
        outside = sorted(m.frame for m in scene.timeline_markers
                         if m.name.startswith(base.marker_tag)
                         and not range_lo <= m.frame < range_hi)
    else:
        outside = [f for f in takes.marker_frames(base, fps)
                   if not range_lo <= f < range_hi]
    kept = _onsets_at_frames(base, outside, fps)
    # New onsets whose marker lands inside the range (by frame, so that the stored onsets and
    # the markers agree whenever the take is shown again).
    new = [(float(t), float(p)) for t, p in zip(result.get("onset_times_s", []),
                                                 result.get("onset_probabilities", []))
           if range_lo <= _marker_frame(t, base, fps) < range_hi]
    onsets = sorted(kept + new)
    old_audio = (None if regen.whole_take
                 else media.resample(regen.audio, regen.sample_rate, mix_rate, samples_out))
    # Review records of the kept markers carry their review state over to the new takes
    # (keyed by where each marker is now: the editor may have moved it).
    markers_now = review.take_markers(scene, base) if base_active else {}
    old_states = {}
    for item in base.review_markers:
        marker = markers_now.get(item.marker_name)
        old_states[marker.frame if marker is not None else item.frame] = item.state

    # Adding takes may move the collection's items: ``base`` and ``active`` are found again
    # by id after the adds (a .blend just opened has no room to spare).
    base_id = base.take_id
    active_id = active.take_id if active is not None else None
    created_files: list[str] = []
    added_ids: list[str] = []
    placed: list[PlacedTake] = []
    uid = scene.foley.next_take_uid
    try:
        for variation, samples in enumerate(audio):
            samples = media.resample(samples, rate_in, mix_rate, samples_out)
            if old_audio is not None:
                samples = media.keep_outside(samples, old_audio, mix_rate, start_s, end_s,
                                             INPAINT_MARGIN_S)
            path, number = write_take_file(scene, snapshot, record.source, placed, samples,
                                           mix_rate)
            created_files.append(path)
            take_id = f"T{uid}"
            uid += 1
            added_ids.append(take_id)
            take = add_take_record(
                record, take_id=take_id, number=number, filepath=stored_path(path, snapshot),
                result=result, settings=settings, variation=variation, sample_rate=mix_rate,
                marker_tag=markers.take_marker_tag(snapshot.marker_prefix, take_id),
                onsets=onsets, base=record.takes[takes.find_take(record, base_id)])
            take.range_start_s, take.range_end_s = start_s, end_s
            take.based_on = base_id
            frames = sorted({_marker_frame(t, take, fps) for t, _ in onsets})
            names = {frame: markers.marker_name(take.marker_tag, k)
                     for k, frame in enumerate(frames, start=1)}
            review.record_placed_take(take, result, variation, [
                (t, p, _marker_frame(t, take, fps)) for t, p in onsets], names)
            for item in take.review_markers:  # kept markers keep their review state
                if not range_lo <= item.frame < range_hi and item.frame in old_states:
                    item.state = old_states[item.frame]
            write_sync_picture(snapshot, take, path, pictures, variation, created_files)
            placed.append(PlacedTake(strip.name, take_id, number, path, strip.channel))

        first_new = record.takes[takes.find_take(record, added_ids[0])]
        sound = takes.load_sound(first_new)
    except Exception as exc:
        for take_id in added_ids:
            index = takes.find_take(record, take_id)
            if index >= 0:
                record.takes.remove(index)
        roll_back(scene, [], [], created_files)
        if isinstance(exc, PlacementError):
            raise
        raise PlacementError(f"Could not place the regenerated range: {exc}") from exc

    # From here on nothing can fail for want of a file: switch the strip and its markers.
    active = record.takes[takes.find_take(record, active_id)] if active_id is not None else None
    if active is not None:
        takes.stash_markers(scene, active)
        markers.remove_take_markers(scene, active.marker_tag)
    takes.set_strip_sound(strip, sound)
    frames = takes.restore_markers(scene, first_new, fps)
    record.active_take = takes.find_take(record, first_new.take_id)
    record.take_index = record.active_take
    placed[0].marker_frames = frames
    scene.foley.next_take_uid = uid
    return placed, []


def _marker_frame(time_s: float, take, fps: float) -> int:
    return sync.onset_marker_frames([time_s], take.frame_start, fps)[0]


def _onsets_at_frames(take, frames, fps: float) -> list[tuple[float, float]]:
    """Onsets (seconds, probability) of ``take`` that make markers at ``frames``.

    A frame where one of the take's onsets lands keeps that onset's exact time; a frame
    without one (a marker the editor moved) becomes an onset at that frame, probability 1.
    """
    by_frame: dict[int, list[tuple[float, float]]] = {}
    for onset in take.onsets:
        by_frame.setdefault(_marker_frame(onset.time_s, take, fps), []).append(
            (onset.time_s, onset.probability))
    kept: list[tuple[float, float]] = []
    for frame in sorted(set(frames)):
        kept += by_frame.get(frame) or [((frame - take.frame_start) / fps, 1.0)]
    return kept
