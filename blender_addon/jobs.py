"""The job loop: one poll function, driven by a Blender timer (or pumped by a script).

``poll_jobs()`` does a bounded slice of work and returns when to be called again (seconds) or
None when there is nothing left to do. One call: let the client exchange messages (never
blocks), route replies to jobs, render a few frames of the job being captured (~40 ms at
most), send a captured job, place a finished one. No threads, nothing waits on the UI thread.

A job's life: ``job.JobState``. Around the loop: ``connection`` (the client, server status),
``read_ahead`` (prepare), ``frame_route`` (where frames come from), ``messages`` (what the
editor reads), ``job_request`` (what the operators queue). In the bpy module (tests,
``v2a demo``) timers never fire: call ``wait_until_idle()``, which pumps ``poll_jobs()``.
"""

from __future__ import annotations

import itertools
import logging
import time

import bpy
from foley_protocol.client import result_audio_numpy, result_sync_pictures
from foley_protocol.protocol import ProtocolError

from . import compat, frame_route, messages, placement, range_placement
from . import recovery, review_follow, sync
from .capture import CaptureError
from .connection import Connection
from .job import ON_SERVER, WAITING_FOR_FRAMES, Job, JobState
from .read_ahead import ReadAhead

logger = logging.getLogger(__name__)

TICK_BUDGET_S = 0.040  # work per timer call; the UI stays responsive (< 50 ms per tick)
CAPTURE_INTERVAL_S = 0.0  # next tick as soon as Blender has handled its events
ACTIVE_INTERVAL_S = 0.1  # while jobs wait on the server
IDLE_INTERVAL_S = 1.0  # connected, nothing to do: heartbeats and server status
HISTORY = 8  # finished jobs kept for the panel


