"""Time bookkeeping for long inputs: fixed model windows, their overlaps and crossfades.

The model is hard-wired to one 10.24 s window (256 latent frames). Longer material is cut into
windows that start every ``hop`` latent frames; neighbouring windows overlap and are joined with
an equal-power crossfade placed at the start of the overlap, where the earlier window still has
real video features (its last 0.24 s are padding, model.md §0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowPlan:
    """Where each window sits, in latent frames and samples.

    Attributes:
        num_windows: how many model windows cover the duration.
        window_frames / hop_frames: window length and stride in latent frames.
        samples_per_frame: audio samples per latent frame (640 at 16 kHz).
        crossfade_frames: length of the equal-power join in latent frames.
        total_samples: exact output length.
    """

    num_windows: int
    window_frames: int
    hop_frames: int
    samples_per_frame: int
    crossfade_frames: int
    total_samples: int

    @property
    def window_samples(self) -> int:
        return self.window_frames * self.samples_per_frame

    @property
    def hop_samples(self) -> int:
        return self.hop_frames * self.samples_per_frame

    @property
    def total_frames(self) -> int:
        return math.ceil(self.total_samples / self.samples_per_frame)

    def start_frame(self, window: int) -> int:
        return window * self.hop_frames


def plan_windows(
    duration_s: float,
    sample_rate: int,
    window_frames: int,
    samples_per_frame: int,
    hop_frames: int,
    crossfade_frames: int,
) -> WindowPlan:
    total_samples = round(duration_s * sample_rate)
    window_samples = window_frames * samples_per_frame
    if total_samples <= window_samples:
        num_windows = 1
    else:
        num_windows = 1 + math.ceil((total_samples - window_samples) / (hop_frames * samples_per_frame))
    return WindowPlan(
        num_windows, window_frames, hop_frames, samples_per_frame, crossfade_frames, total_samples
    )


def equal_power_ramps(length: int) -> tuple[np.ndarray, np.ndarray]:
    """Fade-out and fade-in gains whose squares sum to 1 at every point."""
    phase = (np.arange(length, dtype=np.float64) + 0.5) / length * (np.pi / 2)
    return np.cos(phase), np.sin(phase)


def stitch(pieces: list[np.ndarray], plan: WindowPlan, per_sample: bool) -> np.ndarray:
    """Join per-window arrays into one timeline.

    Args:
        pieces: one array per window, time on the last axis ([..., window_samples] when
            per_sample, else [..., window_frames]).
        per_sample: audio (equal-power crossfade) or per-frame curves (linear crossfade, so
            probabilities stay probabilities).
    Returns:
        [..., total_samples] or [..., total_frames].
    """
    unit = plan.samples_per_frame if per_sample else 1
    hop, fade = plan.hop_frames * unit, plan.crossfade_frames * unit
    total = plan.total_samples if per_sample else plan.total_frames
    lead = pieces[0].shape[:-1]
    out = np.zeros(lead + (plan.start_frame(len(pieces) - 1) * unit + pieces[-1].shape[-1],), np.float64)
    if per_sample:
        fade_out, fade_in = equal_power_ramps(fade)
    else:
        fade_in = (np.arange(fade) + 0.5) / fade
        fade_out = 1.0 - fade_in
    for w, piece in enumerate(pieces):
        start = w * hop
        gain = np.ones(piece.shape[-1])
        if w > 0:  # fade in over the first `fade` units of the overlap
            gain[:fade] = fade_in
        if w < len(pieces) - 1:  # fade out where the next window fades in, silent after
            gain[hop : hop + fade] = fade_out
            gain[hop + fade :] = 0.0
        out[..., start : start + piece.shape[-1]] += piece * gain
    if out.shape[-1] < total:
        out = np.concatenate([out, np.zeros(lead + (total - out.shape[-1],))], axis=-1)
    return out[..., :total].astype(np.float32)
