"""What the add-on stores in the .blend: captions on strips, takes on Foley strips.

Data model (several takes per Foley strip; one of them is heard and has its markers shown):

* ``Strip.foley`` (``FoleyStripSettings``) on every strip. On a picture strip: ``caption``.
  On a generated sound strip: ``is_foley``, ``source`` (the picture strip's name), and
  ``takes`` (``FoleyTake``: the strip's first take, then one per range regeneration) with
  ``active_take`` (the take the strip plays) and ``take_index`` (the row highlighted in the
  panel's list).
* ``FoleyTake``: its id (``take_id``, unique in the scene, also the tag of its timeline
  markers), take number (per source strip; also in its file name), file, caption, negative
  caption, seed, sampler, steps, guidance, model, timeline range, the audio's start second on
  the timeline, creation date, the onsets (exact seconds + probability), for a range
  regeneration the regenerated range (seconds from the take's start) and the take it redid;
  for the sync review (``review.py``) also the server's contact events (``has_contacts``:
  the server sent them; a take from an older server has only motion events), motion events
  and audio onsets, one record per onset marker (exact seconds, probability, review state) and the sync picture's
  path.
* ``Scene.foley`` (``FoleySceneSettings``): the counter that makes take ids unique; the review
  list filter ("needs attention") and the audition window.

Markers: ``scene.timeline_markers`` named ``<prefix><take_id>.<k>``; every marker of a take
starts with ``take.marker_tag`` so a later regeneration can replace exactly its own. Only the
active take's markers are on the timeline: switching takes stores where the editor left the old
take's markers (its review records) and removes them, then adds the new take's from its review
records (or, for a take without any, from its stored onsets).
"""

from __future__ import annotations

import logging

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from foley_protocol.protocol import MAX_CAPTION_CHARS

from . import compat
from .compat import STRIP_TYPE
from .focus import FoleyFocus

logger = logging.getLogger(__name__)


class FoleyOnset(bpy.types.PropertyGroup):
    """One detected sound onset of a take."""

    time_s: FloatProperty(name="Time", description="Seconds from the take's first frame",
                          unit="TIME_ABSOLUTE", min=0.0)
    probability: FloatProperty(name="Probability", description="Onset probability",
                               min=0.0, max=1.0)


class FoleyEvent(bpy.types.PropertyGroup):
    """A contact or motion event of the picture or an audio onset of the take, as the server
    measured it."""

    time_s: FloatProperty(name="Time", description="Seconds from the take's first frame",
                          unit="TIME_ABSOLUTE")
    strength: FloatProperty(name="Strength", min=0.0, max=1.0)


REVIEW_STATES = (
    ("UNREVIEWED", "Unreviewed", "Placed by the model, not reviewed yet"),
    ("ACCEPTED", "Accepted", "The editor confirmed this onset"),
    ("ADDED", "Added", "The editor added this onset"),
)


class FoleyReviewMarker(bpy.types.PropertyGroup):
    """One onset marker of a take under review (the marker itself is a timeline marker)."""

    marker_name: StringProperty(name="Marker", description="Name of the timeline marker")
    frame: IntProperty(name="Frame", description="Marker frame when time_s was last set")
    time_s: FloatProperty(name="Time", description="Exact seconds from the take's first frame "
                          "(the marker's frame is rounded)", unit="TIME_ABSOLUTE")
    probability: FloatProperty(name="Probability", description="Onset probability (model)",
                               min=0.0, max=1.0)
    state: EnumProperty(name="Review", items=REVIEW_STATES, default="UNREVIEWED")