class JobManager:
    """The add-on's jobs, its one connection to the server and what it read ahead."""

    def __init__(self):
        self.jobs: list[Job] = []
        self.connection = Connection()
        self.read_ahead = ReadAhead()
        self.routes = frame_route.RouteCache()  # the panel's frame route lines
        self.last_message: tuple[str, str] = ("", "INFO")  # (text, INFO | WARNING | ERROR)
        self.tick_seconds: list[float] = []  # duration of every poll_jobs call (for tests)
        # (seconds, what the tick did: "poll", "capture", "send", "place") of the slowest
        # ticks, for bench/bench_addon_overhead.py's per-phase report
        self.tick_phases: list[tuple[float, str]] = []
        self._phase = "poll"
        self._numbers = itertools.count(1)
        self.recovery = recovery.JobRecovery(self)
        self.review = review_follow.ReviewFollow()  # review data after the take (1.4), redraws

    @property
    def prepared(self) -> dict[str, str]:
        """Strip name -> "reading", "ready" or why not (read ahead; panel, tests)."""
        return self.read_ahead.prepared

    def frames_route(self, scene, strip, prefs) -> str:
        """The panel's line on where Generate gets ``strip``'s frames, computed now."""
        return frame_route.route_text(scene, strip, prefs, self.connection.server_info,
                                      self.read_ahead)

    def forget_read_ahead(self) -> None:
        self.read_ahead.forget()
        self.routes.clear()

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
            self._end(job, JobState.CANCELLED, messages.unchanged(reason), "INFO")
            count += 1
        return count

    def _end(self, job: Job, state: JobState, message: str, level: str) -> None:
        if job.capture is not None:
            job.capture.close()
            job.capture = None  # the captured frames are no longer needed
        client = self.connection.client
        if job.request_id is not None and job.state in ON_SERVER \
                and state == JobState.CANCELLED and client is not None:
            try:
                client.cancel(job.request_id)
            except Exception:  # the connection is gone: the server drops the job itself
                logger.debug("cancel of %s not sent", job.request_id, exc_info=True)
        job.state = state
        job.message = message
        job.warned = level == "WARNING"
        self.last_message = (f"{job.label}: {message}", level)
        messages.report(self.last_message[0], level)
        finished = [j for j in self.jobs if not j.active]
        for old in finished[:-HISTORY]:
            self.jobs.remove(old)
        self.recovery.ended(job)

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
        client = self.connection.client
        if client is None:
            return None
        now = time.monotonic()
        for event in client.poll(0):
            self._on_event(event)
        ready = self.connection.ready

        # Connection: fail jobs that waited too long for a ready server.
        if not ready:
            for job in self.active_jobs():
                if job.state == JobState.CONNECTING:
                    why = self.connection.waited_too_long(job.created_at, job.job_timeout_s,
                                                          job.connect_deadline)
                    if why is not None:
                        self._end(job, JobState.FAILED, why, "ERROR")

        # Capture: one job at a time, within the tick budget.
        if ready:
            capturing = next((j for j in self.active_jobs() if j.state in WAITING_FOR_FRAMES),
                             None)
            if capturing is not None:
                self._capture_step(capturing, client, t0)

        self.recovery.poll(client, now)  # fetch the takes of jobs sent before
        if ready and self.read_ahead.pending:
            self.read_ahead.send(client)
            self.routes.clear()

        self.connection.refresh_status(now)
        if self._phase == "poll":  # a tick that rendered or placed nothing has time to spare
            self.routes.refresh(bpy.context, now, self.connection.server_info,
                                self.read_ahead)

        if ready and any(j.state in WAITING_FOR_FRAMES for j in self.active_jobs()):
            return CAPTURE_INTERVAL_S
        if self.active_jobs() or self.review.pending:
            return ACTIVE_INTERVAL_S
        return IDLE_INTERVAL_S

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
                job.capture = frame_route.start_capture(scene, snap.strip_name, frames,
                                                        short_side, reads_files)
                job.state = JobState.CAPTURING
                job.timings_s["model_fps"] = model_fps
            budget = max(0.005, TICK_BUDGET_S - (time.perf_counter() - t0))
            if not job.capture.step(budget):
                return
        except CaptureError as exc:
            self._end(job, JobState.FAILED, messages.unchanged(str(exc)), "ERROR")
            return
        except Exception as exc:  # a Blender error while rendering: report, never crash
            logger.exception("capture of %s failed", snap.strip_name)
            self._end(job, JobState.FAILED, messages.capture_failed(exc), "ERROR")
            return
        self._send(job, client)

    def _send(self, job: Job, client) -> None:
        self._phase = "send" if self._phase == "poll" else f"{self._phase}+send"
        capture = job.capture
        job.timings_s["capture_s"] = capture.seconds
        job.timings_s["capture_longest_step_s"] = capture.longest_step_s
        job.timings_s["frames"] = len(capture.frames)
        images = capture.images
        capture.close()
        job.capture = None
        ready = isinstance(capture, frame_route.ReadyFrames)
        from_source = ready and capture.source is not None
        job.timings_s["capture_cached"] = float(ready and not from_source)
        job.timings_s["frames_from_source"] = float(from_source)
        frame_route.remember_capture(capture)
        recovery.choose_seed(job)  # a Retry must get the same audio
        s = job.settings
        t_send = time.perf_counter()
        inpaint = job.regen.inpaint_fields() if job.regen is not None else {}
        try:
            job.request_id = client.generate(
                capture.source if from_source else images,
                frame_encoding="source" if from_source else "rgb24",
                frames_fps=job.timings_s["model_fps"],
                duration_s=job.snapshot.duration_s, caption=s.caption,
                start_time_s=job.snapshot.first / job.snapshot.scene_fps,
                negative_caption=s.negative_caption, seed=s.seed, steps=s.steps,
                guidance=s.guidance, sampler=s.sampler, variations=s.variations,
                sync_picture_frame_rate=job.snapshot.scene_fps,
                onset_hints_s=s.onset_hints_s, focus_region=s.focus_region,
                timeout_s=job.job_timeout_s, **inpaint)
        except (ProtocolError, ValueError) as exc:
            self._end(job, JobState.FAILED, messages.refused_before_sending(exc), "ERROR")
            return
        job.timings_s["send_s"] = time.perf_counter() - t_send
        recovery.record(job)
        job.sent_at = time.perf_counter()
        job.state = JobState.QUEUED
        job.progress = {"stage": "queued"}

    def _on_event(self, event) -> None:
        if self.recovery.on_event(event):
            return
        if self.connection.on_event(event):
            if event.type == "disconnected":
                self.routes.clear()
            return
        if self.read_ahead.on_event(event):
            self.routes.clear()
            return
        if self.review.on_event(event):
            return
        job = next((j for j in self.jobs if j.request_id == event.request_id and j.active), None)
        if job is None:
            return  # a late reply to a cancelled job, a pong, a hello reply, ...
        if event.type == "progress":
            job.progress = event.body
            job.state = JobState.QUEUED if event.body.get("stage") == "queued" \
                else JobState.RUNNING
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
                job.state = JobState.CONNECTING
                return
            self.recovery.on_job_error(job, event.body)
            self._end(job, JobState.FAILED, messages.server_error(event.body), "ERROR")

    def _place(self, job: Job, event) -> None:
        job.state = JobState.PLACING
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
                placed, warnings = range_placement.place_range_takes(
                    job.snapshot, job.regen, body, audio, job.settings, pictures)
            else:
                placed, warnings = placement.place_takes(job.snapshot, body, audio,
                                                         job.settings, pictures)
        except placement.PlacementError as exc:
            self._end(job, JobState.FAILED, messages.unchanged(str(exc)), "ERROR")
            return
        except Exception as exc:
            logger.exception("placement for %s failed", job.label)
            self._end(job, JobState.FAILED, messages.placement_failed(exc), "ERROR")
            return
        job.placed = placed
        job.timings_s["placement_s"] = time.perf_counter() - t0
        undo_push(f"Foley for {job.label}")
        # the server's warnings first: a near-silent take is said before anything else
        warnings = list(body.get("warnings", [])) + warnings
        text = messages.placed([p.strip_name for p in placed],
                               len(body.get("onset_times_s", [])), body.get("seed"), warnings)
        self.review.placed(job)  # its review data follows (1.4) or came with it
        self._end(job, JobState.DONE, text, "WARNING" if warnings else "INFO")


