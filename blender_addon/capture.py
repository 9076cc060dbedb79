"""Frame capture: render what the editor sees of one strip, a few frames per timer tick.

Recipe (docs: shared/design/blender.md §2.2): scale the whole VSE layout with
``render.resolution_percentage`` (changing resolution_x/y would crop), render one frame with
``render.render``, save the Render Result as BMP (``save_render``, display-referred: the view
transform the editor sees) and decode it with numpy. Strip transforms, crops, modifiers, trims
and effect strips fed by the strip are all in the picture. Other visual strips are muted so the
model hears only this strip's picture (adjustment layers stay: they grade it).

Every setting touched is restored before the tick ends (try/finally), so between ticks the
project is exactly the user's: the user can play, scrub, edit and save while a capture runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager

import bpy
import numpy as np

from . import compat, media, sync


class CaptureError(RuntimeError):
    """The strip cannot be captured; the message says why."""


def strip_inputs(strip) -> list:
    """Input strips of an effect strip (4.4+: input_1/2, before: seq1/2)."""
    found = []
    for key in ("input_1", "input_2", "seq1", "seq2"):
        other = getattr(strip, key, None)
        if other is not None and other not in found:
            found.append(other)
    return found


def strips_to_keep(top_level, source) -> set[str]:
    """Names of top-level strips left unmuted while capturing ``source``.

    The source, every effect strip fed (directly or through other effects) by it, the other
    inputs of those effects (a cross or multiply needs both), and adjustment strips.
    """
    keep = {source.name}
    changed = True
    while changed:
        changed = False
        for strip in top_level:
            inputs = strip_inputs(strip)
            if strip.name not in keep and any(s.name in keep for s in inputs):
                keep.add(strip.name)
                changed = True
            if strip.name in keep:
                for other in inputs:
                    if other.name not in keep:
                        keep.add(other.name)
                        changed = True
    keep.update(s.name for s in top_level if s.type in compat.GRADING_TYPES)
    return keep


def check_capturable(scene, strip) -> None:
    """Raise CaptureError when ``strip`` cannot be rendered on its own."""
    se = scene.sequence_editor
    if se is None:
        raise CaptureError(f"Scene {scene.name!r} has no sequencer")
    if strip.type not in compat.VISUAL_TYPES:
        raise CaptureError(f"{strip.name!r} is a {strip.type.lower()} strip, not a picture")
    if not any(s == strip for s in compat.strips(se)):
        raise CaptureError(f"{strip.name!r} is inside a meta strip: leave the meta and select "
                           "the meta strip itself")
    if strip.mute:
        raise CaptureError(f"{strip.name!r} is muted: unmute it to generate Foley for it")
    if compat.channel_muted(se, strip.channel):
        raise CaptureError(f"Channel {strip.channel} of {strip.name!r} is muted")


def _render_result_image():
    for image in bpy.data.images:
        if image.type == "RENDER_RESULT":
            return image
    raise CaptureError("Blender produced no Render Result")


@contextmanager
def isolated_render_settings(scene, source, percentage: int):
    """Mute everything but ``source`` (and what it feeds) and set a small BMP output; restore
    all of it, and the current frame, on exit."""
    se = scene.sequence_editor
    render = scene.render
    top_level = list(compat.strips(se))
    keep = strips_to_keep(top_level, source)
    to_mute = [s for s in top_level if s.name not in keep and not s.mute
               and s.type not in {"SOUND"}]
    saved = {
        "percentage": render.resolution_percentage,
        "use_sequencer": render.use_sequencer,
        "use_border": render.use_border,
        "frame": scene.frame_current,
        "subframe": scene.frame_subframe,
        "image": compat.image_format_state(render.image_settings),
    }
    try:
        for strip in to_mute:
            strip.mute = True
        render.resolution_percentage = percentage
        render.use_sequencer = True
        render.use_border = False
        compat.set_image_format(render.image_settings, "BMP")
        render.image_settings.color_mode = "RGB"
        yield
    finally:
        compat.restore_image_format(render.image_settings, saved["image"])
        render.use_border = saved["use_border"]
        render.use_sequencer = saved["use_sequencer"]
        render.resolution_percentage = saved["percentage"]
        for strip in to_mute:
            strip.mute = False
        if (scene.frame_current, scene.frame_subframe) != (saved["frame"], saved["subframe"]):
            scene.frame_current = saved["frame"]
            scene.frame_subframe = saved["subframe"]


class FrameCapture:
    """Renders ``frames`` of one strip, resumable in small steps.

    Args:
        scene: the scene holding the strip (kept by name; re-resolved on each step).
        strip_name: the strip to capture.
        frames: timeline frame numbers to render (``sync.capture_frames``).
        short_side_px: the short side of the captured images (at least; the layout is only
            scaled by whole percents).
    """

    def __init__(self, scene, strip_name: str, frames: list[int], short_side_px: int = 224):
        self.scene_name = scene.name
        self.strip_name = strip_name
        self.frames = list(frames)
        self.short_side_px = short_side_px
        self.cache_key: str | None = None  # set by the job loop (capture_cache)
        self.percentage = sync.render_percentage(scene.render.resolution_x,
                                                 scene.render.resolution_y, short_side_px)
        self.images: np.ndarray | None = None  # [T, H, W, 3] uint8 once the size is known
        self.done = 0
        self.seconds = 0.0  # time spent rendering, all steps together
        self.longest_step_s = 0.0
        self._frame_s = 0.0  # running estimate of one frame's cost
        self._dir = tempfile.mkdtemp(prefix="foley-capture-")
        self._bmp = os.path.join(self._dir, "frame.bmp")

    @property
    def finished(self) -> bool:
        return self.done >= len(self.frames)

    @property
    def fraction(self) -> float:
        return self.done / max(1, len(self.frames))

    def eta_s(self) -> float | None:
        if self.done == 0:
            return None
        return (len(self.frames) - self.done) * self.seconds / self.done

    def _resolve(self):
        scene = bpy.data.scenes.get(self.scene_name)
        if scene is None or scene.sequence_editor is None:
            raise CaptureError(f"Scene {self.scene_name!r} was deleted")
        strip = compat.all_strips(scene.sequence_editor).get(self.strip_name)
        if strip is None:
            raise CaptureError(f"Strip {self.strip_name!r} was deleted or renamed")
        return scene, strip

    def step(self, budget_s: float) -> bool:
        """Render frames until ``budget_s`` would be exceeded (at least one); True when done."""
        if self.finished:
            return True
        scene, strip = self._resolve()
        check_capturable(scene, strip)
        t0 = time.perf_counter()
        with isolated_render_settings(scene, strip, self.percentage):
            while not self.finished:
                t_frame = time.perf_counter()
                self._grab(scene, self.frames[self.done])
                self.done += 1
                cost = time.perf_counter() - t_frame
                self._frame_s = cost if self._frame_s == 0 else 0.7 * self._frame_s + 0.3 * cost
                if time.perf_counter() - t0 + self._frame_s > budget_s:
                    break
        elapsed = time.perf_counter() - t0
        self.seconds += elapsed
        self.longest_step_s = max(self.longest_step_s, elapsed)
        return self.finished

    def _grab(self, scene, frame: int) -> None:
        scene.frame_current = frame
        try:
            bpy.ops.render.render(write_still=False, scene=scene.name)
        except RuntimeError as exc:
            raise CaptureError(f"Blender could not render frame {frame}: {exc}") from None
        _render_result_image().save_render(self._bmp, scene=scene)
        with open(self._bmp, "rb") as fh:
            image = media.read_bmp(fh.read())
        if self.images is None:
            self.images = np.empty((len(self.frames), *image.shape), np.uint8)
        if image.shape != self.images.shape[1:]:
            raise CaptureError(f"frame {frame} came out {image.shape[1]}x{image.shape[0]}, "
                               f"earlier frames {self.images.shape[2]}x{self.images.shape[1]} "
                               "(render settings changed during capture)")
        self.images[self.done] = image

    def close(self) -> None:
        """Delete the temporary folder (the captured images stay in ``images``)."""
        shutil.rmtree(self._dir, ignore_errors=True)


def capture_blocking(scene, strip, model_fps: float, short_side_px: int = 224) -> np.ndarray:
    """Capture a whole strip at once (scripts and tests; blocks the UI for its duration).

    Returns:
        [T, H, W, 3] uint8 frames at ``model_fps`` from the strip's first visible frame.
    """
    check_capturable(scene, strip)
    first, end = compat.strip_range(strip)
    rate = sync.scene_rate(scene.render.fps, scene.render.fps_base)
    capture = FrameCapture(scene, strip.name, sync.capture_frames(first, end, rate, model_fps),
                           short_side_px)
    try:
        while not capture.step(1e9):
            pass
    finally:
        capture.close()
    return capture.images
