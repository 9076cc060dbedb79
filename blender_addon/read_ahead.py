"""Reading ahead: a server on this machine reads a captioned movie strip's frames before
Generate is clicked (``prepare``), so that the Generate finds them ready.

The editor typing a caption is the signal (``properties``): the strip is queued here and the
job loop sends the ``prepare`` request once the server is ready.
"""

from __future__ import annotations

import logging

import bpy

from . import compat, movie_source, sync
from .capture import CaptureError, check_capturable

logger = logging.getLogger(__name__)

READING, READY = "reading", "ready"  # states in ReadAhead.prepared (else: why it failed)


def whole_strip_source(scene, strip, short_side_px: int, server_info: dict) -> dict | None:
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


class ReadAhead:
    """Strips to read ahead, the requests in flight and what became of them."""

    def __init__(self):
        # (scene, strip, capture size preference) whose frames the server should read now
        self._to_prepare: list[tuple[str, str, int]] = []
        self._preparing: dict[str, str] = {}  # request id -> strip name
        self.prepared: dict[str, str] = {}  # strip name -> READING, READY or why not
        self.sources: dict[str, dict] = {}  # strip name -> what was read ahead

    @property
    def pending(self) -> bool:
        return bool(self._to_prepare)

    def later(self, scene_name: str, strip_name: str, short_side_px: int) -> None:
        entry = (scene_name, strip_name, short_side_px)
        if entry not in self._to_prepare:
            self._to_prepare.append(entry)

    def forget(self) -> None:
        """Another file is opened: its strips are not these (late replies are dropped)."""
        self._to_prepare.clear()
        self._preparing.clear()
        self.prepared.clear()
        self.sources.clear()

    def send(self, client) -> None:
        """Send the queued ``prepare`` requests (a server that reads no files gets none)."""
        entries, self._to_prepare = self._to_prepare, []
        if not client.server_info.get("reads_local_files"):
            return
        for scene_name, strip_name, short_side_px in entries:
            scene = bpy.data.scenes.get(scene_name)
            strip = compat.strips(scene.sequence_editor).get(strip_name) \
                if scene is not None and scene.sequence_editor is not None else None
            if strip is None:
                continue
            source = whole_strip_source(scene, strip, short_side_px, client.server_info)
            if source is not None:
                self._preparing[client.prepare(source)] = strip_name
                self.prepared[strip_name] = READING
                self.sources[strip_name] = source

    def on_event(self, event) -> bool:
        """Take the reply to a ``prepare`` request; False for every other event."""
        if event.request_id not in self._preparing:
            return False
        strip_name = self._preparing.pop(event.request_id)
        self.prepared[strip_name] = READY if event.type == "prepare_reply" \
            else str(event.body.get("message"))
        logger.info("%s: frames read ahead: %s", strip_name, self.prepared[strip_name])
        return True

    def state(self, scene, strip, short_side_px: int, server_info: dict) -> str | None:
        """READING, READY or why not, for the strip as it is now (None: nothing read ahead
        for it, or read before an edit such as a trim or a new file: not these frames)."""
        state = self.prepared.get(strip.name)
        if state is not None and self.sources.get(strip.name) != whole_strip_source(
                scene, strip, short_side_px, server_info):
            return None
        return state
