"""Sync review operators: step through onset markers, audition them, edit them, regenerate.

Navigation and editing work on the active Foley strip's active take (navigation falls back to
every take's markers when no Foley strip is active). Audition plays a short window around the
playhead through the scene's preview range and puts everything back afterwards; the restore
runs from ``poll_audition`` (a timer in the GUI; tests pump it, timers never fire in bpy).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import bpy
from bpy.props import BoolProperty, FloatProperty, IntProperty

from . import compat, files, jobs, placement, review, takes
from .preferences import get_preferences

logger = logging.getLogger(__name__)

AUDITION_POLL_S = 0.05
AUDITION_MARGIN_S = 0.25  # the timer may run late; playback never outlives the window by more

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


@dataclass
class Audition:
    """What an audition changed, to put back, and when it ends."""

    scene_name: str
    frame_current: int
    use_preview_range: bool
    frame_preview_start: int
    frame_preview_end: int
    start: int
    end: int
    deadline: float  # time.monotonic()
    playing: bool  # we started playback (GUI); False in the bpy module
    last_frame: int


_audition: Audition | None = None


def audition_active() -> Audition | None:
    return _audition


def _playing(screen) -> bool:
    return bool(screen is not None and getattr(screen, "is_animation_playing", False))


def _main_screen_override():
    """Context override with a window, so playback can be stopped from a timer."""
    wm = bpy.context.window_manager
    windows = list(wm.windows) if wm is not None else []
    if not windows:
        return None
    return {"window": windows[0], "screen": windows[0].screen}


def start_audition(context, scene, center: int, before_s: float, after_s: float) -> Audition:
    """Play ``[center - before_s, center + after_s]`` once; ``poll_audition`` restores."""
    global _audition
    if _audition is not None:
        stop_audition()
    fps = review.scene_fps(scene)
    start = max(0, center - round(before_s * fps))
    end = max(start + 1, center + round(after_s * fps))
    state = Audition(scene.name, scene.frame_current, scene.use_preview_range,
                     scene.frame_preview_start, scene.frame_preview_end, start, end,
                     time.monotonic() + (end - start) / fps + AUDITION_MARGIN_S, False, start)
    _audition = state
    if _playing(context.screen):
        bpy.ops.screen.animation_cancel(restore_frame=False)
    scene.use_preview_range = True
    # Order matters: the end may not go below the start and vice versa.
    if start > scene.frame_preview_end:
        scene.frame_preview_end = end
        scene.frame_preview_start = start
    else:
        scene.frame_preview_start = start
        scene.frame_preview_end = end
    scene.frame_set(start)
    if context.window is not None:  # the bpy module has no window: no playback there
        try:
            bpy.ops.screen.animation_play()
            state.playing = True
        except RuntimeError:
            logger.debug("audition playback unavailable", exc_info=True)
    if not bpy.app.timers.is_registered(poll_audition):
        bpy.app.timers.register(poll_audition, first_interval=AUDITION_POLL_S,
                                persistent=False)
    return state


def stop_audition() -> None:
    """Stop the audition's playback and restore preview range and playhead."""
    global _audition
    state, _audition = _audition, None
    if state is None:
        return
    if state.playing:
        override = _main_screen_override()
        if override is not None and _playing(override["screen"]):
            try:
                with bpy.context.temp_override(**override):
                    bpy.ops.screen.animation_cancel(restore_frame=False)
            except RuntimeError:
                logger.debug("could not stop audition playback", exc_info=True)
    scene = bpy.data.scenes.get(state.scene_name)
    if scene is None:
        return
    scene.frame_preview_start = min(state.frame_preview_start, scene.frame_preview_end)
    scene.frame_preview_end = state.frame_preview_end
    scene.frame_preview_start = state.frame_preview_start
    scene.use_preview_range = state.use_preview_range
    scene.frame_set(state.frame_current)


def poll_audition() -> float | None:
    """Timer: end the audition at the window's end (or when playback stopped or looped)."""
    state = _audition
    if state is None:
        return None
    scene = bpy.data.scenes.get(state.scene_name)
    done = scene is None or time.monotonic() >= state.deadline
    if not done and state.playing and scene is not None:
        override = _main_screen_override()
        frame = scene.frame_current
        stopped = override is None or not _playing(override["screen"])
        looped = frame < state.last_frame  # the preview range wrapped around
        done = stopped or looped or frame >= state.end
        state.last_frame = frame
    if done:
        stop_audition()
        return None
    return AUDITION_POLL_S


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
        start_audition(context, scene, scene.frame_current, before, after)
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
    """Show the active take's sync picture in an Image Editor"""

    bl_idname = "sequencer.foley_sync_picture_show"
    bl_label = "Show Sync Picture"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return _take_poll(cls, context)

    def execute(self, context):
        _scene, take = _take_or_report(self, context)
        if take is None:
            return {"CANCELLED"}
        path = bpy.path.abspath(take.sync_picture) if take.sync_picture else ""
        if not path or not os.path.isfile(path):
            self.report({"ERROR"}, f"Take {take.number} has no sync picture"
                        + (f" (missing file {path})" if path else ""))
            return {"CANCELLED"}
        image = bpy.data.images.load(path, check_existing=True)
        image.reload()  # the file may be newer than a loaded copy
        shown = show_image(context, image)
        if not shown:
            self.report({"INFO"}, f"Loaded the sync picture as image {image.name!r}")
        return {"FINISHED"}


