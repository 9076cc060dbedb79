"""Frame, second and sample arithmetic for putting Foley on the VSE timeline (bpy-free).

Conventions: timeline frames are integers; a strip's visible range is ``[first, end)`` (end
exclusive, Blender's ``frame_final_start`` / ``frame_final_end``); a scene's real frame rate is
``fps / fps_base`` (29.97 = 30 / 1.001). Audio t = 0 is the strip's first visible frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

MAX_CHANNEL = 128  # Blender's VSE has channels 1..128
FALLBACK_CAPTURE_SIDE_PX = 224  # a server that does not say what its model reads (CAVP's size)
MIN_CAPTURE_SIDE_PX = 32  # the server's motion events for review need some picture


def scene_rate(fps: int, fps_base: float) -> float:
    """Frames per second of a scene (``render.fps / render.fps_base``)."""
    if fps <= 0 or fps_base <= 0:
        raise ValueError(f"fps and fps_base must be > 0, got {fps} / {fps_base}")
    return fps / fps_base


def range_duration_s(first: int, end: int, scene_fps: float) -> float:
    """Seconds covered by the frames ``[first, end)``."""
    if end <= first:
        raise ValueError(f"empty frame range [{first}, {end})")
    return (end - first) / scene_fps


def capture_frames(first: int, end: int, scene_fps: float, model_fps: float) -> list[int]:
    """Timeline frames to render so the model sees the range at ``model_fps``.

    Frame i shows time i / model_fps (from the first visible frame); we render the timeline
    frame nearest to that time (error at most half a scene frame), never past ``end - 1``.

    Returns:
        ``ceil(duration_s * model_fps)`` frame numbers, non-decreasing, all in ``[first, end)``.
    """
    if model_fps <= 0:
        raise ValueError(f"model_fps must be > 0, got {model_fps}")
    count_frames = end - first
    duration_s = range_duration_s(first, end, scene_fps)
    # 1e-9: 10 s at 4 fps is 40 frames, not 41 through float noise.
    count = max(1, math.ceil(duration_s * model_fps - 1e-9))
    return [first + min(count_frames - 1, int(math.floor(i * scene_fps / model_fps + 0.5)))
            for i in range(count)]


def target_samples(duration_s: float, sample_rate: int) -> int:
    """Samples of audio that last ``duration_s`` at ``sample_rate`` (rounded)."""
    return int(round(duration_s * sample_rate))


def capture_side_for(server_info: dict | None) -> int:
    """Short side to capture at when the user leaves it to the model: the side of the square
    images the server's video encoder reads (the encoder resizes to it anyway, so a larger
    capture only costs render and transport time)."""
    size = (server_info or {}).get("model_image_size")
    return max(MIN_CAPTURE_SIDE_PX, int(size)) if size else FALLBACK_CAPTURE_SIDE_PX


def render_percentage(res_x: int, res_y: int, short_side_px: int = 224) -> int:
    """``render.resolution_percentage`` whose output's short side is at least ``short_side_px``.

    Only the percentage scales the VSE layout uniformly (changing resolution_x/y crops).
    """
    if res_x <= 0 or res_y <= 0:
        raise ValueError(f"resolution must be > 0, got {res_x}x{res_y}")
    return max(1, min(100, math.ceil(short_side_px * 100 / min(res_x, res_y))))


@dataclass(frozen=True)
class SoundPlacement:
    """Where a sound strip goes.

    Attributes:
        frame_start: integer frame of the strip's start.
        sound_offset_s: ``SoundStrip.sound_offset`` (positive delays the audio); 0 when the
            audio starts on a frame or the Blender version has no ``sound_offset``.
        frame_end: exclusive end frame the strip is trimmed to.
    """

    frame_start: int
    sound_offset_s: float
    frame_end: int


def plan_sound(start_frame: float, length_frames: float, scene_fps: float,
               has_sound_offset: bool) -> SoundPlacement:
    """Place audio whose t = 0 falls on timeline frame ``start_frame`` (may be fractional).

    With ``sound_offset`` (Blender 4.3+) the start is sample-exact: the strip starts at
    ``floor(start_frame)`` and the audio is delayed by the fraction. Without it the start is
    rounded to the nearest frame. The strip ends at ``ceil(start_frame + length_frames)``
    (sub-frame noise below 1e-6 frames is ignored).
    """
    if length_frames <= 0:
        raise ValueError(f"length_frames must be > 0, got {length_frames}")
    eps = 1e-6
    if has_sound_offset:
        frame_start = math.floor(start_frame + eps)
        offset_s = max(0.0, (start_frame - frame_start) / scene_fps)
        if offset_s < eps / scene_fps:
            offset_s = 0.0
    else:
        frame_start = int(math.floor(start_frame + 0.5))
        offset_s = 0.0
        start_frame = float(frame_start)
    frame_end = math.ceil(start_frame + length_frames - eps)
    return SoundPlacement(int(frame_start), offset_s, int(max(frame_end, frame_start + 1)))


def onset_marker_frames(onsets_s: Iterable[float], start_frame: float, scene_fps: float,
                        end_frame: int | None = None) -> list[int]:
    """Timeline frames (sorted, unique) for onsets given in seconds from ``start_frame``.

    Markers are integer frames: ``round(start_frame + t * fps)``, halves rounded up; the error
    is at most half a frame. The position is first quantised to 1e-4 frame, so an onset exactly
    between two frames (the model's 40 ms grid puts them there at 25 fps) lands on the same
    frame whether it is read as a double or as Blender's float32. Onsets at or past
    ``end_frame`` (exclusive) are dropped.
    """
    frames = set()
    for t in onsets_s:
        frame = int(math.floor(round(start_frame + t * scene_fps, 4) + 0.5))
        if end_frame is not None and frame >= end_frame:
            continue
        frames.add(frame)
    return sorted(frames)


def free_channel(occupied: Sequence[tuple[int, int, int]], above: int, start: int, end: int,
                 max_channel: int = MAX_CHANNEL) -> int | None:
    """The lowest channel above ``above`` with nothing overlapping ``[start, end)``.

    Args:
        occupied: ``(channel, first, end)`` of every strip (end exclusive).
        above: the source strip's channel; the search starts at ``above + 1``.
    Returns:
        A channel number, or None when every channel up to ``max_channel`` is busy there.
    """
    busy = {c for c, s, e in occupied if s < end and e > start}
    for channel in range(max(1, above + 1), max_channel + 1):
        if channel not in busy:
            return channel
    return None


def follow_move(snapshot_first: int, snapshot_content_start: float, snapshot_length: int,
                now_first: int, now_content_start: float, now_length: int) -> int | None:
    """Frames the source strip moved by since the snapshot, when it moved as a whole.

    A pure move keeps the picture on the same frames relative to the strip, so the Foley can
    follow it. Returns None when the strip was trimmed, slipped or retimed instead (the audio
    then stays on the range that was captured).
    """
    shift = now_first - snapshot_first
    if now_length != snapshot_length:
        return None
    if abs((now_content_start - snapshot_content_start) - shift) > 1e-6:
        return None
    return shift


def format_eta(seconds: float | None) -> str:
    """``"ETA 1 min 05 s"`` style text; empty when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"ETA {seconds} s"
    return f"ETA {seconds // 60} min {seconds % 60:02d} s"


@dataclass(frozen=True)
class RegenRange:
    """Frames ``[start, end)`` of a take to regenerate, and where the range came from."""

    start: int
    end: int
    origin: str  # "preview range" | "selected markers" | "current frame ± 1 s"

    def seconds(self, take_first: int, scene_fps: float) -> tuple[float, float]:
        """(start_s, end_s) from the take's first frame (audio t = 0)."""
        return (self.start - take_first) / scene_fps, (self.end - take_first) / scene_fps


def regeneration_range(take_first: int, take_end: int, scene_fps: float, current_frame: int,
                       preview: tuple[int, int] | None = None,
                       selected_marker_frames: Sequence[int] = (),
                       preview_name: str = "preview range") -> RegenRange:
    """The range Regenerate Range works on, clipped to the take ``[take_first, take_end)``.

    Rules, first that applies: the preview range (``preview`` = its first and last frame,
    inclusive, as Blender stores them), else the span between the first and last of two or
    more selected Foley markers, else the current frame ± 1 s.

    Raises:
        ValueError: the range does not overlap the take, or would cover all of it.
    """
    if preview is not None:
        start, end, origin = preview[0], preview[1] + 1, preview_name
    elif len(set(selected_marker_frames)) >= 2:
        start, end = min(selected_marker_frames), max(selected_marker_frames)
        origin = "selected markers"
    else:
        one_s = max(1, round(scene_fps))
        start, end, origin = current_frame - one_s, current_frame + one_s, "current frame ± 1 s"
    start, end = max(start, take_first), min(end, take_end)
    if end <= start:
        raise ValueError(f"The {origin} does not overlap the take (frames {take_first}–"
                         f"{take_end - 1}): move the playhead or set a preview range over it")
    if (start, end) == (take_first, take_end):
        raise ValueError(f"The {origin} covers the whole take: use Generate Foley for a new "
                         "take, or set a shorter range")
    return RegenRange(start, end, origin)
