"""What waits to be sent to one client whose socket pipe is full (it is not reading).

The ROUTER socket has a finite send high-water mark; when a client's pipe is full, a send
fails with EAGAIN and the message waits here, in order, until the client reads again. What
waits is bounded per client:

* progress is droppable: only the newest progress of each job waits;
* a job's final reply is not: it waits in memory while the client's outbox fits its byte budget
  (``--client-budget-mb``), beyond that it waits in the result spool on disk
  (``v2a_server.serving.spool``) and only a reference waits here;
* any other reply (pong, status_reply, ...) beyond the budget is dropped: the client asks again.

So a client that stalls costs the server at most the socket's high-water mark of messages plus
the budget, however many results it leaves unread.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from foley_protocol.protocol import Message

DEFAULT_CLIENT_BUDGET_MB = 64
HEADER_ALLOWANCE = 1024  # a message's header and frame overhead, counted with its buffers


def message_size(message: Message) -> int:
    """Bytes a message holds in memory, near enough for a budget."""
    return HEADER_ALLOWANCE + sum(memoryview(b).nbytes for b in message.buffers)


@dataclass(eq=False)
class Waiting:
    """One message waiting for a client.

    ``message`` is None when the message is a job's final reply waiting in the spool under
    ``spooled`` (owner, job id); ``drop_spooled`` says that spool entry exists only for this
    wait (a client without a key) and goes once sent.
    """

    message: Message | None
    size: int
    progress_of: str | None = None
    final_of: str | None = None
    spooled: tuple[str, str] | None = None
    drop_spooled: bool = False
    dropped: bool = False  # a progress overtaken by a newer one of its job


class Outbox:
    """The messages waiting for one client, oldest first, within ``budget_bytes`` in memory."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = int(budget_bytes)
        self.bytes = 0
        self._queue: deque[Waiting] = deque()
        self._progress: dict[str, Waiting] = {}  # job id -> its waiting progress
        self._finals: set[str] = set()  # job ids whose final reply waits here

    def __bool__(self) -> bool:
        return bool(self._queue)

    def __len__(self) -> int:
        return len(self._queue)

    def fits(self, size: int) -> bool:
        return self.bytes + size <= self.budget_bytes

    def has_final(self, job_id: str) -> bool:
        return job_id in self._finals

    def add(self, waiting: Waiting) -> None:
        if waiting.progress_of is not None:
            older = self._progress.get(waiting.progress_of)
            if older is not None:  # only the newest progress of a job matters
                older.dropped = True
                self._release(older)
            self._progress[waiting.progress_of] = waiting
        if waiting.final_of is not None:
            self._finals.add(waiting.final_of)
        self._queue.append(waiting)
        if waiting.message is not None:
            self.bytes += waiting.size

    def head(self) -> Waiting | None:
        """The oldest message still to send (overtaken progress is skipped)."""
        while self._queue and self._queue[0].dropped:
            self._queue.popleft()
        return self._queue[0] if self._queue else None

    def pop(self) -> Waiting:
        waiting = self._queue.popleft()
        if not waiting.dropped:
            self._release(waiting)
        return waiting

    def drain(self) -> list[Waiting]:
        """Everything still waiting (the client is gone), emptied."""
        left = [w for w in self._queue if not w.dropped]
        self._queue.clear()
        self._progress.clear()
        self._finals.clear()
        self.bytes = 0
        return left

    def _release(self, waiting: Waiting) -> None:
        if waiting.message is not None:
            self.bytes -= waiting.size
        if waiting.progress_of is not None and self._progress.get(waiting.progress_of) is waiting:
            del self._progress[waiting.progress_of]
        if waiting.final_of is not None:
            self._finals.discard(waiting.final_of)
