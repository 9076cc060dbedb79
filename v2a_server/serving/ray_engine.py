"""``RayEngine``: the server's jobs run on a Ray Serve cluster, one ``FoleyReplica`` per GPU.

The front-end process keeps everything an editor talks to (the socket loop, CURVE and signing,
heartbeats, the bounded FIFO, reading source frames) and becomes a Ray driver. A dispatcher
thread takes a job from the FIFO only while fewer jobs run than there are running replicas,
so jobs wait in the server's queue (positions, ``busy``, cancel before start) and never in
Serve's. Each job gets a relay thread that calls the deployment through a streaming
``DeploymentHandle`` and turns the replica's items into engine events; ``cancel`` cancels that
call, which reaches the replica at its next ``await`` (``v2a_server.serving.replica``).

Worker loss: a replica process that dies surfaces as ``ActorDiedError`` at once, a lost node as
``ActorUnavailableError`` within seconds, and Serve does not retry. The job then goes back to
the head of the FIFO once, announced by a ``requeued`` progress stage (same request, same seed:
the same take); a second loss ends it with ``worker_lost``. A result is only ever the
replica's whole result.

The replicas say what they are in Ray's key-value store (``replica.REGISTRY_PREFIX``);
``workers()`` lists them from a cache the dispatcher refreshes, with the actor table telling
which died.
"""

from __future__ import annotations

import concurrent.futures
import asyncio
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from v2a_server.serving.engine import Post, WorkerStatus
from v2a_server.serving.events import (
    REQUEUED_STAGE,
    JobFailed,
    JobProgress,
    JobResult,
    JobStarted,
    WorkerFailed,
    WorkerLoaded,
)
from v2a_server.serving.jobs import Job, JobQueue
from v2a_server.serving.source_frames import ReadCancelled, SourceUnavailable, read_source_frames

logger = logging.getLogger("v2a_server.serving.ray_engine")

APP_NAME = "foley"
REFRESH_S = 0.25  # how often the replica list (and so the dispatch capacity) is re-read
DEPLOY_TIMEOUT_S = 600.0  # loading the model on every replica
FAILED_SHOWN_S = 30.0  # a dead replica stays in status as "failed" this long
BACKPRESSURE_RETRY_S = 0.2
MAX_LOSSES = 2  # the second lost worker ends the job
LEAVE_TIMEOUT_S = 30.0  # at exit: running jobs end, then the deployment is deleted


def driver_environment() -> None:
    """Before Ray is imported: the server handles SIGTERM itself (a clean stop); Ray's own
    handler for it, chained before ours, makes that stop's ``ray.shutdown`` abort the process
    (Ray 2.60)."""
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")


