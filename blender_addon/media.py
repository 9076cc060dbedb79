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


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Samples ([N] or [N, channels], float32) and rate of a PCM-16/24/32 or float32 WAV.

    Enough for the takes this add-on writes (``wav_float32``) and common WAV files; Blender's
    Python has no audio reader.

    Raises:
        ValueError: not a RIFF/WAVE file, or a format it does not read (the message says which).
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV file (no RIFF/WAVE header)")
    pos, fmt, samples = 12, None, None
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if chunk == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif chunk == b"data":
            samples = body
        pos += 8 + size + (size & 1)
    if fmt is None or samples is None:
        raise ValueError("WAV file without a fmt or data chunk")
    tag, channels, rate, _byte_rate, _align, bits = fmt
    if tag == 0xFFFE:  # WAVE_FORMAT_EXTENSIBLE: the sub-format decides; ours are PCM or float
        tag = 3 if bits == 32 and b"\x03\x00\x00\x00\x10\x00" in data[:200] else 1
    if tag == 3 and bits == 32:
        audio = np.frombuffer(samples, dtype="<f4")
    elif tag == 1 and bits == 16:
        audio = np.frombuffer(samples, dtype="<i2").astype(np.float32) / 32768.0
    elif tag == 1 and bits == 32:
        audio = np.frombuffer(samples, dtype="<i4").astype(np.float32) / 2147483648.0
    elif tag == 1 and bits == 24:
        raw = np.frombuffer(samples[: len(samples) // 3 * 3], dtype=np.uint8).reshape(-1, 3)
        ints = (raw[:, 0].astype(np.int32) | (raw[:, 1].astype(np.int32) << 8)
                | (raw[:, 2].astype(np.int8).astype(np.int32) << 16))
        audio = ints.astype(np.float32) / 8388608.0
    else:
        raise ValueError(f"WAV format tag {tag} with {bits} bits is not supported")
    audio = audio[: len(audio) // channels * channels].astype(np.float32)
    return (audio.reshape(-1, channels) if channels > 1 else audio), int(rate)
