"""Placement: a result becomes WAV files, sound strips, take records and onset markers.

All of it or nothing: ``place_takes`` records what it creates and removes it again (strips,
sound datablocks, markers, files) if any step fails, so a failure leaves the project and the
output folder as they were. On success the caller pushes one undo step.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import bpy
import numpy as np

from . import compat, files, media, review, sync

MAX_NAME_CHARS = 63  # Blender names (strips, markers) hold 63 bytes


@dataclass
class Snapshot:
    """The source strip as it was when Generate was clicked (placement is relative to it)."""

    scene_name: str
    strip_name: str
    channel: int
    first: int  # first visible frame
    end: int  # exclusive
    content_start: float  # where the strip's source frame 0 sits
    scene_fps: float
    output_dir: str  # absolute, checked at click time
    relative_paths: bool  # store paths relative to the .blend
    marker_prefix: str

    @property
    def length(self) -> int:
        return self.end - self.first

    @property
    def duration_s(self) -> float:
        return sync.range_duration_s(self.first, self.end, self.scene_fps)


@dataclass
class PlacedTake:
    strip_name: str
    take_id: str
    number: int
    filepath: str
    channel: int
    marker_frames: list[int] = field(default_factory=list)


@dataclass
class RegenRequest:
    """A regeneration that makes new takes of a Foley strip: Regenerate Range, or Regenerate
    with Markers (of a range, or of the whole take)."""

    strip_name: str  # the Foley strip
    take_id: str  # the take whose range is regenerated (its audio is the inpaint source)
    frames: tuple[int, int]  # timeline frames [start, end)
    range_s: tuple[float, float]  # seconds from the take's start
    audio: np.ndarray | None  # the take's samples, mono float32 (None: the whole take is redone)
    sample_rate: int

    @property
    def whole_take(self) -> bool:
        """Nothing of the old take is kept: no inpaint source is sent."""
        return self.audio is None


class PlacementError(RuntimeError):
    """Placement was impossible; nothing was left behind."""


def clip_name(name: str, limit: int = MAX_NAME_CHARS) -> str:
    """``name`` cut to what a Blender name holds (bytes, never half a character)."""
    data = name.encode("utf-8")[:limit]
    return data.decode("utf-8", errors="ignore")


def next_take_number(scene, source_name: str) -> int:
    """1 + the highest take number of ``source_name``'s Foley strips in the scene."""
    highest = 0
    for strip in compat.all_strips(scene.sequence_editor):
        settings = strip.foley
        if settings.is_foley and settings.source == source_name:
            for take in settings.takes:
                highest = max(highest, take.number)
    return highest + 1


def remove_take_markers(scene, marker_tag: str) -> int:
    """Remove the timeline markers of one take (names starting with ``marker_tag``)."""
    markers = [m for m in scene.timeline_markers if m.name.startswith(marker_tag)]
    for marker in markers:
        scene.timeline_markers.remove(marker)
    return len(markers)


def _occupied(sequence_editor) -> list[tuple[int, int, int]]:
    return [(s.channel, *compat.strip_range(s)) for s in compat.strips(sequence_editor)]


