"""The engine seam: how accepted jobs run, behind one small interface.

The socket loop (``v2a_server.serving.server``) owns the bounded FIFO (``JobQueue``): it
accepts a job by putting it there, answers ``busy`` when it is full, reports queue positions
from it and cancels a job that has not started by taking it out. Everything after that is the
engine's: taking jobs from the queue in order, running them, streaming what happens back as
the events of ``v2a_server.serving.events``, and stopping a job it runs when asked. Nothing
else in the loop knows how or where jobs run.

An engine provides:

``start(jobs, post)``
    Begin loading the model and taking jobs from ``jobs`` (oldest first, one per free
    worker). ``post(event)`` is thread-safe and may be called from any thread: per worker
    ``WorkerLoaded`` or ``WorkerFailed``; per job ``JobStarted`` when a worker takes it, any
    number of ``JobProgress``, then exactly one ``JobResult`` or ``JobFailed``.
``cancel(job, code, message)``
    Stop a job a worker has taken (the loop has already failed to take it out of the queue).
    Records the reason on the job (``Job.cancel``); the job's final event is then
    ``JobFailed(job, code, message)``, posted once its run has stopped.
``workers(with_memory=False)``
    One ``WorkerStatus`` per worker, for readiness, queue ETAs and ``status_reply``; cheap
    unless ``with_memory`` (an engine may answer memory from its last report).
``stop()`` / ``join(timeout_s)``
    Take no more jobs and let running ones end (the loop has cancelled them); wait for the
    workers at exit.

``LocalEngine`` (today's): one ``ModelWorker`` thread per device in this process, all taking
from the loop's queue. ``RayEngine`` (``v2a_server.serving.ray_engine``): one Ray Serve replica
per GPU of a cluster, a dispatcher thread that takes a job from the queue when a replica is
free and relays the replica's streamed progress as ``JobProgress``; ``cancel`` forwards to the
replica running the job; a lost replica's job goes back to the head of the queue once
(``JobQueue.put_front``, announced as ``JobProgress`` stage ``REQUEUED_STAGE``) or ends in
``JobFailed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from v2a_server.serving.events import EngineEvent
from v2a_server.serving.jobs import Job, JobQueue
from v2a_server.serving.worker import ModelWorker

Post = Callable[[EngineEvent], None]


@dataclass(frozen=True)
class WorkerStatus:
    """One worker as ``status_reply`` lists it (memory: None when not asked or unknown).
    Peak memory is per job: the running job's so far, and the last finished job's."""

    device: str
    state: str  # loading | idle | busy | failed
    job_id: str | None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    job_peak_memory_bytes: int | None = None
    last_job_id: str | None = None
    last_job_peak_memory_bytes: int | None = None
    node: str | None = None  # a cluster worker's node (None: this process's machine)
    pid: int | None = None  # a cluster worker's process (None: this process)


class Engine(Protocol):
    """What the socket loop needs from whatever runs the jobs (see the module docstring)."""

    def start(self, jobs: JobQueue, post: Post) -> None: ...

    def cancel(self, job: Job, code: str, message: str) -> None: ...

    def workers(self, with_memory: bool = False) -> list[WorkerStatus]: ...

    def stop(self) -> None: ...

    def join(self, timeout_s: float) -> None: ...


class LocalEngine:
    """Model worker threads in this process, one per device.

    Args:
        model_dir: the model folder (``save_pretrained`` output).
        devices: one worker per entry ("cpu", "cuda", "cuda:1").
        dtype: "auto", "float32", "float16" or "bfloat16".
        num_threads: torch CPU threads per CPU worker (None: all cores but one).
        offload / text_encoder_cpu: placement of the model, as ``model_store.load_pipeline``.
    """

    def __init__(self, model_dir: str, devices: list[str], dtype: str = "auto",
                 num_threads: int | None = None, *, offload: str = "none",
                 text_encoder_cpu: bool = False):
        self.model_dir = model_dir
        self.devices = list(devices)
        self.dtype = dtype
        self.num_threads = num_threads
        self.offload = offload
        self.text_encoder_cpu = text_encoder_cpu
        self._workers: list[ModelWorker] = []

    def start(self, jobs: JobQueue, post: Post) -> None:
        for device in self.devices:
            worker = ModelWorker(self.model_dir, device, self.dtype, jobs, post,
                                 self.num_threads, offload=self.offload,
                                 text_encoder_cpu=self.text_encoder_cpu)
            self._workers.append(worker)
            worker.start()

    def cancel(self, job: Job, code: str, message: str) -> None:
        # The worker's step callback watches the job's cancel event: it stops at the next step.
        job.cancel(code, message)

    def workers(self, with_memory: bool = False) -> list[WorkerStatus]:
        statuses = []
        for worker in self._workers:
            with worker.state_lock:  # the state, the job and the last job of one moment
                job, state = worker.job, worker.state
                last_id, last_peak = worker.last_job_id, worker.last_job_peak_memory_bytes
            used, total = worker.memory_bytes() if with_memory else (None, None)
            peak = worker.peak_memory_bytes() if with_memory and job is not None else None
            statuses.append(WorkerStatus(worker.device, state,
                                         job.request_id if job is not None else None,
                                         used, total, peak, last_id, last_peak))
        return statuses

    def stop(self) -> None:
        for worker in self._workers:
            worker.stop()

    def join(self, timeout_s: float) -> None:
        for worker in self._workers:
            worker.join(timeout=timeout_s)
