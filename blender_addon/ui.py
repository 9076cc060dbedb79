"""The "Foley" tab of the Sequencer sidebar. Panels only draw."""

from __future__ import annotations

import textwrap

import bpy

from . import compat, focus, jobs, messages, takes


class SequencerFoleyPanel:
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Foley"

    @classmethod
    def poll(cls, context):
        space = context.space_data
        return space is None or getattr(space, "view_type", "SEQUENCER") != "PREVIEW"


class SEQUENCER_PT_foley(SequencerFoleyPanel, bpy.types.Panel):
    bl_label = "Foley"

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = False
        scene = compat.vse_scene(context)
        se = scene.sequence_editor if scene else None
        strip = se.active_strip if se else None
        if strip is None:
            layout.label(text="No active strip", icon="INFO")
        elif strip.type in compat.VISUAL_TYPES:
            col = layout.column(align=True)
            col.label(text=f"{strip.name}", icon="SEQUENCE")
            col.prop(strip.foley, "caption", text="")
            focus.draw_focus(layout, strip)
            # computed by the job loop when something changed (it stats files, walks curves)
            route = jobs.manager().routes.get(scene, strip)
            if route:
                col.label(text=route, icon="FILE_MOVIE" if "server" in route else "RENDER_STILL")
        elif strip.foley.is_foley:
            layout.label(text=f"Foley for {strip.foley.source}", icon="SOUND")
        layout.operator("sequencer.foley_generate", icon="SOUND")

        manager = jobs.manager()
        message, level = manager.last_message
        if message:
            row = layout.row()
            row.alert = level == "ERROR"
            row.label(text=message, icon={"ERROR": "ERROR", "WARNING": "ERROR"}.get(level, "INFO"))


class SEQUENCER_PT_foley_jobs(SequencerFoleyPanel, bpy.types.Panel):
    bl_label = "Jobs"
    bl_parent_id = "SEQUENCER_PT_foley"

    def draw(self, context):
        layout = self.layout
        manager = jobs.manager()
        if not manager.jobs:
            layout.label(text="No jobs yet")
            return
        for job in reversed(manager.jobs):
            fraction, text = job.status()
            box = layout.box()
            row = box.row()
            row.label(text=f"{job.number}. {job.label}",
                      icon={jobs.JobState.DONE: "CHECKMARK", jobs.JobState.FAILED: "ERROR",
                            jobs.JobState.CANCELLED: "CANCEL"}.get(job.state, "TIME"))
            if job.active:
                op = row.operator("sequencer.foley_cancel", text="", icon="X", emboss=False)
                op.job = job.number
                if hasattr(box, "progress"):  # 4.0+
                    box.progress(factor=fraction, type="BAR", text=text)
                else:
                    box.label(text=f"{int(fraction * 100)} % · {text}")
            else:
                sub = box.row()
                sub.alert = job.state == jobs.JobState.FAILED or job.warned
                sub.label(text=text, icon="ERROR" if job.warned else "NONE")
                if job.retryable:
                    op = sub.operator("sequencer.foley_retry", text="Retry", icon="FILE_REFRESH")
                    op.job = job.number
        if manager.active_jobs():
            layout.operator("sequencer.foley_cancel", text="Cancel All", icon="CANCEL")


class SEQUENCER_PT_foley_server(SequencerFoleyPanel, bpy.types.Panel):
    bl_label = "Server"
    bl_parent_id = "SEQUENCER_PT_foley"

    def draw(self, context):
        layout = self.layout
        manager = jobs.manager()
        row = layout.row()
        connected = manager.connection.connected
        row.label(text=manager.connection.text(), icon="LINKED" if connected else "UNLINKED")
        row.operator("sequencer.foley_connect", text="", icon="FILE_REFRESH")
        status = manager.connection.server_status
        if not connected or status is None:
            return
        col = layout.column(align=True)
        col.label(text=messages.model_line(status))
        devices = ", ".join(f"{w.get('device')} ({w.get('state')})"
                            for w in status.get("workers", []))
        col.label(text=f"Device: {devices or '…'}")
        col.label(text=f"Queue: {status.get('queue_length', 0)} / {status.get('queue_max', '?')}")


def take_range_text(take) -> str:
    """The regenerated range of a take, or "whole" for a take generated in one go."""
    if not take.is_range:
        return "whole"
    return f"{take.range_start_s:.2f}–{take.range_end_s:.2f} s"


