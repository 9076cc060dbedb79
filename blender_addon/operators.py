"""Operators: Generate Foley, Cancel, Connect, and the report helper used by the job loop."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from foley_protocol.protocol import MAX_STEPS, MAX_VARIATIONS

from . import compat, focus, jobs, sync
from .job_request import GenerateSettings, RequestBuilder, RequestError
from .preferences import get_preferences


def _sequencer_poll(cls, context) -> bool:
    scene = compat.vse_scene(context)
    if scene is None or scene.sequence_editor is None:
        cls.poll_message_set("The scene has no sequencer strips")
        return False
    return True


class SEQUENCER_OT_foley_generate(bpy.types.Operator):
    """Generate Foley for the selected picture strips: a synced sound strip with onset markers"""

    bl_idname = "sequencer.foley_generate"
    bl_label = "Generate Foley"
    bl_options = {"REGISTER"}  # the placement, later, is the undo step

    caption: StringProperty(
        name="Caption", default="", options={"SKIP_SAVE"},
        description="Use this caption for every selected strip instead of each strip's own")
    seed: IntProperty(name="Seed", default=-1, min=-1, options={"SKIP_SAVE"},
                      description="Random seed (-1: the server picks one; stored on the take)")
    steps: IntProperty(name="Steps", default=-1, min=-1, max=MAX_STEPS, options={"SKIP_SAVE"},
                       description="Denoising steps (-1: preferences)")
    variations: IntProperty(name="Variations", default=0, min=0, max=MAX_VARIATIONS,
                            options={"SKIP_SAVE"}, description="Takes per strip (0: preferences)")

    @classmethod
    def poll(cls, context):
        # Cheap on purpose: reading the selection of a large edit here would run on redraw.
        return _sequencer_poll(cls, context)

    def execute(self, context):
        scene = compat.vse_scene(context)
        try:
            builder = RequestBuilder(context)
        except RequestError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        candidates = [s for s in compat.selected_strips(context, scene.sequence_editor)
                      if s.type in compat.VISUAL_TYPES]
        if not candidates:
            self.report({"ERROR"}, "Select a movie, image sequence, scene or meta strip first")
            return {"CANCELLED"}
        try:
            builder.connect()
        except RequestError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        queued, problems = [], []
        for strip in candidates:
            caption = self.caption or strip.foley.caption
            settings = GenerateSettings.from_preferences(builder.prefs, caption, self.seed,
                                                         self.steps, self.variations)
            try:
                frames = compat.strip_range(strip)
                scene_fps = sync.scene_rate(scene.render.fps, scene.render.fps_base)
                settings.focus_region = focus.request_region(scene, strip, *frames, scene_fps)
                settings.focus_label = focus.describe(settings.focus_region,
                                                      focus.region_source(strip))
                builder.queue(scene, strip, frames, settings)
            except (RequestError, focus.FocusError) as exc:
                problems.append(str(exc))
                continue
            if not caption.strip():
                problems.append(f"{strip.name!r} has no caption: the model will only follow "
                                "the picture")
            queued.append(strip.name)
        if not queued:
            self.report({"ERROR"}, "; ".join(problems))
            return {"CANCELLED"}
        for problem in problems:
            self.report({"WARNING"}, problem)
        self.report({"INFO"}, f"Foley: generating for {', '.join(queued)}")
        return {"FINISHED"}


class SEQUENCER_OT_foley_cancel(bpy.types.Operator):
    """Cancel Foley generation (nothing is placed, nothing is written)"""

    bl_idname = "sequencer.foley_cancel"
    bl_label = "Cancel Foley"
    bl_options = {"REGISTER"}

    job: IntProperty(name="Job", default=0, min=0, options={"SKIP_SAVE"},
                     description="Job number (0: every running job)")

    def execute(self, context):
        count = jobs.manager().cancel(self.job or None)
        if count == 0:
            self.report({"WARNING"}, "No Foley job to cancel")
            return {"CANCELLED"}
        return {"FINISHED"}


class SEQUENCER_OT_foley_retry(bpy.types.Operator):
    """Send a job the server lost again, with the same settings and seed (the same audio)"""

    bl_idname = "sequencer.foley_retry"
    bl_label = "Retry Foley Job"
    bl_options = {"REGISTER"}

    job: IntProperty(name="Job", default=0, min=0, options={"SKIP_SAVE"},
                     description="Job number")

    def execute(self, context):
        try:
            manager = jobs.connected_manager(get_preferences(context))
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        job = next((j for j in manager.jobs if j.number == self.job and j.retryable), None)
        if job is None:
            self.report({"WARNING"}, "No Foley job to retry")
            return {"CANCELLED"}
        if manager.recovery.retry(job) is None:  # a regeneration whose take is gone (said)
            return {"CANCELLED"}
        jobs.ensure_timer()
        return {"FINISHED"}


class SEQUENCER_OT_foley_connect(bpy.types.Operator):
    """Connect to the Foley server (or refresh its status)"""

    bl_idname = "sequencer.foley_connect"
    bl_label = "Connect to Foley Server"
    bl_options = {"REGISTER"}

    def execute(self, context):
        prefs = get_preferences(context)
        manager = jobs.manager()
        manager.connection.ensure(prefs.server_address.strip(), prefs.server_public_key.strip(),
                                  busy=bool(manager.active_jobs()))
        manager.connection.request_status()
        jobs.ensure_timer()
        return {"FINISHED"}


class SEQUENCER_OT_foley_report(bpy.types.Operator):
    """Show a Foley message in the status bar (used by the job loop)"""

    bl_idname = "sequencer.foley_report"
    bl_label = "Foley Report"
    bl_options = {"INTERNAL"}

    message: StringProperty(options={"SKIP_SAVE"})
    level: EnumProperty(items=(("INFO", "Info", ""), ("WARNING", "Warning", ""),
                               ("ERROR", "Error", "")), default="INFO", options={"SKIP_SAVE"})

    def execute(self, context):
        self.report({self.level}, self.message)
        return {"FINISHED"}


def draw_strip_menu(self, context):
    self.layout.separator()
    self.layout.operator(SEQUENCER_OT_foley_generate.bl_idname, icon="SOUND")


classes = (
    SEQUENCER_OT_foley_generate,
    SEQUENCER_OT_foley_cancel,
    SEQUENCER_OT_foley_retry,
    SEQUENCER_OT_foley_connect,
    SEQUENCER_OT_foley_report,
)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.SEQUENCER_MT_strip.append(draw_strip_menu)


def unregister() -> None:
    bpy.types.SEQUENCER_MT_strip.remove(draw_strip_menu)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
