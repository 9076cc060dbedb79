"""Test clips written with PyAV: every frame shows its own index (10 binary blocks along the
top) and a white square that moves right by a known amount per frame (known motion)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

BITS = 10
BLOCK_ROWS = 0.25  # top quarter of the picture holds the index bits


def index_frame(index: int, width: int = 320, height: int = 240) -> np.ndarray:
    """[H, W, 3] uint8: index bits on top, a 24-pixel square at x = 4 * index (mod W)."""
    frame = np.full((height, width, 3), 40, np.uint8)
    block_w = width // BITS
    top = int(height * BLOCK_ROWS)
    for bit in range(BITS):
        if index >> bit & 1:
            frame[4:top - 4, bit * block_w + 4:(bit + 1) * block_w - 4] = 255
    x = (4 * index) % (width - 24)
    frame[height // 2:height // 2 + 24, x:x + 24] = 255
    return frame


def decode_index(image: np.ndarray) -> int:
    """The index a captured (possibly scaled) frame shows."""
    height, width = image.shape[:2]
    top = int(height * BLOCK_ROWS)
    value = 0
    for bit in range(BITS):
        x0 = int((bit + 0.3) * width / BITS)
        x1 = int((bit + 0.7) * width / BITS)
        patch = image[int(top * 0.3):int(top * 0.7), x0:x1]
        if patch.mean() > 150:
            value |= 1 << bit
    return value


def square_x(image: np.ndarray) -> float:
    """Centre x of the moving square, as a fraction of the width."""
    height, width = image.shape[:2]
    band = image[int(height * 0.5):int(height * 0.6)].mean(axis=(0, 2))
    xs = np.nonzero(band > 150)[0]
    return float(xs.mean() / width) if len(xs) else float("nan")


def write_index_movie(path: Path, frames: int, fps: Fraction, width: int = 320,
                      height: int = 240) -> Path:
    """An MPEG-4 Part 2 .mp4 (what every FFmpeg decodes) of ``frames`` index frames."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.bit_rate = 4_000_000  # near-lossless for flat test pictures
        for i in range(frames):
            video_frame = av.VideoFrame.from_ndarray(index_frame(i, width, height), format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_png(path: Path, rgb: np.ndarray) -> Path:
    """A minimal 8-bit RGB PNG (standard library zlib)."""
    import struct
    import zlib

    height, width = rgb.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    raw = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(rgb, np.uint8))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
    return Path(path)


def write_index_images(folder: Path, frames: int, width: int = 320, height: int = 240) -> list[str]:
    """``folder/index_0000.png`` ... (an image sequence); returns the file names in order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(frames):
        name = f"index_{i:04d}.png"
        write_png(folder / name, index_frame(i, width, height))
        names.append(name)
    return names
