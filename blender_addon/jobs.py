"""The job loop: one poll function, driven by a Blender timer (or pumped by a script).

``poll_jobs()`` does a bounded slice of work and returns when to be called again (seconds) or
None when there is nothing left to do. One call: let the client exchange messages (never
blocks), route replies to jobs, render a few frames of the job being captured (~40 ms at
most), send a captured job, place a finished one. No threads, nothing waits on the UI thread.

A job's life: ``connecting`` (until the server says hello) → ``capturing`` (one job at a time,
FIFO) → ``queued`` / ``running`` on the server (progress: stage, step, ETA) → ``placing`` →
``done``; or ``failed`` / ``cancelled``, which leave the project untouched (placement is
all-or-nothing, and nothing is written before the result arrives).

In the bpy module (tests, ``v2a demo``) timers never fire: call ``wait_until_idle()``, which
pumps ``poll_jobs()``.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import bpy

from . import capture_cache, compat, movie_source, placement, sync
from .capture import CaptureError, FrameCapture, check_capturable

logger = logging.getLogger(__name__)

TICK_BUDGET_S = 0.040  # work per timer call; the UI stays responsive (< 50 ms per tick)
CAPTURE_INTERVAL_S = 0.0  # next tick as soon as Blender has handled its events
ACTIVE_INTERVAL_S = 0.1  # while jobs wait on the server
IDLE_INTERVAL_S = 1.0  # connected, nothing to do: heartbeats and server status
STATUS_PERIOD_S = 2.0  # how often to refresh the server status shown in the panel
# Announced to the server, which cancels our jobs after 3 x this of silence: long enough for
# Blender to save a big file or rebuild its undo step on the UI thread (no polls meanwhile);
# the price is that a dead server is noticed after 12 s.
HEARTBEAT_INTERVAL_S = 4.0
HISTORY = 8  # finished jobs kept for the panel

ACTIVE_STATES = ("connecting", "capturing", "sending", "queued", "running", "placing")


@dataclass
class Job:
    """One Generate request for one strip."""

    number: int
    snapshot: placement.Snapshot
    settings: dict[str, Any]  # caption, negative_caption, seed, steps, guidance, sampler, ...
    short_side_px: int  # 0: the server model's input size (capture_side_for)
    connect_deadline: float
    job_timeout_s: float
    state: str = "connecting"
    message: str = ""
    request_id: str | None = None
    capture: FrameCapture | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.monotonic)
    sent_at: float | None = None
    result_at: float | None = None
    placed: list[placement.PlacedTake] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)  # client-side measurements
    server_timings_s: dict[str, float] = field(default_factory=dict)
    result_body: dict[str, Any] | None = None  # the server's result (audio buffers aside)
    regen: placement.RegenRequest | None = None  # set for Regenerate Range
    # the server may not (preference) or could not read the movie file: render it instead
    source_refused: bool = False

    @property
    def label(self) -> str:
        if self.regen is not None:
            first, end = self.regen.frames
            return f"{self.regen.strip_name} (frames {first}–{end - 1})"
        return self.snapshot.strip_name

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def status(self) -> tuple[float, str]:
        """(fraction 0..1 of the current stage, one-line text) for the panel."""
        if self.state == "capturing" and self.capture is not None:
            eta = sync.format_eta(self.capture.eta_s())
            return self.capture.fraction, " · ".join(
                x for x in (f"capturing {self.capture.done}/{len(self.capture.frames)}", eta) if x)
        if self.state in ("queued", "running"):
            p = self.progress
            stage = p.get("stage", self.state)
            eta = sync.format_eta(p.get("eta_s"))
            if stage == "queued":
                text = f"queued, position {p.get('queue_position', '?')}"
                fraction = 0.0
            elif p.get("total_steps"):
                text = f"{stage} {p.get('step', 0)}/{p['total_steps']}"
                fraction = p.get("step", 0) / p["total_steps"]
            else:
                text, fraction = stage, 0.0
            return fraction, " · ".join(x for x in (text, eta) if x)
        if self.state == "done":
            return 1.0, self.message
        return 0.0, self.message or self.state


class JobManager:
    """The add-on's jobs and its one connection to the server."""

    def __init__(self):
        self.jobs: list[Job] = []
        self.client = None
        self.client_key: tuple[str, str] | None = None
        self.server_status: dict[str, Any] | None = None
        self.last_message: tuple[str, str] = ("", "INFO")  # (text, INFO | WARNING | ERROR)
        self.tick_seconds: list[float] = []  # duration of every poll_jobs call (for tests)
        # (seconds, what the tick did: "poll", "capture", "send", "place") of the slowest
        # ticks, for bench/bench_addon_overhead.py's per-phase report
        self.tick_phases: list[tuple[float, str]] = []
        self._phase = "poll"
        self._numbers = itertools.count(1)
        self._status_request: str | None = None
        self._last_status_at = 0.0
        # Reading ahead: (scene, strip, capture size preference) whose movie frames a server on
        # this machine should read now, and the prepare requests in flight (id -> strip name).
        self._to_prepare: list[tuple[str, str, int]] = []
        self._preparing: dict[str, str] = {}
        self.prepared: dict[str, str] = {}  # strip name -> "ready" or why not (panel, tests)
        self._prepared_sources: dict[str, dict] = {}  # strip name -> what was read ahead

    # ---- connection ---------------------------------------------------------------------

    def ensure_client(self, endpoint: str, public_key: str):
        """The client for ``endpoint``; a changed address or key makes a new one (when idle)."""
        key = (endpoint, public_key)
        if self.client is not None and self.client_key != key and not self.active_jobs():
            self.close_client()
        if self.client is None:
            from foley_protocol.client import FoleyClient

            self.client = FoleyClient(
                endpoint, server_public_key=public_key or None,
                client_name=f"Blender {bpy.app.version_string} Foley add-on",
                heartbeat_interval_s=HEARTBEAT_INTERVAL_S)
            self.client_key = key
            self.server_status = None
            self._status_request = None
        return self.client

    def close_client(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None
        self.client_key = None
        self.server_status = None
        self._status_request = None

    def request_status(self) -> None:
        """Refresh the server status at the next tick."""
        self._last_status_at = 0.0

    def connection_text(self) -> str:
        """One line for the panel: connected / connecting / not connected."""
        if self.client is None:
            return "Not connected"
        if not self.client.connected:
            return f"Connecting to {self.client.endpoint}…"
        info = self.client.server_info or {}
        if info.get("state") == "loading":
            return "Connected · server loading its model…"
        return "Connected"

    # ---- jobs ---------------------------------------------------------------------------

    def new_number(self) -> int:
        return next(self._numbers)

    def add(self, job: Job) -> None:
        self.jobs.append(job)
        logger.info("Foley job %d queued for %s", job.number, job.label)

    def active_jobs(self) -> list[Job]:
        return [j for j in self.jobs if j.active]

    def cancel(self, number: int | None = None, reason: str = "Cancelled") -> int:
        """Cancel one job (or all active ones); returns how many were cancelled."""
        count = 0
        for job in self.active_jobs():
            if number is not None and job.number != number:
                continue
            self._end(job, "cancelled", f"{reason}; nothing was changed", "INFO")
            count += 1
        return count

    def _end(self, job: Job, state: str, message: str, level: str) -> None:
        if job.capture is not None:
            job.capture.close()
            job.capture = None  # the captured frames are no longer needed
        if job.request_id is not None and job.state in ("queued", "running") \
                and state == "cancelled" and self.client is not None:
            try:
                self.client.cancel(job.request_id)
            except Exception:  # the connection is gone: the server drops the job itself
                logger.debug("cancel of %s not sent", job.request_id, exc_info=True)
        job.state = state
        job.message = message
        self.last_message = (f"{job.label}: {message}", level)
        report(self.last_message[0], level)
        finished = [j for j in self.jobs if not j.active]
        for old in finished[:-HISTORY]:
            self.jobs.remove(old)

    # ---- the loop -----------------------------------------------------------------------

    def poll(self) -> float | None:
        t0 = time.perf_counter()
        self._phase = "poll"
        try:
            return self._poll(t0)
        finally:
            elapsed = time.perf_counter() - t0
            self.tick_seconds.append(elapsed)
            del self.tick_seconds[:-10000]
            if self._phase != "poll" or elapsed > 0.010:
                self.tick_phases.append((elapsed, self._phase))
                del self.tick_phases[:-10000]
            compat.tag_redraw_sequencer()

    def _poll(self, t0: float) -> float | None:
        client = self.client
        if client is None:
            return None
        now = time.monotonic()
        for event in client.poll(0):
            self._on_event(event)
        jobs = self.active_jobs()

        # Connection: fail jobs that waited too long for a server (a server that answered
        # but is still loading its model gets the job timeout instead).
        ready = client.connected and (client.server_info or {}).get("model_fps")
        for job in jobs:
            if job.state != "connecting" or ready:
                continue
            limit = job.created_at + job.job_timeout_s if client.connected else job.connect_deadline
            if now > limit:
                self._end(job, "failed", _unreachable_message(client, job, bool(self.client_key
                          and self.client_key[1])), "ERROR")

        # Capture: one job at a time, within the tick budget.
        if ready:
            capturing = next((j for j in self.active_jobs()
                              if j.state in ("connecting", "capturing")), None)
            if capturing is not None:
                self._capture_step(capturing, client, t0)

        if ready and self._to_prepare:
            self._send_prepares(client)

        # Status for the panel.
        if client.connected and self._status_request is None \
                and now - self._last_status_at > STATUS_PERIOD_S:
            self._status_request = client.status()
            self._last_status_at = now

        if any(j.state in ("connecting", "capturing") for j in self.active_jobs()) and ready:
            return CAPTURE_INTERVAL_S
        if self.active_jobs():
            return ACTIVE_INTERVAL_S
        return IDLE_INTERVAL_S

    # ---- reading ahead -----------------------------------------------------------------

    def prepare_later(self, scene_name: str, strip_name: str, short_side_px: int) -> None:
        """Have a server on this machine read a movie strip's frames now (the editor has just
        captioned it), so that its Generate finds them ready instead of waiting for them."""
        entry = (scene_name, strip_name, short_side_px)
        if entry not in self._to_prepare:
            self._to_prepare.append(entry)

    def frames_route(self, scene, strip, prefs) -> str:
        """One line for the panel: where Generate will get ``strip``'s frames ("" when the
        server reads no files: every strip is rendered, as always)."""
        info = self.client.server_info if self.client is not None and self.client.connected \
            else None
        if strip.type not in compat.VISUAL_TYPES or not (info or {}).get("reads_local_files") \
                or not info.get("model_fps"):
            return ""
        if not prefs.server_reads_movies:
            return "Frames: rendered by Blender (preference)"
        first, end = compat.strip_range(strip)
        reason = movie_source.ineligible_reason(scene, strip, [first, max(first, end - 1)])
        if reason is not None:
            return f"Frames: rendered by Blender ({reason})"
        state = self.prepared.get(strip.name)
        if state is not None and self._prepared_sources.get(strip.name) != _whole_strip_source(
                scene, strip, prefs.capture_short_side, info):
            state = None  # read ahead before an edit (a trim, a new file): not these frames
        if state == "ready":
            return "Frames: read, ready on the server"
        if state == "reading":
            return "Frames: the server is reading the file…"
        return "Frames: read from the file by the server"

    def forget_read_ahead(self) -> None:
        """Another file is opened: its strips are not these (late replies are dropped)."""
        self._to_prepare.clear()
        self._preparing.clear()
        self.prepared.clear()
        self._prepared_sources.clear()

    def _send_prepares(self, client) -> None:
        entries, self._to_prepare = self._to_prepare, []
        if not client.server_info.get("reads_local_files"):
            return
        for scene_name, strip_name, short_side_px in entries:
            scene = bpy.data.scenes.get(scene_name)
            strip = compat.strips(scene.sequence_editor).get(strip_name) \
                if scene is not None and scene.sequence_editor is not None else None
            if strip is None:
                continue
            source = _whole_strip_source(scene, strip, short_side_px, client.server_info)
            if source is not None:
                self._preparing[client.prepare(source)] = strip_name
                self.prepared[strip_name] = "reading"
                self._prepared_sources[strip_name] = source

    def _capture_step(self, job: Job, client, t0: float) -> None:
        self._phase = "capture"
        snap = job.snapshot
        try:
            if job.capture is None:
                scene = bpy.data.scenes.get(snap.scene_name)
                if scene is None:
                    raise CaptureError(f"Scene {snap.scene_name!r} was deleted")
                model_fps = float(client.server_info["model_fps"])
                frames = sync.capture_frames(snap.first, snap.end, snap.scene_fps, model_fps)
                short_side = job.short_side_px or sync.capture_side_for(client.server_info)
                reads_files = bool(client.server_info.get("reads_local_files")) \
                    and not job.source_refused
                job.capture = self._start_capture(scene, snap.strip_name, frames, short_side,
                                                  reads_files)
                job.state = "capturing"
                job.timings_s["model_fps"] = model_fps
            budget = max(0.005, TICK_BUDGET_S - (time.perf_counter() - t0))
            if not job.capture.step(budget):
                return
        except CaptureError as exc:
            self._end(job, "failed", f"{exc}; nothing was changed", "ERROR")
            return
        except Exception as exc:  # a Blender error while rendering: report, never crash
            logger.exception("capture of %s failed", snap.strip_name)
            self._end(job, "failed", f"Capture failed: {exc}; nothing was changed", "ERROR")
            return
        self._send(job, client)

    @staticmethod
    def _start_capture(scene, strip_name: str, frames: list[int], short_side: int,
                       server_reads_files: bool = False):
        """Where the frames come from: the movie file itself, read by a server on this machine
        (movie_source); an identical earlier capture (capture_cache); or a FrameCapture."""
        # only a top-level strip can be captured (check_capturable refuses the others)
        strip = compat.strips(scene.sequence_editor).get(strip_name) if scene.sequence_editor else None
        key = None
        if strip is not None and server_reads_files:
            check_capturable(scene, strip)  # the same refusals (muted, ...) as a capture
            source = movie_source.source_request(scene, strip, frames, short_side)
            if source is not None:
                return ReadyFrames(frames, source=source)
        if strip is not None:
            key = capture_cache.picture_key(scene, strip, frames, short_side)
            images = capture_cache.get(key)
            if images is not None:
                return ReadyFrames(frames, images=images)
        capture = FrameCapture(scene, strip_name, frames, short_side)
        capture.cache_key = key
        return capture

    @staticmethod
    def _remember_capture(capture) -> None:
        """Keep a finished capture's frames, unless the strip changed while it ran."""
        key = capture.cache_key
        if key is None:  # uncacheable, or served from the cache already
            return
        scene = bpy.data.scenes.get(capture.scene_name)
        if scene is None or scene.sequence_editor is None:
            return
        strip = compat.all_strips(scene.sequence_editor).get(capture.strip_name)
        if strip is not None and capture_cache.picture_key(
                scene, strip, capture.frames, capture.short_side_px) == key:
            capture_cache.put(key, capture.images)

    def _send(self, job: Job, client) -> None:
        from foley_protocol.protocol import ProtocolError

        self._phase = "send" if self._phase == "poll" else f"{self._phase}+send"
        capture = job.capture
        job.timings_s["capture_s"] = capture.seconds
        job.timings_s["capture_longest_step_s"] = capture.longest_step_s
        job.timings_s["frames"] = len(capture.frames)
        images = capture.images
        capture.close()
        job.capture = None
        ready = isinstance(capture, ReadyFrames)
        from_source = ready and capture.source is not None
        job.timings_s["capture_cached"] = float(ready and not from_source)
        job.timings_s["frames_from_source"] = float(from_source)
        self._remember_capture(capture)
        s = job.settings
        t_send = time.perf_counter()
        inpaint = {}
        if job.regen is not None and not job.regen.whole_take:
            # the take's own audio: no server-side state is needed
            inpaint = {"inpaint_audio": job.regen.audio,
                       "inpaint_sample_rate": job.regen.sample_rate,
                       "inpaint_range_s": job.regen.range_s}
        try:
            job.request_id = client.generate(
                capture.source if from_source else images,
                frame_encoding="source" if from_source else "rgb24",
                frames_fps=job.timings_s["model_fps"],
                duration_s=job.snapshot.duration_s, caption=s["caption"],
                start_time_s=job.snapshot.first / job.snapshot.scene_fps,
                negative_caption=s["negative_caption"], seed=s["seed"], steps=s["steps"],
                guidance=s["guidance"], sampler=s["sampler"], variations=s["variations"],
                sync_picture_frame_rate=job.snapshot.scene_fps,
                onset_hints_s=s.get("onset_hints_s"),
                timeout_s=job.job_timeout_s, **inpaint)
        except (ProtocolError, ValueError) as exc:
            self._end(job, "failed", f"The request was refused before sending: {exc}", "ERROR")
            return
        job.timings_s["send_s"] = time.perf_counter() - t_send
        job.sent_at = time.perf_counter()
        job.state = "queued"
        job.progress = {"stage": "queued"}

    def _on_event(self, event) -> None:
        if event.type == "disconnected":
            self.server_status = None
            return
        if event.request_id in self._preparing:
            strip_name = self._preparing.pop(event.request_id)
            self.prepared[strip_name] = "ready" if event.type == "prepare_reply" \
                else str(event.body.get("message"))
            logger.info("%s: frames read ahead: %s", strip_name, self.prepared[strip_name])
            return
        if event.request_id is not None and event.request_id == self._status_request:
            if event.final:
                self._status_request = None
            if event.type == "status_reply":
                self.server_status = event.body
            return
        job = next((j for j in self.jobs if j.request_id == event.request_id and j.active), None)
        if job is None:
            return  # a late reply to a cancelled job, a pong, ...
        if event.type == "progress":
            job.progress = event.body
            job.state = "queued" if event.body.get("stage") == "queued" else "running"
        elif event.type == "result":
            job.result_at = time.perf_counter()
            self._place(job, event)
        elif event.type == "error":
            if event.body.get("code") == "source_unavailable" \
                    and job.timings_s.get("frames_from_source"):
                # The server sees another file (or none): Blender renders the frames instead.
                logger.info("%s: %s; capturing instead", job.label, event.body.get("message"))
                job.source_refused = True
                job.request_id, job.progress = None, {}
                job.state = "connecting"
                return
            self._end(job, "failed", _error_message(event, self.client), "ERROR")

    def _place(self, job: Job, event) -> None:
        from foley_protocol.client import result_audio_numpy, result_sync_pictures

        job.state = "placing"
        self._phase = "place"
        t0 = time.perf_counter()
        body = event.body
        job.result_body = body
        job.server_timings_s = dict(body.get("timings_s", {}))
        job.timings_s["roundtrip_s"] = job.result_at - job.sent_at
        try:
            audio = result_audio_numpy(event)
            pictures = result_sync_pictures(event)
            if job.regen is not None:
                placed, warnings = placement.place_range_takes(job.snapshot, job.regen, body,
                                                               audio, job.settings, pictures)
            else:
                placed, warnings = placement.place_takes(job.snapshot, body, audio, job.settings,
                                                         pictures)
        except placement.PlacementError as exc:
            self._end(job, "failed", f"{exc}; nothing was changed", "ERROR")
            return
        except Exception as exc:
            logger.exception("placement for %s failed", job.label)
            self._end(job, "failed", f"Placement failed: {exc}; nothing was changed", "ERROR")
            return
        job.placed = placed
        job.timings_s["placement_s"] = time.perf_counter() - t0
        undo_push(f"Foley for {job.label}")
        names = ", ".join(p.strip_name for p in placed)
        onsets = len(body.get("onset_times_s", []))
        text = f"placed {names} ({onsets} onsets, seed {body.get('seed')})"
        if warnings:
            text += "; " + "; ".join(warnings)
        self._end(job, "done", text, "WARNING" if warnings else "INFO")


class ReadyFrames:
    """Frames that need no rendering, shaped like a finished FrameCapture: either ``images``
    from capture_cache, or a ``source`` map for a server that reads the movie file itself
    (movie_source)."""

    cache_key = None  # nothing new to remember in capture_cache

    def __init__(self, frames: list[int], images=None, source: dict[str, Any] | None = None):
        self.frames = list(frames)
        self.images = images
        self.source = source
        self.done = len(self.frames)
        self.seconds = 0.0
        self.longest_step_s = 0.0
        self.finished = True
        self.fraction = 1.0

    def eta_s(self) -> float:
        return 0.0

    def step(self, budget_s: float) -> bool:
        return True

    def close(self) -> None:
        pass


def connected_manager(prefs) -> JobManager:
    """The job manager, connected to the preferences' server.

    Raises:
        ValueError: jobs still run on another server (one client at a time).
    """
    jobs_manager = manager()
    server = (prefs.server_address.strip(), prefs.server_public_key.strip())
    jobs_manager.ensure_client(*server)
    if jobs_manager.client_key != server:
        raise ValueError("Foley jobs are still running on the previous server: wait for them "
                         "or cancel them before switching servers")
    return jobs_manager


def new_job(jobs_manager: JobManager, prefs, scene, source, frames: tuple[int, int],
            scene_fps: float, output_dir: str, settings: dict[str, Any],
            regen: placement.RegenRequest | None = None) -> Job:
    """A job for the picture of ``source`` over timeline ``frames`` [first, end)."""
    first, end = frames
    snapshot = placement.Snapshot(
        scene_name=scene.name, strip_name=source.name, channel=source.channel, first=first,
        end=end, content_start=compat.content_start(source), scene_fps=scene_fps,
        output_dir=output_dir, relative_paths=prefs.output_dir.strip().startswith("//"),
        marker_prefix=prefs.marker_prefix)
    return Job(number=jobs_manager.new_number(), snapshot=snapshot, settings=settings,
               short_side_px=prefs.capture_short_side,
               source_refused=not prefs.server_reads_movies,
               connect_deadline=time.monotonic() + prefs.connect_timeout_s,
               job_timeout_s=prefs.job_timeout_s, regen=regen)


def _unreachable_message(client, job: Job, uses_key: bool) -> str:
    waited = time.monotonic() - job.created_at
    info = client.server_info or {}
    if client.connected and info.get("state") == "loading":
        return (f"The Foley server at {client.endpoint} is still loading its model after "
                f"{waited:.0f} s; try again in a moment; nothing was changed")
    hint = ("check the server public key in the add-on preferences"
            if uses_key else "start it with: v2a-server --model default")
    return (f"No answer from the Foley server at {client.endpoint} within {waited:.0f} s: is it "
            f"running? ({hint}); nothing was changed")


def _error_message(event, client) -> str:
    body = event.body
    code = body.get("code")
    text = body.get("message", "")
    if code == "server_lost":
        return (f"Lost the Foley server ({text}): it stopped or crashed; nothing was changed")
    if code == "timeout":
        return "The Foley server gave no result within the job timeout; nothing was changed"
    if code == "cancelled":
        return f"The server cancelled the job ({text}); nothing was changed"
    field_ = f" (field {body['field']})" if body.get("field") else ""
    return f"Server error {code}: {text}{field_}; nothing was changed"


# ---- module level: one manager, the timer, reports ---------------------------------------

_manager: JobManager | None = None


def manager() -> JobManager:
    global _manager
    if _manager is None:
        _manager = JobManager()
    return _manager


def _whole_strip_source(scene, strip, short_side_px: int, server_info: dict) -> dict | None:
    """The ``frames.source`` map a Generate of the whole ``strip`` sends, or None."""
    first, end = compat.strip_range(strip)
    frames = sync.capture_frames(first, end, sync.scene_rate(scene.render.fps,
                                                             scene.render.fps_base),
                                 float(server_info["model_fps"]))
    try:
        check_capturable(scene, strip)
    except CaptureError:
        return None  # Generate will say why
    return movie_source.source_request(scene, strip, frames,
                                       short_side_px or sync.capture_side_for(server_info))


def read_ahead(scene, strip, prefs) -> None:
    """A movie strip was captioned: a server on this machine may start reading its frames
    (movie_source). Does nothing for other strips, or when the preference is off."""
    if strip.type != "MOVIE" or not prefs.server_reads_movies:
        return
    try:
        jobs_manager = connected_manager(prefs)
    except ValueError:  # jobs still run on another server
        return
    jobs_manager.prepare_later(scene.name, strip.name, prefs.capture_short_side)
    ensure_timer()


def poll_jobs() -> float | None:
    """The timer function: one bounded slice of work; seconds until the next call or None."""
    if _manager is None:
        return None
    try:
        return _manager.poll()
    except Exception:  # a timer that raises is dropped by Blender: log and keep going
        logger.exception("Foley job loop failed")
        return ACTIVE_INTERVAL_S


def ensure_timer() -> None:
    """Make sure ``poll_jobs`` runs (GUI). Timers never fire in the bpy module."""
    if not bpy.app.timers.is_registered(poll_jobs):
        bpy.app.timers.register(poll_jobs, first_interval=0.0, persistent=False)


def wait_until_idle(timeout_s: float = 600.0, sleep_s: float = 0.01) -> None:
    """Pump ``poll_jobs`` until no job is active (scripts, tests, the bpy module).

    Raises:
        TimeoutError: jobs are still active after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while manager().active_jobs():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Foley jobs still active after {timeout_s} s: "
                               + ", ".join(f"{j.label} ({j.state})" for j in manager().active_jobs()))
        interval = poll_jobs()
        time.sleep(min(interval if interval is not None else sleep_s, sleep_s))


def undo_push(message: str) -> None:
    """One undo step for a placement made outside an operator (from the timer)."""
    try:
        bpy.ops.ed.undo_push(message=message)
    except RuntimeError:  # no undo stack (e.g. some background contexts)
        logger.debug("undo_push unavailable", exc_info=True)


def report(message: str, level: str = "INFO") -> None:
    """Show ``message`` in the status bar and Info log (from a timer) and the Python log."""
    getattr(logger, {"ERROR": "error", "WARNING": "warning"}.get(level, "info"))(message)
    try:
        bpy.ops.sequencer.foley_report(message=message, level=level)
    except (RuntimeError, AttributeError):
        # An ERROR report raises through bpy.ops; the report itself was made.
        pass


@bpy.app.handlers.persistent
def _on_load_pre(*_args) -> None:
    """Opening another file ends the jobs of this one (their strips are going away)."""
    capture_cache.clear()
    if _manager is not None:
        _manager.cancel(reason="Another file was opened")
        _manager.forget_read_ahead()


def register() -> None:
    bpy.app.handlers.load_pre.append(_on_load_pre)


def unregister() -> None:
    global _manager
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    if bpy.app.timers.is_registered(poll_jobs):
        bpy.app.timers.unregister(poll_jobs)
    if _manager is not None:
        _manager.cancel(reason="The Foley add-on was disabled")
        _manager.close_client()
        _manager = None
