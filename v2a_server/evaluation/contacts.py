"""Visual contact events: the frames where the picture shows something hit something.

AV-Align's visual events (``metrics.motion_events``) are the peaks of the whole frame's mean
optical-flow magnitude: the moments of *fastest* motion, a few frames before a falling object
lands, and every local maximum of any motion. A sound starts at a *contact*, where motion stops
or reverses abruptly. This module finds those.

For each frame k (1 <= k <= T-2) it computes, at the pixels of frame k, the velocity that
arrived there (minus the backward Farneback flow k -> k-1) and the velocity that leaves
(the forward flow k -> k+1), both at a working size of at most ``WORK_SIZE_PX`` pixels, with the
frame's median motion (a camera pan) taken out of both. The per-pixel *deceleration* along the
incoming direction,

    d = |v_in| - v_out . v_in / |v_in|      (pixels/frame)

is large when a fast motion stops (d = |v_in|) or bounces back (d > |v_in|), about 0 for steady
motion and negative for a speed-up. A pixel counts only where it lost at least
``STOP_FRACTION`` of its speed in that one frame (gravity, friction and a swing's turn lose far
less), its incoming motion is not a rise (``RISING_COS``: a throw reaching its top is no
impact) and not tiny (``MIN_SPEED_PX``). The deceleration is averaged over each cell of a ``GRID`` x ``GRID`` grid,
so one small body stands out from a still background and two bodies in different places are
told apart. A cell's deceleration, as a fraction of the working width, is its contact score; a
frame is a contact candidate when some cell's score is a strict maximum of that cell over
neighbouring frames and exceeds ``CONTACT_THRESHOLD``. Candidates of all cells are then
thinned by non-maximum suppression over ``NMS_FRAMES`` frames, strongest first.

Measured on the synthetic world's held-out test split and on real clips in
``bench/contact_events.py`` (numbers in ``docs/sync-review.md``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

WORK_SIZE_PX = 160
"""Frames are shrunk (never enlarged) so their longer side is at most this: the flow costs a
few milliseconds per frame whatever the input size, and scores do not depend on it."""

GRID = 8
"""Cells per side of the grid the deceleration is averaged over."""

CONTACT_THRESHOLD = 0.012
"""A cell's mean deceleration, as a fraction of the working width per frame, above which a
contact is reported. Chosen on 12 clips of the synthetic validation split (seeds of base 0):
true contacts there score 0.008-0.65 (5th percentile of the slowest kind, late small bounces,
to the median of footsteps); 0.012 gave the best F1 (precision 0.50, recall 0.71; 0.008: 0.45
/ 0.77; 0.02: 0.47 / 0.60). Checked on the test split and real clips by
``bench/contact_events.py``."""

STRENGTH_FULL_SCALE = 0.05
"""The cell deceleration (fraction of the working width per frame) that gives strength 1.0: a
body of a fifth of a cell's width stopping from a quarter of the frame width per frame; the
threshold is strength 0.24, the review's silent hits start at 0.5."""

NMS_FRAMES = 2
"""Two contacts are at least this many frames + 1 apart; the weaker of a closer pair is dropped."""

STOP_FRACTION = 0.6
"""A pixel's motion is a stop (or a bounce) when it loses at least this fraction of its speed
from one frame to the next; gravity, friction and a swing's turn lose far less per frame."""

RISING_COS = 0.5
"""Motion within 60 degrees of straight up (its upward part over its speed above this) that
stops is a throw or bounce reaching its top, not an impact: things fall onto what they hit."""

MIN_SPEED_PX = 0.25
"""Incoming speeds (working pixels/frame) below this have no direction: d = 0 there."""

FARNEBACK_ARGS = (0.5, 4, 31, 5, 7, 1.5, 0)
"""Farneback args (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags). Wider
than AV-Align's (``metrics.FARNEBACK_ARGS``: 3 levels, window 15): at a contact a small body
moves further in one frame than its own size (a 16-pixel ball at 19 pixels/frame), and
AV-Align's settings then lose it exactly at the contact frame (they measured it moving *down*
when it bounced up); one more level and a 31-pixel window follow it."""


