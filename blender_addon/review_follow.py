"""The review data that follows a placed take, and sync pictures redrawn after marker edits.

From protocol 1.4 the server sends a take's ``result`` as soon as its audio and onsets exist,
and its review data (motion events, audio onsets, sync pictures) in a ``review`` message right
after it: the job loop places the take on the result, and ``ReviewFollow`` fills the placed
takes' review data and writes their sync pictures when the review arrives. A review that never
comes (timeout, server lost: the client makes a ``review`` event that says so) leaves the takes
as they are, without review data; the take is never lost for it. A server before 1.4 sends the
review inside the result, which placement records as before.

A redraw: the take's sync picture shows the markers it was drawn with
(``take.sync_picture_markers``); after the editor moved, added or deleted markers, Show Sync
Picture asks the server (``redraw``) to draw it again from the edited markers, and the new
picture is written beside the take (never over a file) and shown.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import bpy
from foley_protocol.client import redraw_picture, result_sync_pictures
from foley_protocol.protocol import DEFAULT_TIMEOUTS_S

from . import compat, files, messages, placement, review

logger = logging.getLogger(__name__)

# The client ends an awaited review or redraw itself at its timeout; one whose client went away
# (another server, the add-on disabled) is forgotten a little after that.
FORGET_AFTER_S = {"review": DEFAULT_TIMEOUTS_S["review"] + 5.0,
                  "redraw": DEFAULT_TIMEOUTS_S["redraw"] + 5.0}


def find_take(scene_name: str, strip_name: str, take_id: str):
    """The take record ``take_id`` of the Foley strip ``strip_name``, or None (deleted)."""
    scene = bpy.data.scenes.get(scene_name)
    if scene is None or scene.sequence_editor is None:
        return None
    strip = compat.all_strips(scene.sequence_editor).get(strip_name)
    if strip is None:
        return None
    return next((t for t in strip.foley.takes if t.take_id == take_id), None)


def markers_key(times_s: list[float]) -> str:
    """The marker times a picture shows, as stored on the take (ms: a frame is ≥ 4 ms)."""
    return ",".join(f"{t:.3f}" for t in times_s)


def needs_redraw(scene, take) -> bool:
    """The take's markers are no longer those its sync picture shows."""
    return markers_key(review.review_marker_times_s(scene, take)) != take.sync_picture_markers


@dataclass
class RedrawAsk:
    """A redraw sent: which take, and the markers it asked for."""

    scene_name: str
    strip_name: str
    take_id: str
    markers: str
    show: bool  # show the picture when it comes (an operator asked, in the GUI)
    sent_at: float = 0.0  # time.monotonic()


