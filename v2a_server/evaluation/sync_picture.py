"""The sync picture of a take: picture motion and generated sound on one time axis (matplotlib).

One drawing for everything that shows sync: the server draws one per generated take (sent back
as PNG bytes, because Blender's Python has no matplotlib) and ``v2a demo`` draws its
``demo_sync.png`` with the same function.

Rows, sharing the x axis (seconds from the take's first frame):

1. motion energy (mean optical-flow magnitude, AV-Align's) with its motion events;
2. the waveform with the librosa onset strength scaled over it;
3. the onset markers; markers further than one timeline frame from the nearest motion event
   are drawn red and labelled with their offset in ms (the add-on's review flags).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from foley_protocol.review import is_flagged, offsets_s

WIDTH_PX = 1280
HEIGHT_PX = 720
DPI = 100  # figsize = size / DPI inches; saved without bbox cropping, so the size is exact


@dataclass
class SyncPictureData:
    """What a sync picture shows; every time is in seconds from the take's first frame.

    Attributes:
        audio: ``[N]`` mono float samples of the take.
        sample_rate: Hz of ``audio``.
        motion_energy: ``[T]`` motion energy per picture frame (pixels/frame).
        motion_fps: frames per second of ``motion_energy``.
        motion_events_s: visual events (peaks of the energy).
        marker_times_s: the take's onset markers.
        frame_rate: the editor's timeline rate; offsets above one of its frames are flagged.
        onset_envelope: librosa onset strength of ``audio`` (optional).
        onset_envelope_rate_hz: values per second of ``onset_envelope``.
        reference_events_s: known true events (synthetic clips), dotted; optional.
        title: one line above the picture.
    """

    audio: np.ndarray
    sample_rate: int
    motion_energy: np.ndarray
    motion_fps: float
    motion_events_s: Sequence[float]
    marker_times_s: Sequence[float]
    frame_rate: float
    onset_envelope: np.ndarray | None = None
    onset_envelope_rate_hz: float = 0.0
    reference_events_s: Sequence[float] = field(default_factory=list)
    title: str = ""


def draw_sync_picture(data: SyncPictureData, path: str | Path | None = None,
                      width_px: int = WIDTH_PX, height_px: int = HEIGHT_PX) -> bytes:
    """Draw ``data``; returns the PNG bytes (and writes them to ``path`` when given)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global state in a server thread

    audio = np.asarray(data.audio, dtype=np.float32).reshape(-1)
    duration_s = max(len(audio) / float(data.sample_rate), 1e-3)
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    axes = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.3, 0.7]})

    energy = np.asarray(data.motion_energy, dtype=np.float64).reshape(-1)
    t_motion = np.arange(len(energy)) / float(data.motion_fps)
    axes[0].plot(t_motion, energy, color="tab:blue", lw=1)
    for t in data.motion_events_s:
        axes[0].axvline(t, color="tab:blue", lw=0.8, ls="--", alpha=0.7)
    axes[0].set_ylabel("motion\n(flow px/frame)")

    # The waveform as its min/max per pixel column: the same picture as plotting every
    # sample, at a fraction of the drawing time (10 s at 16 kHz is 160,000 points).
    t_cols, low, high = waveform_envelope(audio, float(data.sample_rate), width_px)
    axes[1].fill_between(t_cols, low, high, color="tab:gray", lw=0.4, step="mid")
    if data.onset_envelope is not None and len(data.onset_envelope) and \
            data.onset_envelope_rate_hz > 0:
        env = np.asarray(data.onset_envelope, dtype=np.float64)
        scale = float(np.abs(audio).max() or 1.0) / float(env.max() or 1.0)
        axes[1].plot(np.arange(len(env)) / data.onset_envelope_rate_hz, env * scale,
                     color="tab:orange", lw=1, label="onset strength")
        axes[1].legend(loc="upper right", fontsize=8)
    axes[1].set_ylabel(f"sound\n({data.sample_rate} Hz)")

    offsets = offsets_s(data.marker_times_s, data.motion_events_s)
    for t, offset in zip(data.marker_times_s, offsets):
        flagged = is_flagged(offset, data.frame_rate)
        color = "tab:red" if flagged else "tab:green"
        for ax in axes[:2]:
            ax.axvline(t, color=color, lw=1.2 if flagged else 0.8, alpha=0.7)
        axes[2].vlines([t], 0.0, 1.0, color=color, lw=2.0 if flagged else 1.0)
        if flagged:
            axes[2].text(t, 1.02, f"{offset * 1000:+.0f} ms", color="tab:red", fontsize=7,
                         ha="center", va="bottom")
    for t in data.reference_events_s:
        for ax in axes[:2]:
            ax.axvline(t, color="black", lw=0.8, ls=":")
    axes[2].plot([], [], color="tab:green", label="marker in sync (≤ 1 frame)")
    axes[2].plot([], [], color="tab:red", label="marker off by > 1 frame")
    axes[2].plot([], [], color="tab:blue", ls="--", label="motion event")
    if len(data.reference_events_s):
        axes[2].plot([], [], color="black", ls=":", label="true events")
    axes[2].set_ylim(0.0, 1.6)  # room for the offset labels under the legend
    axes[2].set_yticks([])
    axes[2].legend(loc="upper left", fontsize=7, ncol=4, framealpha=0.8)
    axes[2].set_xlim(0.0, duration_s)
    axes[2].set_xlabel(f"seconds from the take's first frame (timeline at "
                       f"{data.frame_rate:.3f} fps)")
    if data.title:
        axes[0].set_title(data.title, fontsize=10)
    # fixed margins: tight_layout would render the whole figure once more to measure it
    fig.subplots_adjust(left=0.075, right=0.99, bottom=0.075, top=0.95 if data.title else 0.98,
                        hspace=0.12)
    stream = io.BytesIO()
    fig.savefig(stream, format="png", dpi=DPI)
    png = stream.getvalue()
    if path is not None:
        Path(path).write_bytes(png)
    return png


def waveform_envelope(audio: np.ndarray, sample_rate: float, columns: int):
    """(times, min, max) of ``audio`` over ``columns`` equal spans (fewer for short audio)."""
    n = len(audio)
    if n == 0:
        return np.zeros(1), np.zeros(1), np.zeros(1)
    columns = max(1, min(columns, n))
    edges = np.linspace(0, n, columns + 1).astype(np.int64)
    starts = edges[:-1]
    low = np.minimum.reduceat(audio, starts)
    high = np.maximum.reduceat(audio, starts)
    times = (starts + np.diff(edges) / 2.0) / sample_rate
    return times, low, high
