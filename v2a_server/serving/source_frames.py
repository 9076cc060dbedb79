"""Frames the server reads itself from a movie file the client names (frames encoding "source").

When client and server share a machine, sending pixels is a detour: for a plain movie strip the
picture an editor sees is the file's own frames, and Blender would decode and scale every one of
them on its UI thread, a frame per tick. The server decodes them with PyAV instead, on every
core. The client names the file (path, size and mtime: a different file is refused, never
guessed), the frames, and the size to scale to. Whatever cannot be honoured exactly is refused
as ``SourceUnavailable`` and the client sends pixels instead.

A client names a path, so a read must never let it wedge or probe the server: only regular files
are opened (checked before opening, and the open itself cannot block: a FIFO or a device is
refused at once), optionally only inside the ``--media-root`` folders; each read runs on its own
thread (at most ``MAX_PARALLEL_READS`` at once), so a slow file holds no other; every read ends
by ``READ_DEADLINE_S``, and a job waiting for one stops waiting when it is cancelled. The client
is told only that the file cannot be read as it sees it (``SourceUnavailable.client_text``); the
reason, which may name another file's size or mtime, goes to the server's log.

Decoded frames are kept in a small LRU, so a regeneration of the same strip reads nothing, and
a client may ask for them ahead of time (the ``prepare`` request: the add-on sends it when the
editor types a caption). A read already under way is waited for, never repeated.
"""

from __future__ import annotations

import io
import logging
import os
import stat as stat_mode
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

import numpy as np

logger = logging.getLogger("v2a_server.serving.source_frames")

CACHE_BYTES = 512 * 1024 * 1024
SEEK_AFTER_FRAMES = 50  # a first wanted frame later than this: seek rather than decode up to it
FPS_TOLERANCE = 1e-3  # relative: 29.97 vs 30000/1001 is the same rate, 29.97 vs 30 is not
READ_DEADLINE_S = 120.0  # a read still going after this is refused (the client renders)
MAX_PARALLEL_READS = 4  # decoding already uses every core; more would only compete
WAIT_TICK_S = 0.05  # how often a waiting job looks at its cancel flag

CLIENT_TEXT = ("the server cannot read this file as the client sees it: render the frames and "
               "send them (the server's log says why)")

_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
_cache_lock = threading.Lock()
_reading: dict[tuple, Future] = {}  # key -> the read under way (guarded by _cache_lock)
_read_slots = threading.BoundedSemaphore(MAX_PARALLEL_READS)
_media_roots: tuple[str, ...] = ()  # empty: any folder


class SourceUnavailable(ValueError):
    """The named frames cannot be read as the client sees them; the client should send them.

    ``str(exc)`` is the reason, for the server's log; ``client_text`` is what a client is told
    (nothing about files it did not write)."""

    field = "body.frames.source"
    client_text = CLIENT_TEXT


class ReadCancelled(Exception):
    """The job waiting for the frames was cancelled (the read itself may go on for the cache)."""


def set_media_roots(folders: list[str] | tuple[str, ...]) -> None:
    """Confine the files clients may name to these folders (and below); empty: no confinement."""
    global _media_roots
    _media_roots = tuple(os.path.realpath(folder) for folder in folders)


def read_source_frames(source: dict[str, Any],
                       cancel: threading.Event | None = None) -> tuple[np.ndarray, bool]:
    """The frames ``source`` names, as uint8 RGB [T, height, width, 3] (read-only), and whether
    they came from the cache (or from a read another request started).

    ``source`` is a validated ``frames.source`` map: path, size_bytes, mtime_ns,
    stream_index, source_fps, frame_indices (0-based, presentation order), width, height,
    scale.

    Raises:
        SourceUnavailable: naming what differs (missing file, not a regular file, outside the
            media roots, other size or mtime, no such stream, another frame rate, a size the
            file does not fill, frames past the end, a file that does not decode, a read past
            ``READ_DEADLINE_S``).
        ReadCancelled: ``cancel`` was set while waiting.
    """
    pending = read_soon(source)
    while True:
        if cancel is not None and cancel.is_set():
            raise ReadCancelled("cancelled while reading the source frames")
        try:
            return pending.result(timeout=WAIT_TICK_S)
        except TimeoutError:
            continue


def read_soon(source: dict[str, Any], deadline_s: float = READ_DEADLINE_S) -> Future:
    """Start reading ``source`` on a reader thread (or join the read under way, or take the
    cache); the future gives ``(frames, cached)`` or raises ``SourceUnavailable``, at the latest
    after ``deadline_s``. A path that cannot be read (missing, not a regular file, outside the
    media roots, another size or mtime) is refused before anything is opened."""
    done: Future = Future()
    try:
        key, path, indices = _checked_key(source)
    except SourceUnavailable as exc:
        done.set_exception(exc)
        return done
    with _cache_lock:
        frames = _cached(key)
        if frames is not None:
            done.set_result((frames, True))
            return done
        pending = _reading.get(key)
        if pending is None:
            pending = _reading[key] = Future()
            deadline = time.monotonic() + deadline_s
            threading.Thread(target=_read_into, args=(key, path, source, indices, pending,
                                                      deadline),
                             name="source-read", daemon=True).start()
            cached = False
        else:
            cached = True  # another request reads them: wait for that read (its error too)

    def resolve(read: Future) -> None:
        if done.done():
            return
        error = read.exception()
        try:
            if error is None:
                done.set_result((read.result(), cached))
            else:
                done.set_exception(error)
        except InvalidStateError:  # the deadline resolved it meanwhile
            return

    timer = threading.Timer(deadline_s, _expire, args=(done, path, deadline_s))
    timer.daemon = True
    timer.start()
    pending.add_done_callback(lambda read: (timer.cancel(), resolve(read)))
    return done


