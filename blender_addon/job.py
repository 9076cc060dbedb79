"""One Foley job: what was asked, where it is (``JobState``), what it measured."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from . import messages, placement
from .capture import FrameCapture
from .focus import take_region
from .frame_route import ReadyFrames


class JobState(str, enum.Enum):
    """Where a job is in its life (a str: compares equal to its value).

    CONNECTING (until the server says hello) → CAPTURING (one job at a time, FIFO) → QUEUED /
    RUNNING on the server (progress: stage, step, ETA) → PLACING → DONE; or FAILED /
    CANCELLED, which leave the project untouched (placement is all-or-nothing, and nothing is
    written before the result arrives). FETCHING: a job sent before (the .blend was reopened,
    or the server came back) whose take is asked for again (``recovery``).
    """

    CONNECTING = "connecting"
    CAPTURING = "capturing"
    QUEUED = "queued"
    RUNNING = "running"
    PLACING = "placing"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    FETCHING = "fetching"

    def __str__(self) -> str:
        return self.value


ACTIVE_STATES = (JobState.CONNECTING, JobState.CAPTURING, JobState.QUEUED, JobState.RUNNING,
                 JobState.PLACING, JobState.FETCHING)
WAITING_FOR_FRAMES = (JobState.CONNECTING, JobState.CAPTURING)
ON_SERVER = (JobState.QUEUED, JobState.RUNNING, JobState.FETCHING)


def _optional(value: float, lowest: float):
    """None (the server's or model's default) below ``lowest``."""
    return value if value >= lowest else None


@dataclass
class GenerateSettings:
    """What one job asks the model for (None: the server's or the model's default)."""

    caption: str
    negative_caption: str
    seed: int | None
    steps: int | None
    guidance: float | None
    sampler: str
    variations: int
    onset_hints_s: list[float] | None = None
    focus_region: dict | None = None  # the request's focus_region (focus.py); None: whole frame
    focus_label: str = ""  # the region in words, for the take's record ("mask Ball: 50 frames")

    @classmethod
    def from_preferences(cls, prefs, caption: str, seed: int = -1, steps: int = -1,
                         variations: int = 0) -> "GenerateSettings":
        """A new take (Generate): the operator's values, else the preferences'."""
        return cls(caption=caption, negative_caption=prefs.negative_caption,
                   seed=_optional(seed, 0), steps=(steps if steps >= 0 else prefs.steps) or None,
                   guidance=_optional(prefs.guidance, 1.0),  # 0: the model's default
                   sampler=prefs.sampler, variations=variations or prefs.variations)

    @classmethod
    def from_take(cls, take, prefs, variations: int, caption: str = "", seed: int = -1,
                  default_steps: int = 0, onset_hints_s: list[float] | None = None,
                  ) -> "GenerateSettings":
        """Another version of ``take``: its own settings unless given."""
        return cls(caption=caption or take.caption, negative_caption=take.negative_caption,
                   seed=_optional(seed, 0), steps=take.steps or default_steps or None,
                   guidance=_optional(take.guidance, 1.0), sampler=take.sampler or prefs.sampler,
                   variations=variations, onset_hints_s=onset_hints_s,
                   focus_region=take_region(take), focus_label=take.focus_label)


@dataclass
class Job:
    """One Generate request for one strip."""

    number: int
    snapshot: placement.Snapshot
    settings: GenerateSettings
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
    # recovery (issue 14): the take is asked for again after a reconnect or a reopen
    fetch_id: str | None = None  # the open fetch request
    lost_at: float | None = None  # when the server was lost while it had this job
    reopened: bool = False  # recorded in the .blend, found when it was opened
    retryable: bool = False  # the server lost it: the panel offers Retry
    auto_retried: bool = False  # sent again by itself once already
    # the review (1.4): the takes are placed; their review data follows in a review message
    review_due: bool = False
    review_since: float = 0.0  # time.monotonic() when placed, waiting for the review
    review_missing: str = ""  # why the review brought no data (the takes stay as placed)
    review_body: dict[str, Any] | None = None  # the review message's body (buffers aside)

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
