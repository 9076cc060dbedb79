"""Model workers of the local engine: one thread per device, running the STA-V2A pipeline.

A ``ModelWorker`` loads the pipeline on its device, then takes jobs from the shared
``JobQueue`` one at a time. It turns a job's protocol payload into pipeline arguments
(``payload.prepare_inputs``), runs the pipeline with a step callback that reports progress and
raises ``GenerationCancelled`` once the job's cancel event is set, and turns the output into a
``result`` body with raw audio buffers (``result.build_result``); the review data
(``serving.review``) follows on the review thread, while the worker takes its next job.
Everything it has to say goes to the socket loop through ``post(event)`` as the events of
``v2a_server.serving.events`` (``WorkerLoaded`` or ``WorkerFailed``, then per job
``JobStarted``, ``JobProgress``..., and ``JobResult`` (with its review's Future) or
``JobFailed``); a worker never touches the socket.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable

from v2a_server.model_card import ModelCard, read_model_card
from v2a_server.serving.events import (
    EngineEvent,
    JobFailed,
    JobProgress,
    JobResult,
    JobStarted,
    WorkerFailed,
    WorkerLoaded,
)
from v2a_server.serving.jobs import Job, JobQueue
from v2a_server.serving.payload import MediaError, prepare_inputs
from v2a_server.serving.result import build_result, frame_motion_soon
from v2a_server.serving.review import merge_review, review_soon
from v2a_server.serving.source_frames import (
    ReadCancelled,
    SourceUnavailable,
    read_source_frames,
)

logger = logging.getLogger("v2a_server.serving.worker")

TAKE_TIMEOUT_S = 0.2  # how often an idle worker looks at its stop flag


class ModelWorker(threading.Thread):
    """Loads the pipeline on ``device`` and runs queued jobs one after another.

    Args:
        model_dir: folder written by ``save_pretrained`` (``v2a create-model``).
        device: "cpu", "cuda", "cuda:1", ...
        dtype: "float32", "float16", "bfloat16" or "auto" (float16 on CUDA, float32 on CPU).
        jobs: the shared queue.
        post: thread-safe callable that hands an event to the socket loop.
        num_threads: torch CPU threads (None: all cores but one).
        offload: "none" or "model" (diffusers' model CPU offload; an accelerator only).
        text_encoder_cpu: run the text encoder on the CPU in float32.
    """

    def __init__(self, model_dir: str, device: str, dtype: str, jobs: JobQueue,
                 post: Callable[[EngineEvent], None], num_threads: int | None = None, *,
                 offload: str = "none", text_encoder_cpu: bool = False):
        super().__init__(name=f"worker-{device}", daemon=True)
        self.model_dir = model_dir
        self.device = device
        self.dtype = dtype
        self.offload = offload
        self.text_encoder_cpu = text_encoder_cpu
        self.jobs = jobs
        self.post = post
        self.num_threads = num_threads
        self.state = "loading"  # loading | idle | busy | failed
        self.job: Job | None = None
        self.pipe: Any = None
        self.model_fps: float | None = None
        self.image_size: int | None = None  # the video encoder's input side (None: features only)
        self.sample_rate: int | None = None
        self.card = ModelCard()  # what the model folder says of its scope (model_card.json)
        self.last_job_id: str | None = None
        self.last_job_peak_memory_bytes: int | None = None
        # held while the state changes and the final reply is posted, and while a status reads
        # the state: a worker seen idle has posted its job's final reply already
        self.state_lock = threading.Lock()
        self._stop_event = threading.Event()

    def stop(self) -> None:
        """Finish the current job (if any) and end the thread."""
        self._stop_event.set()

    def run(self) -> None:
        try:
            loaded = self.load()
        except Exception as exc:  # the server reports and exits; nothing else can run here
            logger.exception("worker %s: loading %s failed", self.device, self.model_dir)
            self.state = "failed"
            self.post(WorkerFailed(self.device, f"{type(exc).__name__}: {exc}"))
            return
        self.post(loaded)
        while not self._stop_event.is_set():
            job = self.jobs.take(TAKE_TIMEOUT_S)
            if job is None:
                continue
            with self.state_lock:  # busy with the job's own peak measurement, in one step
                self.reset_peak_memory()
                self.job, self.state = job, "busy"
            final = None
            try:
                final = self.run_job(job)
            finally:
                self._job_ended(job, final)

    def _job_ended(self, job: Job, final: JobResult | JobFailed | None) -> None:
        """Idle again, with the job's final reply posted in the same step: a status that sees
        this worker idle is answered after that reply (the loop handles the events posted
        before it answers), and a status answered after that reply sees a free worker."""
        peak = self.peak_memory_bytes()
        with self.state_lock:
            self.last_job_peak_memory_bytes = peak
            self.last_job_id = job.request_id
            self.job, self.state = None, "idle"
            if final is not None:
                self.post(final)

    # ---- loading ------------------------------------------------------------------------

    def load(self) -> WorkerLoaded:
        """Load the pipeline and the model's card (raises what loading raised); the model's
        facts for ``hello``. A cluster replica (``v2a_server.serving.replica``) calls it too."""
        self._load()
        self.card = _model_card(self.model_dir)
        self.state = "idle"
        return WorkerLoaded(self.device, self.model_fps, self.sample_rate, self.image_size,
                            self.card.scope)

    def _load(self) -> None:
        import torch

        from v2a_server.model_store import load_pipeline

        if self.device == "cpu":
            threads = self.num_threads or max(1, (os.cpu_count() or 2) - 1)
            torch.set_num_threads(threads)
        t0 = time.monotonic()
        pipe = load_pipeline(self.model_dir, device=self.device, dtype=self.dtype,
                             offload=self.offload, text_encoder_cpu=self.text_encoder_cpu)
        self.pipe = pipe
        self.model_fps = float(pipe.model_fps)
        encoder = getattr(pipe, "video_encoder", None)
        self.image_size = int(encoder.config.image_size) if encoder is not None else None
        self.sample_rate = int(pipe.sample_rate)
        logger.info("worker %s: model %s loaded in %.1f s (%s, offload %s, text encoder on %s, "
                    "model_fps %.3g, %d Hz, %d torch threads)", self.device, self.model_dir,
                    time.monotonic() - t0, pipe.unet.dtype, self.offload,
                    pipe.text_encoder.device, self.model_fps, self.sample_rate,
                    torch.get_num_threads())

    # ---- peak memory of a job -----------------------------------------------------------

    def reset_peak_memory(self) -> None:
        """Start a new peak-memory measurement (each job calls it as it starts)."""
        from v2a_server.pipelines.device_memory import reset_peak_memory

        reset_peak_memory(self.device)

    def peak_memory_bytes(self) -> int | None:
        """Peak memory since the current (or last) job started: on CUDA the bytes torch
        allocated on this worker's device; on CPU the process's peak RSS (the server and any
        other worker included). None: unknown."""
        from v2a_server.pipelines.device_memory import peak_memory_bytes

        return peak_memory_bytes(self.device)

    def memory_bytes(self) -> tuple[int | None, int | None]:
        """(used, total) memory of this worker's device; process RSS and RAM on CPU."""
        try:
            if self.device.startswith("cuda"):
                import torch

                free, total = torch.cuda.mem_get_info(torch.device(self.device))
                return int(total - free), int(total)
            page = os.sysconf("SC_PAGE_SIZE")
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * page
            return rss, int(os.sysconf("SC_PHYS_PAGES") * page)
        except (OSError, ValueError, RuntimeError, AttributeError):
            return None, None

    # ---- one job ------------------------------------------------------------------------

    def run_job(self, job: Job) -> JobResult | JobFailed | None:
        """Run ``job``; returns its final event for the loop (``JobStarted`` and progress go
        to ``post`` meanwhile; None: the review thread posts it, once the review data the
        result carries is ready). A cluster replica runs its jobs through it too."""
        from v2a_server.pipelines import GenerationCancelled, StepProgress

        job.started_at = time.monotonic()
        job.device = self.device
        self.post(JobStarted(job))
        logger.info("%s: started on %s after %.2f s in the queue", job.label, self.device,
                    job.started_at - job.accepted_at)
        steps_seen = {"steps": 0, "total": 0}  # per window (the result's), across windows

        def on_step(progress: StepProgress) -> None:
            if job.cancel_event.is_set():
                raise GenerationCancelled(job.cancel_message or "cancelled")
            step = progress.step_index + 1
            total_steps = progress.total_steps
            elapsed = time.monotonic() - job.started_at
            steps_seen["steps"] = max(1, total_steps // max(1, progress.num_windows))
            steps_seen["total"] = total_steps
            eta = elapsed / step * (total_steps - step) if step else None
            self.post(JobProgress(job, progress.stage, step, total_steps, eta, elapsed))

        try:
            if job.cancel_event.is_set():
                raise GenerationCancelled(job.cancel_message)
            self.post(JobProgress(job, "preparing", 0, 0, None,
                                  time.monotonic() - job.started_at))
            t_prep = time.monotonic()
            source_timings: dict[str, float] = {}
            frames = None
            if job.body["frames"]["encoding"] == "source":
                self.post(JobProgress(job, "reading frames", 0, 0, None,
                                      time.monotonic() - job.started_at))
                frames, cached = read_source_frames(job.body["frames"]["source"],
                                                    cancel=job.cancel_event)
                # cached: read by another request (a prepare, the read at queueing, an
                # earlier job); source_read_s: what this job spent reading or waiting
                source_timings = {"source_read_s": time.monotonic() - t_prep,
                                  "source_cached": float(cached)}
            inputs = prepare_inputs(self.pipe, job.body, job.buffers, frames)
            # beside the generation: adds nothing to the wait where a core is free
            motion = frame_motion_soon(inputs["frames"], inputs["frames_fps"])
            t_pipe = time.monotonic()
            try:
                output = self.pipe(**inputs, on_step=on_step)
            except BaseException:
                motion.cancel()
                raise
            if job.cancel_event.is_set():  # cancelled after the last step: still cancelled
                raise GenerationCancelled(job.cancel_message)
            t_enc = time.monotonic()
            # every step done: the last denoise count, so a progress bar stays full
            # (docs/protocol.md §4.2)
            done = steps_seen["total"]
            self.post(JobProgress(job, "finishing", done, done, 0.0, t_enc - job.started_at))
            body, buffers = build_result(output, job.body, steps_seen["steps"],
                                         float(self.pipe.latent_fps), self.card)
            t_end = time.monotonic()
            body["timings_s"].update(source_timings)
            body["timings_s"].update({
                "queue_s": job.started_at - job.accepted_at,
                "prepare_s": t_pipe - t_prep,
                "pipeline_s": t_enc - t_pipe,
                "encode_s": t_end - t_enc,
                "total_s": t_end - job.accepted_at,
            })
            # The review data goes on the review thread: this worker takes the next job now.
            review = review_soon(job.body, body, motion, inputs["frames_fps"], output.audio,
                                 int(output.sample_rate))
            if job.review_follows:  # 1.4: the take now, its review in a message after it
                body["review_follows"] = True
                final: JobResult | None = JobResult(job, body, buffers, review)
            else:  # an older client: the result carries the review, so it waits for it
                def merged(done, body=body, buffers=buffers):
                    merge_review(body, buffers, done)
                    self.post(JobResult(job, body, buffers))

                review.add_done_callback(merged)
                final = None
            logger.info("%s: done in %.2f s (pipeline %.2f s)", job.label,
                        t_end - job.started_at, t_enc - t_pipe)
            return final
        except (GenerationCancelled, ReadCancelled):
            logger.info("%s: cancelled (%s)", job.label, job.cancel_message or job.cancel_code)
            return JobFailed(job, job.cancel_code, job.cancel_message or "cancelled")
        except SourceUnavailable as exc:
            logger.info("%s: source frames unavailable: %s", job.label, exc)
            return JobFailed(job, "source_unavailable", exc.client_text, exc.field)
        except MediaError as exc:
            return JobFailed(job, "bad_media", str(exc), exc.field)
        except ValueError as exc:
            logger.info("%s: refused by the model: %s", job.label, exc)
            return JobFailed(job, "invalid_request", str(exc))
        except Exception as exc:  # a model error must end the job, not the worker
            logger.exception("%s: generation failed", job.label)
            if "out of memory" in str(exc).lower():
                _empty_cuda_cache()
            return JobFailed(job, "generation_failed", f"{type(exc).__name__}: {exc}")


def _model_card(model_dir: str) -> ModelCard:
    """The card of the folder the worker loaded (``model_dir`` may be a name, like
    ``default``)."""
    from v2a_server.model_store import resolve_model_dir

    try:
        return read_model_card(resolve_model_dir(model_dir))
    except (OSError, ValueError):
        return ModelCard()


def _empty_cuda_cache() -> None:
    try:
        import torch

        torch.cuda.empty_cache()
    except Exception:  # best effort after an OOM; the job already failed
        logger.debug("torch.cuda.empty_cache failed", exc_info=True)