class SEQUENCER_UL_foley_takes(bpy.types.UIList):
    """Rows: in use, number, caption, seed, range regenerated, date."""

    def draw_item(self, context, layout, data, take, icon, active_data, active_propname,
                  index=0, flt_flag=0):
        row = layout.row(align=True)
        in_use = index == data.active_take
        op = row.operator("sequencer.foley_switch_take", text="", emboss=False,
                          icon="RADIOBUT_ON" if in_use else "RADIOBUT_OFF")
        op.index = index
        split = row.split(factor=0.12, align=True)
        split.label(text=str(take.number))
        split = split.split(factor=0.45, align=True)
        if take.near_silent:  # never shown as if it were a normal take
            split.label(text=f"near-silent · {take.caption or '(no caption)'}", icon="ERROR")
        else:
            split.label(text=take.caption or "(no caption)")
        split = split.split(factor=0.35, align=True)
        split.label(text=take.seed)
        split = split.split(factor=0.5, align=True)
        split.label(text=take_range_text(take))
        split.label(text=take.created.replace("T", " ")[5:16])


class SEQUENCER_PT_foley_takes(SequencerFoleyPanel, bpy.types.Panel):
    bl_label = "Takes"
    bl_parent_id = "SEQUENCER_PT_foley"

    @classmethod
    def poll(cls, context):
        scene = compat.vse_scene(context)
        se = scene.sequence_editor if scene else None
        strip = se.active_strip if se else None
        return strip is not None and strip.foley.is_foley

    def draw(self, context):
        layout = self.layout
        strip = compat.vse_scene(context).sequence_editor.active_strip
        settings = strip.foley
        header = layout.row()
        for text in ("#", "Caption", "Seed", "Range", "Date"):
            header.label(text=text)
        layout.template_list("SEQUENCER_UL_foley_takes", "", settings, "takes",
                             settings, "take_index", rows=3)
        row = layout.row(align=True)
        row.operator("sequencer.foley_switch_take", text="Use", icon="CHECKMARK")
        if takes.take_audition_playing():
            row.operator("sequencer.foley_stop_audition", text="Stop", icon="SNAP_FACE")
        else:
            row.operator("sequencer.foley_audition_take", text="Audition", icon="PLAY_SOUND")
        row.operator("sequencer.foley_delete_take", text="", icon="TRASH")
        layout.operator("sequencer.foley_regenerate_range", icon="FILE_REFRESH")
        if not 0 <= settings.take_index < len(settings.takes):
            return
        take = settings.takes[settings.take_index]
        col = layout.column(align=True)
        col.label(text=f"“{take.caption}”" if take.caption else "(no caption)")
        col.label(text=f"{take.model_id} · {take.sampler} · {take.steps} steps · "
                       f"guidance {take.guidance:g}")
        col.label(text=f"Frames {take.frame_start}–{take.frame_end} · {take.sample_rate} Hz")
        if take.is_range:
            col.label(text=f"Range {take_range_text(take)} redone from {take.based_on}")
        col.label(text=f"Markers: {take.marker_tag}* · {take.created}")
        col.label(text=f"Focus: {take.focus_label or 'whole frame'}",
                  icon="SELECT_SET" if take.focus_label else "NONE")
        if take.near_silent:
            warn = layout.column(align=True)
            warn.alert = True
            warn.label(text=messages.near_silent_take(take.loudest_dbfs), icon="ERROR")
            for line in textwrap.wrap(take.server_warnings, 70):
                warn.label(text=line)
        siblings = [s for s in compat.all_strips(compat.vse_scene(context).sequence_editor)
                    if s.foley.is_foley and s.foley.source == settings.source and s != strip]
        if siblings:
            col = layout.column(align=True)
            col.label(text=f"Other takes for {settings.source}:")
            for other in sorted(siblings, key=lambda s: s.channel):
                numbers = ", ".join(str(t.number) for t in other.foley.takes)
                col.label(text=f"  {other.name} (channel {other.channel}): take {numbers}",
                          icon="SOUND")


classes = (
    SEQUENCER_PT_foley,
    SEQUENCER_PT_foley_jobs,
    SEQUENCER_PT_foley_server,
    SEQUENCER_UL_foley_takes,
    SEQUENCER_PT_foley_takes,
)
register, unregister = bpy.utils.register_classes_factory(classes)
