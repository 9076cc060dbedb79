"""``FoleyReplica``: the Ray Serve deployment that runs jobs on one GPU of a cluster.

Each replica loads the pipeline once (``ModelWorker.load``) and runs one job at a time
(``max_ongoing_requests=1``) through the same ``ModelWorker.run_job`` the local engine uses,
so a take is the same wherever it was made. ``run`` is an async generator: Serve delivers a
cancel only at an ``await``, so the job runs on the replica's one job thread while the
generator waits for its events; on cancel the generator sets the job's cancel flag, which the
pipeline's step callback checks, and the job thread's single slot keeps the next job off the
model until the cancelled step has finished.

What a replica is (node, pid, device, loading or ready) is written to Ray's key-value store
under ``REGISTRY_PREFIX`` so that the front-end can list every replica, idle ones included
(``v2a_server.serving.ray_engine``). Items streamed back are plain dicts (``kind``: started,
progress, result, failed); buffers travel as bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable

import ray
from ray import serve
from ray.experimental import internal_kv

from v2a_server.serving.events import (
    EngineEvent,
    JobFailed,
    JobProgress,
    JobResult,
    JobStarted,
)
from v2a_server.serving.jobs import Job
from v2a_server.serving.review import merge_review
from v2a_server.serving.worker import ModelWorker

logger = logging.getLogger("v2a_server.serving.replica")

REGISTRY_PREFIX = "v2a-replica:"
REGISTRY_NAMESPACE = "v2a"
HEALTH_CHECK_PERIOD_S = 2.0
# Loading the model is not a fault: the first health check waits for the constructor anyway,
# and a running job never delays a check (it runs on the job thread, checks on the loop).
HEALTH_CHECK_TIMEOUT_S = 30.0
# Serve's own queue is only a safety net: the front-end's FIFO is the real one and dispatches
# no more jobs than there are replicas (Serve's limit over-rejects bursts).
MAX_QUEUED_REQUESTS = 64


class _SleepingSteps:
    """A benchmark stand-in for GPU time: the pipeline, with ``sleep_s`` added to each
    denoising step (the CPU stays free, so replicas on one small machine scale as GPUs do).
    Used only with ``stub_step_sleep_s`` > 0 (``bench/bench_cluster.py``)."""

    def __init__(self, pipe: Any, sleep_s: float):
        self._pipe, self._sleep_s = pipe, sleep_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __call__(self, *args: Any, on_step: Callable | None = None, **kwargs: Any) -> Any:
        def slow_step(progress: Any) -> None:
            time.sleep(self._sleep_s)
            if on_step is not None:
                on_step(progress)

        return self._pipe(*args, on_step=slow_step, **kwargs)


class FoleyReplica:
    """One model on one GPU (or CPU), running the jobs the front-end sends it one at a time.

    Args:
        model_dir: the model folder, as every node sees it (or an installed model's name).
        dtype, num_threads, offload, text_encoder_cpu: as ``ModelWorker``.
        stub_step_sleep_s: benchmarks only: sleep this long in every denoising step.
    """

    def __init__(self, model_dir: str, dtype: str = "auto", num_threads: int | None = None,
                 offload: str = "none", text_encoder_cpu: bool = False,
                 stub_step_sleep_s: float = 0.0):
        import torch

        context = ray.get_runtime_context()
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        gpu_ids = ray.get_gpu_ids()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.facts = {
            "app": serve.get_replica_context().app_name, "replica_id": self.replica_id, "actor_id": context.get_actor_id(),
            "node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
            # the device, and which of the node's (logical) GPUs Ray gave this replica
            "device": device + (f" gpu {','.join(str(g) for g in gpu_ids)}" if gpu_ids else ""),
        }
        self._register("loading")
        # the worker's thread is not started: the replica calls load and run_job itself
        self.worker = ModelWorker(model_dir, device, dtype, None, self._post,  # type: ignore
                                  num_threads, offload=offload, text_encoder_cpu=text_encoder_cpu)
        loaded = self.worker.load()
        if stub_step_sleep_s > 0:
            self.worker.pipe = _SleepingSteps(self.worker.pipe, stub_step_sleep_s)
        self.model = {"model_fps": loaded.model_fps, "sample_rate": loaded.sample_rate,
                      "image_size": loaded.image_size, "scope": loaded.scope}
        # one job thread: a job submitted while a cancelled one finishes its step waits here
        self._job_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="foley-job")
        self._sink: Callable[[EngineEvent], None] | None = None
        self._fault: str | None = None
        # what the ordering check of _run_job reads (jobs on the model now, the last end)
        self._model_lock = threading.Lock()
        self._jobs_on_model = 0
        self._previous_end: float | None = None
        self._register("ready")
        logger.info("replica %s ready on %s (pid %d)", self.replica_id, self.facts["device"],
                    os.getpid())

    # ---- what the front-end asks --------------------------------------------------------

    async def describe(self) -> dict[str, Any]:
        """The model's facts (for hello) and this replica's."""
        return {**self.model, **self.facts}

    async def check_health(self) -> None:
        """Fails only on a real fault (a device left unusable); never because a job runs."""
        if self._fault is not None:
            raise RuntimeError(self._fault)

    async def run(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Run one job; yields its events as dicts, the last one ``result`` or ``failed``.

        ``request``: request_id, seq, body (frames as jpeg/png/rgb24: the front-end has read
        any source file), buffers (bytes).
        """
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = Job(request["request_id"], b"", request["body"], request["buffers"],
                  request["seq"])

        def post(event: EngineEvent) -> None:  # from the job thread
            loop.call_soon_threadsafe(events.put_nowait, event)

        done = loop.run_in_executor(self._job_thread, self._run_job, job, post,
                                    time.monotonic())
        done.add_done_callback(lambda _: events.put_nowait(None))
        finished = False
        try:
            while (event := await events.get()) is not None:
                item = self._item(event)
                finished = item["kind"] in ("result", "failed")
                yield item
        finally:
            if not finished:  # cancelled by the front-end (or its connection lost)
                job.cancel("cancelled", "cancelled by the front-end")
                logger.info("job %s: cancelled; its step finishes first", job.request_id)
            # the job thread's slot stays taken until the cancelled step ends, so the next job
            # waits; shielded, so a second cancel does not skip that wait
            await asyncio.shield(done)

    # ---- the job thread -----------------------------------------------------------------

    def _run_job(self, job: Job, post: Callable[[EngineEvent], None],
                 submitted_at: float) -> None:
        if job.cancel_event.is_set():  # cancelled while waiting for the slot: never starts
            post(JobFailed(job, job.cancel_code, job.cancel_message))
            return
        started = time.monotonic()
        waited_s = started - submitted_at  # e.g. behind a cancelled job's last step
        with self._model_lock:
            overlapped = self._jobs_on_model > 0
            self._jobs_on_model += 1
            previous_end = self._previous_end
        # seconds from the previous job's end to this start; -1: they overlapped (a bug)
        after_previous_s = -1.0 if overlapped else (
            started - previous_end if previous_end is not None else 0.0)
        self._sink = post
        self._register("busy", job.request_id)
        # The review data rides in the result: the front-end keeps no frames or pictures of a
        # replica's job, so the review thread's future is awaited here rather than sent later.
        job.review_follows = True
        try:
            final = self.worker.run_job(job)
            if isinstance(final, JobResult) and final.review is not None:
                body = {k: v for k, v in final.body.items() if k != "review_follows"}
                buffers = list(final.buffers)
                merge_review(body, buffers, final.review)
                final = JobResult(job, body, buffers)
        finally:
            with self._model_lock:
                self._jobs_on_model -= 1
                self._previous_end = time.monotonic()
            self._register("ready")
        if isinstance(final, JobFailed) and final.code == "generation_failed" \
                and _device_lost(final.message):
            self._fault = final.message  # the next health check fails: Serve replaces us
        if isinstance(final, JobResult):
            final.body["timings_s"]["replica_wait_s"] = waited_s
            final.body["timings_s"]["replica_after_previous_s"] = after_previous_s
        post(final)

    def _post(self, event: EngineEvent) -> None:
        if self._sink is not None:
            self._sink(event)

    def _item(self, event: EngineEvent) -> dict[str, Any]:
        if isinstance(event, JobStarted):
            return {"kind": "started", "replica_id": self.replica_id, "pid": self.facts["pid"],
                    "node_ip": self.facts["node_ip"], "device": self.facts["device"]}
        if isinstance(event, JobProgress):
            return {"kind": "progress", "stage": event.stage, "step": event.step,
                    "total_steps": event.total_steps, "eta_s": event.eta_s,
                    "elapsed_s": event.elapsed_s}
        if isinstance(event, JobResult):
            return {"kind": "result", "body": event.body,
                    "buffers": [bytes(buffer) for buffer in event.buffers]}
        assert isinstance(event, JobFailed), event
        return {"kind": "failed", "code": event.code, "message": event.message,
                "field": event.field}

    def _register(self, state: str, job_id: str | None = None) -> None:
        record = {**self.facts, "state": state, "job_id": job_id, "at": time.time()}
        internal_kv._internal_kv_put(REGISTRY_PREFIX + self.replica_id, json.dumps(record),
                                     overwrite=True, namespace=REGISTRY_NAMESPACE)


def _device_lost(message: str) -> bool:
    """A CUDA error that leaves the device unusable for this process (not an OOM)."""
    text = message.lower()
    return "cuda error" in text and "out of memory" not in text


def foley_deployment(num_replicas: int, num_gpus: float) -> Any:
    """The ``FoleyReplica`` deployment with its production options."""
    return serve.deployment(
        FoleyReplica, name="FoleyReplica", num_replicas=num_replicas,
        max_ongoing_requests=1, max_queued_requests=MAX_QUEUED_REQUESTS,
        ray_actor_options={"num_gpus": num_gpus, "num_cpus": 0},
        health_check_period_s=HEALTH_CHECK_PERIOD_S,
        health_check_timeout_s=HEALTH_CHECK_TIMEOUT_S,
        graceful_shutdown_timeout_s=5.0,
    )
