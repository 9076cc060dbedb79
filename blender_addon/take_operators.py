"""Operators on the takes of the active Foley strip: Regenerate Range, switch, audition, delete."""

from __future__ import annotations

import os

import bpy
from bpy.props import IntProperty, StringProperty

from foley_protocol.protocol import MAX_VARIATIONS

from . import compat, sync, takes
from .job_request import GenerateSettings, RequestBuilder, take_range_regen
from .preferences import get_preferences


def active_foley_strip(context):
    """The active strip if it is a Foley strip with takes, else None."""
    scene = compat.vse_scene(context)
    se = scene.sequence_editor if scene else None
    strip = se.active_strip if se else None
    if strip is None or not strip.foley.is_foley or not len(strip.foley.takes):
        return None
    return strip


def _foley_poll(cls, context) -> bool:
    if active_foley_strip(context) is None:
        cls.poll_message_set("Make a generated Foley strip the active strip")
        return False
    return True


def _take_at(strip, index: int):
    """(index, take): ``index`` < 0 means the take highlighted in the panel's list."""
    settings = strip.foley
    index = settings.take_index if index < 0 else index
    if not 0 <= index < len(settings.takes):
        raise takes.TakeError(f"{strip.name!r} has no take at position {index + 1}")
    return index, settings.takes[index]


class SEQUENCER_OT_foley_regenerate_range(bpy.types.Operator):
    """Regenerate a range of the active Foley take (the preview range, else the span between two
    selected Foley markers, else the current frame ± 1 s); the rest of the take stays as it is"""

    bl_idname = "sequencer.foley_regenerate_range"
    bl_label = "Regenerate Range"
    bl_options = {"REGISTER"}  # the placement, later, is the undo step

    frame_start: IntProperty(name="Start Frame", default=-1, options={"SKIP_SAVE"},
                             description="First frame to regenerate (-1: from the range rules)")
    frame_end: IntProperty(name="End Frame", default=-1, options={"SKIP_SAVE"},
                           description="Frame after the last one to regenerate")
    range_origin: StringProperty(options={"SKIP_SAVE", "HIDDEN"})
    caption: StringProperty(name="Caption", default="", options={"SKIP_SAVE"},
                            description="Caption for the range (empty: the take's caption)")
    seed: IntProperty(name="Seed", default=-1, min=-1, options={"SKIP_SAVE"},
                      description="Random seed (-1: the server picks one)")
    variations: IntProperty(name="Variations", default=0, min=0, max=MAX_VARIATIONS,
                            options={"SKIP_SAVE"},
                            description="New takes made in one batch (0: preferences)")

    @classmethod
    def poll(cls, context):
        return _foley_poll(cls, context)

    def _rule_range(self, context, strip) -> sync.RegenRange:
        scene = compat.vse_scene(context)
        take = strip.foley.takes[strip.foley.active_take]
        prefix = get_preferences(context).marker_prefix
        preview = ((scene.frame_preview_start, scene.frame_preview_end)
                   if scene.use_preview_range else None)
        selected = [m.frame for m in scene.timeline_markers
                    if m.select and prefix and m.name.startswith(prefix)]
        fps = sync.scene_rate(scene.render.fps, scene.render.fps_base)
        return sync.regeneration_range(take.frame_start, take.frame_end, fps,
                                       scene.frame_current, preview, selected)

    def invoke(self, context, event):
        strip = active_foley_strip(context)
        try:
            chosen = self._rule_range(context, strip)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.frame_start, self.frame_end = chosen.start, chosen.end
        self.range_origin = chosen.origin
        return context.window_manager.invoke_props_dialog(self)

    def draw(self, context):
        layout = self.layout
        strip = active_foley_strip(context)
        take = strip.foley.takes[strip.foley.active_take]
        scene = compat.vse_scene(context)
        fps = sync.scene_rate(scene.render.fps, scene.render.fps_base)
        start_s, end_s = (self.frame_start - take.frame_start) / fps, \
            (self.frame_end - take.frame_start) / fps
        col = layout.column(align=True)
        col.label(text=f"Take {take.number} of {strip.name}", icon="SOUND")
        col.label(text=f"Frames {self.frame_start}–{self.frame_end - 1} "
                       f"({start_s:.2f}–{end_s:.2f} s), from the {self.range_origin}")
        layout.prop(self, "frame_start")
        layout.prop(self, "frame_end")
        layout.prop(self, "caption")
        layout.prop(self, "seed")
        layout.prop(self, "variations")

    def execute(self, context):
        scene = compat.vse_scene(context)
        strip = active_foley_strip(context)
        settings = strip.foley
        if not 0 <= settings.active_take < len(settings.takes):
            self.report({"ERROR"}, f"{strip.name!r} has no active take")
            return {"CANCELLED"}
        take = settings.takes[settings.active_take]
        fps = sync.scene_rate(scene.render.fps, scene.render.fps_base)
        try:
            if self.frame_start < 0 or self.frame_end < 0:
                chosen = self._rule_range(context, strip)
            else:
                chosen = sync.regeneration_range(
                    take.frame_start, take.frame_end, fps, 0,
                    (self.frame_start, self.frame_end - 1),
                    preview_name=self.range_origin or "range given")
            builder = RequestBuilder(context)
            source = builder.picture_strip(scene, settings.source, "this Foley strip")
            regen = take_range_regen(strip, take, chosen.seconds(take.frame_start, fps), fps)
            job_settings = GenerateSettings.from_take(
                take, builder.prefs, self.variations or builder.prefs.range_variations,
                caption=self.caption, seed=self.seed, default_steps=builder.prefs.steps)
            builder.queue(scene, source, (take.frame_start, take.frame_end), job_settings, regen)
        except ValueError as exc:  # a RequestError, or a range the rules cannot make
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Foley: regenerating frames {chosen.start}–{chosen.end - 1} of "
                              f"{strip.name} take {take.number} ({chosen.origin})")
        return {"FINISHED"}