class ContactEvents(NamedTuple):
    """Contact events of a frame sequence.

    Attributes:
        times_s: ``[K]`` float64 event times in seconds (``k / fps`` of each contact frame),
            ascending.
        strengths: ``[K]`` float64 in [0, 1]: the contact's cell deceleration over
            ``STRENGTH_FULL_SCALE``, clipped.
        score: ``[T]`` float64, each frame's largest cell deceleration (fraction of the working
            width per frame; 0 at the first and last frame), for plots and thresholds.
    """

    times_s: np.ndarray
    strengths: np.ndarray
    score: np.ndarray


def _check_frames(frames: np.ndarray, fps: float) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise TypeError(f"frames must be uint8, got {frames.dtype}")
    if not (frames.ndim == 3 or (frames.ndim == 4 and frames.shape[-1] == 3)):
        raise ValueError(f"frames must be [T, H, W] or [T, H, W, 3], got shape {frames.shape}")
    if not fps or not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return frames


def _work_size(height: int, width: int) -> tuple[int, int]:
    scale = min(1.0, WORK_SIZE_PX / max(height, width))
    return max(8, int(round(height * scale))), max(8, int(round(width * scale)))


def _gray_frames(frames: np.ndarray, size_hw: tuple[int, int]) -> list[np.ndarray]:
    import cv2

    out = []
    for frame in frames:
        gray = frame if frame.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(frame),
                                                          cv2.COLOR_RGB2GRAY)
        if gray.shape != size_hw:
            gray = cv2.resize(gray, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_AREA)
        out.append(gray)
    return out


def _work_mask(region_mask, frame_hw: tuple[int, int], size_hw: tuple[int, int]) -> np.ndarray:
    """``region_mask`` ([H, W] bool, the frames' size) at the working size, as float weights."""
    import cv2

    mask = np.asarray(region_mask)
    if mask.shape != frame_hw:
        raise ValueError(f"region_mask must be [H, W] = {list(frame_hw)} like the frames, "
                         f"got shape {list(mask.shape)}")
    weights = cv2.resize(mask.astype(np.float32), (size_hw[1], size_hw[0]),
                         interpolation=cv2.INTER_AREA)
    if not weights.any():
        raise ValueError("region_mask selects no pixel")
    return weights


