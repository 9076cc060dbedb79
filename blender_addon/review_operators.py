"""Sync review operators: step through onset markers, audition them, edit them, regenerate.

Navigation and editing work on the active Foley strip's active take (navigation falls back to
every take's markers when no Foley strip is active). The onset audition itself (a window of
the timeline played once) is ``onset_audition``.
"""

from __future__ import annotations

import logging
import os

import bpy
from bpy.props import BoolProperty, FloatProperty, IntProperty

from . import compat, jobs, onset_audition, review, review_follow
from .job_request import GenerateSettings, RequestBuilder, take_range_regen, whole_take_regen
from .preferences import get_preferences
from .review_follow import show_image

logger = logging.getLogger(__name__)

# (operator, key, ctrl, shift, alt, properties): none of these combinations is bound in
# Blender's default keymaps that are active in the Sequencer (tests/blender/test_bpy_review.py).
KEYMAP_ITEMS = (
    ("sequencer.foley_onset_next", "RIGHT_ARROW", True, False, True),
    ("sequencer.foley_onset_previous", "LEFT_ARROW", True, False, True),
    ("sequencer.foley_onset_audition", "SPACE", False, True, True),
)


def _take_or_report(op, context):
    scene = compat.vse_scene(context)
    _strip, take = review.active_take(scene)
    if take is None:
        op.report({"ERROR"}, "Make a generated Foley strip active to review its markers")
    return scene, take


def _foley_poll(cls, context) -> bool:
    scene = compat.vse_scene(context)
    if scene is None or scene.sequence_editor is None:
        cls.poll_message_set("The scene has no sequencer strips")
        return False
    return True


def _take_poll(cls, context) -> bool:
    if not _foley_poll(cls, context):
        return False
    if review.active_take(compat.vse_scene(context))[1] is None:
        cls.poll_message_set("Make a generated Foley strip active")
        return False
    return True


# ---- navigation -----------------------------------------------------------------------------


def _jump(op, context, forward: bool):
    scene = compat.vse_scene(context)
    _strip, take = review.active_take(scene)
    frames = review.onset_frames_in_scene(scene, take)
    frame = review.step_frame(frames, scene.frame_current, forward)
    if frame is None:
        op.report({"WARNING"}, f"No Foley onset {'after' if forward else 'before'} frame "
                  f"{scene.frame_current}")
        return {"CANCELLED"}
    scene.frame_set(frame)
    if take is not None:  # the review list follows the playhead
        row = review.row_for_frame(scene, take, frame)
        if row is not None:
            take.active_review_marker = row.index
    return {"FINISHED"}


class SEQUENCER_OT_foley_onset_next(bpy.types.Operator):
    """Move the playhead to the next Foley onset marker"""

    bl_idname = "sequencer.foley_onset_next"
    bl_label = "Next Foley Onset"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return _foley_poll(cls, context)

    def execute(self, context):
        return _jump(self, context, True)


class SEQUENCER_OT_foley_onset_previous(bpy.types.Operator):
    """Move the playhead to the previous Foley onset marker"""

    bl_idname = "sequencer.foley_onset_previous"
    bl_label = "Previous Foley Onset"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return _foley_poll(cls, context)

    def execute(self, context):
        return _jump(self, context, False)


# ---- audition -------------------------------------------------------------------------------


class SEQUENCER_OT_foley_onset_audition(bpy.types.Operator):
    """Play a short window around the playhead (the onset) once, then return to it"""

    bl_idname = "sequencer.foley_onset_audition"
    bl_label = "Audition Onset"
    bl_options = {"REGISTER"}

    before_s: FloatProperty(name="Before", default=-1.0, min=-1.0, max=10.0,
                            options={"SKIP_SAVE"},
                            description="Seconds before the onset (-1: the scene's setting)")
    after_s: FloatProperty(name="After", default=-1.0, min=-1.0, max=10.0,
                           options={"SKIP_SAVE"},
                           description="Seconds after the onset (-1: the scene's setting)")

    @classmethod
    def poll(cls, context):
        return _foley_poll(cls, context)

    def execute(self, context):
        scene = compat.vse_scene(context)
        settings = scene.foley
        before = self.before_s if self.before_s >= 0 else settings.audition_before_s
        after = self.after_s if self.after_s >= 0 else settings.audition_after_s
        if before + after <= 0:
            self.report({"ERROR"}, "The audition window is empty: set Before or After above 0")
            return {"CANCELLED"}
        onset_audition.start(context, scene, scene.frame_current, before, after)
        return {"FINISHED"}


# ---- marker editing -------------------------------------------------------------------------


