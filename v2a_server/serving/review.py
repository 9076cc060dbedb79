"""The sync review of a job, off the critical path: computed after the take is sent, kept for
redraws.

A result is sent as soon as its audio and onsets exist; its review data (``result.add_review``:
motion events, audio onsets, sync pictures; 0.3 to 1 s) is computed on the review thread
(``review_soon``) and goes to the client in a ``review`` message (protocol 1.4) or, for a client
before 1.4, into the result (``merge_review``), which then waits for it. Either way the worker
has gone on to the next job.

What a take's sync picture shows (``SyncPictureData``: the take's audio, the frames' motion, the
onset envelope) is kept in a bounded ``ReviewStore`` so that a ``redraw`` request can draw the
picture again from the editor's edited markers (``redraw_soon``): the client sends only the
marker times. Matplotlib is imported (and its font cache built, ~20 s on a fresh machine) and
librosa's onset detection run once (its first call compiles) on a thread of their own at server
start (``warm_review_soon``), so the first job's review does not wait for them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Hashable

import numpy as np

from foley_protocol.protocol import REVIEW_FIELDS
from v2a_server.serving.result import REVIEW_POOL, add_review

logger = logging.getLogger("v2a_server.serving.review")

# Redraw data kept per server: the newest jobs' first, at most this many and this many bytes
# (a 60 s take at 48 kHz is 11.5 MB of float32; 4 takes of 10 s at 16 kHz, 2.6 MB).
REVIEW_STORE_MAX_ENTRIES = 64
REVIEW_STORE_MAX_BYTES = 128 * 2**20
# Reviews queued or running at once: a worker that finishes takes faster than the review thread
# reviews them waits here, so the takes waiting for review (audio, frames) stay bounded.
REVIEWS_IN_FLIGHT = 2
_in_flight = threading.BoundedSemaphore(REVIEWS_IN_FLIGHT)


@dataclass
class Review:
    """One job's review: the ``review`` message body (``takes`` and the review fields) and its
    PNG buffers, what each take's picture shows (for redraws) and the seconds it took."""

    body: dict[str, Any]
    buffers: list[Any]
    pictures: list[Any]  # SyncPictureData, one per take
    seconds: float


def review_soon(request: dict[str, Any], result_body: dict[str, Any], motion: Future,
                frames_fps: float, audio: Any, sample_rate: int) -> Future:
    """``compute_review`` on the review thread (after the job's motion events, which the same
    thread computes beside the generation); the Future holds a ``Review`` or the exception.
    Blocks while ``REVIEWS_IN_FLIGHT`` reviews wait (only when reviews are slower than the
    generation: memory stays bounded)."""
    # what the review reads of the result, copied now: the loop sends (and edits) the result
    takes = len(result_body["audio"]["buffers"])
    scratch = {"onset_times_s": list(result_body["onset_times_s"]), "seed": result_body["seed"]}
    _in_flight.acquire()
    try:
        done = REVIEW_POOL.submit(compute_review, request, takes, scratch, motion, frames_fps,
                                  audio, sample_rate)
    except BaseException:
        _in_flight.release()
        raise
    done.add_done_callback(lambda _done: _in_flight.release())
    return done


def compute_review(request: dict[str, Any], takes: int, scratch: dict[str, Any],
                   motion: Future, frames_fps: float, audio: Any, sample_rate: int) -> Review:
    """Whatever ``add_review`` adds to a result (``scratch``: its onset times and seed), as a
    ``review`` body of its own (buffers numbered from 0)."""
    t0 = time.monotonic()
    buffers: list[Any] = []
    pictures = add_review(scratch, buffers, request, motion.result(), frames_fps, audio,
                          sample_rate)
    del scratch["onset_times_s"], scratch["seed"]
    unknown = set(scratch) - set(REVIEW_FIELDS)
    if unknown:  # a review field the protocol does not define: a server bug, said at once
        raise ValueError(f"add_review made fields the protocol lacks: {sorted(unknown)}")
    seconds = time.monotonic() - t0
    body = {"takes": takes, **scratch, "timings_s": {"review_s": seconds}}
    return Review(body, buffers, pictures, seconds)


def failed_review_text(exc: BaseException) -> str:
    return f"no sync review data: {type(exc).__name__}: {exc}"[:2000]


def review_message_body(done: Future, takes: int) -> tuple[dict[str, Any], list[Any]]:
    """The ``review`` body and buffers of a finished ``review_soon``; a failed review is a
    body that says why (``missing``): the take is in the result already."""
    try:
        review: Review = done.result()
    except Exception as exc:
        logger.error("sync review data failed: %s", exc, exc_info=exc)
        return {"takes": takes, "missing": failed_review_text(exc)}, []
    return review.body, review.buffers