def _cell_means(values: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """[GRID, GRID] mean of ``values`` ([h, w]) over each cell (weighted by ``weights``)."""
    h, w = values.shape
    rows = np.linspace(0, h, GRID + 1).round().astype(int)
    cols = np.linspace(0, w, GRID + 1).round().astype(int)
    if weights is not None:
        values = values * weights
    sums = np.add.reduceat(np.add.reduceat(values, rows[:-1], axis=0), cols[:-1], axis=1)
    if weights is None:
        counts = np.outer(np.diff(rows), np.diff(cols)).astype(np.float64)
    else:
        counts = np.add.reduceat(np.add.reduceat(weights, rows[:-1], axis=0), cols[:-1], axis=1)
    # a cell the region barely touches says nothing: its mean over a sliver would be noise
    full = np.outer(np.diff(rows), np.diff(cols))
    return np.where(counts >= 0.25 * full, sums / np.maximum(counts, 1e-9), 0.0)


def _without_camera(flow: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """The flow minus the frame's median motion (a pan moves every pixel alike)."""
    vectors = flow.reshape(-1, 2) if weights is None else flow[weights > 0.5]
    if len(vectors) == 0:
        return flow
    return flow - np.median(vectors, axis=0)


def _deceleration(incoming: np.ndarray, outgoing: np.ndarray) -> np.ndarray:
    """Per-pixel ``|v_in| - v_out . v_in / |v_in|`` where the motion stops or turns back
    abruptly (at least ``STOP_FRACTION`` of the incoming speed lost in one frame), else 0;
    also 0 where ``|v_in| < MIN_SPEED_PX``."""
    speed = np.hypot(incoming[..., 0], incoming[..., 1])
    along = (outgoing * incoming).sum(axis=-1) / np.maximum(speed, 1e-9)
    lost = speed - along
    # image rows grow downwards: incoming[..., 1] < 0 is a rise
    rising = incoming[..., 1] < -RISING_COS * speed
    return np.where((speed >= MIN_SPEED_PX) & (lost >= STOP_FRACTION * speed) & ~rising,
                    lost, 0.0)


def cell_scores(frames: np.ndarray, *, region_mask=None) -> np.ndarray:
    """Each frame's contact score per grid cell.

    Args:
        frames: ``[T, H, W, 3]`` RGB (or ``[T, H, W]`` gray) uint8.
        region_mask: optional ``[H, W]`` bool: only these pixels count (cells less than a
            quarter inside count for nothing).
    Returns:
        ``[T, GRID, GRID]`` float64: mean deceleration as a fraction of the working width per
        frame; frames 0 and T-1 (no motion on one side) are 0.
    """
    import cv2

    frames = np.asarray(frames)
    count = len(frames)
    scores = np.zeros((count, GRID, GRID))
    if count < 3:
        return scores
    frame_hw = tuple(frames.shape[1:3])
    size_hw = _work_size(*frame_hw)
    weights = None if region_mask is None else _work_mask(region_mask, frame_hw, size_hw)
    gray = _gray_frames(frames, size_hw)
    width = float(size_hw[1])

    def flow(a: int, b: int) -> np.ndarray:  # frame a -> b, at a's pixels
        return cv2.calcOpticalFlowFarneback(gray[a], gray[b], None, *FARNEBACK_ARGS)

    for k in range(1, count - 1):  # two flows in memory at a time, whatever the clip's length
        incoming = -_without_camera(flow(k, k - 1), weights)
        outgoing = _without_camera(flow(k, k + 1), weights)
        scores[k] = _cell_means(_deceleration(incoming, outgoing), weights) / width
    return scores


def pick_contacts(scores: np.ndarray, fps: float, *, threshold: float = CONTACT_THRESHOLD,
                  nms_frames: int = NMS_FRAMES) -> ContactEvents:
    """Contact events from per-cell scores (``cell_scores``).

    A (frame, cell) is a candidate when its score exceeds ``threshold`` and is a strict maximum
    of that cell over frames k-1..k+1; candidates are taken strongest first, each dropping the
    weaker candidates within ``nms_frames`` frames of it.
    """
    if not fps or fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    scores = np.asarray(scores, dtype=np.float64)
    count = len(scores)
    flat = scores.reshape(count, -1)
    frame_score = flat.max(axis=1) if count else np.zeros(0)
    candidates: list[tuple[float, int]] = []
    for k in range(1, count - 1):
        mid = flat[k]
        peak = (mid > flat[k - 1]) & (mid >= flat[k + 1]) & (mid > threshold)
        if peak.any():
            candidates.append((float(mid[peak].max()), k))
    candidates.sort(key=lambda c: (-c[0], c[1]))
    kept: list[tuple[int, float]] = []
    for value, k in candidates:
        if all(abs(k - other) > nms_frames for other, _v in kept):
            kept.append((k, value))
    kept.sort()
    times = np.asarray([k / float(fps) for k, _v in kept], dtype=np.float64)
    strengths = np.asarray([min(1.0, v / STRENGTH_FULL_SCALE) for _k, v in kept],
                           dtype=np.float64)
    return ContactEvents(times, strengths, frame_score)


def contact_events(frames: np.ndarray, fps: float, *, region_mask=None,
                   threshold: float = CONTACT_THRESHOLD) -> ContactEvents:
    """The visual contact events of a frame sequence (see the module note).

    Args:
        frames: ``[T, H, W, 3]`` RGB (or ``[T, H, W]`` gray) uint8; frame k shows t = k / fps.
        fps: frame rate in frames/s.
        region_mask: optional ``[H, W]`` bool: look for contacts only there (the rest of the
            picture neither makes nor hides one).
        threshold: the contact score above which a contact is reported.
    Returns:
        ``ContactEvents(times_s [K], strengths [K], score [T])``; fewer than 3 frames give none.
    """
    frames = _check_frames(frames, fps)
    return pick_contacts(cell_scores(frames, region_mask=region_mask), fps, threshold=threshold)
