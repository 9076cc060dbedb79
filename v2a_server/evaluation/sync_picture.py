"""The sync picture of a take: picture motion and generated sound on one time axis (matplotlib).

One drawing for everything that shows sync: the server draws one per generated take (sent back
as PNG bytes, because Blender's Python has no matplotlib) and ``v2a demo`` draws its
``demo_sync.png`` with the same function.

Rows, sharing the x axis (seconds from the take's first frame):

1. motion energy (mean optical-flow magnitude, AV-Align's) with its motion events (dashed)
   and the visual contact events (solid, height = strength);
2. the waveform with the librosa onset strength scaled over it;
3. the onset markers coloured by their review state (``foley_protocol.review.review_sync``:
   in sync green, late/early red with their offset in ms, no visual cause purple) and the
   silent hits (contacts no sound starts at) as black triangles. Without contact events (data
   from before them) markers are judged against the nearest motion event, as they were.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from foley_protocol.review import (
    IN_SYNC,
    NO_VISUAL_CAUSE,
    is_flagged,
    offsets_s,
    review_sync,
)

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
        contacts_s: visual contact events (what markers are paired with); None: not known,
            markers are judged against the nearest motion event.
        contact_strengths: 0..1 per contact (silent hits are the strong unpaired ones).
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
    contacts_s: Sequence[float] | None = None
    contact_strengths: Sequence[float] = field(default_factory=list)


STATE_COLOURS = {IN_SYNC: "tab:green", NO_VISUAL_CAUSE: "tab:purple"}  # late, early: red


def marker_looks(data: SyncPictureData) -> tuple[list[tuple[str, str | None]], list[float]]:
    """(colour, label or None) per marker and the silent hits' times: from the pairing with
    contact events when ``data`` has them, else from the nearest motion event."""
    if data.contacts_s is None:
        looks = []
        for offset in offsets_s(data.marker_times_s, data.motion_events_s):
            flagged = is_flagged(offset, data.frame_rate)
            looks.append(("tab:red", f"{offset * 1000:+.0f} ms") if flagged
                         else ("tab:green", None))
        return looks, []
    review = review_sync(data.marker_times_s, data.contacts_s, data.contact_strengths,
                         data.frame_rate)
    looks = []
    for verdict in review.verdicts:
        if verdict.state in STATE_COLOURS:
            label = "no cause" if verdict.state == NO_VISUAL_CAUSE else None
            looks.append((STATE_COLOURS[verdict.state], label))
        else:
            looks.append(("tab:red", f"{verdict.offset_s * 1000:+.0f} ms"))
    return looks, [float(data.contacts_s[i]) for i in review.silent_hits]


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
    if data.contacts_s is not None and len(data.contacts_s):
        top = float(energy.max()) if energy.size and energy.max() > 0 else 1.0
        axes[0].vlines(list(data.contacts_s), 0.0,
                       [top * max(float(v), 0.15) for v in data.contact_strengths],
                       color="darkred", lw=1.6)
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

    looks, silent_hits = marker_looks(data)
    for t, (color, label) in zip(data.marker_times_s, looks):
        loud = color != "tab:green"
        for ax in axes[:2]:
            ax.axvline(t, color=color, lw=1.2 if loud else 0.8, alpha=0.7)
        axes[2].vlines([t], 0.0, 1.0, color=color, lw=2.0 if loud else 1.0)
        if label:
            axes[2].text(t, 1.02, label, color=color, fontsize=7, ha="center", va="bottom")
    if silent_hits:
        axes[2].plot(silent_hits, [0.5] * len(silent_hits), "v", color="black", ms=7)
    for t in data.reference_events_s:
        for ax in axes[:2]:
            ax.axvline(t, color="black", lw=0.8, ls=":")
    axes[2].plot([], [], color="tab:green", label="marker in sync (≤ 1 frame)")
    axes[2].plot([], [], color="tab:red", label="marker late / early by > 1 frame")
    if data.contacts_s is not None:
        axes[2].plot([], [], color="tab:purple", label="marker with no visual cause")
        axes[2].plot([], [], "v", color="black", label="silent hit")
        axes[2].plot([], [], color="darkred", label="contact event")
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
