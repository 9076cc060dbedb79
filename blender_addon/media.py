"""Pixels and samples without bpy: BMP frames in, resampled WAV bytes out.

numpy is always there in Blender; ``soxr`` comes from the extension's bundled wheels and is
imported only when resampling.
"""

from __future__ import annotations

import struct

import numpy as np


def read_bmp(data: bytes) -> np.ndarray:
    """Decode an uncompressed 24- or 32-bit BMP (what ``save_render`` writes).

    Returns:
        [H, W, 3] uint8 RGB, top row first.
    Raises:
        ValueError: not a BMP, compressed, or an unsupported bit depth.
    """
    if len(data) < 54 or data[:2] != b"BM":
        raise ValueError("not a BMP file")
    pixel_offset = struct.unpack_from("<I", data, 10)[0]
    width, height = struct.unpack_from("<ii", data, 18)
    bits = struct.unpack_from("<H", data, 28)[0]
    compression = struct.unpack_from("<I", data, 30)[0]
    if bits not in (24, 32) or compression not in (0, 3):
        raise ValueError(f"unsupported BMP: {bits} bits, compression {compression}")
    channels = bits // 8
    rows = abs(height)
    stride = (width * channels + 3) & ~3
    need = pixel_offset + stride * rows
    if len(data) < need:
        raise ValueError(f"truncated BMP: {len(data)} bytes, need {need}")
    raw = np.frombuffer(data, np.uint8, count=stride * rows, offset=pixel_offset)
    image = raw.reshape(rows, stride)[:, :width * channels].reshape(rows, width, channels)
    if height > 0:  # bottom-up rows (the usual case)
        image = image[::-1]
    return np.ascontiguousarray(image[:, :, 2::-1])  # BGR(A) -> RGB


def resample(audio: np.ndarray, rate_in: int, rate_out: int, samples_out: int) -> np.ndarray:
    """Resample mono ``audio`` with soxr (never relabel a rate) to exactly ``samples_out``.

    The soxr output is cut or zero-padded by at most a few samples so that the result lasts
    exactly as long as the frames it belongs to.

    Returns:
        [samples_out] float32.
    """
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if rate_in != rate_out:
        import soxr

        audio = soxr.resample(audio, rate_in, rate_out, quality="HQ").astype(np.float32)
    if len(audio) >= samples_out:
        return np.ascontiguousarray(audio[:samples_out])
    return np.concatenate([audio, np.zeros(samples_out - len(audio), np.float32)])


def wav_float32(audio: np.ndarray, sample_rate: int) -> bytes:
    """A mono 32-bit IEEE-float WAV file holding ``audio`` (values kept as generated)."""
    data = np.ascontiguousarray(audio, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, sample_rate, sample_rate * 4, 4, 32)
    fact = struct.pack("<I", len(data) // 4)
    size = 4 + (8 + len(fmt)) + (8 + len(fact)) + (8 + len(data))
    return b"".join([b"RIFF", struct.pack("<I", size), b"WAVE",
                     b"fmt ", struct.pack("<I", len(fmt)), fmt,
                     b"fact", struct.pack("<I", len(fact)), fact,
                     b"data", struct.pack("<I", len(data)), data])
