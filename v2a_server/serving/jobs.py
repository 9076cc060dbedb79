"""Jobs and the FIFO job queue of the ``v2a-server``.

A ``Job`` is one accepted ``generate`` request. The socket loop creates it and puts it in the
``JobQueue``; the engine (``v2a_server.serving.engine``) takes jobs in arrival order. The queue
has a maximum length: ``put`` on a full queue returns False at once (the server answers
``busy``), it never blocks. Cancelling sets the job's event; a queued job is also removed, a
running job stops at its next denoising step (the worker's step callback checks the event).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)  # identity: two jobs are never "equal"
class Job:
    """One generate request.

    Attributes:
        request_id: the client's request id (replies carry it as parent).
        client: the ROUTER routing id of the client's connection.
        body: the validated generate body; buffers: its raw payloads.
        seq: arrival number (FIFO order; logged).
        cancel_code / cancel_message: why it was cancelled ("cancelled", "shutting_down").
        owner: set when the client sent a client key (``v2a_server.serving.spool``).
        review_follows: the client takes the review data in a ``review`` message after the
            result (1.4); otherwise the result waits for it and carries it.
    """

    request_id: str
    client: bytes
    body: dict[str, Any]
    buffers: list[Any]
    seq: int
    accepted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    device: str | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    cancel_code: str = "cancelled"
    cancel_message: str = ""
    owner: str | None = None  # the client key's spool owner: the job outlives its connection
    review_follows: bool = False

    @property
    def key(self) -> tuple[bytes, str]:
        return (self.client, self.request_id)

    @property
    def label(self) -> str:
        """For logs: job number, request id and client."""
        return f"job #{self.seq} {self.request_id} (client {self.client.hex()})"

    def cancel(self, code: str, message: str) -> None:
        if not self.cancel_event.is_set():
            self.cancel_code, self.cancel_message = code, message
            self.cancel_event.set()


class JobQueue:
    """Bounded FIFO shared by the socket loop (put, remove) and the workers (take)."""

    def __init__(self, max_length: int):
        self.max_length = max_length
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, job: Job) -> bool:
        """Append ``job``; False (nothing added) when the queue is full or closed."""
        with self._cond:
            if self._closed or len(self._jobs) >= self.max_length:
                return False
            self._jobs.append(job)
            self._cond.notify()
            return True

    def put_front(self, job: Job) -> bool:
        """Put ``job`` back at the head, even past the length limit (an engine whose worker
        was lost runs it again next); False when the queue is closed (shutdown)."""
        with self._cond:
            if self._closed:
                return False
            self._jobs.appendleft(job)
            self._cond.notify()
            return True

    def take(self, timeout_s: float) -> Job | None:
        """The oldest job, waiting up to ``timeout_s``; None on timeout or when closed."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._jobs:
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return self._jobs.popleft()

    def remove(self, job: Job) -> bool:
        """Take ``job`` out if it is still waiting; False if a worker already has it."""
        with self._cond:
            try:
                self._jobs.remove(job)
            except ValueError:
                return False
            return True

    def drain(self) -> list[Job]:
        """Remove and return every waiting job, and refuse new ones (shutdown)."""
        with self._cond:
            self._closed = True
            jobs = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
            return jobs

    def snapshot(self) -> list[Job]:
        """Waiting jobs, oldest first (position 1 is the next to run)."""
        with self._cond:
            return list(self._jobs)

    def __len__(self) -> int:
        with self._cond:
            return len(self._jobs)
