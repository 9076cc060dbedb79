"""Placement: a result becomes WAV files, sound strips, take records and onset markers.

All of it or nothing: ``place_takes`` (and ``range_placement.place_range_takes``) records what
it creates and removes it again (strips, sound datablocks, markers, files) if any step fails,
so a failure leaves the project and the output folder as they were. On success the caller
pushes one undo step. The helpers below (a take's file, record and sync picture) serve both.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import bpy
import numpy as np

from foley_protocol.client import wav_bytes

from . import compat, files, markers, media, review, sync
from .focus import record_region


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

    def inpaint_fields(self) -> dict:
        """The generate request's inpaint fields: the take's own audio (no server-side state
        is needed); none for a whole take."""
        if self.whole_take:
            return {}
        return {"inpaint_audio": self.audio, "inpaint_sample_rate": self.sample_rate,
                "inpaint_range_s": self.range_s}


class PlacementError(RuntimeError):
    """Placement was impossible; nothing was left behind."""


def next_take_number(scene, source_name: str) -> int:
    """1 + the highest take number of ``source_name``'s Foley strips in the scene."""
    highest = 0
    for strip in compat.all_strips(scene.sequence_editor):
        settings = strip.foley
        if settings.is_foley and settings.source == source_name:
            for take in settings.takes:
                highest = max(highest, take.number)
    return highest + 1


def _occupied(sequence_editor) -> list[tuple[int, int, int]]:
    return [(s.channel, *compat.strip_range(s)) for s in compat.strips(sequence_editor)]