def place_takes(snapshot: Snapshot, result: dict, audio: list[np.ndarray],
                settings: dict, pictures: list[bytes] | None = None,
                ) -> tuple[list[PlacedTake], list[str]]:
    """Write and place one take per audio variation.

    Args:
        snapshot: the source strip at click time.
        result: the server's ``result`` body (sample rate, seed, onsets, model, ...).
        audio: one float32 [samples] array per variation, at ``result.audio.sample_rate``.
        settings: what was asked (caption, negative_caption, sampler, steps, guidance).
        pictures: the result's sync pictures (PNG bytes, one per variation), written beside
            each take's audio as ``<take file>_sync.png``.
    Returns:
        (the placed takes, warnings for the user).
    Raises:
        PlacementError: nothing was placed (and nothing was left behind).
    """
    scene = bpy.data.scenes.get(snapshot.scene_name)
    if scene is None or scene.sequence_editor is None:
        raise PlacementError(f"Scene {snapshot.scene_name!r} was deleted while generating")
    se = scene.sequence_editor
    warnings: list[str] = []

    # Follow the source strip if it was moved as a whole; otherwise keep the captured range.
    first, end, channel = snapshot.first, snapshot.end, snapshot.channel
    source = compat.all_strips(se).get(snapshot.strip_name)
    if source is not None:
        now_first, now_end = compat.strip_range(source)
        shift = sync.follow_move(snapshot.first, snapshot.content_start, snapshot.length,
                                 now_first, compat.content_start(source), now_end - now_first)
        if shift is None:
            warnings.append(f"{snapshot.strip_name!r} was trimmed or retimed while generating; "
                            "the Foley covers the range that was captured")
        else:
            first, end, channel = first + shift, end + shift, source.channel
    else:
        warnings.append(f"{snapshot.strip_name!r} was deleted or renamed while generating; "
                        "the Foley was placed where it was")

    mix_rate = int(scene.render.ffmpeg.audio_mixrate)
    rate_in = int(result["audio"]["sample_rate"])
    duration_s = (end - first) / snapshot.scene_fps
    samples_out = sync.target_samples(duration_s, mix_rate)
    fps = snapshot.scene_fps
    onsets = list(zip(result.get("onset_times_s", []), result.get("onset_probabilities", [])))

    created_files: list[str] = []
    created_strips: list = []
    created_markers: list = []
    placed: list[PlacedTake] = []
    uid = scene.foley.next_take_uid
    try:
        for variation, samples in enumerate(audio):
            wav = media.wav_float32(media.resample(samples, rate_in, mix_rate, samples_out),
                                    mix_rate)
            number = next_take_number(scene, snapshot.strip_name)
            number = max([number] + [p.number + 1 for p in placed])
            path, number = files.write_new_file(
                snapshot.output_dir, lambda n: files.take_filename(snapshot.strip_name, n),
                number, wav)
            created_files.append(path)

            plan = sync.plan_sound(first, end - first, fps, True)
            occupied = _occupied(se)
            track = sync.free_channel(occupied, channel, plan.frame_start, plan.frame_end)
            if track is None:
                raise PlacementError(f"No free channel above channel {channel} for frames "
                                     f"{plan.frame_start}-{plan.frame_end}")
            name = clip_name(f"{snapshot.strip_name} Foley {number}")
            strip = compat.strips(se).new_sound(name=name, filepath=path, channel=track,
                                               frame_start=plan.frame_start)
            created_strips.append(strip)
            if plan.sound_offset_s and compat.has_sound_offset(strip):
                strip.sound_offset = plan.sound_offset_s
            if compat.strip_range(strip)[1] != plan.frame_end:
                compat.set_strip_end(strip, plan.frame_end)
            stored = _stored_path(path, snapshot)
            if stored != path:
                strip.sound.filepath = stored
            if hasattr(strip, "show_waveform"):
                strip.show_waveform = True

            take_id = f"T{uid}"
            uid += 1
            marker_tag = clip_name(f"{snapshot.marker_prefix}{take_id}.", 40)
            record = strip.foley
            record.is_foley = True
            record.source = snapshot.strip_name
            take = record.takes.add()
            take.take_id = take_id
            take.number = number
            take.filepath = strip.sound.filepath
            take.caption = settings["caption"]
            take.negative_caption = settings["negative_caption"]
            take.seed = str(result["seed"])
            take.sampler = result.get("sampler", settings["sampler"])
            take.steps = int(result.get("steps", 0))
            take.guidance = float(result.get("guidance") or settings["guidance"] or 0.0)
            take.model_id = result.get("model_id", "")
            take.variation = variation
            take.frame_start = plan.frame_start
            take.frame_end = plan.frame_end
            take.start_time_s = first / fps
            take.duration_s = duration_s
            take.sample_rate = mix_rate
            take.created = time.strftime("%Y-%m-%dT%H:%M:%S")
            take.marker_tag = marker_tag
            for time_s, probability in onsets:
                onset = take.onsets.add()
                onset.time_s = float(time_s)
                onset.probability = float(probability)
            record.active_take = record.take_index = len(record.takes) - 1

            frames = sync.onset_marker_frames((t for t, _ in onsets), first, fps, end)
            marker_names = {}
            for k, frame in enumerate(frames, start=1):
                marker = scene.timeline_markers.new(clip_name(f"{marker_tag}{k}"), frame=frame)
                marker.select = False
                created_markers.append(marker)
                marker_names[frame] = marker.name
            review.record_placed_take(take, result, variation, [
                (t, p, f) for t, p in onsets
                for f in sync.onset_marker_frames([t], first, fps, end)], marker_names)
            take.hinted = bool(settings.get("onset_hints_s"))
            if pictures and variation < len(pictures):
                picture = write_sync_picture(snapshot, path, pictures[variation])
                created_files.append(picture)
                take.sync_picture = _stored_path(picture, snapshot)
            placed.append(PlacedTake(strip.name, take_id, number, path, track, frames))
        scene.foley.next_take_uid = uid
    except Exception as exc:
        _roll_back(scene, created_strips, created_markers, created_files)
        if isinstance(exc, PlacementError):
            raise
        raise PlacementError(f"Could not place the Foley: {exc}") from exc
    return placed, warnings


