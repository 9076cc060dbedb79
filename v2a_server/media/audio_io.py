"""Reading the audio stream of a video or audio container with PyAV."""

from __future__ import annotations

import os

import numpy as np

from v2a_server.media.files import existing_file


def load_container_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of a video/audio container with PyAV.

    Args:
        path: A container file (e.g. an .mp4 with a muxed soundtrack).

    Returns:
        ``([C, N] float32 samples, sample_rate in Hz)`` at the stream's native rate.
    """
    import av

    path = existing_file(path, "audio")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError("it has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp")
            chunks = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
            sample_rate = stream.rate
    except (av.error.FFmpegError, ValueError) as exc:
        raise ValueError(f"cannot read audio from {path}: {exc}") from exc
    if not chunks:
        raise ValueError(f"cannot read audio from {path}: the audio stream is empty")
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), int(sample_rate)