def _active_item(op, context):
    scene, take = _take_or_report(op, context)
    if take is None:
        return scene, None, None
    index = take.active_review_marker
    if not 0 <= index < len(take.review_markers):
        op.report({"ERROR"}, "Select an onset marker in the review list")
        return scene, take, None
    return scene, take, index


class SEQUENCER_OT_foley_marker_accept(bpy.types.Operator):
    """Accept the selected onset marker (it is in sync)"""

    bl_idname = "sequencer.foley_marker_accept"
    bl_label = "Accept Onset"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _take_poll(cls, context)

    def execute(self, context):
        _scene, take, index = _active_item(self, context)
        if index is None:
            return {"CANCELLED"}
        item = take.review_markers[index]
        if item.state == "UNREVIEWED":
            item.state = "ACCEPTED"
        return {"FINISHED"}


class SEQUENCER_OT_foley_marker_reject(bpy.types.Operator):
    """Reject the selected onset marker: remove it (no sound should start there)"""

    bl_idname = "sequencer.foley_marker_reject"
    bl_label = "Reject Onset"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _take_poll(cls, context)

    def execute(self, context):
        scene, take, index = _active_item(self, context)
        if index is None:
            return {"CANCELLED"}
        review.remove_review_marker(scene, take, index)
        return {"FINISHED"}


class SEQUENCER_OT_foley_marker_nudge(bpy.types.Operator):
    """Move the selected onset marker by a few frames"""

    bl_idname = "sequencer.foley_marker_nudge"
    bl_label = "Nudge Onset"
    bl_options = {"REGISTER", "UNDO"}

    frames: IntProperty(name="Frames", default=1, min=-1000, max=1000,
                        description="Frames to move (negative: earlier)")

    @classmethod
    def poll(cls, context):
        return _take_poll(cls, context)

    def execute(self, context):
        scene, take, index = _active_item(self, context)
        if index is None:
            return {"CANCELLED"}
        item = take.review_markers[index]
        marker = scene.timeline_markers.get(item.marker_name)
        if marker is None:
            self.report({"ERROR"}, f"Marker {item.marker_name!r} was deleted from the timeline")
            return {"CANCELLED"}
        time_s = review.marker_time_s(scene, take, item, marker)
        marker.frame += self.frames
        item.frame = marker.frame
        item.time_s = time_s + self.frames / review.scene_fps(scene)
        if item.state == "UNREVIEWED":
            item.state = "ACCEPTED"  # a nudged marker is one the editor placed
        return {"FINISHED"}


class SEQUENCER_OT_foley_marker_add(bpy.types.Operator):
    """Add an onset marker to the active take at the playhead (a sound should start here)"""

    bl_idname = "sequencer.foley_marker_add"
    bl_label = "Add Onset"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _take_poll(cls, context)

    def execute(self, context):
        scene, take = _take_or_report(self, context)
        if take is None:
            return {"CANCELLED"}
        frame = scene.frame_current
        time_s = frame / review.scene_fps(scene) - take.start_time_s
        if not 0.0 <= time_s <= take.duration_s:
            self.report({"ERROR"}, f"Frame {frame} is outside take {take.number} (frames "
                        f"{take.frame_start}-{take.frame_end - 1})")
            return {"CANCELLED"}
        review.add_review_marker(scene, take, frame, time_s, 1.0, "ADDED")
        take.active_review_marker = len(take.review_markers) - 1
        return {"FINISHED"}


# ---- sync picture ---------------------------------------------------------------------------


class SEQUENCER_OT_foley_sync_picture_show(bpy.types.Operator):
    """Show the active take's sync picture in an Image Editor, redrawn by the server when its
    markers were edited"""

    bl_idname = "sequencer.foley_sync_picture_show"
    bl_label = "Show Sync Picture"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return _take_poll(cls, context)

    def execute(self, context):
        scene, take = _take_or_report(self, context)
        if take is None:
            return {"CANCELLED"}
        redrawing = False
        if take.request_id and review_follow.needs_redraw(scene, take):
            # the markers were edited: the server draws the picture again from them; it is
            # shown when it comes (the one drawn before meanwhile)
            try:
                manager = jobs.connected_manager(get_preferences())
                manager.review.redraw(manager.connection.client, scene,
                                      review.active_take(scene)[0], take)
                jobs.ensure_timer()
                redrawing = True
            except ValueError as exc:
                self.report({"WARNING"}, f"Sync picture not redrawn: {exc}")
        path = bpy.path.abspath(take.sync_picture) if take.sync_picture else ""
        if not path or not os.path.isfile(path):
            if redrawing:
                self.report({"INFO"}, f"Drawing take {take.number}'s sync picture…")
                return {"FINISHED"}
            self.report({"ERROR"}, f"Take {take.number} has no sync picture"
                        + (f" (missing file {path})" if path else ""))
            return {"CANCELLED"}
        image = bpy.data.images.load(path, check_existing=True)
        image.reload()  # the file may be newer than a loaded copy
        shown = show_image(context, image)
        if not shown:
            self.report({"INFO"}, f"Loaded the sync picture as image {image.name!r}")
        return {"FINISHED"}


