"""The focus region: the sound's source on screen, so that a take follows its motion only.

A picture strip's ``foley.focus`` (``FoleyFocus``) is none, a box (fractions of the frame,
origin top left, as the wire has it) or a Blender Mask datablock. ``request_region`` turns it
into the request's ``focus_region`` (protocol 1.6): one box, or for a mask the bounds of its
splines (control points and handles of every layer that renders) at every timeline frame of the
take, keyed in seconds from the take's first frame. A take records the region it was made
with (``FoleyTake.focus_region``, JSON), and Regenerate Range / with Markers send that again.

Mask space (Blender's ``BKE_mask_coord_from_frame``): x and y run 0..1 over the frame's longer
side, origin bottom left, the shorter side centred; the mask is evaluated at each frame (its
shape keys, as the Mask editor's I key makes them), in scene frames. The box is the strip's
own ``foley_focus_box`` (left, top, width, height), not a field of ``FoleyFocus``: Blender keys
a strip's own properties but cannot make an animation path into a property group on a strip.
A box keyed over time (I over its fields) is sent like a mask, one box per frame.
"""

from __future__ import annotations

import json

import bpy
from bpy.props import EnumProperty, FloatVectorProperty, PointerProperty
from foley_protocol.protocol import MAX_FRAME_COUNT

from .compat import STRIP_TYPE

FOCUS_MODES = (
    ("NONE", "Whole Frame", "The take follows all the motion in the picture"),
    ("BOX", "Box", "The take follows the motion inside a box of the frame"),
    ("MASK", "Mask", "The take follows the motion inside a Mask's bounds, frame by frame"),
)
MIN_SIDE = 1e-3  # a box narrower than this (a mask of one point) is widened to it
BOX_PROPERTY = "foley_focus_box"  # on the strip itself, so that it can be keyed
BOX_FIELDS = ("Left", "Top", "Width", "Height")


class FocusError(ValueError):
    """The focus region cannot be sent (the message says why, for the editor)."""


def _mask_poll(_settings, mask) -> bool:
    return len(mask.layers) > 0


class FoleyFocus(bpy.types.PropertyGroup):
    """Where the sound's source is on screen (stored on the picture strip)."""

    mode: EnumProperty(name="Focus", items=FOCUS_MODES, default="NONE",
                       description="What part of the picture the take follows")
    mask: PointerProperty(name="Mask", type=bpy.types.Mask, poll=_mask_poll,
                          description="A Mask drawn over the picture and animated to follow "
                          "the source (its bounds are used, frame by frame)")

    @property
    def active(self) -> bool:
        return self.mode == "BOX" or (self.mode == "MASK" and self.mask is not None)


def _frame_size(scene) -> tuple[float, float]:
    r = scene.render
    return r.resolution_x * r.pixel_aspect_x, r.resolution_y * r.pixel_aspect_y


def mask_to_frame(co: tuple[float, float], frame_size: tuple[float, float]) -> tuple[float, float]:
    """Mask space -> frame fractions (origin bottom left); inverse of Blender's
    ``BKE_mask_coord_from_frame``."""
    w, h = frame_size
    x, y = co
    if w > h:
        return x, (y - 0.5) * (w / h) + 0.5
    if h > w:
        return (x - 0.5) * (h / w) + 0.5, y
    return x, y


def box_from_bounds(x0: float, y0: float, x1: float, y1: float) -> list[float] | None:
    """Frame fractions (origin bottom left) -> the wire's [x, y, w, h] (origin top left),
    clipped to the frame; None when nothing of it is inside."""
    x0, x1 = max(0.0, x0), min(1.0, x1)
    y0, y1 = max(0.0, y0), min(1.0, y1)
    if x1 <= x0 - MIN_SIDE or y1 <= y0 - MIN_SIDE or x0 >= 1.0 or y0 >= 1.0:
        return None
    w, h = max(x1 - x0, MIN_SIDE), max(y1 - y0, MIN_SIDE)
    x, top = min(x0, 1.0 - w), min(1.0 - y1, 1.0 - h)
    return [round(x, 6), round(max(top, 0.0), 6), round(w, 6), round(h, 6)]


def mask_bounds(mask, frame_size: tuple[float, float]) -> list[float] | None:
    """The box holding every control point and handle of ``mask``'s rendered layers as they
    are now (an evaluated mask), or None when it has no points in the frame."""
    xs, ys = [], []
    for layer in mask.layers:
        if layer.hide_render:
            continue
        for spline in layer.splines:
            for point in spline.points:
                for co in (point.co, point.handle_left, point.handle_right):
                    x, y = mask_to_frame((co[0], co[1]), frame_size)
                    xs.append(x)
                    ys.append(y)
    if not xs:
        return None
    return box_from_bounds(min(xs), min(ys), max(xs), max(ys))


def strip_box(strip) -> list[float] | None:
    """The strip's focus box as it is now, on the wire ([x, y, w, h], origin top left)."""
    left, top, width, height = getattr(strip, BOX_PROPERTY)
    return box_from_bounds(left, 1.0 - top - height, left + width, 1.0 - top)


def box_is_keyed(scene, strip) -> bool:
    """True when the strip's focus box has an animation curve in the scene's action."""
    animation = scene.animation_data
    if animation is None or animation.action is None:
        return False
    from bpy_extras import anim_utils  # slotted actions: 4.4+, the only way in 5.0

    channels = anim_utils.action_get_channelbag_for_slot(animation.action,
                                                         animation.action_slot)
    path = strip.path_from_id(BOX_PROPERTY)
    return channels is not None and any(curve.data_path == path for curve in channels.fcurves)


