"""One Foley job: what was asked, where it is (``JobState``), what it measured."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from . import messages, placement
from .capture import FrameCapture
from .frame_route import ReadyFrames


class JobState(str, enum.Enum):
    """Where a job is in its life (a str: compares equal to its value).

    CONNECTING (until the server says hello) → CAPTURING (one job at a time, FIFO) → QUEUED /
    RUNNING on the server (progress: stage, step, ETA) → PLACING → DONE; or FAILED /
    CANCELLED, which leave the project untouched (placement is all-or-nothing, and nothing is
    written before the result arrives).
    """

    CONNECTING = "connecting"
    CAPTURING = "capturing"
    QUEUED = "queued"
    RUNNING = "running"
    PLACING = "placing"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


ACTIVE_STATES = (JobState.CONNECTING, JobState.CAPTURING, JobState.QUEUED, JobState.RUNNING,
                 JobState.PLACING)
WAITING_FOR_FRAMES = (JobState.CONNECTING, JobState.CAPTURING)
ON_SERVER = (JobState.QUEUED, JobState.RUNNING)


@dataclass
class Job:
    """One Generate request for one strip."""

    number: int
    snapshot: placement.Snapshot
    settings: Any  # job_request.GenerateSettings: caption, seed, steps, guidance, ...
    short_side_px: int  # 0: the server model's input size (capture_side_for)
    connect_deadline: float
    job_timeout_s: float
    state: JobState = JobState.CONNECTING
    message: str = ""
    warned: bool = False  # ended with a warning for the editor (e.g. a near-silent take)
    request_id: str | None = None
    capture: FrameCapture | ReadyFrames | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.monotonic)
    sent_at: float | None = None
    result_at: float | None = None
    placed: list[placement.PlacedTake] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)  # client-side measurements
    server_timings_s: dict[str, float] = field(default_factory=dict)
    result_body: dict[str, Any] | None = None  # the server's result (audio buffers aside)
    regen: placement.RegenRequest | None = None  # set for Regenerate Range / with Markers
    # the server may not (preference) or could not read the movie file: render it instead
    source_refused: bool = False

    def __post_init__(self):
        self.state = JobState(self.state)

    @property
    def label(self) -> str:
        if self.regen is not None:
            first, end = self.regen.frames
            return f"{self.regen.strip_name} (frames {first}–{end - 1})"
        return self.snapshot.strip_name

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def status(self) -> tuple[float, str]:
        """(fraction 0..1 of the current stage, one-line text) for the panel."""
        if self.state == JobState.CAPTURING and self.capture is not None:
            return self.capture.fraction, messages.capture_status(
                self.capture.done, len(self.capture.frames), self.capture.eta_s())
        if self.state in ON_SERVER:
            return messages.server_status(self.progress, self.state.value)
        if self.state == JobState.DONE:
            return 1.0, self.message
        return 0.0, self.message or self.state.value