# ---- module level: one manager, the timer, reports ---------------------------------------

_manager: JobManager | None = None


def manager() -> JobManager:
    global _manager
    if _manager is None:
        _manager = JobManager()
    return _manager


def connected_manager(prefs) -> JobManager:
    """The job manager, connected to the preferences' server.

    Raises:
        ValueError: jobs still run on another server (one client at a time).
    """
    jobs_manager = manager()
    server = (prefs.server_address.strip(), prefs.server_public_key.strip())
    jobs_manager.connection.ensure(*server, busy=bool(jobs_manager.active_jobs()),
                                   client_key=recovery.project_key())
    if jobs_manager.connection.key != server:
        raise ValueError(messages.OTHER_SERVER_BUSY)
    return jobs_manager


def read_ahead(scene, strip, prefs) -> None:
    """A movie strip was captioned: a server on this machine may start reading its frames
    (movie_source). Does nothing for other strips, or when the preference is off."""
    if strip.type != "MOVIE" or not prefs.server_reads_movies:
        return
    try:
        jobs_manager = connected_manager(prefs)
    except ValueError:  # jobs still run on another server
        return
    jobs_manager.read_ahead.later(scene.name, strip.name, prefs.capture_short_side)
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
    """Pump ``poll_jobs`` until no job is active and no placed take waits for its review data
    (scripts, tests, the bpy module).

    Raises:
        TimeoutError: jobs are still active after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while manager().active_jobs() or manager().review.pending:
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


def current() -> JobManager | None:
    """The manager if one was made (handlers must not create one)."""
    return _manager


def discard() -> None:
    """Forget the manager: its jobs cancelled, its connection closed (add-on disabled)."""
    global _manager
    if _manager is not None:
        _manager.cancel(reason="The Foley add-on was disabled")
        _manager.connection.close()
        _manager = None