def _expire(done: Future, path: str, deadline_s: float) -> None:
    try:
        done.set_exception(SourceUnavailable(f"reading {path} took longer than {deadline_s:g} s"))
    except InvalidStateError:  # resolved by the read meanwhile
        return


def _checked_key(source: dict[str, Any]) -> tuple[tuple, str, list[int]]:
    """The cache key of ``source`` after the checks that need no open: absolute, inside the
    media roots, a regular file of the size and mtime the client sees."""
    path = source["path"]
    if not os.path.isabs(path):
        raise SourceUnavailable(f"the source path must be absolute, got {path!r}")
    if _media_roots:
        real = os.path.realpath(path)
        if not any(os.path.commonpath([real, root]) == root for root in _media_roots):
            raise SourceUnavailable(f"{path} is outside the media roots "
                                    f"({', '.join(_media_roots)})")
    try:
        stat = os.stat(path)  # never blocks on a FIFO: only its open or read would
    except OSError as exc:
        raise SourceUnavailable(f"the server cannot see {path}: {exc.strerror}") from None
    if not stat_mode.S_ISREG(stat.st_mode):
        raise SourceUnavailable(f"{path} is not a regular file")
    if stat.st_size != source["size_bytes"] or stat.st_mtime_ns != source["mtime_ns"]:
        raise SourceUnavailable(
            f"the server sees another {path}: {stat.st_size} bytes, mtime {stat.st_mtime_ns} ns; "
            f"the client sees {source['size_bytes']} bytes, mtime {source['mtime_ns']} ns")
    indices = [int(i) for i in source["frame_indices"]]
    key = (path, stat.st_size, stat.st_mtime_ns, int(source["stream_index"]),
           float(source["source_fps"]), tuple(indices), int(source["width"]),
           int(source["height"]), float(source["scale"]))
    return key, path, indices


def _read_into(key: tuple, path: str, source: dict[str, Any], indices: list[int],
               pending: Future, deadline: float) -> None:
    """A reader thread: decode, cache, and resolve ``pending``."""
    def check_deadline() -> None:
        if time.monotonic() > deadline:
            raise SourceUnavailable(f"reading {path} took longer than {READ_DEADLINE_S:g} s")

    try:
        if not _read_slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise SourceUnavailable(f"{MAX_PARALLEL_READS} other reads held every reader until "
                                    f"the deadline")
        try:
            frames = _decode(path, source, indices, check_deadline)
        finally:
            _read_slots.release()
        frames.setflags(write=False)
    except SourceUnavailable as exc:
        _fail(key, pending, exc)
        return
    except Exception as exc:  # a bug or an odd file: the waiters must still get an answer
        logger.exception("reading %s failed", path)
        _fail(key, pending, SourceUnavailable(f"reading {path} failed: "
                                              f"{type(exc).__name__}: {exc}"))
        return
    with _cache_lock:  # in the cache before the read stops being "under way": no gap
        _cache[key] = frames
        while sum(f.nbytes for f in _cache.values()) > CACHE_BYTES and len(_cache) > 1:
            _cache.popitem(last=False)
        _reading.pop(key, None)
    pending.set_result(frames)


def _fail(key: tuple, pending: Future, error: SourceUnavailable) -> None:
    with _cache_lock:
        _reading.pop(key, None)
    pending.set_exception(error)


class _GuardedFile(io.RawIOBase):
    """A regular file opened without blocking, whose every read first checks the deadline."""

    def __init__(self, path: str, check: Callable[[], None]):
        super().__init__()
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        if not stat_mode.S_ISREG(os.fstat(fd).st_mode):  # swapped since the stat
            os.close(fd)
            raise SourceUnavailable(f"{path} is not a regular file")
        self._file = io.FileIO(fd, "rb", closefd=True)
        self._check = check

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self._check()
        return self._file.readinto(buffer)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()


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


def _decode(path: str, source: dict[str, Any], indices: list[int],
            check_deadline: Callable[[], None]) -> np.ndarray:
    import av

    width, height = int(source["width"]), int(source["height"])
    try:
        file = _GuardedFile(path, check_deadline)
    except OSError as exc:
        raise SourceUnavailable(f"the server cannot open {path}: {exc.strerror}") from None
    try:
        container = av.open(file, "r")
    except av.error.FFmpegError as exc:
        file.close()
        raise SourceUnavailable(f"{path} does not open as a movie: {exc}") from None
    with file, container:
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
                check_deadline()
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