def place_range_takes(snapshot: Snapshot, regen: RegenRequest, result: dict,
                      audio: list[np.ndarray], settings: dict,
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
    from foley_protocol.protocol import INPAINT_MARGIN_S  # imported on use, as in jobs.py

    from . import takes as takes_module  # (takes imports this module)

    scene = bpy.data.scenes.get(snapshot.scene_name)
    if scene is None or scene.sequence_editor is None:
        raise PlacementError(f"Scene {snapshot.scene_name!r} was deleted while generating")
    strip = compat.all_strips(scene.sequence_editor).get(regen.strip_name)
    if strip is None or not strip.foley.is_foley:
        raise PlacementError(f"The Foley strip {regen.strip_name!r} was deleted or renamed "
                             "while generating")
    record = strip.foley
    base_index = takes_module.find_take(record, regen.take_id)
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
        outside = [f for f in takes_module.marker_frames(base, fps)
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
            wav = media.wav_float32(samples, mix_rate)
            number = max([next_take_number(scene, record.source)]
                         + [p.number + 1 for p in placed])
            path, number = files.write_new_file(
                snapshot.output_dir, lambda n: files.take_filename(record.source, n),
                number, wav)
            created_files.append(path)
            stored_path = _stored_path(path, snapshot)
            take_id = f"T{uid}"
            uid += 1
            take = record.takes.add()
            added_ids.append(take_id)
            for name in ("negative_caption", "sampler", "guidance", "model_id", "frame_start",
                         "frame_end", "start_time_s", "duration_s"):
                setattr(take, name, getattr(base, name))
            take.take_id = take_id
            take.number = number
            take.filepath = stored_path
            take.caption = settings["caption"]
            take.seed = str(result["seed"])
            take.sampler = result.get("sampler", base.sampler)
            take.steps = int(result.get("steps", 0))
            take.model_id = result.get("model_id", "") or base.model_id
            take.variation = variation
            take.sample_rate = mix_rate
            take.created = time.strftime("%Y-%m-%dT%H:%M:%S")
            take.marker_tag = clip_name(f"{snapshot.marker_prefix}{take_id}.", 40)
            take.range_start_s, take.range_end_s = start_s, end_s
            take.based_on = base.take_id
            for time_s, probability in onsets:
                onset = take.onsets.add()
                onset.time_s, onset.probability = time_s, probability
            take.hinted = bool(settings.get("onset_hints_s"))
            frames = sorted({_marker_frame(t, take, fps) for t, _ in onsets})
            names = {frame: clip_name(f"{take.marker_tag}{k}") for k, frame in
                     enumerate(frames, start=1)}
            review.record_placed_take(take, result, variation, [
                (t, p, _marker_frame(t, take, fps)) for t, p in onsets], names)
            for item in take.review_markers:  # kept markers keep their review state
                if not range_lo <= item.frame < range_hi and item.frame in old_states:
                    item.state = old_states[item.frame]
            if pictures and variation < len(pictures):
                picture = write_sync_picture(snapshot, path, pictures[variation])
                created_files.append(picture)
                take.sync_picture = _stored_path(picture, snapshot)
            placed.append(PlacedTake(strip.name, take_id, number, path, strip.channel))

        first_new = record.takes[takes_module.find_take(record, added_ids[0])]
        sound = takes_module.load_sound(first_new)
    except Exception as exc:
        for take_id in added_ids:
            index = takes_module.find_take(record, take_id)
            if index >= 0:
                record.takes.remove(index)
        _roll_back(scene, [], [], created_files)
        if isinstance(exc, PlacementError):
            raise
        raise PlacementError(f"Could not place the regenerated range: {exc}") from exc

    # From here on nothing can fail for want of a file: switch the strip and its markers.
    if active is not None:
        takes_module.stash_markers(scene, active)
        remove_take_markers(scene, active.marker_tag)
    takes_module.set_strip_sound(strip, sound)
    frames = takes_module.restore_markers(scene, first_new, fps)
    record.active_take = takes_module.find_take(record, first_new.take_id)
    record.take_index = record.active_take
    placed[0].marker_frames = frames
    scene.foley.next_take_uid = uid
    return placed, []


def write_sync_picture(snapshot: Snapshot, audio_path: str, png: bytes) -> str:
    """Write a take's sync picture beside its audio (``<take>_sync.png``, never over a file
    that exists); returns its path."""
    stem = os.path.splitext(os.path.basename(audio_path))[0]
    picture, _n = files.write_new_file(
        snapshot.output_dir, lambda n: f"{stem}_sync.png" if n == 0
        else f"{stem}_sync.{n:03d}.png", 0, png)
    return picture


def _stored_path(path: str, snapshot: Snapshot) -> str:
    """``path`` as stored on a take: blend-relative when the output folder is."""
    if snapshot.relative_paths and bpy.data.filepath:
        try:
            return bpy.path.relpath(path)
        except ValueError:  # another drive on Windows: keep it absolute
            pass
    return path


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


def _roll_back(scene, strips_made, markers_made, files_made) -> None:
    se = scene.sequence_editor
    for marker in markers_made:
        try:
            scene.timeline_markers.remove(marker)
        except (ReferenceError, RuntimeError):
            pass
    for strip in strips_made:
        try:
            sound = strip.sound
            compat.strips(se).remove(strip)
            if sound is not None and sound.users == 0:
                bpy.data.sounds.remove(sound)
        except (ReferenceError, RuntimeError):
            pass
    for path in files_made:
        try:
            os.unlink(path)
        except OSError:
            pass
