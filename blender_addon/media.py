"""Pixels and samples without bpy: BMP frames in, resampled samples and WAV files read back.

(WAV files are written with ``foley_protocol.client.wav_bytes``, the one WAV writer.)

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


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode a WAV file (32-bit float, or 16/24/32-bit PCM); channels are averaged.

    Returns:
        (mono float32 samples, sample rate).
    Raises:
        ValueError: not a WAV file, or an encoding other than those above.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV file")
    fmt = samples = None
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8:pos + 8 + size]
        if chunk == b"fmt ":
            fmt = struct.unpack_from("<HHIIHH", body)
        elif chunk == b"data":
            samples = body
        pos += 8 + size + (size & 1)
    if fmt is None or samples is None:
        raise ValueError("WAV file without fmt or data chunk")
    code, channels, rate, _, _, bits = fmt
    if code == 0xFFFE and len(samples):  # WAVE_FORMAT_EXTENSIBLE: the sub-format decides
        code = 3 if bits == 32 and _extensible_is_float(data) else 1
    if code == 3 and bits == 32:
        audio = np.frombuffer(samples, "<f4", count=len(samples) // 4).astype(np.float32)
    elif code == 1 and bits == 16:
        audio = np.frombuffer(samples, "<i2", count=len(samples) // 2) / 32768.0
    elif code == 1 and bits == 32:
        audio = np.frombuffer(samples, "<i4", count=len(samples) // 4) / 2147483648.0
    elif code == 1 and bits == 24:
        raw = np.frombuffer(samples, np.uint8, count=len(samples) // 3 * 3).reshape(-1, 3)
        ints = (raw[:, 0].astype(np.int32) | raw[:, 1].astype(np.int32) << 8
                | raw[:, 2].astype(np.int32) << 16)
        audio = np.where(ints >= 1 << 23, ints - (1 << 24), ints) / 8388608.0
    else:
        raise ValueError(f"unsupported WAV encoding (format {code}, {bits} bits)")
    audio = np.asarray(audio, np.float32)
    usable = len(audio) // channels * channels
    return audio[:usable].reshape(-1, channels).mean(axis=1).astype(np.float32), int(rate)


def _extensible_is_float(data: bytes) -> bool:
    index = data.find(b"fmt ")
    # The sub-format GUID starts 24 bytes into the extensible fmt body; its first 2 bytes
    # are the format code (3 = IEEE float).
    return index >= 0 and struct.unpack_from("<H", data, index + 8 + 24)[0] == 3


def keep_outside(new: np.ndarray, old: np.ndarray, rate: int, start_s: float, end_s: float,
                 margin_s: float) -> np.ndarray:
    """``new`` with ``old``'s exact samples outside ``[start_s - margin_s, end_s + margin_s]``.

    A regenerated range comes back from the server at the model's rate, so the kept part has
    been through two resamplers; this puts the old take's own samples back where the server
    kept the old audio (``new`` there equals ``old`` up to resampling error).
    """
    out = np.array(new, dtype=np.float32, copy=True)
    lo = max(0, int(np.floor((start_s - margin_s) * rate)))
    hi = min(len(out), int(np.ceil((end_s + margin_s) * rate)))
    out[:lo] = old[:lo]
    out[hi:] = old[hi:len(out)]
    return out
