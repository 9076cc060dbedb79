"""Visual contact events: the frames where the picture shows something hit something.

AV-Align's visual events (``metrics.motion_events``) are the peaks of the whole frame's mean
optical-flow magnitude: the moments of *fastest* motion, a few frames before a falling object
lands, and every local maximum of any motion. A sound starts at a *contact*, where motion stops
or reverses abruptly. This module finds those.

Two measurements per frame k and per cell of a ``GRID`` x ``GRID`` grid (so one small body
stands out from a still background and two bodies in different places are told apart):

- **Flow deceleration.** The velocity that arrived at frame k's pixels (minus the backward
  Farneback flow k -> k-1) and the velocity that leaves (the forward flow k -> k+1), with the
  frame's median motion (a camera pan) taken out of both. The per-pixel deceleration along the
  incoming direction, ``d = |v_in| - v_out . v_in / |v_in|``, is large when a fast motion stops
  (d = |v_in|) or bounces back (d > |v_in|), about 0 for steady motion. It counts only where at
  least ``STOP_FRACTION`` of the speed is lost in one frame and the motion is not a rise. Flow
  tells the *direction* of motion, but smooths a small fast body away and often fires a frame
  or two before the contact.
- **Change energy.** The mean absolute change of each cell between consecutive frames, after
  aligning them (global shift by phase correlation, brightness by the median: pans and
  flicker), counting only changes above ``ENERGY_TAU`` grey levels. A body that lands changes
  its cell up to frame k and not after, at exactly the contact frame, however small and fast.

Neither alone is a contact detector (measured: flow deceleration P 0.57 / R 0.75, change
energy P 0.24 / R 0.83 on the synthetic validation split; ``docs/sync-review.md``). A small
multilayer perceptron (``ContactDetector``, ``FEATURES`` in, a contact probability out; 2,657
weights in ``contact_detector.npz`` beside this module) combines them, frames k-1..k+1 at
once. It was fitted on the synthetic world's *train* split, where the physics gives the true
contact frames and the renderer the touching bodies' cells, half of the clips with textured
bodies (``v2a_server.training.contact_detector``); the threshold was chosen on the validation split,
and the test split and real clips are measured by ``bench/contact_events.py``.

A (frame, cell) is a contact candidate when its probability exceeds ``CONTACT_THRESHOLD`` and
is a maximum of that cell over frames k-1..k+1; candidates of all cells are thinned by
non-maximum suppression over ``NMS_FRAMES`` frames, strongest first.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

WORK_SIZE_PX = 160
"""Frames are shrunk so their longer side is at most this: the flow costs a few milliseconds
per frame whatever the input size."""

MIN_WORK_SIZE_PX = 128
"""Frames smaller than this (a model's input, 48 px for the embedded default model) are
enlarged to it: the flow's window and the change threshold are in pixels, and the detector was
fitted on 128-pixel frames. On the demo's 48-pixel frames it found 21 contacts for 12 impacts
unenlarged, 12 for 12 enlarged."""

GRID = 8
"""Cells per side of the grid the measurements are averaged over."""

STOP_FRACTION = 0.6
"""A pixel's motion is a stop (or a bounce) when it loses at least this fraction of its speed
from one frame to the next; gravity, friction and a swing's turn lose far less per frame."""

RISING_COS = 0.5
"""Motion within 60 degrees of straight up (its upward part over its speed above this) that
stops is a throw or bounce reaching its top, not an impact: things fall onto what they hit."""

MIN_SPEED_PX = 0.25
"""Incoming speeds (working pixels/frame) below this have no direction: d = 0 there."""

ENERGY_TAU = 10.0
"""Grey levels (of 255) a pixel must change by between aligned frames to count as change:
above sensor noise and video compression, below the contrast of any visible body."""

FARNEBACK_ARGS = (0.5, 4, 31, 5, 7, 1.5, 0)
"""Farneback args (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags). Wider
than AV-Align's (``metrics.FARNEBACK_ARGS``: 3 levels, window 15): at a contact a small body
moves further in one frame than its own size, and AV-Align's settings then lose it exactly at
the contact frame; one more level and a 31-pixel window follow it."""

FEATURES = ("decel", "speed_in", "speed_out", "down_in", "along_out", "change_before",
            "change_in", "change_out", "change_after", "decel_near", "change_in_near",
            "change_out_near", "decel_prev", "decel_next", "moving", "change_ratio")
"""Per (frame k, cell), in this order: flow deceleration; mean incoming and outgoing speed;
mean downward incoming velocity and outgoing velocity along the incoming direction (moving
pixels); change energy k-2->k-1, k-1->k, k->k+1, k+1->k+2; the largest deceleration, incoming
and outgoing change of the cell and its 8 neighbours; the deceleration at k-1 and k+1; the
share of moving pixels; outgoing over incoming change. Flows and speeds are fractions of the
working width per frame, changes fractions of 255."""

CONTEXT_FRAMES = 1
"""The detector sees the features of frames k-1..k+1 of a cell (3 x len(FEATURES) inputs)."""

DETECTOR_FILE = Path(__file__).with_name("contact_detector.npz")
"""The fitted detector shipped with the package (``v2a_server.training.contact_detector``)."""

CONTACT_THRESHOLD = 0.96
"""Probability above which a contact is reported. Chosen on the synthetic validation split (16
clips, base seed 0; the shipped detector): 0.93 gave precision 0.88 / recall 0.93, 0.95 0.90 /
0.92, 0.96 0.92 / 0.90, 0.97 0.96 / 0.86. Checked on the test split and real clips by
``bench/contact_events.py``."""

NMS_FRAMES = 2
"""Two contacts are at least this many frames + 1 apart; the weaker of a closer pair is dropped."""

STRENGTH_FULL_SCALE = 0.05
"""The deceleration of a contact's cell or a neighbour (fraction of the working width per
frame) that gives strength 1.0: a body of a fifth of a cell's width stopping from a quarter of
the frame width per frame. Speed lost, not change seen: a textured body changes its whole cell
however slowly it moves. The review's silent hits start at strength 0.5."""



class ContactEvents(NamedTuple):
    """Contact events of a frame sequence.

    Attributes:
        times_s: ``[K]`` float64 event times in seconds (``k / fps`` of each contact frame),
            ascending.
        strengths: ``[K]`` float64 in [0, 1]: how hard the contact looks (speed lost,
            ``STRENGTH_FULL_SCALE``).
        score: ``[T]`` float64, each frame's largest contact probability (0 at the first and
            last frame), for plots and thresholds.
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
    longer = max(height, width)
    scale = min(1.0, WORK_SIZE_PX / longer) if longer >= MIN_WORK_SIZE_PX \
        else MIN_WORK_SIZE_PX / longer
    return max(8, int(round(height * scale))), max(8, int(round(width * scale)))


def _gray_frames(frames: np.ndarray, size_hw: tuple[int, int]) -> list[np.ndarray]:
    import cv2

    out = []
    for frame in frames:
        gray = frame if frame.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(frame),
                                                          cv2.COLOR_RGB2GRAY)
        if gray.shape != size_hw:
            smaller = size_hw[0] < gray.shape[0]
            gray = cv2.resize(gray, (size_hw[1], size_hw[0]),
                              interpolation=cv2.INTER_AREA if smaller else cv2.INTER_LINEAR)
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


class CellGrid:
    """The ``GRID`` x ``GRID`` cells of an image of ``size_hw``: means over each cell
    (optionally weighted); the detector's training labels use the same cells."""

    def __init__(self, size_hw: tuple[int, int], weights: np.ndarray | None):
        h, w = size_hw
        self.rows = np.linspace(0, h, GRID + 1).round().astype(int)[:-1]
        self.cols = np.linspace(0, w, GRID + 1).round().astype(int)[:-1]
        self.weights = weights
        full = np.outer(np.diff(np.append(self.rows, h)), np.diff(np.append(self.cols, w)))
        counts = full.astype(np.float64) if weights is None else self._sum(weights)
        self.counts = np.maximum(counts, 1e-9)
        # a cell the region barely touches says nothing: its mean over a sliver would be noise
        self.inside = counts >= 0.25 * full

    def _sum(self, values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.add.reduceat(values, self.rows, axis=0), self.cols, axis=1)

    def mean(self, values: np.ndarray) -> np.ndarray:
        if self.weights is not None:
            values = values * self.weights
        return np.where(self.inside, self._sum(values) / self.counts, 0.0)


def _without_camera(flow: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """The flow minus the frame's median motion (a pan moves every pixel alike)."""
    vectors = flow.reshape(-1, 2) if weights is None else flow[weights > 0.5]
    if len(vectors) == 0:
        return flow
    return flow - np.median(vectors, axis=0)


def _change(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """|after - before| per pixel once ``before`` is aligned to ``after`` (global shift by phase
    correlation, brightness by the median), 0 below ``ENERGY_TAU``; fraction of 255."""
    import cv2

    a = before.astype(np.float32)
    b = after.astype(np.float32)
    a *= max(float(np.median(b)), 1.0) / max(float(np.median(a)), 1.0)
    (dx, dy), _response = cv2.phaseCorrelate(a, b)
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    a = cv2.warpAffine(a, shift, (a.shape[1], a.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    change = np.abs(b - a)
    return np.where(change > ENERGY_TAU, change, 0.0) / 255.0


def _near_max(cells: np.ndarray) -> np.ndarray:
    """[..., GRID, GRID] -> the largest value of each cell and its 8 neighbours."""
    padded = np.pad(cells, [(0, 0)] * (cells.ndim - 2) + [(1, 1), (1, 1)])
    views = [padded[..., i:i + GRID, j:j + GRID] for i in range(3) for j in range(3)]
    return np.max(views, axis=0)


def frame_features(frames: np.ndarray, *, region_mask=None) -> np.ndarray:
    """The contact features of every frame and cell (``FEATURES``).

    Args:
        frames: ``[T, H, W, 3]`` RGB (or ``[T, H, W]`` gray) uint8.
        region_mask: optional ``[H, W]`` bool: only these pixels count (cells less than a
            quarter inside are all 0).
    Returns:
        ``[T, GRID, GRID, len(FEATURES)]`` float32; frames 0 and T-1 (no motion on one side)
        are 0.
    """
    import cv2

    frames = np.asarray(frames)
    count = len(frames)
    features = np.zeros((count, GRID, GRID, len(FEATURES)), np.float32)
    if count < 3:
        return features
    frame_hw = tuple(frames.shape[1:3])
    size_hw = _work_size(*frame_hw)
    weights = None if region_mask is None else _work_mask(region_mask, frame_hw, size_hw)
    cells = CellGrid(size_hw, weights)
    gray = _gray_frames(frames, size_hw)
    width = float(size_hw[1])

    # change[k]: the change k-1 -> k (change[0] and change[count] stay 0)
    change = np.zeros((count + 1, GRID, GRID))
    for k in range(1, count):
        change[k] = cells.mean(_change(gray[k - 1], gray[k]))

    def flow(a: int, b: int) -> np.ndarray:  # frame a -> b, at a's pixels
        return cv2.calcOpticalFlowFarneback(gray[a], gray[b], None, *FARNEBACK_ARGS)

    flows = np.zeros((count, GRID, GRID, 6))
    for k in range(1, count - 1):  # two flows in memory at a time, whatever the clip's length
        incoming = -_without_camera(flow(k, k - 1), weights)
        outgoing = _without_camera(flow(k, k + 1), weights)
        speed_in = np.hypot(incoming[..., 0], incoming[..., 1])
        along = (outgoing * incoming).sum(axis=-1) / np.maximum(speed_in, 1e-9)
        lost = speed_in - along
        # image rows grow downwards: incoming[..., 1] < 0 is a rise
        rising = incoming[..., 1] < -RISING_COS * speed_in
        moving = speed_in >= MIN_SPEED_PX
        decel = np.where(moving & (lost >= STOP_FRACTION * speed_in) & ~rising, lost, 0.0)
        flows[k, ..., 0] = cells.mean(decel) / width
        flows[k, ..., 1] = cells.mean(speed_in) / width
        flows[k, ..., 2] = cells.mean(np.hypot(outgoing[..., 0], outgoing[..., 1])) / width
        flows[k, ..., 3] = cells.mean(np.where(moving, incoming[..., 1], 0.0)) / width
        flows[k, ..., 4] = cells.mean(np.where(moving, along, 0.0)) / width
        flows[k, ..., 5] = cells.mean(moving.astype(np.float64))

    decel = flows[..., 0]
    frames_k = np.arange(count)
    features[..., 0:5] = flows[..., 0:5]
    features[..., 5] = change[np.maximum(frames_k - 1, 0)]  # change[0] is 0
    features[..., 6] = change[frames_k]
    features[..., 7] = change[frames_k + 1]
    features[..., 8] = change[np.minimum(frames_k + 2, count)]
    features[..., 9] = _near_max(decel)
    features[..., 10] = _near_max(features[..., 6])
    features[..., 11] = _near_max(features[..., 7])
    features[1:, ..., 12] = decel[:-1]
    features[:-1, ..., 13] = decel[1:]
    features[..., 14] = flows[..., 5]
    features[..., 15] = features[..., 7] / (features[..., 6] + 1e-3)
    features[0] = 0.0
    features[-1] = 0.0
    features[:, ~cells.inside] = 0.0
    return features


def detector_inputs(features: np.ndarray) -> np.ndarray:
    """[T, GRID, GRID, F] features -> [T, GRID, GRID, (2 CONTEXT_FRAMES + 1) F] detector
    inputs: each cell's features at k-1, k, k+1 (zeros beyond the clip), compressed by a
    signed square root (changes and speeds span three decades)."""
    count = len(features)
    padded = np.pad(features, [(CONTEXT_FRAMES, CONTEXT_FRAMES), (0, 0), (0, 0), (0, 0)])
    stacked = np.concatenate([padded[i:i + count] for i in range(2 * CONTEXT_FRAMES + 1)],
                             axis=-1)
    return (np.sign(stacked) * np.sqrt(np.abs(stacked))).astype(np.float32)


class ContactDetector:
    """A small multilayer perceptron: ``detector_inputs`` -> a contact probability per cell.

    Attributes:
        mean, std: ``[I]`` input standardisation.
        layers: ``[(W [I, H], b [H]), ..., (W [H, 1], b [1])]``; ReLU between layers.
        info: what it was fitted on (free text, saved with it).
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray,
                 layers: list[tuple[np.ndarray, np.ndarray]], info: str = ""):
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.layers = [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in layers]
        self.info = info
        inputs = (2 * CONTEXT_FRAMES + 1) * len(FEATURES)
        if self.mean.shape != (inputs,) or self.layers[0][0].shape[0] != inputs:
            raise ValueError(f"contact detector takes {self.layers[0][0].shape[0]} inputs; "
                             f"these features give {inputs} (refit it: "
                             "python -m v2a_server.training.contact_detector)")

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """[T, GRID, GRID, F] features -> [T, GRID, GRID] probabilities (0 at frames 0, T-1
        and where every feature is 0: outside a region, or nothing moved)."""
        x = (detector_inputs(features) - self.mean) / self.std
        for i, (weight, bias) in enumerate(self.layers):
            x = x @ weight + bias
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0.0)
        probability = 1.0 / (1.0 + np.exp(-np.clip(x[..., 0], -60.0, 60.0)))
        still = ~np.any(features != 0.0, axis=-1)
        probability[still] = 0.0
        probability[0] = 0.0
        probability[-1] = 0.0
        return probability.astype(np.float64)

    def save(self, path: str | Path) -> None:
        arrays = {"mean": self.mean, "std": self.std, "features": np.array(FEATURES),
                  "context_frames": np.array(CONTEXT_FRAMES), "info": np.array(self.info)}
        for i, (weight, bias) in enumerate(self.layers):
            arrays[f"weight_{i}"] = weight
            arrays[f"bias_{i}"] = bias
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "ContactDetector":
        with np.load(path, allow_pickle=False) as data:
            if (tuple(str(f) for f in data["features"]) != FEATURES
                    or int(data["context_frames"]) != CONTEXT_FRAMES):
                raise ValueError(f"{path} was fitted on other features; refit it: "
                                 "python -m v2a_server.training.contact_detector")
            count = sum(1 for name in data.files if name.startswith("weight_"))
            layers = [(data[f"weight_{i}"], data[f"bias_{i}"]) for i in range(count)]
            return cls(data["mean"], data["std"], layers, str(data["info"]))


@lru_cache(maxsize=1)
def default_detector() -> ContactDetector:
    """The detector shipped with the package (``DETECTOR_FILE``), loaded once."""
    return ContactDetector.load(DETECTOR_FILE)


def pick_contacts(probability: np.ndarray, fps: float, *, threshold: float = CONTACT_THRESHOLD,
                  nms_frames: int = NMS_FRAMES,
                  strength: np.ndarray | None = None) -> ContactEvents:
    """Contact events from per-cell scores (``[T, GRID, GRID]``: probabilities, or any score).

    A (frame, cell) is a candidate when its score exceeds ``threshold`` and is a maximum of
    that cell over frames k-1..k+1 (strictly above k-1); candidates are taken strongest first,
    each dropping the weaker candidates within ``nms_frames`` frames of it. ``strength``
    (``[T, GRID, GRID]`` in [0, 1]) gives each event's strength; without it, the score clipped.
    """
    if not fps or fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    probability = np.asarray(probability, dtype=np.float64)
    count = len(probability)
    flat = probability.reshape(count, -1)
    strengths = flat if strength is None else np.asarray(strength).reshape(count, -1)
    frame_score = flat.max(axis=1) if count else np.zeros(0)
    candidates: list[tuple[float, int, float]] = []
    for k in range(1, count - 1):
        mid = flat[k]
        peak = (mid > flat[k - 1]) & (mid >= flat[k + 1]) & (mid > threshold)
        if peak.any():
            cell = int(np.argmax(np.where(peak, mid, -np.inf)))
            candidates.append((float(mid[cell]), k, float(strengths[k, cell])))
    candidates.sort(key=lambda c: (-c[0], c[1]))
    kept: list[tuple[int, float]] = []
    for _value, k, hardness in candidates:
        if all(abs(k - other) > nms_frames for other, _s in kept):
            kept.append((k, hardness))
    kept.sort()
    times = np.asarray([k / float(fps) for k, _s in kept], dtype=np.float64)
    out = np.clip(np.asarray([s for _k, s in kept], dtype=np.float64), 0.0, 1.0)
    return ContactEvents(times, out, frame_score)


def contact_strength(features: np.ndarray) -> np.ndarray:
    """[T, GRID, GRID] in [0, 1]: the largest deceleration of the cell and its neighbours over
    ``STRENGTH_FULL_SCALE``."""
    decel = features[..., FEATURES.index("decel_near")] / STRENGTH_FULL_SCALE
    return np.clip(decel, 0.0, 1.0)


def contact_events(frames: np.ndarray, fps: float, *, region_mask=None,
                   threshold: float = CONTACT_THRESHOLD,
                   detector: ContactDetector | None = None) -> ContactEvents:
    """The visual contact events of a frame sequence (see the module note).

    Args:
        frames: ``[T, H, W, 3]`` RGB (or ``[T, H, W]`` gray) uint8; frame k shows t = k / fps.
        fps: frame rate in frames/s.
        region_mask: optional ``[H, W]`` bool: look for contacts only there (the rest of the
            picture neither makes nor hides one).
        threshold: the contact probability above which a contact is reported.
        detector: the fitted detector (default: the one shipped, ``DETECTOR_FILE``).
    Returns:
        ``ContactEvents(times_s [K], strengths [K], score [T])``; fewer than 3 frames give none.
    """
    frames = _check_frames(frames, fps)
    features = frame_features(frames, region_mask=region_mask)
    detector = detector or default_detector()
    return pick_contacts(detector.probabilities(features), fps, threshold=threshold,
                         strength=contact_strength(features))
