"""What Generate, Regenerate Range and Regenerate with Markers queue: one request builder.

``GenerateSettings`` is what the model is asked (from the preferences, or from a take);
``RequestBuilder`` checks what every request needs (an output folder, a capturable picture
strip, a length the protocol allows, the server) and queues the job. Anything that stops a
request is a ``RequestError`` whose text is for the editor; nothing was queued.
"""

from __future__ import annotations

import time

import bpy
from foley_protocol.protocol import MAX_DURATION_S

from . import compat, files, jobs, placement, sync, takes
from .capture import CaptureError, check_capturable
from .job import GenerateSettings, Job  # GenerateSettings: what callers import from here
from .preferences import get_preferences


class RequestError(ValueError):
    """The request cannot be made (the message says why); nothing was queued."""


def take_range_regen(strip, take, range_s: tuple[float, float],
                     fps: float) -> placement.RegenRequest:
    """Regenerating ``range_s`` (seconds from the take's first frame) of ``take`` on Foley
    ``strip``; the take's audio is the inpaint source, so the rest of it is kept.

    Raises:
        RequestError: the range is not inside the take, or the take's file is unreadable.
    """
    duration_s = (take.frame_end - take.frame_start) / fps
    start_s, end_s = range_s
    if not 0.0 <= start_s < end_s <= duration_s + 1e-6:
        raise RequestError(f"Range {start_s:.3f}-{end_s:.3f} s is not inside take "
                           f"{take.number} (0-{duration_s:.3f} s)")
    end_s = min(end_s, duration_s)
    try:
        audio, rate = takes.read_take_audio(take)
    except takes.TakeError as exc:
        raise RequestError(str(exc)) from None
    frames = (take.frame_start + round(start_s * fps), take.frame_start + round(end_s * fps))
    return placement.RegenRequest(strip_name=strip.name, take_id=take.take_id, frames=frames,
                                  range_s=(start_s, end_s), audio=audio, sample_rate=rate)


def whole_take_regen(strip, take, fps: float) -> placement.RegenRequest:
    """A new take of the same strip for the whole of ``take``, nothing of it kept."""
    first, end = take.frame_start, take.frame_end
    return placement.RegenRequest(strip_name=strip.name, take_id=take.take_id,
                                  frames=(first, end), range_s=(0.0, (end - first) / fps),
                                  audio=None, sample_rate=0)


class RequestBuilder:
    """Queues Foley jobs for one operator call: the output folder is checked once, then
    every strip (``queue``).

    Raises:
        RequestError: the output folder cannot be used.
    """

    def __init__(self, context):
        self.prefs = get_preferences(context)
        try:
            self.output_dir = files.resolve_output_dir(self.prefs.output_dir,
                                                       bpy.data.filepath, bpy.app.tempdir)
        except files.OutputFolderError as exc:
            raise RequestError(str(exc)) from None

    def connect(self) -> jobs.JobManager:
        """The job manager, connected to the preferences' server.

        Raises:
            RequestError: jobs still run on another server (one client at a time).
        """
        try:
            return jobs.connected_manager(self.prefs)
        except ValueError as exc:
            raise RequestError(str(exc)) from None

    @staticmethod
    def picture_strip(scene, name: str, owner: str):
        """The picture strip ``name`` that a Foley strip or take (``owner``) was made for.

        Raises:
            RequestError: it was deleted or renamed.
        """
        strip = compat.all_strips(scene.sequence_editor).get(name)
        if strip is None:
            raise RequestError(f"The picture strip {name!r} of {owner} was deleted or renamed")
        return strip

    def queue(self, scene, source, frames: tuple[int, int], settings: GenerateSettings,
              regen: placement.RegenRequest | None = None) -> Job:
        """Queue a job for the picture of ``source`` over timeline ``frames`` [first, end).

        Raises:
            RequestError: ``source`` cannot be captured, is too long, or the server is busy
                with another address.
        """
        try:
            check_capturable(scene, source)
        except CaptureError as exc:
            raise RequestError(str(exc)) from None
        first, end = frames
        scene_fps = sync.scene_rate(scene.render.fps, scene.render.fps_base)
        duration_s = (end - first) / scene_fps
        if duration_s > MAX_DURATION_S:
            raise RequestError(f"{source.name!r} shows {duration_s:.1f} s; Foley is generated "
                               f"for at most {MAX_DURATION_S:.0f} s at once: split or trim it")
        manager = self.connect()
        prefs = self.prefs
        snapshot = placement.Snapshot(
            scene_name=scene.name, strip_name=source.name, channel=source.channel,
            first=first, end=end, content_start=compat.content_start(source),
            scene_fps=scene_fps, output_dir=self.output_dir,
            relative_paths=prefs.output_dir.strip().startswith("//"),
            marker_prefix=prefs.marker_prefix)
        job = Job(number=manager.new_number(), snapshot=snapshot, settings=settings,
                  short_side_px=prefs.capture_short_side,
                  source_refused=not prefs.server_reads_movies,
                  connect_deadline=time.monotonic() + prefs.connect_timeout_s,
                  job_timeout_s=prefs.job_timeout_s, regen=regen)
        manager.add(job)
        jobs.ensure_timer()
        return job
