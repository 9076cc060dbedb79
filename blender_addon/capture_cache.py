"""Captured frames kept per picture state, so regenerating an unchanged strip renders nothing.

Editors regenerate often (a new seed, Regenerate Range, Regenerate with Markers) and each
request needs the same frames again; rendering them is most of the add-on's cost (about
20 ms per 1080p frame here). The key is a fingerprint of everything that decides the captured
picture: every RNA property of the strip and of the strips rendered with it (effects it
feeds, their other inputs, adjustment layers; metas with their contents), their channels'
mute state, the scene's frame rate, resolution and colour management, animation curves on
the sequencer, and the size and modification time of every file they read. Any change gives
a new key, so a stale picture is never sent. Strips whose picture cannot be fingerprinted
cheaply (a scene, a movie clip or a mask: whole data-blocks with their own animation) are
never cached.

The cache lives in memory for the session (cleared when a file is loaded), capped in bytes,
least recently used first out.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict

import bpy
import numpy as np

from . import compat
from .capture import strips_to_keep

MAX_BYTES = 512 * 1024 * 1024
MAX_DEPTH = 6  # pointer nesting followed (strip → modifier → curve mapping → curve → point)

# Changing these never changes the rendered picture.
_IGNORED = frozenset({
    "rna_type", "select", "select_left_handle", "select_right_handle", "lock", "show_expanded",
    "color_tag", "is_active", "show_retiming_keys", "is_override_data", "use_proxy",
    # MovieStrip.fps opens the file on every read (~140 ms): the file's size and mtime
    # stand for it, and the scene's rate is in _scene_state.
    "fps",
})
# Data-blocks that carry a whole picture of their own (with animation): no cheap fingerprint.
_OPAQUE_IDS = tuple(t for t in (getattr(bpy.types, n, None) for n in ("Scene", "MovieClip", "Mask", "Object"))
                    if t is not None)

_entries: OrderedDict[str, np.ndarray] = OrderedDict()


class Unfingerprintable(Exception):
    """The picture depends on something the fingerprint cannot see."""


def picture_key(scene, strip, frames: list[int], short_side_px: int) -> str | None:
    """Fingerprint of what capturing ``frames`` of ``strip`` would render; None: do not cache."""
    se = scene.sequence_editor
    top_level = list(compat.strips(se))
    keep = strips_to_keep(top_level, strip)
    parts: list = [strip.name, list(frames), short_side_px, _scene_state(scene)]
    try:
        for other in sorted((s for s in top_level if s.name in keep), key=lambda s: s.name):
            parts.append(("strip", _dump(other, 0, set())))
            parts.append(("channel_muted", compat.channel_muted(se, other.channel)))
        parts.append(("animation", sequencer_curves(scene)))
    except Unfingerprintable:
        return None
    return hashlib.sha1(repr(parts).encode("utf-8", "backslashreplace")).hexdigest()


def get(key: str | None) -> np.ndarray | None:
    """The frames captured under ``key`` (read-only), or None."""
    if key is None or key not in _entries:
        return None
    _entries.move_to_end(key)
    return _entries[key]


def put(key: str | None, images: np.ndarray) -> None:
    """Keep ``images`` under ``key``; the least recently used go first beyond MAX_BYTES."""
    if key is None or images is None or images.nbytes > MAX_BYTES:
        return
    frozen = images.view()
    frozen.flags.writeable = False
    _entries[key] = frozen
    _entries.move_to_end(key)
    while sum(a.nbytes for a in _entries.values()) > MAX_BYTES:
        _entries.popitem(last=False)


def clear() -> None:
    _entries.clear()


def _scene_state(scene) -> tuple:
    render = scene.render
    view = scene.view_settings
    return (render.fps, render.fps_base, render.resolution_x, render.resolution_y,
            render.pixel_aspect_x, render.pixel_aspect_y, view.view_transform, view.look,
            view.exposure, view.gamma, scene.display_settings.display_device,
            scene.sequencer_colorspace_settings.name)


def sequencer_curves(scene) -> list:
    """Keyframes on sequencer properties (animated opacity, transforms...).

    Raises:
        Unfingerprintable: drivers or F-curve modifiers on the sequencer.
    """
    anim = scene.animation_data
    if anim is None:
        return []
    if any(d.data_path.startswith("sequence_editor.") for d in anim.drivers):
        raise Unfingerprintable  # a driver reads things outside the sequencer
    found = []
    for curve in _action_curves(anim.action) if anim.action is not None else ():
        if not curve.data_path.startswith("sequence_editor."):
            continue
        if len(curve.modifiers):
            raise Unfingerprintable  # e.g. a noise modifier: values not in the keyframes
        points = [(tuple(k.co), tuple(k.handle_left), tuple(k.handle_right), k.interpolation)
                  for k in curve.keyframe_points]
        found.append((curve.data_path, curve.array_index, curve.mute, points))
    return found


def _action_curves(action):
    if hasattr(action, "fcurves") and len(getattr(action, "fcurves", ())):
        yield from action.fcurves
        return
    # Blender 4.4+ slotted actions: layers → strips → channelbags → fcurves
    for layer in getattr(action, "layers", ()):
        for act_strip in layer.strips:
            for bag in getattr(act_strip, "channelbags", ()):
                yield from bag.fcurves


def _dump(value, depth: int, seen: set[int]):
    """A hashable description of an RNA struct's properties, recursing into pointers."""
    if isinstance(value, _OPAQUE_IDS):
        raise Unfingerprintable
    if isinstance(value, bpy.types.ID):
        return ("id", value.name, _file_state(getattr(value, "filepath", None)))
    if isinstance(value, compat.STRIP_TYPE) and depth > 0:
        return ("strip", value.name)  # an input: dumped on its own when rendered
    pointer = value.as_pointer()
    if pointer in seen or depth > MAX_DEPTH:
        return ("seen", type(value).__name__)
    seen.add(pointer)
    out = [type(value).__name__]
    if getattr(value, "type", None) in {"SCENE", "MOVIECLIP", "MASK"} and isinstance(value, compat.STRIP_TYPE):
        raise Unfingerprintable
    for prop in value.bl_rna.properties:
        key = prop.identifier
        if key in _IGNORED:
            continue
        try:
            item = getattr(value, key)
        except (AttributeError, RuntimeError):
            continue
        if prop.type == "POINTER":
            out.append((key, None if item is None else _dump(item, depth + 1, seen)))
        elif prop.type == "COLLECTION":
            out.append((key, [_dump(x, depth + 1, seen) for x in item]))
        elif getattr(prop, "is_array", False) or prop.type == "ENUM" and isinstance(item, set):
            out.append((key, tuple(sorted(item)) if isinstance(item, set) else tuple(item)))
        else:
            out.append((key, item))
        if getattr(prop, "subtype", "") in {"FILE_PATH", "DIR_PATH"} and isinstance(item, str):
            out.append((key + ":file", _file_state(item)))
    if isinstance(value, compat.STRIP_TYPE) and value.type == "IMAGE":
        folder = getattr(value, "directory", "")
        out.append(("element_files", [_file_state(os.path.join(folder, e.filename)) for e in value.elements]))
    return tuple(out)


def _file_state(path: str | None):
    if not path:
        return None
    try:
        st = os.stat(bpy.path.abspath(path))
    except OSError:
        return "missing"
    return (st.st_size, st.st_mtime_ns)
