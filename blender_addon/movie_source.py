"""The fast path: let a server on this machine read a plain movie strip's frames from its file.

For a movie strip that Blender shows exactly as the file's frames (no transform, crop, effect,
modifier, grading or animation; a frame rate equal to the scene's; the Standard view), the
picture an editor sees is the file itself. Rendering it would cost Blender a full-resolution
decode per frame on the UI thread; a server that ``reads_local_files`` decodes the same frames
itself on every core instead (frames encoding "source", ``v2a_server/serving/source_frames.py``). The
request names the file by path, size and mtime: a server that sees another file refuses it and
the job captures as usual. Anything this module cannot vouch for goes the capture way.
"""

from __future__ import annotations

import logging
import os

import bpy

from . import capture_cache, compat, sync
from .capture import strips_to_keep

logger = logging.getLogger(__name__)

# The picture equals the file's frames only under these display settings.
_NEUTRAL_VIEW = {"view_transform": "Standard", "look": "None", "exposure": 0.0, "gamma": 1.0,
                 "use_curve_mapping": False}
_SRGB_NAMES = frozenset({"sRGB", "sRGB Encoded Rec.709 (sRGB)"})  # 4.x / 5.x OCIO names


def source_request(scene, strip, frames: list[int], short_side_px: int) -> dict | None:
    """The ``frames.source`` map for capturing ``frames`` of ``strip``, or None when the strip
    must be rendered (the reason is logged)."""
    reason = ineligible_reason(scene, strip, frames)
    if reason is not None:
        logger.info("%s: rendered by Blender (%s)", strip.name, reason)
        return None
    path = os.path.realpath(bpy.path.abspath(strip.filepath, library=strip.id_data.library))
    try:
        stat = os.stat(path)
    except OSError as exc:
        logger.info("%s: rendered by Blender (%s: %s)", strip.name, path, exc.strerror)
        return None
    render = scene.render
    percentage = sync.render_percentage(render.resolution_x, render.resolution_y, short_side_px)
    start = round(compat.content_start(strip))  # where the file's frame 0 sits
    indices = [int(frame) - start for frame in frames]
    if min(indices) < 0:  # before the file's first frame: what Blender shows there, it renders
        return None
    return {
        "path": path,
        "size_bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "stream_index": int(strip.stream_index),
        "source_fps": sync.scene_rate(render.fps, render.fps_base),
        "frame_indices": indices,
        # Blender's render size: resolution x percentage / 100, rounded down
        "width": render.resolution_x * percentage // 100,
        "height": render.resolution_y * percentage // 100,
        "scale": strip.transform.scale_x * percentage / 100,
    }


def ineligible_reason(scene, strip, frames: list[int]) -> str | None:
    """Why Blender's picture of ``strip`` may differ from its file's frames, or None."""
    if strip.type != "MOVIE":
        return f"{strip.type.lower()} strip"
    if len(strip.modifiers):
        return "strip modifiers"
    t = strip.transform
    # A picture fitted to the frame is a uniform scale about the centre (the server checks
    # that the file, so scaled, fills the frame exactly); anything else is a real transform.
    if (t.offset_x, t.offset_y, t.rotation) != (0, 0, 0) or t.scale_x != t.scale_y \
            or t.scale_x <= 0:
        return "a transform"
    c = strip.crop
    if (c.min_x, c.max_x, c.min_y, c.max_y) != (0, 0, 0, 0):
        return "a crop"
    if strip.use_flip_x or strip.use_flip_y or strip.use_reverse_frames:
        return "flipped or reversed"
    if getattr(strip, "use_deinterlace", False):
        return "deinterlaced"
    if strip.color_saturation != 1 or strip.color_multiply != 1 or strip.blend_alpha != 1:
        return "saturation, multiply or opacity"
    if strip.blend_type not in ("REPLACE", "ALPHA_OVER"):
        return f"blend {strip.blend_type.lower()} (over black, as captured)"
    if len(getattr(strip, "retiming_keys", ())):
        return "retimed"
    if compat.content_start(strip) != round(compat.content_start(strip)):
        return "a sub-frame start"
    if strip.colorspace_settings.name not in _SRGB_NAMES:
        return f"colour space {strip.colorspace_settings.name}"
    if any(getattr(scene.view_settings, k) != v for k, v in _NEUTRAL_VIEW.items()):
        return "a view transform, look, exposure, gamma or curves"
    if scene.display_settings.display_device != "sRGB" \
            or scene.sequencer_colorspace_settings.name not in _SRGB_NAMES:
        return "a non-sRGB display or sequencer colour space"
    if (scene.render.pixel_aspect_x, scene.render.pixel_aspect_y) != (1, 1):
        return "non-square pixels"
    if _animated(scene):
        return "sequencer keyframes or drivers"
    first, last = min(frames), max(frames)
    se = scene.sequence_editor
    for other in strips_to_keep(list(compat.strips(se)), strip) - {strip.name}:
        o_first, o_end = compat.strip_range(compat.strips(se)[other])
        if o_first <= last and o_end > first:
            return f"{other!r} changes its picture"
    return None


def _animated(scene) -> bool:
    """Keyframes, drivers or F-curve modifiers on the sequencer (capture_cache reads them)."""
    try:
        return bool(capture_cache.sequencer_curves(scene))
    except capture_cache.Unfingerprintable:
        return True
