"""The "Sync Review" panel of the Foley tab: the active take's onset markers with their
verdicts, and the silent hits. Panels only draw."""

from __future__ import annotations

import bpy

from . import compat, review
from .ui import SequencerFoleyPanel

STATE_ICONS = {"UNREVIEWED": "DOT", "ACCEPTED": "CHECKMARK", "ADDED": "ADD"}
VERDICT_LABELS = {"in_sync": "in sync", "late": "late", "early": "early",
                  "no_visual_cause": "no visual cause"}


def verdict_text(row: review.ReviewRow) -> str:
    """What the list says of a marker: its verdict and its offset in ms and frames."""
    if row.offset_s is None:
        return VERDICT_LABELS[row.verdict] if row.verdict else "no motion"
    offset = f"{row.offset_s * 1000:+.0f} ms · {row.offset_frames:+.1f} f"
    return f"{VERDICT_LABELS[row.verdict]} {offset}" if row.verdict else offset


class SEQUENCER_UL_foley_review(bpy.types.UIList):
    """Onset markers of a take: time, probability, verdict against the picture's contacts."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname,
                  index=0):
        scene = compat.vse_scene(context)
        row_data = review.review_row(scene, data, index)
        row = layout.row(align=True)
        if row_data is None:
            row.label(text=f"{item.marker_name} (deleted)", icon="GHOST_DISABLED")
            return
        row.alert = row_data.flagged
        row.label(text=f"{row_data.time_s:6.2f} s · f {row_data.frame}",
                  icon="ERROR" if row_data.flagged else STATE_ICONS.get(item.state, "DOT"))
        row.label(text=f"p {row_data.probability:.2f}")
        row.label(text=verdict_text(row_data))

    def filter_items(self, context, data, propname):
        scene = compat.vse_scene(context)
        visible, order = review.filter_and_order(scene, data,
                                                 scene.foley.review_needs_attention)
        flags = [self.bitflag_filter_item if shown else 0 for shown in visible]
        return flags, order


class SEQUENCER_UL_foley_silent_hits(bpy.types.UIList):
    """Contacts of the picture no sound starts at: one click adds a marker there."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname,
                  index=0):
        scene = compat.vse_scene(context)
        fps = review.scene_fps(scene)
        row = layout.row(align=True)
        row.alert = True
        row.label(text=f"{item.time_s:6.2f} s · f {review.contact_frame(data, item.time_s, fps)}"
                  f" · silent hit", icon="MUTE_IPO_ON")
        row.label(text=f"strength {item.strength:.2f}")
        row.operator("sequencer.foley_silent_hit_marker", text="Add Marker Here",
                     icon="ADD").index = index

    def filter_items(self, context, data, propname):
        scene = compat.vse_scene(context)
        hits = {hit.index for hit in review.silent_hits(scene, data)}
        return [self.bitflag_filter_item if i in hits else 0
                for i in range(len(data.contacts))], []


class SEQUENCER_PT_foley_review(SequencerFoleyPanel, bpy.types.Panel):
    bl_label = "Sync Review"
    bl_parent_id = "SEQUENCER_PT_foley"

    @classmethod
    def poll(cls, context):
        scene = compat.vse_scene(context)
        return scene is not None and review.active_take(scene)[1] is not None

    def draw(self, context):
        layout = self.layout
        scene = compat.vse_scene(context)
        _strip, take = review.active_take(scene)
        rows = review.review_rows(scene, take)
        hits = review.silent_hits(scene, take)
        flagged = sum(r.flagged for r in rows) + len(hits)
        header = layout.row()
        if take.has_contacts:
            text = f"Take {take.number}: {len(rows)} markers, {flagged} need attention"
        else:  # an older server sent motion events only
            text = (f"Take {take.number}: {len(rows)} markers, {flagged} off by > 1 frame "
                    f"(motion events: no contact data)")
        header.label(text=text, icon="ERROR" if flagged else "CHECKMARK")
        header.prop(scene.foley, "review_needs_attention", text="", icon="FILTER")

        nav = layout.row(align=True)
        nav.operator("sequencer.foley_onset_previous", text="", icon="TRIA_LEFT")
        nav.operator("sequencer.foley_onset_audition", text="Audition", icon="PLAY_SOUND")
        nav.operator("sequencer.foley_onset_next", text="", icon="TRIA_RIGHT")
        sub = layout.row(align=True)
        sub.prop(scene.foley, "audition_before_s")
        sub.prop(scene.foley, "audition_after_s")

        layout.template_list("SEQUENCER_UL_foley_review", "", take, "review_markers", take,
                             "active_review_marker", rows=5)
        edit = layout.row(align=True)
        edit.operator("sequencer.foley_marker_accept", text="Accept", icon="CHECKMARK")
        edit.operator("sequencer.foley_marker_reject", text="Reject", icon="X")
        edit.operator("sequencer.foley_marker_nudge", text="", icon="TRIA_LEFT").frames = -1
        edit.operator("sequencer.foley_marker_nudge", text="", icon="TRIA_RIGHT").frames = 1
        edit.operator("sequencer.foley_marker_add", text="Add", icon="ADD")
        if hits:
            layout.label(text=f"Silent hits: {len(hits)} (the picture shows an impact, no "
                         f"sound starts)")
            layout.template_list("SEQUENCER_UL_foley_silent_hits", "", take, "contacts", take,
                                 "active_contact", rows=min(len(hits), 4))

        col = layout.column(align=True)
        col.operator("sequencer.foley_sync_picture_show", icon="IMAGE_DATA")
        col.operator("sequencer.foley_regenerate_markers", icon="FILE_REFRESH")
        op = col.operator("sequencer.foley_regenerate_markers", text="Regenerate Preview Range",
                          icon="PREVIEW_RANGE")
        op.use_preview_range = True


classes = (SEQUENCER_UL_foley_review, SEQUENCER_UL_foley_silent_hits,
           SEQUENCER_PT_foley_review)
register, unregister = bpy.utils.register_classes_factory(classes)