# ---- regenerate with markers ----------------------------------------------------------------


class SEQUENCER_OT_foley_regenerate_markers(bpy.types.Operator):
    """Generate a new take that follows the active take's edited onset markers (as hints)"""

    bl_idname = "sequencer.foley_regenerate_markers"
    bl_label = "Regenerate with Markers"
    bl_options = {"REGISTER"}  # the placement, later, is the undo step

    use_preview_range: BoolProperty(
        name="Preview Range Only", default=False, options={"SKIP_SAVE"},
        description="Regenerate only the scene's preview range, keeping the rest of the take")
    new_seed: BoolProperty(name="New Seed", default=False, options={"SKIP_SAVE"},
                           description="Draw a new seed (default: the take's, so only the "
                           "markers differ)")

    @classmethod
    def poll(cls, context):
        return _take_poll(cls, context)

    def execute(self, context):
        scene, take = _take_or_report(self, context)
        if take is None:
            return {"CANCELLED"}
        strip, _take = review.active_take(scene)
        fps = review.scene_fps(scene)
        try:
            builder = RequestBuilder(context)
            regen = (take_range_regen(strip, take, preview_range_s(scene, take), fps)
                     if self.use_preview_range else whole_take_regen(strip, take, fps))
            source = builder.picture_strip(scene, strip.foley.source, f"take {take.number}")
            settings = GenerateSettings.from_take(
                take, builder.prefs, 1, seed=-1 if self.new_seed or not take.seed.isdigit()
                else int(take.seed), onset_hints_s=review.hint_times_s(scene, take))
            job = builder.queue(scene, source, (take.frame_start, take.frame_end), settings,
                                regen)
        except ValueError as exc:  # a RequestError, or no preview range on the take
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        hints = len(job.settings.onset_hints_s)
        self.report({"INFO"}, f"Foley: regenerating take {take.number} of "
                    f"{job.snapshot.strip_name} with {hints} onset hint(s)")
        return {"FINISHED"}


def preview_range_s(scene, take) -> tuple[float, float]:
    """The scene's preview range as (start, end) seconds from the take's first frame."""
    if not scene.use_preview_range:
        raise ValueError("Set a preview range (the part of the take to regenerate) first")
    first, end = take.frame_start, take.frame_end
    fps = review.scene_fps(scene)
    start_s = (max(scene.frame_preview_start, first) - first) / fps
    end_s = (min(scene.frame_preview_end + 1, end) - first) / fps  # the preview end is inclusive
    if not 0.0 <= start_s < end_s:
        raise ValueError(f"The preview range {scene.frame_preview_start}-"
                         f"{scene.frame_preview_end} does not overlap take {take.number} "
                         f"(frames {first}-{end - 1})")
    return start_s, end_s


# ---- registration ---------------------------------------------------------------------------

classes = (
    SEQUENCER_OT_foley_onset_next,
    SEQUENCER_OT_foley_onset_previous,
    SEQUENCER_OT_foley_onset_audition,
    SEQUENCER_OT_foley_marker_accept,
    SEQUENCER_OT_foley_marker_reject,
    SEQUENCER_OT_foley_marker_nudge,
    SEQUENCER_OT_foley_marker_add,
    SEQUENCER_OT_foley_sync_picture_show,
    SEQUENCER_OT_foley_regenerate_markers,
)

_keymap_items: list = []


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    keyconfig = bpy.context.window_manager.keyconfigs.addon
    if keyconfig is not None:  # None without a window manager (some background runs)
        keymap = keyconfig.keymaps.new(name="Sequencer", space_type="SEQUENCE_EDITOR")
        for idname, key, ctrl, shift, alt in KEYMAP_ITEMS:
            item = keymap.keymap_items.new(idname, key, "PRESS", ctrl=ctrl, shift=shift, alt=alt)
            _keymap_items.append((keymap, item))


def unregister() -> None:
    for keymap, item in _keymap_items:
        try:
            keymap.keymap_items.remove(item)
        except (ReferenceError, RuntimeError):
            pass
    _keymap_items.clear()
    onset_audition.unregister()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