class ReviewFollow:
    """Jobs whose takes wait for their review, and redraws sent, by request id."""

    def __init__(self):
        self.waiting: dict[str, object] = {}  # generate id -> its placed Job
        self.redraws: dict[str, RedrawAsk] = {}
        self.last_picture: str = ""  # the path of the last picture a redraw wrote (tests)

    @property
    def pending(self) -> bool:
        """Reviews or redraws still to come (those waited for too long forgotten)."""
        now = time.monotonic()
        for request_id, job in list(self.waiting.items()):
            if now - job.review_since > FORGET_AFTER_S["review"]:
                job.review_due = False
                del self.waiting[request_id]
        for request_id, ask in list(self.redraws.items()):
            if now - ask.sent_at > FORGET_AFTER_S["redraw"]:
                del self.redraws[request_id]
        return bool(self.waiting or self.redraws)

    def forget(self) -> None:
        """Another file is opened: a review or redraw that comes now has no take to fill."""
        for job in self.waiting.values():
            job.review_due = False
        self.waiting.clear()
        self.redraws.clear()

    def placed(self, job) -> None:
        """After ``job``'s takes were placed: remember its request on them; wait for their
        review when the result says one follows."""
        for placed_take in job.placed:
            take = find_take(job.snapshot.scene_name, placed_take.strip_name,
                             placed_take.take_id)
            if take is not None:
                take.request_id = job.request_id or ""
                scene = bpy.data.scenes.get(job.snapshot.scene_name)
                if take.sync_picture:  # drawn by a server before 1.4, with the onsets
                    take.sync_picture_markers = markers_key(
                        review.review_marker_times_s(scene, take))
        if (job.result_body or {}).get("review_follows") and job.request_id:
            job.review_due, job.review_since = True, time.monotonic()
            self.waiting[job.request_id] = job

    def on_event(self, event) -> bool:
        """Take a ``review`` of a placed job or a redraw's reply; False for any other event."""
        if event.type == "review" and event.request_id in self.waiting:
            self._fill(self.waiting.pop(event.request_id), event)
            return True
        ask = self.redraws.pop(event.request_id, None) if event.request_id else None
        if ask is None:
            return False
        if event.type == "redraw_reply":
            self._write_redraw(ask, redraw_picture(event))
        elif event.type == "error":
            messages.report(f"Sync picture not redrawn: {event.body.get('message')}",
                            "WARNING")
        return True

    def _fill(self, job, event) -> None:
        t0 = time.perf_counter()
        body = event.body
        job.review_due = False
        job.review_body = body
        if body.get("missing"):
            logger.info("%s: no review data: %s", job.label, body["missing"])
            job.review_missing = str(body["missing"])
            return
        pictures = result_sync_pictures(event)
        for variation, placed_take in enumerate(job.placed):
            take = find_take(job.snapshot.scene_name, placed_take.strip_name,
                             placed_take.take_id)
            if take is None:  # deleted or renamed since: nothing to fill
                continue
            review.record_review_data(take, body, variation)
            try:
                placement.write_sync_picture(job.snapshot, take, placed_take.filepath, pictures,
                                             variation, [])
            except OSError as exc:
                logger.warning("%s: sync picture not written: %s", job.label, exc)
                continue
            if take.sync_picture:
                scene = bpy.data.scenes.get(job.snapshot.scene_name)
                take.sync_picture_markers = markers_key(
                    review.review_marker_times_s(scene, take))
        job.timings_s["review_fill_s"] = time.perf_counter() - t0
        job.timings_s["review_after_result_s"] = time.perf_counter() - (job.result_at or t0)
        compat.tag_redraw_sequencer()

    # ---- redraws ------------------------------------------------------------------------

    def redraw(self, client, scene, strip, take, show: bool = True) -> str:
        """Ask the server for ``take``'s sync picture with its markers as they are now;
        returns the redraw request's id.

        Raises:
            ValueError: the take has no server job to redraw from, or the server is older.
        """
        if not take.request_id:
            raise ValueError(f"Take {take.number} was made before sync pictures could be "
                             "redrawn: generate it again")
        if client is None or not client.connected or (client.protocol_minor or 0) < 4:
            raise ValueError("The server is not connected, or too old to redraw sync pictures")
        times = review.review_marker_times_s(scene, take)
        request_id = client.redraw(take.request_id, take.variation, times, review.scene_fps(scene))
        self.redraws[request_id] = RedrawAsk(scene.name, strip.name, take.take_id,
                                             markers_key(times), show, time.monotonic())
        return request_id

    def _write_redraw(self, ask: RedrawAsk, png: bytes) -> None:
        take = find_take(ask.scene_name, ask.strip_name, ask.take_id)
        if take is None:
            return
        audio = bpy.path.abspath(take.filepath)
        stem = os.path.splitext(os.path.basename(audio))[0]
        path, _n = files.write_new_file(os.path.dirname(audio),
                                        lambda n: f"{stem}_sync.{n:03d}.png", 1, png)
        take.sync_picture = bpy.path.relpath(path) if take.filepath.startswith("//") \
            and bpy.data.filepath else path
        take.sync_picture_markers = ask.markers
        self.last_picture = path
        if ask.show:
            show_image(bpy.context, bpy.data.images.load(path, check_existing=True))


def show_image(context, image) -> bool:
    """Show ``image`` in an Image Editor: an open one, else a new window (GUI only)."""
    screen = context.screen
    areas = list(screen.areas) if screen is not None else []
    area = next((a for a in areas if a.type == "IMAGE_EDITOR"), None)
    if area is None and context.window is not None:
        try:
            bpy.ops.wm.window_new()
            area = bpy.context.window_manager.windows[-1].screen.areas[0]
            area.type = "IMAGE_EDITOR"
        except (RuntimeError, IndexError):
            logger.debug("could not open an image editor window", exc_info=True)
            area = None
    if area is None:
        return False
    area.spaces.active.image = image
    return True
