"""Takes that outlive Blender (issue 14): what the .blend records of its jobs on the server.

Every .blend has a client key (a uuid4, kept on its scenes) that the add-on sends in hello: the
server keeps the final reply of that key's jobs in its spool, also when Blender is closed or
crashes, and hands it to a later connection with the key (``fetch``). Each job sent to the
server is recorded on its scene (request id, where the take goes, the settings and seed) until
its take is placed or it fails for good; so a saved .blend knows which takes it never got, and
reopening it fetches and places them (once: placing a take forgets its record). A job the
server no longer knows (it was restarted) can be sent again with the same settings and seed.

A Regenerate Range / with Markers job is recorded with its range (strip, take id, frames,
seconds, whole take or not) but not its inpaint source: that is the take's own file, which stays
on disk and is read again (``rebuild_regen``) when the file is reopened and on Retry. If the
take or its file is gone by then, the job ends saying so and nothing is placed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
import uuid
from typing import Any, Callable

import bpy
from foley_protocol.protocol import MAX_SEED

from . import compat, messages, placement, takes
from .job import ON_SERVER, GenerateSettings, Job, JobState

logger = logging.getLogger(__name__)

# A job the server was lost with is fetched when the connection is back; if the server no
# longer knows it (it was restarted) and it is back within this long, the job is sent again by
# itself, once (later: the panel's Retry).
AUTO_RETRY_WINDOW_S = 30.0
RECOVERY_CONNECT_S = 30.0  # a reopened file's jobs wait this long for a server to answer

KEY_PROPERTY = "foley_client_key"
RECORDS_PROPERTY = "foley_open_jobs"


def project_key() -> str:
    """This .blend's client key (made and stored on every scene the first time)."""
    for scene in bpy.data.scenes:
        key = scene.get(KEY_PROPERTY)
        if isinstance(key, str) and key:
            break
    else:
        key = uuid.uuid4().hex
    for scene in bpy.data.scenes:
        if scene.get(KEY_PROPERTY) != key:
            scene[KEY_PROPERTY] = key
    return key


def record(job: Any) -> None:
    """Remember ``job`` (sent, with ``request_id``) on its scene."""
    scene = bpy.data.scenes.get(job.snapshot.scene_name)
    if scene is None or job.request_id is None:
        return
    records = _records(scene)
    entry = {
        "snapshot": dataclasses.asdict(job.snapshot),
        "settings": dataclasses.asdict(job.settings),
        "short_side_px": job.short_side_px,
        "job_timeout_s": job.job_timeout_s,
        "label": job.label,
    }
    if job.regen is not None:
        entry["regen"] = regen_fields(job.regen)
    records[job.request_id] = entry
    scene[RECORDS_PROPERTY] = json.dumps(records)


def regen_fields(regen: placement.RegenRequest) -> dict[str, Any]:
    """What a record keeps of a regeneration: all but the take's samples (its file has them)."""
    return {"strip_name": regen.strip_name, "take_id": regen.take_id,
            "frames": list(regen.frames), "range_s": list(regen.range_s),
            "whole_take": regen.whole_take}


class TakeGone(RuntimeError):
    """A regeneration's take (or its file) is gone: its new takes cannot be placed."""


def rebuild_regen(scene_name: str, fields: dict[str, Any],
                  label: str) -> placement.RegenRequest:
    """The ``RegenRequest`` of a recorded regeneration, its inpaint source read again from the
    take's file (the same samples as when it was first sent).

    Raises:
        TakeGone: the scene, Foley strip, take or take file is gone (the message says which).
    """
    scene = bpy.data.scenes.get(scene_name)
    editor = scene.sequence_editor if scene is not None else None
    strip = compat.all_strips(editor).get(fields["strip_name"]) if editor is not None else None
    index = takes.find_take(strip.foley, fields["take_id"]) \
        if strip is not None and strip.foley.is_foley else -1
    if index < 0:
        raise TakeGone(messages.regen_take_gone(
            label, f"the take of {fields['strip_name']!r} was deleted (or its strip renamed)"))
    audio, rate = None, 0
    if not fields.get("whole_take"):
        try:
            audio, rate = takes.read_take_audio(strip.foley.takes[index])
        except takes.TakeError as exc:
            raise TakeGone(messages.regen_take_gone(label, str(exc))) from None
    first, end = fields["frames"]
    start_s, end_s = fields["range_s"]
    return placement.RegenRequest(strip_name=fields["strip_name"], take_id=fields["take_id"],
                                  frames=(int(first), int(end)),
                                  range_s=(float(start_s), float(end_s)), audio=audio,
                                  sample_rate=int(rate))


