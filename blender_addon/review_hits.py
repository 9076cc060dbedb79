"""The silent hits of the sync review: contacts of the picture no sound starts at. One click
puts an onset marker there, so Regenerate with Markers asks for a sound at that hit."""

from __future__ import annotations

import bpy
from bpy.props import IntProperty

from . import compat, review


class SEQUENCER_OT_foley_silent_hit_marker(bpy.types.Operator):
    """Add an onset marker at this silent hit (a sound should start where the picture shows
    an impact)"""

    bl_idname = "sequencer.foley_silent_hit_marker"
    bl_label = "Add Marker at Silent Hit"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(name="Contact", min=0, options={"SKIP_SAVE"},
                       description="The contact event (in the take's contacts)")

    @classmethod
    def poll(cls, context):
        scene = compat.vse_scene(context)
        if scene is None or review.active_take(scene)[1] is None:
            cls.poll_message_set("Make a generated Foley strip active")
            return False
        return True

    def execute(self, context):
        scene = compat.vse_scene(context)
        _strip, take = review.active_take(scene)
        hit = next((h for h in review.silent_hits(scene, take) if h.index == self.index), None)
        if hit is None:
            self.report({"ERROR"}, f"Contact {self.index} of take {take.number} is not a "
                        f"silent hit (a marker is paired with it, or it is too weak)")
            return {"CANCELLED"}
        review.add_review_marker(scene, take, hit.frame, hit.time_s, 1.0, "ADDED")
        take.active_review_marker = len(take.review_markers) - 1
        self.report({"INFO"}, f"Foley: marker added at frame {hit.frame} (silent hit at "
                    f"{hit.time_s:.2f} s)")
        return {"FINISHED"}


classes = (SEQUENCER_OT_foley_silent_hit_marker,)
register, unregister = bpy.utils.register_classes_factory(classes)
