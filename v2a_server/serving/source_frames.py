"""Frames the server reads itself from a movie file the client names (frames encoding "source").

When client and server share a machine, sending pixels is a detour: for a plain movie strip the
picture an editor sees is the file's own frames, and Blender would decode and scale every one of
them on its UI thread, a frame per tick. The server decodes them with PyAV instead, on every
core. The client names the file (path, size and mtime: a different file is refused, never
guessed), the frames, and the size to scale to. Whatever cannot be honoured exactly is refused
as ``SourceUnavailable`` and the client sends pixels instead.

Decoded frames are kept in a small LRU, so a regeneration of the same strip reads nothing, and
a client may ask for them ahead of time (the ``prepare`` request: the add-on sends it when the
editor types a caption). A read already under way is waited for, never repeated.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any

import numpy as np

CACHE_BYTES = 512 * 1024 * 1024
SEEK_AFTER_FRAMES = 50  # a first wanted frame later than this: seek rather than decode up to it
FPS_TOLERANCE = 1e-3  # relative: 29.97 vs 30000/1001 is the same rate, 29.97 vs 30 is not

_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
_cache_lock = threading.Lock()
_reading: dict[tuple, Future] = {}  # key -> the read under way (guarded by _cache_lock)


class SourceUnavailable(ValueError):
    """The named frames cannot be read as the client sees them; the client should send them."""

    field = "body.frames.source"


def read_source_frames(source: dict[str, Any]) -> tuple[np.ndarray, bool]:
    """The frames ``source`` names, as uint8 RGB [T, height, width, 3] (read-only), and whether
    they came from the cache.

    ``source`` is a validated ``frames.source`` map: path, size_bytes, mtime_ns,
    stream_index, source_fps, frame_indices (0-based, presentation order), width, height,
    scale.

    Raises:
        SourceUnavailable: naming what differs (missing file, other size or mtime, no such
            stream, another frame rate, a size the file does not fill, frames past the end,
            a file that does not decode).
    """
    path = source["path"]
    if not os.path.isabs(path):
        raise SourceUnavailable(f"the source path must be absolute, got {path!r}")
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise SourceUnavailable(f"the server cannot see {path}: {exc.strerror}") from None
    if stat.st_size != source["size_bytes"] or stat.st_mtime_ns != source["mtime_ns"]:
        raise SourceUnavailable(
            f"the server sees another {path}: {stat.st_size} bytes, mtime {stat.st_mtime_ns} ns; "
            f"the client sees {source['size_bytes']} bytes, mtime {source['mtime_ns']} ns")
    indices = [int(i) for i in source["frame_indices"]]
    key = (path, stat.st_size, stat.st_mtime_ns, int(source["stream_index"]),
           float(source["source_fps"]), tuple(indices), int(source["width"]),
           int(source["height"]), float(source["scale"]))
    with _cache_lock:
        frames = _cached(key)
        if frames is not None:
            return frames, True
        pending = _reading.get(key)
        owner = pending is None
        if owner:
            pending = _reading[key] = Future()
    if not owner:
        return pending.result(), True  # another thread reads them: wait (its error too)
    try:
        frames = _decode(path, source, indices)
        frames.setflags(write=False)
    except BaseException as exc:
        with _cache_lock:
            _reading.pop(key, None)
        pending.set_exception(exc)
        raise
    with _cache_lock:  # in the cache before the read stops being "under way": no gap
        _cache[key] = frames
        while sum(f.nbytes for f in _cache.values()) > CACHE_BYTES and len(_cache) > 1:
            _cache.popitem(last=False)
        _reading.pop(key, None)
    pending.set_result(frames)
    return frames, False


def _cached(key: tuple) -> np.ndarray | None:
    """The frames of ``key`` from the cache: read for exactly these frames, or picked from a
    read that holds them all (a Regenerate Range after a Generate of the whole strip)."""
    frames = _cache.get(key)
    if frames is not None:
        _cache.move_to_end(key)
        return frames
    wanted = key[5]
    for other, held in reversed(_cache.items()):
        if other[:5] == key[:5] and other[6:] == key[6:]:
            rows = {index: row for row, index in enumerate(other[5])}
            if all(index in rows for index in wanted):
                _cache.move_to_end(other)
                picked = held[[rows[index] for index in wanted]]
                picked.setflags(write=False)
                return picked
    return None


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _decode(path: str, source: dict[str, Any], indices: list[int]) -> np.ndarray:
    import av

    width, height = int(source["width"]), int(source["height"])
    try:
        container = av.open(path)
    except av.error.FFmpegError as exc:
        raise SourceUnavailable(f"{path} does not open as a movie: {exc}") from None
    with container:
        videos = container.streams.video
        stream_index = int(source["stream_index"])
        if stream_index >= len(videos):
            raise SourceUnavailable(f"{path} has {len(videos)} video stream(s); the client asked "
                                    f"for stream {stream_index}")
        stream = videos[stream_index]
        rate = float(stream.average_rate or 0)
        wanted_rate = float(source["source_fps"])
        if abs(rate - wanted_rate) > FPS_TOLERANCE * wanted_rate:
            raise SourceUnavailable(f"{path} runs at {rate:.6g} frames/s; the client counts its "
                                    f"frames at {wanted_rate:.6g}")
        ctx = stream.codec_context
        scale = float(source["scale"])
        if abs(ctx.width * scale - width) > 1 or abs(ctx.height * scale - height) > 1:
            raise SourceUnavailable(
                f"{path} is {ctx.width}x{ctx.height}: at scale {scale:.6g} it does not fill the "
                f"requested {width}x{height} frame")
        if (ctx.sample_aspect_ratio or 1) != 1:
            raise SourceUnavailable(f"{path} has non-square pixels ({ctx.sample_aspect_ratio})")
        if _has_alpha(ctx.format):
            raise SourceUnavailable(f"{path} has an alpha channel ({ctx.format.name}): the "
                                    "picture depends on what lies beneath")
        stream.thread_type = "AUTO"  # frame threads: decoding is the whole cost here
        # Each wanted frame once, in file order; a frame wanted twice is copied at the end.
        slots: dict[int, list[int]] = {}
        for slot, index in enumerate(indices):
            slots.setdefault(index, []).append(slot)
        first, last = min(slots), max(slots)
        out = np.empty((len(indices), height, width, 3), np.uint8)
        filled: set[int] = set()
        numbered = _frame_numbers(stream, rate)
        if first > SEEK_AFTER_FRAMES and numbered is not None:
            # A strip that shows a late part of a long take: start at the key frame before it
            # rather than decoding the whole head of the file.
            container.seek(numbered.pts_of(first), stream=stream, backward=True)
        count = 0
        try:
            for count, frame in enumerate(container.decode(stream), start=1):
                number = numbered.number(frame) if numbered is not None else count - 1
                if number is None:
                    raise SourceUnavailable(f"{path}: frame {count} has no timestamp")
                if number in slots and number not in filled:
                    # POINT: one file pixel per output pixel, as Blender's own shrink samples
                    # (the two pick pixels a fraction apart), and 4x cheaper than AREA: an
                    # area filter costs 2.2 ms of a 1080p frame's ~8 ms here
                    image = frame.to_ndarray(width=width, height=height, format="rgb24",
                                             interpolation="POINT")
                    for slot in slots[number]:
                        out[slot] = image
                    filled.add(number)
                if number >= last:
                    break
        except av.error.FFmpegError as exc:
            raise SourceUnavailable(f"{path} stopped decoding after {count} frames: {exc}") \
                from None
    missing = sorted(set(slots) - filled)
    if missing:
        raise SourceUnavailable(f"{path} has no frame {missing[0]} (the client asked for "
                                f"{len(missing)} frame(s) it does not hold)")
    return out


class _FrameNumbers:
    """Frame number <-> timestamp of a constant-rate stream: number = (pts - start) x rate."""

    def __init__(self, stream, rate: float):
        self.time_base = float(stream.time_base)
        self.start = int(stream.start_time or 0)
        self.rate = rate

    def number(self, frame) -> int | None:
        if frame.pts is None:
            return None
        return round((frame.pts - self.start) * self.time_base * self.rate)

    def pts_of(self, number: int) -> int:
        # half a frame early: the seek lands on the key frame at or before the wanted frame
        return self.start + int((number - 0.5) / self.rate / self.time_base)


def _frame_numbers(stream, rate: float) -> _FrameNumbers | None:
    if stream.time_base is None or not rate > 0:
        return None
    return _FrameNumbers(stream, rate)


def _has_alpha(video_format) -> bool:
    if video_format is None:
        return False
    return any(getattr(c, "is_alpha", False) for c in video_format.components)