def forget(job: Any) -> None:
    """The job's take was placed (or it failed for good, or was sent again): no record."""
    scene = bpy.data.scenes.get(job.snapshot.scene_name)
    if scene is None or job.request_id is None:
        return
    records = _records(scene)
    if records.pop(job.request_id, None) is not None:
        scene[RECORDS_PROPERTY] = json.dumps(records)


def is_recorded(job: Any) -> bool:
    scene = bpy.data.scenes.get(job.snapshot.scene_name)
    return scene is not None and job.request_id in _records(scene)


def open_records() -> list[tuple[str, dict[str, Any]]]:
    """(request id, record) of every job this .blend sent and never got a final reply for."""
    found = []
    for scene in bpy.data.scenes:
        for request_id, entry in _records(scene).items():
            found.append((request_id, entry))
    return found


def snapshot_of(entry: dict[str, Any]) -> placement.Snapshot:
    return placement.Snapshot(**entry["snapshot"])


def _records(scene) -> dict[str, dict[str, Any]]:
    text = scene.get(RECORDS_PROPERTY)
    if not isinstance(text, str) or not text:
        return {}
    try:
        records = json.loads(text)
    except ValueError:
        return {}
    return records if isinstance(records, dict) else {}


def choose_seed(job: Any) -> None:
    """Give a job a seed before it is sent: the add-on picks the random one itself, so that
    the job can be sent again with the same seed (the same audio)."""
    if job.settings.seed is None:
        job.settings = dataclasses.replace(job.settings, seed=random.randrange(MAX_SEED + 1))


def on_end(job: Any, state: JobState) -> None:
    """A job ended: its record goes, unless the server was lost with it (fetched later)."""
    if not (state == JobState.FAILED and job.lost_at is not None):
        forget(job)