class FoleyTake(bpy.types.PropertyGroup):
    """One generated take: its audio file and everything needed to reproduce it."""

    take_id: StringProperty(name="Take ID", description="Unique in the scene; tags the markers")
    number: IntProperty(name="Take", description="Take number for the source strip", min=1)
    filepath: StringProperty(name="File", subtype="FILE_PATH",
                             options=compat.BLEND_RELATIVE_PATH)
    caption: StringProperty(name="Caption")
    negative_caption: StringProperty(name="Negative Caption")
    seed: StringProperty(name="Seed", description="Seed used (decimal; up to 2^32 - 1)")
    sampler: StringProperty(name="Sampler")
    steps: IntProperty(name="Steps")
    guidance: FloatProperty(name="Guidance")
    model_id: StringProperty(name="Model")
    variation: IntProperty(name="Variation", description="Index within its batch", min=0)
    frame_start: IntProperty(name="Start Frame", description="First timeline frame of the take")
    frame_end: IntProperty(name="End Frame", description="Timeline end frame (exclusive)")
    start_time_s: FloatProperty(name="Start", description="Timeline second of the audio's t = 0",
                                unit="TIME_ABSOLUTE")
    duration_s: FloatProperty(name="Duration", unit="TIME_ABSOLUTE", min=0.0)
    sample_rate: IntProperty(name="Sample Rate", description="Rate of the written file (Hz)")
    created: StringProperty(name="Created", description="ISO 8601 local time")
    marker_tag: StringProperty(name="Marker Tag",
                               description="Every timeline marker of this take starts with it")
    onsets: CollectionProperty(type=FoleyOnset)
    # Sync review (review.py): the server's measurements and the editor's marker decisions.
    contacts: CollectionProperty(type=FoleyEvent)
    has_contacts: BoolProperty(name="Has Contact Events",
                               description="The server sent the picture's contact events (a "
                               "take from an older server is reviewed against motion events)")
    active_contact: IntProperty(name="Active Silent Hit", min=0)
    motion_events: CollectionProperty(type=FoleyEvent)
    audio_onsets: CollectionProperty(type=FoleyEvent)
    review_markers: CollectionProperty(type=FoleyReviewMarker)
    active_review_marker: IntProperty(name="Active Marker", min=0)
    sync_picture: StringProperty(name="Sync Picture", subtype="FILE_PATH",
                                 options=compat.BLEND_RELATIVE_PATH,
                                 description="PNG beside the take's audio")
    sync_picture_markers: StringProperty(
        name="Sync Picture Markers",
        description="The marker times (s) the sync picture shows; other markers now: redraw it")
    request_id: StringProperty(name="Server Job",
                               description="The generate request that made the take: its "
                               "review data and sync picture come from the server by this id")
    hinted: BoolProperty(name="Made With Hints",
                         description="Generated from the edited markers of another take")
    range_start_s: FloatProperty(name="Range Start", unit="TIME_ABSOLUTE",
                                 description="Start of the regenerated range (seconds from the "
                                 "take's start; start = end: a whole take)")
    range_end_s: FloatProperty(name="Range End", unit="TIME_ABSOLUTE",
                               description="End of the regenerated range (seconds)")
    based_on: StringProperty(name="Based On",
                             description="Take id of the take whose range was regenerated")
    # What the server measured of the take (protocol 1.2) and what it warned of it.
    near_silent: BoolProperty(name="Near-Silent",
                              description="The model made only its noise floor: it heard "
                              "nothing it knows in this picture")
    loudest_dbfs: FloatProperty(name="Loudest", description="Level of the take's loudest "
                                "100 ms, dBFS (0 when the server did not say)")
    server_warnings: StringProperty(name="Server Warnings",
                                    description="What the server warned of this result")
    # The focus region it was made with (focus.py; JSON of the request's focus_region).
    focus_region: StringProperty(name="Focus Region",
                                 description="The region of the picture the take followed "
                                 "(empty: the whole frame); Regenerate sends it again")
    focus_label: StringProperty(name="Focus", description="The focus region in words")

    @property
    def is_range(self) -> bool:
        return self.range_end_s > self.range_start_s


def _caption_changed(settings, context) -> None:
    """A caption typed on a movie strip: a local server may start reading its frames."""
    if not settings.caption.strip():
        return
    from . import jobs
    from .preferences import get_preferences

    scene = settings.id_data
    try:
        # the strip holding these settings (path_from_id cannot name a strip's pointer group)
        pointer = settings.as_pointer()
        strip = next((s for s in compat.all_strips(scene.sequence_editor)
                      if s.foley.as_pointer() == pointer), None)
        if strip is not None:
            jobs.read_ahead(scene, strip, get_preferences(context))
    except Exception:  # reading ahead only saves time: never in the editor's way
        logger.debug("read ahead for a caption failed", exc_info=True)


class FoleyStripSettings(bpy.types.PropertyGroup):
    """Foley data of one strip (a picture strip's caption, or a Foley strip's takes)."""

    caption: StringProperty(
        name="Caption", description="What should be heard in this strip, e.g. "
        "\"footsteps on gravel, a door slams\"", maxlen=MAX_CAPTION_CHARS,
        update=_caption_changed)
    is_foley: BoolProperty(name="Foley Strip", description="This sound strip was generated")
    source: StringProperty(name="Source Strip", description="The picture strip it was made for")
    takes: CollectionProperty(type=FoleyTake)
    active_take: IntProperty(name="Active Take", min=0,
                             description="The take this strip plays (its markers are shown)")
    take_index: IntProperty(name="Selected Take", min=0,
                            description="The take highlighted in the list (audition, delete)")
    focus: PointerProperty(type=FoleyFocus, name="Focus",
                           description="The part of the picture a new take follows")


class FoleySceneSettings(bpy.types.PropertyGroup):
    """Per-scene Foley bookkeeping."""

    next_take_uid: IntProperty(name="Next Take ID", default=1, min=1,
                               description="Makes take ids (and marker tags) unique in the scene")
    review_needs_attention: BoolProperty(
        name="Needs Attention", description="List only onset markers that are late, early or "
        "have no visual cause (and the silent hits)")
    audition_before_s: FloatProperty(name="Before", default=0.5, min=0.0, max=10.0,
                                     unit="TIME_ABSOLUTE",
                                     description="Audition starts this long before the onset")
    audition_after_s: FloatProperty(name="After", default=0.5, min=0.0, max=10.0,
                                    unit="TIME_ABSOLUTE",
                                    description="Audition stops this long after the onset")


classes = (FoleyFocus, FoleyOnset, FoleyEvent, FoleyReviewMarker, FoleyTake, FoleyStripSettings,
           FoleySceneSettings)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    STRIP_TYPE.foley = PointerProperty(type=FoleyStripSettings)
    bpy.types.Scene.foley = PointerProperty(type=FoleySceneSettings)


def unregister() -> None:
    del bpy.types.Scene.foley
    del STRIP_TYPE.foley
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