def loopback_environment() -> None:
    """Keep a Ray started or joined on this machine on 127.0.0.1: without the first variable
    Ray 2.60 rewrites 127.0.0.1 to the machine's external address and connects there. Ray
    reads it when imported: call this first. Not for a cluster of several machines (with it,
    Ray refuses to join one)."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # nothing listens off this machine


def is_loopback_address(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


@dataclass
class _Replica:
    """One replica as its registry record and the actor table describe it."""

    record: dict[str, Any]
    alive: bool
    dead_since: float | None = None


class RayEngine:
    """Jobs run by ``FoleyReplica``s of a Ray Serve application (see the module docstring).

    Args:
        model_dir: the model folder or name, as every Ray node resolves it.
        address: a running Ray cluster's address (``host:port`` of its GCS); None: start a
            single-node Ray in this process (the one-machine trial).
        replicas: replicas to run (None: one per GPU in the cluster; one on a GPU-less
            local start).
        dtype, num_threads, offload, text_encoder_cpu: as ``LocalEngine``, per replica.
        stub_step_sleep_s: benchmarks only: every denoising step also sleeps this long.
    """

    def __init__(self, model_dir: str, address: str | None = None, *,
                 replicas: int | None = None, dtype: str = "auto",
                 num_threads: int | None = None, offload: str = "none",
                 text_encoder_cpu: bool = False, stub_step_sleep_s: float = 0.0,
                 app_name: str = APP_NAME):
        self.model_dir = model_dir
        self.address = address
        self.replicas = replicas
        self.options = dict(dtype=dtype, num_threads=num_threads, offload=offload,
                            text_encoder_cpu=text_encoder_cpu,
                            stub_step_sleep_s=stub_step_sleep_s)
        self.app_name = app_name
        self.jobs: JobQueue | None = None
        self.post: Post | None = None
        self._handle: Any = None
        self._lock = threading.Lock()
        self._running: dict[Job, Any] = {}  # job -> its streaming response (None: not yet)
        # replica id -> the job it runs, from its start until the job's final event is posted:
        # the replica's own record says "ready" as soon as it has sent the result
        self._running_on: dict[str, Job] = {}
        self._losses: dict[Job, int] = {}
        self._replicas: dict[str, _Replica] = {}
        # replicas a job was lost on -> when: dead to us before the actor table says so (an
        # unavailable one that comes back counts again after FAILED_SHOWN_S)
        self._lost_replicas: dict[str, float] = {}
        self._ready_seen: set[str] = set()
        self._model: dict[str, Any] | None = None
        self._state = "loading"  # loading | running | failed
        self._started_ray = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the Engine seam ----------------------------------------------------------------

    def start(self, jobs: JobQueue, post: Post) -> None:
        self.jobs, self.post = jobs, post
        self._thread = threading.Thread(target=self._main, name="ray-dispatcher", daemon=True)
        self._thread.start()

    def cancel(self, job: Job, code: str, message: str) -> None:
        job.cancel(code, message)
        with self._lock:
            response = self._running.get(job)
        if response is not None:
            response.cancel()  # reaches the replica at its next await; it stops at the step

    def workers(self, with_memory: bool = False) -> list[WorkerStatus]:
        with self._lock:
            replicas = list(self._replicas.items())
            state = self._state
            running_on = dict(self._running_on)
        if not replicas:
            return [WorkerStatus("ray", "failed" if state == "failed" else "loading", None)]
        statuses = []
        for replica_id, replica in sorted(replicas, key=lambda item: (
                item[1].record["node_ip"], item[1].record["pid"])):
            record = replica.record
            worker_state = {"loading": "loading", "ready": "idle",
                            "busy": "busy"}[record["state"]] if replica.alive else "failed"
            job_id = record.get("job_id") if worker_state == "busy" else None
            if worker_state == "idle" and replica_id in running_on:  # its result on the way
                worker_state, job_id = "busy", running_on[replica_id].request_id
            statuses.append(WorkerStatus(
                record["device"], worker_state, job_id,
                node=f"{record['node_ip']} {record['node_id'][:12]}", pid=record["pid"]))
        return statuses

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def join(self, timeout_s: float) -> None:
        """Wait for the dispatcher thread to leave Ray (it deletes the deployment, and stops a
        Ray it started): at least ``LEAVE_TIMEOUT_S``."""
        if self._thread is not None:
            self._thread.join(max(timeout_s, LEAVE_TIMEOUT_S))

    # ---- start: connect, deploy, then dispatch -----------------------------------------

    def _main(self) -> None:
        # One thread joins Ray, dispatches and leaves: the processes of a Ray started here
        # share the fate of the thread that started them (Ray's PR_SET_PDEATHSIG).
        try:
            try:
                self._connect()
                self._deploy()
            except Exception as exc:  # the server reports it and exits: nothing can run
                logger.exception("the Ray deployment did not come up")
                with self._lock:
                    self._state = "failed"
                self.post(WorkerFailed("ray", f"{type(exc).__name__}: {exc}"))
                return
            with self._lock:
                self._state = "running"
            self._dispatch()
        except Exception:  # a bug here would leave jobs waiting forever: say so loudly
            logger.exception("the Ray dispatcher failed")
            raise
        finally:
            self._leave()

    def _connect(self) -> None:
        import ray

        if self.address is None:
            import torch

            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
            ray.init(_node_ip_address="127.0.0.1", include_dashboard=False,
                     num_gpus=gpus, logging_level=logging.WARNING)
            self._started_ray = True
            session = ray._private.worker._global_node.get_session_dir_path()
            logger.info("started a local single-node Ray on 127.0.0.1 (%d GPU; session %s)",
                        gpus, session)
        else:
            kwargs = {"_node_ip_address": "127.0.0.1"} if is_loopback_address(
                self.address) else {}
            ray.init(address=self.address, logging_level=logging.WARNING, **kwargs)
            logger.info("joined the Ray cluster at %s as a driver", self.address)

    def _deploy(self) -> None:
        import ray
        from ray import serve

        from v2a_server.serving.replica import foley_deployment

        gpus = int(ray.cluster_resources().get("GPU", 0))
        num_gpus = 1 if gpus else 0
        replicas = self.replicas or max(1, gpus)
        if gpus and replicas > gpus:
            raise RuntimeError(f"{replicas} replicas need {replicas} GPUs; the cluster has "
                               f"{gpus}")
        if not gpus and self.address is not None:
            raise RuntimeError(f"the Ray cluster at {self.address} has no GPU: start its "
                               "worker nodes with --num-gpus (docs/cluster.md)")
        serve.start(proxy_location="Disabled")
        app = foley_deployment(replicas, num_gpus).bind(self.model_dir, **self.options)
        logger.info("deploying %d FoleyReplica(s) (%s GPU each) of %s", replicas, num_gpus,
                    self.model_dir)
        t0 = time.monotonic()
        self._handle = serve.run(app, name=self.app_name, route_prefix=None)
        self._model = self._handle.describe.remote().result(timeout_s=DEPLOY_TIMEOUT_S)
        logger.info("%d replica(s) running after %.1f s", replicas, time.monotonic() - t0)
        self._refresh()

    def _leave(self) -> None:
        """After the running jobs ended (bounded), delete the deployment and leave Ray."""
        deadline = time.monotonic() + LEAVE_TIMEOUT_S / 2
        while time.monotonic() < deadline:
            with self._lock:
                if not self._running:
                    break
            time.sleep(0.05)
        try:
            import ray
            from ray import serve

            if not ray.is_initialized():
                return
            if self._handle is not None:
                serve.delete(self.app_name)  # frees the GPUs; a new front-end deploys again
            if self._started_ray:
                serve.shutdown()
            ray.shutdown()
        except Exception:  # at exit: the log says why, the exit goes on
            logger.exception("leaving the Ray cluster failed")

    # ---- the replica list ---------------------------------------------------------------

    def _refresh(self) -> None:
        """Re-read the replica registry and the replicas' actor states; a replica newly ready
        is a ``WorkerLoaded`` for the loop."""
        import ray
        from ray.experimental import internal_kv

        from v2a_server.serving.replica import REGISTRY_NAMESPACE, REGISTRY_PREFIX

        now = time.monotonic()
        seen: dict[str, _Replica] = {}
        for key in internal_kv._internal_kv_list(REGISTRY_PREFIX, namespace=REGISTRY_NAMESPACE):
            raw = internal_kv._internal_kv_get(key, namespace=REGISTRY_NAMESPACE)
            if raw is None:
                continue
            record = json.loads(raw)
            if record.get("app") != self.app_name:
                continue
            actor = ray._private.state.actors(actor_id=record["actor_id"])
            replica_id = record["replica_id"]
            lost_at = self._lost_replicas.get(replica_id)
            if lost_at is not None and now - lost_at >= FAILED_SHOWN_S:
                del self._lost_replicas[replica_id]
                lost_at = None
            alive = actor.get("State") in ("ALIVE", "PENDING_CREATION", "RESTARTING") \
                and lost_at is None
            old = self._replicas.get(replica_id)
            dead_since = None if alive else (old.dead_since if old and old.dead_since
                                             else (now if old else now - FAILED_SHOWN_S))
            if dead_since is not None and now - dead_since >= FAILED_SHOWN_S:
                internal_kv._internal_kv_del(key, namespace=REGISTRY_NAMESPACE)
                continue
            seen[replica_id] = _Replica(record, alive, dead_since)
        with self._lock:
            self._replicas = seen
        for replica_id, replica in seen.items():
            if replica.alive and replica.record["state"] != "loading" \
                    and replica_id not in self._ready_seen and self._model is not None:
                self._ready_seen.add(replica_id)
                self.post(WorkerLoaded(replica.record["device"], self._model["model_fps"],
                                       self._model["sample_rate"], self._model["image_size"],
                                       self._model["scope"]))

    def _capacity(self) -> int:
        """Replicas that take jobs now (loaded and alive)."""
        with self._lock:
            return sum(r.alive and r.record["state"] in ("ready", "busy")
                       for r in self._replicas.values())

    # ---- dispatching --------------------------------------------------------------------

    def _dispatch(self) -> None:
        assert self.jobs is not None
        next_refresh = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_refresh:
                self._refresh()
                next_refresh = time.monotonic() + REFRESH_S
            with self._lock:
                running = len(self._running)
            if running >= self._capacity():
                self._wake.wait(REFRESH_S)
                self._wake.clear()
                continue
            job = self.jobs.take(REFRESH_S)
            if job is None:
                continue
            with self._lock:
                self._running[job] = None
            threading.Thread(target=self._relay, args=(job,), name=f"relay-{job.seq}",
                             daemon=True).start()

    def _relay(self, job: Job) -> None:
        """Run ``job`` on a replica and post what happens; always posts a final event or
        puts the job back in the queue."""
        assert self.post is not None
        job.started_at = time.monotonic()
        job.device = "ray"
        self.post(JobStarted(job))
        try:
            final = self._run_on_replica(job)
        except Exception as exc:  # a bug in relaying must end the job, not the dispatcher
            logger.exception("%s: relaying failed", job.label)
            final = JobFailed(job, "internal", f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._running.pop(job, None)
            self._wake.set()
        with self._lock:  # its replica is seen idle only once the final event is posted
            if final is not None:
                self._losses.pop(job, None)
                self.post(final)
            self._running_on = {replica_id: running for replica_id, running
                                in self._running_on.items() if running is not job}

    def _run_on_replica(self, job: Job) -> JobResult | JobFailed | None:
        """The job's final event; None when it went back to the queue."""
        from ray.exceptions import (
            NodeDiedError,
            ObjectLostError,
            RayActorError,
            TaskCancelledError,
            WorkerCrashedError,
        )
        from ray.serve.exceptions import (
            BackPressureError,
            ReplicaUnavailableError,
            RequestCancelledError,
        )

        assert self.post is not None and self.jobs is not None
        if job.cancel_event.is_set():
            return self._cancelled(job)
        try:
            request, extra_timings = self._request(job)
        except ReadCancelled:
            return self._cancelled(job)
        except SourceUnavailable as exc:
            return JobFailed(job, "source_unavailable", exc.client_text, exc.field)
        replica: dict[str, Any] = {}
        try:
            response = self._handle.options(stream=True).run.remote(request)
            with self._lock:
                self._running[job] = response
            if job.cancel_event.is_set():
                response.cancel()
            for item in response:
                kind = item["kind"]
                if kind == "started":
                    replica = item
                    with self._lock:
                        self._running_on[item["replica_id"]] = job
                    logger.info("%s: running on replica %s (%s, pid %d)", job.label,
                                item["replica_id"], item["node_ip"], item["pid"])
                elif kind == "progress":
                    self.post(JobProgress(job, item["stage"], item["step"],
                                          item["total_steps"], item["eta_s"],
                                          time.monotonic() - job.started_at))
                elif kind == "result":
                    body = item["body"]
                    timings = body["timings_s"]
                    timings.update(extra_timings)
                    # the replica timed from its own receipt of the job; the editor waits
                    # from acceptance here
                    timings["replica_s"] = timings.get("total_s", 0.0)
                    timings["queue_s"] = job.started_at - job.accepted_at
                    timings["total_s"] = time.monotonic() - job.accepted_at
                    timings["worker_losses"] = float(self._losses.get(job, 0))
                    return JobResult(job, body, item["buffers"])
                else:
                    if job.cancel_event.is_set():
                        return self._cancelled(job)
                    return JobFailed(job, item["code"], item["message"], item["field"])
            return JobFailed(job, "internal", "the replica ended the job without a result")
        except (RequestCancelledError, TaskCancelledError, asyncio.CancelledError,
                concurrent.futures.CancelledError):
            return self._cancelled(job)
        except BackPressureError:  # Serve's safety net: the job waits in our queue again
            logger.warning("%s: Serve refused it (back pressure); it waits again", job.label)
            time.sleep(BACKPRESSURE_RETRY_S)
            return None if self.jobs.put_front(job) else self._cancelled(job)
        except (RayActorError, ReplicaUnavailableError, WorkerCrashedError, NodeDiedError,
                ObjectLostError) as exc:  # the replica's process or machine is gone
            if job.cancel_event.is_set():
                return self._cancelled(job)
            return self._lost(job, replica, exc)

    def _request(self, job: Job) -> tuple[dict[str, Any], dict[str, float]]:
        """What the replica gets: the body with any source file's frames read here, as raw
        RGB (the front-end reads files; replicas need not see the editor's disk)."""
        body, buffers = dict(job.body), [bytes(b) for b in job.buffers]
        timings: dict[str, float] = {}
        if body["frames"]["encoding"] == "source":
            assert self.post is not None
            self.post(JobProgress(job, "reading frames", 0, 0, None,
                                  time.monotonic() - job.started_at))
            t0 = time.monotonic()
            frames, cached = read_source_frames(body["frames"]["source"],
                                                cancel=job.cancel_event)
            timings = {"source_read_s": time.monotonic() - t0, "source_cached": float(cached)}
            frames = np.ascontiguousarray(frames, dtype=np.uint8)
            body["frames"] = {
                "encoding": "rgb24", "shape": list(frames.shape), "buffers": [len(buffers)],
                "fps": body["frames"]["fps"],
                "start_time_s": body["frames"].get("start_time_s", 0.0)}
            buffers.append(frames.tobytes())
        return {"request_id": job.request_id, "seq": job.seq, "body": body,
                "buffers": buffers}, timings

    def _cancelled(self, job: Job) -> JobFailed:
        logger.info("%s: cancelled (%s)", job.label, job.cancel_message or job.cancel_code)
        return JobFailed(job, job.cancel_code, job.cancel_message or "cancelled")

    def _lost(self, job: Job, replica: dict[str, Any], exc: Exception) -> JobFailed | None:
        """The replica (or its node) died under the job: run it again once, first in line."""
        assert self.post is not None and self.jobs is not None
        where = (f"replica {replica['replica_id']} on {replica['node_ip']} (pid "
                 f"{replica['pid']})" if replica else "its replica")
        if replica:
            with self._lock:
                self._lost_replicas[replica["replica_id"]] = time.monotonic()
                lost = self._replicas.get(replica["replica_id"])
                if lost is not None:
                    lost.alive, lost.dead_since = False, time.monotonic()
        losses = self._losses.get(job, 0) + 1
        self._losses[job] = losses
        if losses < MAX_LOSSES:
            logger.warning("%s: %s was lost (%s); the job runs again next", job.label, where,
                           type(exc).__name__)
            # told before it is back in the queue, so its next start comes after this event
            self.post(JobProgress(job, REQUEUED_STAGE, 0, 0, None,
                                  time.monotonic() - job.accepted_at))
            if self.jobs.put_front(job):
                return None
            return JobFailed(job, "shutting_down", "the server is stopping")
        logger.error("%s: %s was lost too (%s); the job ends", job.label, where,
                     type(exc).__name__)
        return JobFailed(job, "worker_lost", f"the job's worker was lost twice ({where} was "
                         f"the second: {type(exc).__name__}); no audio was made: submit it "
                         "again")