class JobRecovery:
    """The job manager's part in recovery: fetch the takes of jobs sent before (a reopened
    file, or the server back after a loss), place them once, and send lost jobs again."""

    def __init__(self, manager: Any):
        self.manager = manager
        self.recovered_takes = 0  # placed from a reopened file's records (the message counts)

    def reopen(self) -> int:
        """Jobs the .blend recorded as sent and never finished: fetch their takes."""
        known = {j.request_id for j in self.manager.jobs if j.active}
        self.recovered_takes = 0
        count = 0
        for request_id, entry in open_records():
            if request_id in known:
                continue
            try:
                snapshot, settings = snapshot_of(entry), GenerateSettings(**entry["settings"])
            except (KeyError, TypeError):
                logger.warning("Foley: an unreadable job record %s was skipped", request_id)
                continue
            regen, gone = None, None
            if entry.get("regen") is not None:
                try:
                    regen = rebuild_regen(snapshot.scene_name, entry["regen"],
                                          str(entry.get("label", snapshot.strip_name)))
                except TakeGone as exc:
                    gone = str(exc)
                except (KeyError, TypeError, ValueError):
                    logger.warning("Foley: an unreadable job record %s was skipped", request_id)
                    continue
            job = Job(self.manager.new_number(), snapshot, settings,
                      int(entry.get("short_side_px", 0)),
                      connect_deadline=time.monotonic() + RECOVERY_CONNECT_S,
                      job_timeout_s=float(entry.get("job_timeout_s", 900.0)),
                      state=JobState.FETCHING, request_id=request_id, reopened=True,
                      regen=regen)
            job.sent_at = time.perf_counter()
            self.manager.add(job)
            if gone is not None:  # its take cannot be placed: not fetched, record forgotten
                self.manager._end(job, JobState.FAILED, gone, "ERROR")
                continue
            count += 1
        return count

    def detach(self) -> None:
        """The file closes: its jobs on the server go on there (their takes are fetched when
        it is opened again); they leave this session's list without a cancel."""
        for job in self.manager.active_jobs():
            if job.state in ON_SERVER and is_recorded(job):
                job.state = JobState.CANCELLED
                job.message = messages.detached()

    def retry(self, job: Any, automatic: bool = False) -> Any:
        """Send ``job`` again as a new job: same place, settings and seed (the same audio);
        a regeneration reads its take's file again (None: the take is gone, job says so)."""
        job.retryable = False
        regen = None
        if job.regen is not None:
            try:
                regen = rebuild_regen(job.snapshot.scene_name, regen_fields(job.regen),
                                      job.label)
            except TakeGone as exc:
                self._give_up(job, str(exc))
                return None
        connect_s = job.connect_deadline - job.created_at
        again = Job(self.manager.new_number(), job.snapshot, job.settings, job.short_side_px,
                    connect_deadline=time.monotonic() + max(connect_s, 1.0),
                    job_timeout_s=job.job_timeout_s, auto_retried=automatic, regen=regen)
        text = messages.retried(again.number, automatic)
        if job.active:
            self.manager._end(job, JobState.CANCELLED, text, "INFO")
        else:
            forget(job)
            job.message = text
        self.manager.add(again)
        return again

    def _give_up(self, job: Any, text: str) -> None:
        """``job`` cannot be sent again: it ends (or stays ended) with ``text``, unrecorded."""
        if job.active:
            self.manager._end(job, JobState.FAILED, text, "ERROR")
            return
        forget(job)
        job.message = text
        self.manager.last_message = (f"{job.label}: {text}", "ERROR")
        messages.report(*self.manager.last_message)

    def poll(self, client: Any, now: float) -> None:
        """Ask for the takes of FETCHING jobs; give up on them when no server answers."""
        connection = self.manager.connection
        for job in self.manager.active_jobs():
            if job.state != JobState.FETCHING:
                continue
            if connection.connected and job.fetch_id is None:
                job.fetch_id = client.fetch(job.request_id, timeout_s=job.job_timeout_s)
            elif not connection.connected:
                why = connection.waited_too_long(job.created_at, job.job_timeout_s,
                                                 job.connect_deadline)
                if why is not None:
                    job.lost_at = job.lost_at or now  # keep its record: fetched later
                    job.retryable = True
                    self.manager._end(job, JobState.FAILED, why, "ERROR")

    def on_event(self, event: Any) -> bool:
        """Take a connection change or a fetch reply; False for every other event."""
        if event.type == "disconnected":
            for job in self.manager.active_jobs():
                job.fetch_id = None  # asked again on the next connection
            return False  # the connection takes it too
        if event.type == "connected":
            self._fetch_lost_jobs()
            return False
        job = next((j for j in self.manager.active_jobs()
                    if j.fetch_id is not None and j.fetch_id == event.request_id), None)
        if job is None:
            return False
        job.fetch_id = None
        if event.type == "error":
            return True  # e.g. the server was lost again: asked on the next connection
        was = event.body["was"]
        if was in ("running", "queued"):
            job.state = JobState(was)
        elif was == "unknown":
            lost_lately = job.lost_at is not None \
                and time.monotonic() - job.lost_at <= AUTO_RETRY_WINDOW_S
            if lost_lately and not job.auto_retried:
                self.retry(job, automatic=True)
                return True
            job.lost_at = job.lost_at or time.monotonic()  # keep the record: Retry later
            job.retryable = True
            self.manager._end(job, JobState.FAILED, messages.lost_by_server(job.label),
                              "WARNING")
        return True  # "done": the take follows, as this job's result

    def on_job_error(self, job: Any, body: dict[str, Any]) -> None:
        """A job's error: lost with the server, its take may still come (fetched when the
        server is back, or when the file is reopened)."""
        if body.get("code") == "server_lost" and job.state in ON_SERVER and is_recorded(job):
            job.lost_at = time.monotonic()
            job.retryable = True

    def ended(self, job: Any) -> None:
        """After the job manager ended ``job``: a reopened file's take placed is said so."""
        on_end(job, job.state)
        if job.reopened and job.state == JobState.DONE:
            self.recovered_takes += 1
            self.manager.last_message = (messages.recovered(self.recovered_takes), "INFO")
            messages.report(*self.manager.last_message)

    def _fetch_lost_jobs(self) -> None:
        """The connection is back: jobs lost with the server a moment ago are asked for."""
        now = time.monotonic()
        for job in self.manager.jobs:
            if job.state == JobState.FAILED and job.retryable and job.lost_at is not None \
                    and now - job.lost_at <= AUTO_RETRY_WINDOW_S and is_recorded(job):
                job.state, job.fetch_id, job.progress = JobState.FETCHING, None, {}
                job.message = ""


# ---- reopening a file -----------------------------------------------------------------------

_connect: Callable[[], Any] | None = None  # the connected job manager (``lifecycle.register``)
_wake: Callable[[], None] | None = None  # start the job loop's timer


@bpy.app.handlers.persistent
def on_load_post(*_args) -> None:
    """A file was opened: fetch the takes of the jobs it sent and never got."""
    if _connect is None or not open_records():
        return
    try:
        manager = _connect()
    except ValueError:  # jobs still run on another server
        return
    if manager.recovery.reopen() and _wake is not None:
        _wake()


def register(connect: Callable[[], Any], wake: Callable[[], None]) -> None:
    global _connect, _wake
    _connect, _wake = connect, wake
    bpy.app.handlers.load_post.append(on_load_post)


def unregister() -> None:
    global _connect, _wake
    _connect = _wake = None
    if on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(on_load_post)
