"""A focus region on the frames: what the model sees when the editor marks the sound's source.

The region is boxes (x, y, w, h as fractions of the frame, origin top left), one for the whole
clip or keyed in time. ``region_boxes`` gives one box per frame (linear between keys, held before
the first and after the last); ``apply_focus`` shows the model only the region. The way is chosen
by measurement (``bench/bench_region_focus.py``, docs/region-focus.md): ``mean`` paints
everything outside the region in the frame's mean colour, so motion elsewhere vanishes while the
picture keeps its overall colour and brightness (black, far from any picture the model saw,
loses the source too); the other ways are kept for the bench.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FOCUS_METHODS: tuple[str, ...] = ("mean", "still", "black", "blur", "crop")
DEFAULT_FOCUS_METHOD = "mean"
# Frames sampled for the background plate: the median of more frames barely changes it.
MEDIAN_MAX_FRAMES = 64
BLUR_FRACTION = 0.125  # blur kernel side as a fraction of the frame side


def region_boxes(boxes: Sequence[Sequence[float]], times_s: Sequence[float] | None,
                 n_frames: int, fps: float) -> np.ndarray:
    """[n_frames, 4] float64 box per frame t = k / fps from one box or keyed boxes.

    Args:
        boxes: [K][4] (x, y, w, h) fractions, origin top left.
        times_s: [K] ascending key times (seconds from frame 0); None only with one box.
        n_frames: frames to cover.
        fps: their rate.
    Raises:
        ValueError: naming the box or key that is out of range or out of order.
    """
    keys = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(keys) == 0:
        raise ValueError("focus_region.boxes is empty")
    for i, (x, y, w, h) in enumerate(keys):
        if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 - x + 1e-9 and 0 < h <= 1 - y + 1e-9):
            raise ValueError(f"focus_region.boxes[{i}] = {[x, y, w, h]} is not inside the frame "
                             "(x, y in [0, 1), w, h > 0, x + w <= 1, y + h <= 1)")
    if times_s is None:
        if len(keys) != 1:
            raise ValueError(f"focus_region has {len(keys)} boxes and no times_s; give one time per box")
        return np.repeat(keys, n_frames, axis=0)
    times = np.asarray(times_s, np.float64).reshape(-1)
    if len(times) != len(keys):
        raise ValueError(f"focus_region has {len(keys)} boxes but {len(times)} times_s")
    if np.any(np.diff(times) <= 0):
        raise ValueError("focus_region.times_s must be strictly ascending")
    t = np.arange(n_frames) / float(fps)
    return np.stack([np.interp(t, times, keys[:, j]) for j in range(4)], axis=1)


def focused_frames(frames: np.ndarray, region: dict, fps: float,
                   method: str = DEFAULT_FOCUS_METHOD) -> np.ndarray:
    """``apply_focus`` for a generate request's ``focus_region`` map (``boxes``, ``times_s``)."""
    boxes = region_boxes(region["boxes"], region.get("times_s"), len(frames), fps)
    return apply_focus(np.asarray(frames, dtype=np.uint8), boxes, method)


def _pixel_box(box: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) covering ``box``, at least one pixel."""
    x, y, w, h = box
    c0, r0 = int(np.floor(x * width)), int(np.floor(y * height))
    c1 = max(c0 + 1, int(np.ceil((x + w) * width)))
    r1 = max(r0 + 1, int(np.ceil((y + h) * height)))
    return r0, min(r1, height), c0, min(c1, width)


def region_masks(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """bool [T, height, width]: True inside each frame's box."""
    masks = np.zeros((len(boxes), height, width), bool)
    for k, box in enumerate(boxes):
        r0, r1, c0, c1 = _pixel_box(box, height, width)
        masks[k, r0:r1, c0:c1] = True
    return masks


def background_plate(frames: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 per-pixel median over (at most MEDIAN_MAX_FRAMES evenly spread) frames."""
    idx = np.linspace(0, len(frames) - 1, min(len(frames), MEDIAN_MAX_FRAMES)).round().astype(int)
    return np.median(frames[idx], axis=0).astype(np.uint8)


def _box_blur(frame: np.ndarray, side: int) -> np.ndarray:
    """Separable box blur of one [H, W, 3] frame (edges clamped)."""
    out = frame.astype(np.float32)
    pad = side // 2
    for axis in (0, 1):
        widths = [(0, 0)] * 3
        widths[axis] = (pad, side - 1 - pad)
        padded = np.pad(out, widths, mode="edge")
        csum = np.cumsum(padded, axis=axis, dtype=np.float64)
        csum = np.concatenate([np.zeros_like(np.take(csum, [0], axis=axis)), csum], axis=axis)
        n = out.shape[axis]
        out = ((np.take(csum, np.arange(side, side + n), axis=axis)
                - np.take(csum, np.arange(n), axis=axis)) / side).astype(np.float32)
    return out.round().astype(np.uint8)


def stable_crop_box(boxes: np.ndarray) -> np.ndarray:
    """One box holding every frame's box (a fixed crop: no jitter, no zoom while it moves)."""
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()
    return np.array([x0, y0, x1 - x0, y1 - y0])


def apply_focus(frames: np.ndarray, boxes: np.ndarray, method: str = DEFAULT_FOCUS_METHOD) -> np.ndarray:
    """The frames as the model should see them with the focus on ``boxes``.

    Args:
        frames: uint8 RGB [T, H, W, 3].
        boxes: [T, 4] one box per frame (``region_boxes``).
        method: ``mean`` (outside: the frame's mean colour), ``still`` (the clip's background
            plate: the per-pixel median over time), ``black``, ``blur`` (the frame blurred),
            ``crop`` (the union box of all frames, cut out; the model's resize scales it up).
    Returns:
        uint8 RGB [T, H', W', 3] (H', W' differ only for ``crop``).
    """
    if method not in FOCUS_METHODS:
        raise ValueError(f"focus method must be one of {FOCUS_METHODS}, got {method!r}")
    if len(boxes) != len(frames):
        raise ValueError(f"{len(boxes)} boxes for {len(frames)} frames")
    _, height, width, _ = frames.shape
    if method == "crop":
        r0, r1, c0, c1 = _pixel_box(stable_crop_box(boxes), height, width)
        return np.ascontiguousarray(frames[:, r0:r1, c0:c1])
    inside = region_masks(boxes, height, width)[..., None]
    if method == "still":
        fill = np.broadcast_to(background_plate(frames), frames.shape)
    elif method == "black":
        fill = np.zeros_like(frames)
    elif method == "mean":
        fill = np.broadcast_to(frames.mean(axis=(1, 2), keepdims=True).round().astype(np.uint8), frames.shape)
    else:
        side = max(3, int(round(BLUR_FRACTION * max(height, width))) | 1)
        fill = np.stack([_box_blur(f, side) for f in frames])
    return np.where(inside, frames, fill)