def place_takes(snapshot: Snapshot, result: dict, audio: list[np.ndarray],
                settings, pictures: list[bytes] | None = None,
                ) -> tuple[list[PlacedTake], list[str]]:
    """Write and place one take per audio variation.

    Args:
        snapshot: the source strip at click time.
        result: the server's ``result`` body (sample rate, seed, onsets, model, ...).
        audio: one float32 [samples] array per variation, at ``result.audio.sample_rate``.
        settings: what was asked (``job_request.GenerateSettings``).
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
            samples = media.resample(samples, rate_in, mix_rate, samples_out)
            path, number = write_take_file(scene, snapshot, snapshot.strip_name, placed,
                                           samples, mix_rate)
            created_files.append(path)

            plan = sync.plan_sound(first, end - first, fps, True)
            occupied = _occupied(se)
            track = sync.free_channel(occupied, channel, plan.frame_start, plan.frame_end)
            if track is None:
                raise PlacementError(f"No free channel above channel {channel} for frames "
                                     f"{plan.frame_start}-{plan.frame_end}")
            name = markers.clip_name(f"{snapshot.strip_name} Foley {number}")
            strip = compat.strips(se).new_sound(name=name, filepath=path, channel=track,
                                               frame_start=plan.frame_start)
            created_strips.append(strip)
            if plan.sound_offset_s and compat.has_sound_offset(strip):
                strip.sound_offset = plan.sound_offset_s
            if compat.strip_range(strip)[1] != plan.frame_end:
                compat.set_strip_end(strip, plan.frame_end)
            stored = stored_path(path, snapshot)
            if stored != path:
                strip.sound.filepath = stored
            if hasattr(strip, "show_waveform"):
                strip.show_waveform = True

            take_id = f"T{uid}"
            uid += 1
            record = strip.foley
            record.is_foley = True
            record.source = snapshot.strip_name
            take = add_take_record(
                record, take_id=take_id, number=number, filepath=strip.sound.filepath,
                result=result, settings=settings, variation=variation, sample_rate=mix_rate,
                marker_tag=markers.take_marker_tag(snapshot.marker_prefix, take_id),
                onsets=onsets)
            take.negative_caption = settings.negative_caption
            take.guidance = float(result.get("guidance") or settings.guidance or 0.0)
            take.frame_start = plan.frame_start
            take.frame_end = plan.frame_end
            take.start_time_s = first / fps
            take.duration_s = duration_s
            record.active_take = record.take_index = len(record.takes) - 1

            frames = sync.onset_marker_frames((t for t, _ in onsets), first, fps, end)
            made = markers.add_markers(scene, take.marker_tag, frames)
            created_markers += made
            review.record_placed_take(take, result, variation, [
                (t, p, f) for t, p in onsets
                for f in sync.onset_marker_frames([t], first, fps, end)],
                {m.frame: m.name for m in made})
            write_sync_picture(snapshot, take, path, pictures, variation, created_files)
            placed.append(PlacedTake(strip.name, take_id, number, path, track, frames))
        scene.foley.next_take_uid = uid
    except Exception as exc:
        roll_back(scene, created_strips, created_markers, created_files)
        if isinstance(exc, PlacementError):
            raise
        raise PlacementError(f"Could not place the Foley: {exc}") from exc
    return placed, warnings


def write_take_file(scene, snapshot: Snapshot, source_name: str, placed: list[PlacedTake],
                    samples: np.ndarray, sample_rate: int) -> tuple[str, int]:
    """Write one take's WAV file under the next free take number of ``source_name`` (above
    those of ``placed``, the takes made so far from this result); returns (path, number)."""
    number = max([next_take_number(scene, source_name)] + [p.number + 1 for p in placed])
    wav = wav_bytes(np.ascontiguousarray(samples, dtype="<f4"), sample_rate)
    return files.write_new_file(snapshot.output_dir,
                                lambda n: files.take_filename(source_name, n), number, wav)


# a range's new take keeps what its base take was made from and where it sits
_KEPT_FROM_BASE = ("negative_caption", "sampler", "guidance", "model_id", "frame_start",
                   "frame_end", "start_time_s", "duration_s")


def add_take_record(record, *, take_id: str, number: int, filepath: str, result: dict,
                    settings, variation: int, sample_rate: int, marker_tag: str,
                    onsets: list[tuple[float, float]], base=None):
    """A new take record in ``record.takes`` (a Foley strip's settings) for one variation of
    ``result``; ``base``: the take a range regeneration started from (its source, frames and
    model settings carry over). Returns the record."""
    # read before the add: adding to a collection may move its items (``base`` is one of them)
    kept = {name: getattr(base, name) for name in _KEPT_FROM_BASE} if base is not None else {}
    take = record.takes.add()
    for name, value in kept.items():
        setattr(take, name, value)
    take.take_id = take_id
    take.number = number
    take.filepath = filepath
    take.caption = settings.caption
    take.seed = str(result["seed"])
    take.sampler = result.get("sampler", kept.get("sampler", settings.sampler))
    take.steps = int(result.get("steps", 0))
    take.model_id = result.get("model_id", "") or kept.get("model_id", "")
    take.variation = variation
    take.sample_rate = sample_rate
    take.created = time.strftime("%Y-%m-%dT%H:%M:%S")
    take.marker_tag = marker_tag
    for time_s, probability in onsets:
        onset = take.onsets.add()
        onset.time_s, onset.probability = float(time_s), float(probability)
    take.hinted = bool(settings.onset_hints_s)
    record_region(take, settings.focus_region, settings.focus_label)
    levels = result.get("audio_levels") or []  # from 1.2 servers
    if variation < len(levels):
        take.near_silent = bool(levels[variation]["near_silent"])
        take.loudest_dbfs = float(levels[variation]["loudest_dbfs"])
    take.server_warnings = "; ".join(result.get("warnings", []))
    return take


def write_sync_picture(snapshot: Snapshot, take, audio_path: str,
                       pictures: list[bytes] | None, variation: int,
                       created_files: list[str]) -> None:
    """Write variation ``variation``'s sync picture (if the result has one) beside its take's
    audio (``<take>_sync.png``, never over a file that exists) and record it on ``take``."""
    if not pictures or variation >= len(pictures):
        return
    stem = os.path.splitext(os.path.basename(audio_path))[0]
    picture, _n = files.write_new_file(
        snapshot.output_dir, lambda n: f"{stem}_sync.png" if n == 0
        else f"{stem}_sync.{n:03d}.png", 0, pictures[variation])
    created_files.append(picture)
    take.sync_picture = stored_path(picture, snapshot)


def stored_path(path: str, snapshot: Snapshot) -> str:
    """``path`` as stored on a take: blend-relative when the output folder is."""
    if snapshot.relative_paths and bpy.data.filepath:
        try:
            return bpy.path.relpath(path)
        except ValueError:  # another drive on Windows: keep it absolute
            pass
    return path


def roll_back(scene, strips_made, markers_made, files_made) -> None:
    """Remove what a failed placement made (each may be gone already)."""
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