def merge_review(body: dict[str, Any], buffers: list[Any], done: Future) -> None:
    """Put a finished review into its result (in place), as results before 1.4 carried it:
    its pictures' buffers after the audio, ``review_s`` in the timings; a failed review is a
    warning instead."""
    try:
        review: Review = done.result()
    except Exception as exc:  # review data is extra: never lose the take over it
        logger.error("sync review data failed: %s", exc, exc_info=exc)
        body["warnings"] = (body["warnings"] + [failed_review_text(exc)])[-16:]
        return
    first = len(buffers)
    for name, value in review.body.items():
        if name in REVIEW_FIELDS:
            body[name] = value
    if "sync_pictures" in body:
        body["sync_pictures"] = {**body["sync_pictures"], "buffers": [
            first + i for i in body["sync_pictures"]["buffers"]]}
    buffers.extend(review.buffers)
    body["timings_s"]["review_s"] = review.seconds


# ---- redraws ----------------------------------------------------------------------------


def picture_bytes(pictures: list[Any]) -> int:
    """Memory a review's picture data holds, near enough for a budget."""
    total = 0
    for data in pictures:
        for name in ("audio", "motion_energy", "onset_envelope"):
            value = getattr(data, name, None)
            if value is not None:
                total += np.asarray(value).nbytes
    return total + 4096


class ReviewStore:
    """The picture data of the newest reviews, by (owner, job id): bounded by entries and
    bytes, least recently used first out. Only the socket loop's thread uses it."""

    def __init__(self, max_entries: int = REVIEW_STORE_MAX_ENTRIES,
                 max_bytes: int = REVIEW_STORE_MAX_BYTES):
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self._entries: OrderedDict[Hashable, tuple[list[Any], int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: Hashable, pictures: list[Any]) -> None:
        size = picture_bytes(pictures)
        self.remove(key)
        if self.max_bytes == 0:  # redraws turned off (--review-store-mb 0)
            return
        if size > self.max_bytes:
            logger.warning("review of %s (%d bytes) is over the redraw budget; not kept",
                           key, size)
            return
        self._entries[key] = (pictures, size)
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            old, (_, old_size) = self._entries.popitem(last=False)
            self.bytes -= old_size
            logger.info("review of %s no longer kept for redraws (store full)", old)

    def get(self, key: Hashable) -> list[Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def remove(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[1]


def redraw_soon(data: Any, marker_times_s: list[float], frame_rate: float) -> Future:
    """Draw ``data`` (one take's ``SyncPictureData``) again with other markers, on the review
    thread; the Future holds the PNG bytes."""
    changed = dataclasses.replace(data, marker_times_s=[float(t) for t in marker_times_s],
                                  frame_rate=float(frame_rate))

    def draw() -> bytes:
        from v2a_server.evaluation.sync_picture import draw_sync_picture

        return draw_sync_picture(changed)

    return REVIEW_POOL.submit(draw)


# ---- matplotlib and librosa, before the first job needs them ----------------------------


def warm_review_libraries() -> tuple[float, float]:
    """Import matplotlib and load its font manager (on a fresh machine that builds the font
    cache, ~20 s), then run librosa's onset detection once (its first call compiles, seconds);
    returns the seconds each took."""
    t0 = time.monotonic()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.font_manager  # noqa: F401  (builds or reads the font cache)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1, 1))
    figure.text(0.5, 0.5, "0")
    figure.savefig(_Discard(), format="png")  # the Agg backend and a font, loaded once
    t1 = time.monotonic()
    from v2a_server.evaluation.metrics import audio_onsets_waveform

    click = np.zeros(16000, np.float32)
    click[8000:8100] = 0.5
    audio_onsets_waveform(click, 16000)
    return t1 - t0, time.monotonic() - t1


def warm_review_soon() -> threading.Thread:
    """``warm_review_libraries`` on a thread of its own at server start (not the review thread:
    a job's motion events need not wait for it; a review meanwhile waits at the import lock
    for what is still loading)."""

    def run() -> None:
        try:
            logger.info("matplotlib ready in %.1f s, librosa's onsets in %.1f s",
                        *warm_review_libraries())
        except Exception:  # the review will say what is wrong when it runs
            logger.exception("the review's libraries could not be loaded")

    thread = threading.Thread(target=run, name="v2a-review-warmup", daemon=True)
    thread.start()
    return thread


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)