class SEQUENCER_OT_foley_switch_take(bpy.types.Operator):
    """Play this take on the Foley strip and show its onset markers"""

    bl_idname = "sequencer.foley_switch_take"
    bl_label = "Use Take"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(name="Take", default=-1, options={"SKIP_SAVE"},
                       description="Position in the strip's take list (-1: the highlighted one)")

    @classmethod
    def poll(cls, context):
        return _foley_poll(cls, context)

    def execute(self, context):
        strip = active_foley_strip(context)
        try:
            index, take = _take_at(strip, self.index)
            takes.switch_take(compat.vse_scene(context), strip, index)
        except takes.TakeError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"{strip.name}: playing take {take.number}")
        return {"FINISHED"}


class SEQUENCER_OT_foley_audition_take(bpy.types.Operator):
    """Listen to a take's file on its own (the strip keeps playing its active take)"""

    bl_idname = "sequencer.foley_audition_take"
    bl_label = "Audition Take"
    bl_options = {"REGISTER"}

    index: IntProperty(name="Take", default=-1, options={"SKIP_SAVE"},
                       description="Position in the strip's take list (-1: the highlighted one)")

    @classmethod
    def poll(cls, context):
        return _foley_poll(cls, context)

    def execute(self, context):
        strip = active_foley_strip(context)
        try:
            _, take = _take_at(strip, self.index)
            takes.audition_take(take)
        except takes.TakeError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Auditioning take {take.number}")
        return {"FINISHED"}


class SEQUENCER_OT_foley_stop_audition(bpy.types.Operator):
    """Stop auditioning a take"""

    bl_idname = "sequencer.foley_stop_audition"
    bl_label = "Stop Audition"
    bl_options = {"REGISTER"}

    def execute(self, context):
        takes.stop_take_audition()
        return {"FINISHED"}


class SEQUENCER_OT_foley_delete_take(bpy.types.Operator):
    """Delete a take's audio file from disk and remove it from the list (asks first)"""

    bl_idname = "sequencer.foley_delete_take"
    bl_label = "Delete Take File"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(name="Take", default=-1, options={"SKIP_SAVE"},
                       description="Position in the strip's take list (-1: the highlighted one)")

    @classmethod
    def poll(cls, context):
        return _foley_poll(cls, context)

    def invoke(self, context, event):
        strip = active_foley_strip(context)
        try:
            _, take = _take_at(strip, self.index)
        except takes.TakeError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        # (title/message/confirm_text exist since Blender 4.1; the add-on needs 4.2)
        return context.window_manager.invoke_confirm(
            self, event, title=f"Delete take {take.number}?",
            message=f"Delete {os.path.basename(take.filepath)} from disk? This cannot be undone.",
            confirm_text="Delete File", icon="WARNING")

    def execute(self, context):
        strip = active_foley_strip(context)
        try:
            index, take = _take_at(strip, self.index)
            number = take.number
            takes.stop_take_audition()
            deleted = takes.delete_take(compat.vse_scene(context), strip, index)
        except takes.TakeError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if deleted:
            self.report({"INFO"}, f"Deleted take {number} ({deleted})")
        else:
            self.report({"WARNING"}, f"Removed take {number} from the list; its file was kept "
                                     "(missing, or used elsewhere)")
        return {"FINISHED"}


classes = (
    SEQUENCER_OT_foley_regenerate_range,
    SEQUENCER_OT_foley_switch_take,
    SEQUENCER_OT_foley_audition_take,
    SEQUENCER_OT_foley_stop_audition,
    SEQUENCER_OT_foley_delete_take,
)
register, unregister = bpy.utils.register_classes_factory(classes)
