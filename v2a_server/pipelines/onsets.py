"""Onset markers from the onset head's per-latent-frame probabilities."""

from __future__ import annotations

import numpy as np


def pick_onsets(
    probs: np.ndarray, frame_s: float, threshold: float = 0.5
) -> tuple[list[float], list[float]]:
    """Peak-pick onset times from a probability curve.

    The reference onset head upsamples 4 fps features by nearest neighbour, so its curve is a
    staircase of 6–7-frame plateaus; a peak is therefore a run of equal values higher than the
    runs on both sides, placed at the centre of that run (each frame's centre is
    ``(f + 0.5) * frame_s``). A higher-rate head simply gives one-frame runs.

    Args:
        probs: [F] onset probabilities, one per latent frame.
        frame_s: seconds per latent frame (0.04).
        threshold: minimum probability of a peak.
    Returns:
        (onset times in seconds, their probabilities), in time order.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.size == 0:
        return [], []
    change = np.flatnonzero(np.diff(probs) != 0) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [probs.size]])  # exclusive
    values = probs[starts]
    left = np.concatenate([[-np.inf], values[:-1]])
    right = np.concatenate([values[1:], [-np.inf]])
    peaks = (values > left) & (values > right) & (values >= threshold)
    centres = (starts[peaks] + ends[peaks]) / 2.0  # in frames: centre of the run
    return [float(c * frame_s) for c in centres], [float(v) for v in values[peaks]]
