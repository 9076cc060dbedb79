"""Where a job gets its frames: the movie file itself, read by a server on this machine
(``movie_source``); an identical earlier capture (``capture_cache``); or a ``FrameCapture``
that renders them. Also the panel's line saying which, for the active strip."""

from __future__ import annotations

import logging
from typing import Any

import bpy

from . import capture_cache, compat, messages, movie_source
from .capture import FrameCapture, check_capturable
from .preferences import get_preferences
from .read_ahead import READING, READY

logger = logging.getLogger(__name__)


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


def start_capture(scene, strip_name: str, frames: list[int], short_side: int,
                  server_reads_files: bool = False):
    """The frames' source for a job: ReadyFrames (the file, or the cache) or a FrameCapture.

    Raises:
        CaptureError: the strip cannot be captured (muted, ...).
    """
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


def remember_capture(capture) -> None:
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


def route_text(scene, strip, prefs, server_info: dict | None, read_ahead) -> str:
    """One line for the panel: where Generate will get ``strip``'s frames ("" when the
    server reads no files: every strip is rendered, as always). Stats the movie file and walks
    the sequencer's keyframes: call it on change, not on every redraw (``RouteCache``)."""
    if strip.type not in compat.VISUAL_TYPES or not (server_info or {}).get("reads_local_files") \
            or not server_info.get("model_fps"):
        return ""
    if not prefs.server_reads_movies:
        return messages.ROUTE_PREFERENCE
    first, end = compat.strip_range(strip)
    reason = movie_source.ineligible_reason(scene, strip, [first, max(first, end - 1)])
    if reason is not None:
        return messages.route_rendered(reason)
    state = read_ahead.state(scene, strip, prefs.capture_short_side, server_info)
    if state == READY:
        return messages.ROUTE_READY
    if state == READING:
        return messages.ROUTE_READING
    return messages.ROUTE_SERVER_READS


class RouteCache:
    """The panel's frame route line per (scene, strip), computed by the job loop and dropped
    whenever something it depends on may have changed (an edit, the server, a read ahead), and
    every ``REFRESH_S`` (a movie file may change on disk)."""

    REFRESH_S = 2.0

    def __init__(self):
        self._lines: dict[tuple[str, str], str] = {}
        self._since = 0.0
        self._server_info: dict | None = None

    def refresh(self, context, now: float, server_info: dict | None, read_ahead) -> None:
        """Compute the line of the strip the panel shows (the active one), if not cached."""
        if now - self._since > self.REFRESH_S or server_info is not self._server_info:
            self.clear()
            self._since, self._server_info = now, server_info
        scene = compat.vse_scene(context)
        se = scene.sequence_editor if scene is not None else None
        strip = se.active_strip if se is not None else None
        if strip is None or self.get(scene, strip) is not None:
            return
        try:
            line = route_text(scene, strip, get_preferences(context), server_info, read_ahead)
        except Exception:  # an advisory line: never in the way of the jobs
            logger.debug("frame route of %s", strip.name, exc_info=True)
            line = ""
        self.put(scene, strip, line)

    def get(self, scene, strip) -> str | None:
        """The cached line (None: not computed since the last change)."""
        return self._lines.get((scene.name, strip.name))

    def put(self, scene, strip, line: str) -> None:
        self._lines[(scene.name, strip.name)] = line

    def clear(self) -> None:
        self._lines.clear()
