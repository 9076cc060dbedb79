"""What an engine tells the socket loop: small immutable events, one class per kind.

Engines (``v2a_server.serving.engine``) call ``post(event)`` from their own threads; the loop
(``v2a_server.serving.server``) takes the events in order on its thread and turns them into
replies. Every accepted job gets exactly one final event, ``JobResult`` or ``JobFailed``.
``JobReview``, ``SourcePrepared`` and ``Redrawn`` are the loop's own: the review of a result
sent is ready, a ``prepare`` read finished on the source-reader threads, a ``redraw`` was drawn
on the review thread.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from v2a_server.serving.jobs import Job


@dataclass(frozen=True)
class WorkerLoaded:
    """A worker has the model loaded and takes jobs; the model's facts for ``hello``."""

    device: str
    model_fps: float
    sample_rate: int
    image_size: int | None  # the video encoder's input side (None: the model takes features)
    scope: str | None = None  # what the model knows, from its folder's card (None: not stated)


@dataclass(frozen=True)
class WorkerFailed:
    """A worker could not load the model; it will run no job."""

    device: str
    message: str


@dataclass(frozen=True)
class JobStarted:
    """A worker took ``job`` out of the queue (the queue positions behind it move up)."""

    job: Job


# The stage of a job whose worker was lost: it is back at the head of the queue and runs again
# (protocol 1.5; an older client is told "queued").
REQUEUED_STAGE = "requeued"


@dataclass(frozen=True)
class JobProgress:
    """A running job's stage and denoising step (``step`` of ``total_steps``; 0 of 0 between
    steps), for the client's ``progress`` message."""

    job: Job
    stage: str
    step: int
    total_steps: int
    eta_s: float | None
    elapsed_s: float


@dataclass(frozen=True)
class JobResult:
    """A finished job: the ``result`` body (``model_id`` and server-clock times still to add)
    and its raw buffers; with ``review_follows`` in the body, ``review`` is the Future of its
    review data (``serving.review.Review``): the loop sends the review once the result is
    sent (``JobReview``), never before it."""

    job: Job
    body: dict[str, Any]
    buffers: list[Any]
    review: Future | None = None


@dataclass(frozen=True)
class JobReview:
    """The review of a job whose result said ``review_follows`` is ready: ``done`` (the
    ``JobResult.review`` Future) holds the ``serving.review.Review`` or the exception that
    ended it. The loop posts it to itself, after sending the result."""

    job: Job
    done: Future


@dataclass(frozen=True)
class JobFailed:
    """A job that ended without audio: protocol error ``code``, ``message`` and the request
    ``field`` at fault (None: no one field)."""

    job: Job
    code: str
    message: str
    field: str | None = None


@dataclass(frozen=True)
class SourcePrepared:
    """A ``prepare`` read ended: ``done`` holds (frames, cached) or the read's exception."""

    client: bytes
    request_id: str
    done: Future
    seconds: float


@dataclass(frozen=True)
class Redrawn:
    """A ``redraw`` ended: ``done`` holds the PNG bytes or the drawing's exception."""

    client: bytes
    request_id: str
    job_id: str
    take: int
    done: Future


EngineEvent = (WorkerLoaded | WorkerFailed | JobStarted | JobProgress | JobResult | JobReview
               | JobFailed)
LoopEvent = EngineEvent | SourcePrepared | Redrawn
