"""The onset audition of sync review: play a short window of the timeline around the playhead
(an onset) once, through the scene's preview range, and put everything back afterwards.

Not the take audition (``takes.audition_take``), which plays a take's file on its own. The
restore runs from ``poll`` (a timer in the GUI; tests pump it, timers never fire in bpy).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import bpy

from . import review

logger = logging.getLogger(__name__)

AUDITION_POLL_S = 0.05
AUDITION_MARGIN_S = 0.25  # the timer may run late; playback never outlives the window by more


@dataclass
class OnsetAudition:
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


_audition: OnsetAudition | None = None


def active() -> OnsetAudition | None:
    """The onset audition playing now, or None."""
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


def start(context, scene, center: int, before_s: float, after_s: float) -> OnsetAudition:
    """Play ``[center - before_s, center + after_s]`` once; ``poll`` restores."""
    global _audition
    if _audition is not None:
        stop()
    fps = review.scene_fps(scene)
    start = max(0, center - round(before_s * fps))
    end = max(start + 1, center + round(after_s * fps))
    state = OnsetAudition(scene.name, scene.frame_current, scene.use_preview_range,
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
    if not bpy.app.timers.is_registered(poll):
        bpy.app.timers.register(poll, first_interval=AUDITION_POLL_S,
                                persistent=False)
    return state


def stop() -> None:
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


def poll() -> float | None:
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
        stop()
        return None
    return AUDITION_POLL_S


def unregister() -> None:
    global _audition
    if bpy.app.timers.is_registered(poll):
        bpy.app.timers.unregister(poll)
    _audition = None
