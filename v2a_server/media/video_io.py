"""Reading video and audio with PyAV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class DecodedVideo:
    """Frames sampled at a fixed rate.

    Attributes:
        frames: uint8 RGB [T, H, W, 3]; frame k is the source frame nearest to t = k / fps.
        fps: the sampling rate of ``frames``.
        duration_s: duration of the video stream.
        source_fps: the stream's own average frame rate.
    """

    frames: np.ndarray
    fps: float
    duration_s: float
    source_fps: float


def read_video(path: str | Path, fps: float, max_side: int | None = 256, max_duration_s: float | None = None) -> DecodedVideo:
    """Decode a video at ``fps`` (nearest source frame to each k / fps), downscaled so that its
    longer side is at most ``max_side`` pixels (None keeps the size).

    Raises:
        FileNotFoundError / ValueError naming the file when it is missing or has no video.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot open video {path}: {exc}") from exc
    with container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        source_fps = float(stream.average_rate or 0) or fps
        if stream.duration is not None and stream.time_base is not None:
            duration_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration_s = container.duration / 1_000_000
        else:
            duration_s = None
        width, height = stream.codec_context.width, stream.codec_context.height
        scale = 1.0 if max_side is None else min(1.0, max_side / max(width, height))
        out_w, out_h = max(2, round(width * scale)), max(2, round(height * scale))

        picked: list[np.ndarray] = []
        prev = None  # (time, frame)
        first_time = None
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else len(picked) / source_fps
            if first_time is None:
                first_time = t
            t -= first_time  # t = 0 is the first frame, whatever the stream's start offset
            if max_duration_s is not None and t >= max_duration_s + 1.0 / source_fps:
                break
            # Emit every target time that lies before this frame, choosing the nearer frame.
            while True:
                target = len(picked) / fps
                if t < target:
                    break
                if prev is not None and abs(prev[0] - target) <= abs(t - target):
                    chosen = prev[1]
                else:
                    chosen = frame
                picked.append(chosen.to_ndarray(width=out_w, height=out_h, format="rgb24"))
            prev = (t, frame)
        if prev is None:
            raise ValueError(f"{path}: no frames could be decoded")
        last_t = prev[0]
        if duration_s is None:
            duration_s = last_t + 1.0 / source_fps
        # Targets after the last decoded frame but within the stream's duration.
        while len(picked) / fps < min(duration_s, last_t + 1.0 / source_fps):
            picked.append(prev[1].to_ndarray(width=out_w, height=out_h, format="rgb24"))
    if max_duration_s is not None:
        duration_s = min(duration_s, max_duration_s)
        picked = picked[: max(1, int(np.ceil(duration_s * fps - 1e-9)))]
    return DecodedVideo(np.stack(picked), float(fps), float(duration_s), source_fps)
