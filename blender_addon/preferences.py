"""Add-on preferences: where the server is, where audio goes, and generation defaults."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty
from foley_protocol.protocol import (
    DEFAULT_TIMEOUTS_S,
    MAX_CAPTION_CHARS,
    MAX_GUIDANCE,
    MAX_STEPS,
    MAX_VARIATIONS,
)

from . import compat

ADDON_ID = __package__

DEFAULT_NEGATIVE_CAPTION = "speech, talking, voice, singing, music"

SAMPLER_ITEMS = (
    ("dpmpp", "DPM-Solver++", "Fast sampler (default 25 steps)"),
    ("ddpm", "DDPM", "Reference sampler (default 200 steps; slow)"),
)


class FoleyPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    server_address: StringProperty(
        name="Server Address", default="tcp://127.0.0.1:5555",
        description="ZeroMQ endpoint of the running v2a-server")
    server_public_key: StringProperty(
        name="Server Public Key", default="",
        description="The server's CURVE public key (the 40 characters in server.key written by "
        "`v2a keys`, or the path of that file); empty for a plain local server")
    output_dir: StringProperty(
        name="Output Folder", default="//foley/", subtype="DIR_PATH",
        options=compat.BLEND_RELATIVE_PATH,
        description="Where generated WAV files are written; // is the folder of the .blend")
    sampler: EnumProperty(name="Sampler", items=SAMPLER_ITEMS, default="dpmpp",
                          description="Default sampler")
    steps: IntProperty(name="Steps", default=0, min=0, max=MAX_STEPS,
                       description="Default denoising steps per 10.24 s window (0: the model's "
                       "default)")
    guidance: FloatProperty(name="Guidance", default=0.0, min=0.0, max=MAX_GUIDANCE,
                            description="Default classifier-free guidance (0: the model's own "
                            "tuned default; 1 = off, faster)")
    variations: IntProperty(name="Variations", default=1, min=1, max=MAX_VARIATIONS,
                            description="Takes generated per strip in one job (each on its "
                            "own sound strip)")
    range_variations: IntProperty(
        name="Range Variations", default=MAX_VARIATIONS, min=1, max=MAX_VARIATIONS,
        description="Takes made by one Regenerate Range request (one batch on the server); "
        "all are added to the strip's takes, the first is switched to")
    negative_caption: StringProperty(name="Negative Caption", default=DEFAULT_NEGATIVE_CAPTION,
                                     maxlen=MAX_CAPTION_CHARS,
                                     description="What should not be heard")
    marker_prefix: StringProperty(name="Marker Prefix", default="Foley ", maxlen=16,
                                  description="Start of the names of onset markers")
    capture_short_side: IntProperty(
        name="Capture Size", default=0, min=0, max=1080, subtype="PIXEL",
        description="Short side of the captured frames; 0 = the size the server's model reads "
        "(the model resizes frames anyway; smaller is faster)")
    server_reads_movies: BoolProperty(
        name="Server Reads Movie Files", default=True,
        description="When the server runs on this computer, it reads plain movie strips from "
        "their files instead of Blender rendering every frame (much faster). Strips with "
        "transforms, crops, effects, modifiers, grading or keyframes are always rendered")
    connect_timeout_s: FloatProperty(
        name="Connect Timeout", default=DEFAULT_TIMEOUTS_S["hello"], min=0.5, max=120.0,
        unit="TIME_ABSOLUTE",
        description="How long to wait for the server to answer before giving up")
    job_timeout_s: FloatProperty(
        name="Job Timeout", default=DEFAULT_TIMEOUTS_S["generate"], min=10.0, max=86400.0,
        unit="TIME_ABSOLUTE",
        description="Give up on a job without a result after this long")

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        col = layout.column(heading="Server")
        col.prop(self, "server_address")
        col.prop(self, "server_public_key")
        col.prop(self, "connect_timeout_s")
        col.prop(self, "job_timeout_s")
        col = layout.column(heading="Output")
        col.prop(self, "output_dir")
        col.prop(self, "marker_prefix")
        col = layout.column(heading="Generation Defaults")
        col.prop(self, "sampler")
        col.prop(self, "steps")
        col.prop(self, "guidance")
        col.prop(self, "variations")
        col.prop(self, "range_variations")
        col.prop(self, "negative_caption")
        col.prop(self, "capture_short_side")
        col.prop(self, "server_reads_movies")


def get_preferences(context=None) -> FoleyPreferences:
    """This add-on's preferences."""
    context = context or bpy.context
    return context.preferences.addons[ADDON_ID].preferences


classes = (FoleyPreferences,)
register, unregister = bpy.utils.register_classes_factory(classes)