def _region_per_frame(scene, read_box, first: int, end: int, fps: float) -> dict:
    """``read_box()`` at every frame of [first, end), keyed in seconds from ``first``; frames
    where it returns None (outside the frame) are left out."""
    frames = list(range(first, end))
    step = max(1, -(-len(frames) // MAX_FRAME_COUNT))  # the protocol's key limit
    frames = frames[::step]
    boxes, times = [], []
    current = (scene.frame_current, scene.frame_subframe)
    try:
        for frame in frames:
            # frame_set evaluates every mask's shape keys into the mask itself (Blender 4.2-5.x),
            # whichever scene is the context's: read the mask, not a depsgraph's copy
            scene.frame_set(frame)
            box = read_box()
            if box is not None:
                boxes.append(box)
                times.append(round((frame - first) / fps, 6))
    finally:
        scene.frame_set(current[0], subframe=current[1])
    if len(boxes) <= 1:
        return {"boxes": boxes}
    return {"boxes": boxes, "times_s": times}


def request_region(scene, strip, first: int, end: int, fps: float) -> dict | None:
    """The request's ``focus_region`` for picture ``strip`` over timeline frames [first, end),
    or None for the whole frame.

    Raises:
        FocusError: a mask without points in the frame.
    """
    focus = strip.foley.focus
    if focus.mode == "BOX":
        if box_is_keyed(scene, strip):
            region = _region_per_frame(scene, lambda: strip_box(strip), first, end, fps)
        else:
            box = strip_box(strip)
            region = {"boxes": [box] if box is not None else []}
        if not region["boxes"]:
            raise FocusError(f"The focus box of {strip.name!r} is outside the frame over "
                             f"frames {first}–{end - 1}")
        return region
    if focus.mode == "MASK" and focus.mask is not None:
        mask, size = focus.mask, _frame_size(scene)
        region = _region_per_frame(scene, lambda: mask_bounds(mask, size), first, end, fps)
        if not region["boxes"]:
            raise FocusError(f"The focus mask {mask.name!r} has no points inside the frame over "
                             f"frames {first}–{end - 1}")
        return region
    return None


def describe(region: dict | None, source: str = "") -> str:
    """One line for the panel: what a request or take focused on."""
    if not region:
        return "whole frame"
    boxes = region["boxes"]
    if len(boxes) == 1:
        x, y, w, h = boxes[0]
        return f"box {x:.2f}, {y:.2f} · {w:.2f} × {h:.2f}" + (f" ({source})" if source else "")
    return f"{source or 'moving box'}: {len(boxes)} frames"


def record_region(take, region: dict | None, label: str = "") -> None:
    """Store on ``take`` the region it was made with (JSON) and its line for the panel."""
    take.focus_region = json.dumps(region) if region else ""
    take.focus_label = (label or describe(region)) if region else ""


def take_region(take) -> dict | None:
    """The region ``take`` was made with (None: the whole frame)."""
    if not take.focus_region:
        return None
    try:
        region = json.loads(take.focus_region)
    except ValueError:
        return None
    return region if isinstance(region, dict) and region.get("boxes") else None


def region_source(strip) -> str:
    """What the strip's focus is, in words (the mask's name)."""
    focus = strip.foley.focus
    return f"mask {focus.mask.name}" if focus.mode == "MASK" and focus.mask else ""


class SEQUENCER_OT_foley_clear_focus(bpy.types.Operator):
    """Follow the whole frame again (the strip's focus box or mask is no longer used)"""

    bl_idname = "sequencer.foley_clear_focus"
    bl_label = "Clear Focus"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        strip = context.scene.sequence_editor.active_strip if context.scene \
            and context.scene.sequence_editor else None
        if strip is None or strip.foley.focus.mode == "NONE":
            cls.poll_message_set("The active strip has no focus region")
            return False
        return True

    def execute(self, context):
        context.scene.sequence_editor.active_strip.foley.focus.mode = "NONE"
        return {"FINISHED"}


def draw_focus(layout, strip) -> None:
    """The focus rows of the picture strip's panel (only draws)."""
    focus = strip.foley.focus
    row = layout.row(align=True)
    row.prop(focus, "mode", text="Focus")
    if focus.mode != "NONE":
        row.operator("sequencer.foley_clear_focus", text="", icon="X")
    if focus.mode == "BOX":
        col = layout.column(align=True)
        for first in (0, 2):  # left, top / width, height; each can be keyed (I over it)
            row = col.row(align=True)
            for index in (first, first + 1):
                row.prop(strip, BOX_PROPERTY, index=index, text=BOX_FIELDS[index])
    elif focus.mode == "MASK":
        layout.prop(focus, "mask")
        if focus.mask is None:
            layout.label(text="Pick a mask: until then the whole frame is used", icon="INFO")


classes = (SEQUENCER_OT_foley_clear_focus,)
_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register_classes()
    setattr(STRIP_TYPE, BOX_PROPERTY, FloatVectorProperty(
        name="Focus Box", size=4, min=0.0, max=1.0, default=(0.25, 0.25, 0.5, 0.5),
        description="Where the sound's source is: left, top, width, height as fractions of "
        "the frame (origin top left); key it to follow a moving source"))


def unregister() -> None:
    delattr(STRIP_TYPE, BOX_PROPERTY)
    _unregister_classes()