def show_image(context, image) -> bool:
    """Show ``image`` in an Image Editor: an open one, else a new window (GUI only)."""
    screen = context.screen
    areas = list(screen.areas) if screen is not None else []
    area = next((a for a in areas if a.type == "IMAGE_EDITOR"), None)
    if area is None and context.window is not None:
        try:
            bpy.ops.wm.window_new()
            area = bpy.context.window_manager.windows[-1].screen.areas[0]
            area.type = "IMAGE_EDITOR"
        except (RuntimeError, IndexError):
            logger.debug("could not open an image editor window", exc_info=True)
            area = None
    if area is None:
        return False
    area.spaces.active.image = image
    return True


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
        try:
            range_s = preview_range_s(scene, take) if self.use_preview_range else None
            job = build_regenerate_job(context, scene, strip, take, range_s, self.new_seed)
        except (ValueError, OSError, files.OutputFolderError, takes.TakeError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        manager = jobs.manager()
        manager.add(job)
        jobs.ensure_timer()
        hints = len(job.settings["onset_hints_s"])
        self.report({"INFO"}, f"Foley: regenerating take {take.number} of "
                    f"{job.snapshot.strip_name} with {hints} onset hint(s)")
        return {"FINISHED"}


def build_regenerate_job(context, scene, strip, take, range_s: tuple[float, float] | None,
                         new_seed: bool) -> "jobs.Job":
    """A Generate job for the take's source strip and range, its markers as onset hints.

    Args:
        range_s: (start, end) seconds from the take's first frame to regenerate, keeping the
            rest of the take (its audio travels as the protocol's ``inpaint`` source); None
            regenerates the whole take.
        new_seed: draw a new seed instead of reusing the take's.

    Raises:
        ValueError: the source strip is gone, the range is empty, ...
    """
    from .capture import CaptureError, check_capturable

    prefs = get_preferences(context)
    output_dir = files.resolve_output_dir(prefs.output_dir, bpy.data.filepath, bpy.app.tempdir)
    source = compat.all_strips(scene.sequence_editor).get(strip.foley.source)
    if source is None:
        raise ValueError(f"The picture strip {strip.foley.source!r} of take {take.number} was "
                         "deleted or renamed")
    try:
        check_capturable(scene, source)
    except CaptureError as exc:
        raise ValueError(str(exc)) from None
    fps = review.scene_fps(scene)
    first, end = take.frame_start, take.frame_end
    settings = {
        "caption": take.caption, "negative_caption": take.negative_caption,
        "seed": None if new_seed or not take.seed.isdigit() else int(take.seed),
        "steps": take.steps or None, "guidance": take.guidance if take.guidance >= 1.0 else None,
        "sampler": take.sampler or prefs.sampler, "variations": 1,
        "onset_hints_s": review.hint_times_s(scene, take),
    }
    duration_s = (end - first) / fps
    if range_s is None:  # the whole take: a new take of the same strip, nothing kept
        regen = placement.RegenRequest(strip_name=strip.name, take_id=take.take_id,
                                       frames=(first, end), range_s=(0.0, duration_s),
                                       audio=None, sample_rate=0)
    else:
        regen = range_request(strip, take, range_s, duration_s, fps)
    manager = jobs.connected_manager(prefs)
    return jobs.new_job(manager, prefs, scene, source, (first, end), fps, output_dir, settings, regen)


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


def range_request(strip, take, range_s: tuple[float, float], duration_s: float,
                  fps: float) -> "placement.RegenRequest":
    """Regenerating ``range_s`` of a take lasting ``duration_s``; the take's audio is the
    inpaint source, so the rest of it is kept."""
    start_s, end_s = range_s
    if not 0.0 <= start_s < end_s <= duration_s + 1e-6:
        raise ValueError(f"Range {start_s:.3f}-{end_s:.3f} s is not inside take {take.number} "
                         f"(0-{duration_s:.3f} s)")
    end_s = min(end_s, duration_s)
    audio, rate = takes.read_take_audio(take)
    frames = (take.frame_start + round(start_s * fps), take.frame_start + round(end_s * fps))
    return placement.RegenRequest(strip_name=strip.name, take_id=take.take_id, frames=frames,
                                  range_s=(start_s, end_s), audio=audio, sample_rate=rate)


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
    global _audition
    for keymap, item in _keymap_items:
        try:
            keymap.keymap_items.remove(item)
        except (ReferenceError, RuntimeError):
            pass
    _keymap_items.clear()
    if bpy.app.timers.is_registered(poll_audition):
        bpy.app.timers.unregister(poll_audition)
    _audition = None
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
