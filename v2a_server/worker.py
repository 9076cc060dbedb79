"""Model workers of the ``v2a-server``: one thread per device, running the STA-V2A pipeline.

A ``ModelWorker`` loads the pipeline on its device, then takes jobs from the shared
``JobQueue`` one at a time. It turns a job's protocol payload into pipeline arguments
(``prepare_inputs``), runs the pipeline with a step callback that reports progress and raises
``GenerationCancelled`` once the job's cancel event is set, and turns the output into a
``result`` body with raw audio buffers (``build_result``). Everything it has to say goes to
the socket loop through ``post(event)``; a worker never touches the socket.

Events posted (tuples): ``("loaded", worker)``, ``("load_failed", worker, message)``,
``("started", job)``, ``("progress", job, body)``, ``("result", job, body, buffers)``,
``("failed", job, code, message, field)``.
"""

from __future__ import annotations

import io
import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from foley_protocol.protocol import (
    INPAINT_MARGIN_S,
    MAX_DURATION_S,
    MAX_FRAME_SIDE_PX,
    MAX_RAW_FRAMES_BYTES,
)
from v2a_server.jobs import Job, JobQueue
from v2a_server.source_frames import SourceUnavailable, read_source_frames

logger = logging.getLogger("v2a_server.worker")

TAKE_TIMEOUT_S = 0.2  # how often an idle worker looks at its stop flag


class MediaError(ValueError):
    """A frame or audio payload that does not decode; carries the protocol field."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


class ModelWorker(threading.Thread):
    """Loads the pipeline on ``device`` and runs queued jobs one after another.

    Args:
        model_dir: folder written by ``save_pretrained`` (``v2a create-model``).
        device: "cpu", "cuda", "cuda:1", ...
        dtype: "float32", "float16" or "auto" (float16 on CUDA, float32 on CPU).
        jobs: the shared queue.
        post: thread-safe callable that hands an event tuple to the socket loop.
        num_threads: torch CPU threads (None: all cores but one).
    """

    def __init__(self, model_dir: str, device: str, dtype: str, jobs: JobQueue,
                 post: Callable[[tuple], None], num_threads: int | None = None):
        super().__init__(name=f"worker-{device}", daemon=True)
        self.model_dir = model_dir
        self.device = device
        self.dtype = dtype
        self.jobs = jobs
        self.post = post
        self.num_threads = num_threads
        self.state = "loading"  # loading | idle | busy | failed
        self.job: Job | None = None
        self.pipe: Any = None
        self.model_fps: float | None = None
        self.image_size: int | None = None  # the video encoder's input side (None: features only)
        self.sample_rate: int | None = None
        self._stop_event = threading.Event()

    def stop(self) -> None:
        """Finish the current job (if any) and end the thread."""
        self._stop_event.set()

    def run(self) -> None:
        try:
            self._load()
        except Exception as exc:  # the server reports and exits; nothing else can run here
            logger.exception("worker %s: loading %s failed", self.device, self.model_dir)
            self.state = "failed"
            self.post(("load_failed", self, f"{type(exc).__name__}: {exc}"))
            return
        self.state = "idle"
        self.post(("loaded", self))
        while not self._stop_event.is_set():
            job = self.jobs.take(TAKE_TIMEOUT_S)
            if job is None:
                continue
            self.job, self.state = job, "busy"
            try:
                final = self._run_job(job)
            finally:
                self.job, self.state = None, "idle"
            self.post(final)  # after going idle: a status answered next sees a free worker

    # ---- loading ------------------------------------------------------------------------

    def _load(self) -> None:
        import torch

        from v2a_server.model_store import load_pipeline

        if self.device == "cpu":
            threads = self.num_threads or max(1, (os.cpu_count() or 2) - 1)
            torch.set_num_threads(threads)
        t0 = time.monotonic()
        dtype = None if self.dtype == "auto" else getattr(torch, self.dtype)
        pipe = load_pipeline(self.model_dir, device=self.device, dtype=dtype)
        self.pipe = pipe
        self.model_fps = float(pipe.model_fps)
        encoder = getattr(pipe, "video_encoder", None)
        self.image_size = int(encoder.config.image_size) if encoder is not None else None
        self.sample_rate = int(pipe.sample_rate)
        logger.info("worker %s: model %s loaded in %.1f s (%s, model_fps %.3g, %d Hz, "
                    "%d torch threads)", self.device, self.model_dir, time.monotonic() - t0,
                    pipe.dtype, self.model_fps, self.sample_rate, torch.get_num_threads())

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

    def _run_job(self, job: Job) -> tuple:
        """Run ``job``; returns its final event ("result" or "failed") for the loop."""
        from v2a_server.pipelines import GenerationCancelled, StepProgress

        job.started_at = time.monotonic()
        job.device = self.device
        self.post(("started", job))
        logger.info("%s: started on %s after %.2f s in the queue", job.label, self.device,
                    job.started_at - job.accepted_at)
        steps_seen = {"steps": 0}

        def on_step(progress: StepProgress) -> None:
            if job.cancel_event.is_set():
                raise GenerationCancelled(job.cancel_message or "cancelled")
            now = time.monotonic()
            step = progress.step_index + 1
            total_steps = progress.total_steps
            elapsed = now - job.started_at
            steps_seen["steps"] = max(1, total_steps // max(1, progress.num_windows))
            eta = elapsed / step * (total_steps - step) if step else None
            self.post(("progress", job, _progress(progress.stage, step, total_steps, eta,
                                                  elapsed)))

        try:
            if job.cancel_event.is_set():
                raise GenerationCancelled(job.cancel_message)
            self.post(("progress", job, _progress("preparing", 0, 0, None,
                                                  time.monotonic() - job.started_at)))
            t_prep = time.monotonic()
            source_timings: dict[str, float] = {}
            frames = None
            if job.body["frames"]["encoding"] == "source":
                self.post(("progress", job, _progress("reading frames", 0, 0, None,
                                                      time.monotonic() - job.started_at)))
                frames, cached = read_source_frames(job.body["frames"]["source"])
                # cached: read by another request (a prepare, the read at queueing, an
                # earlier job); source_read_s: what this job spent reading or waiting
                source_timings = {"source_read_s": time.monotonic() - t_prep,
                                  "source_cached": float(cached)}
            inputs = prepare_inputs(self.pipe, job.body, job.buffers, frames)
            # The motion events need only the frames: computed beside the generation (OpenCV
            # releases the GIL), so they add nothing to the wait where a core is free.
            motion = _REVIEW_POOL.submit(frame_motion, inputs["frames"], inputs["frames_fps"])
            t_pipe = time.monotonic()
            try:
                output = self.pipe(**inputs, on_step=on_step)
            except BaseException:
                motion.cancel()
                raise
            if job.cancel_event.is_set():  # cancelled after the last step: still cancelled
                raise GenerationCancelled(job.cancel_message)
            t_enc = time.monotonic()
            self.post(("progress", job, _progress("finishing", steps_seen["steps"],
                                                  steps_seen["steps"], 0.0, t_enc - job.started_at)))
            body, buffers = build_result(output, job.body, steps_seen["steps"],
                                         float(self.pipe.latent_fps))
            t_review = time.monotonic()
            try:
                add_review(body, buffers, job.body, motion.result(), inputs["frames_fps"],
                           output.audio, int(output.sample_rate))
            except Exception as exc:  # review data is extra: never lose the take over it
                logger.exception("%s: sync review data failed", job.label)
                for key in ("motion", "audio_onsets", "sync_pictures"):
                    body.pop(key, None)
                del buffers[len(body["audio"]["buffers"]):]
                body["warnings"] = (body["warnings"] + [
                    f"no sync review data: {type(exc).__name__}: {exc}"[:2000]])[-16:]
            t_end = time.monotonic()
            body["timings_s"]["review_s"] = t_end - t_review
            body["timings_s"].update(source_timings)
            body["timings_s"].update({
                "queue_s": job.started_at - job.accepted_at,
                "prepare_s": t_pipe - t_prep,
                "pipeline_s": t_enc - t_pipe,
                "encode_s": t_end - t_enc,
                "total_s": t_end - job.accepted_at,
            })
            logger.info("%s: done in %.2f s (pipeline %.2f s)", job.label,
                        t_end - job.started_at, t_enc - t_pipe)
            return ("result", job, body, buffers)
        except GenerationCancelled:
            logger.info("%s: cancelled (%s)", job.label, job.cancel_message or job.cancel_code)
            return ("failed", job, job.cancel_code, job.cancel_message or "cancelled", None)
        except SourceUnavailable as exc:
            logger.info("%s: source frames unavailable: %s", job.label, exc)
            return ("failed", job, "source_unavailable", str(exc), exc.field)
        except MediaError as exc:
            return ("failed", job, "bad_media", str(exc), exc.field)
        except ValueError as exc:
            logger.info("%s: refused by the model: %s", job.label, exc)
            return ("failed", job, "invalid_request", str(exc), None)
        except Exception as exc:  # a model error must end the job, not the worker
            logger.exception("%s: generation failed", job.label)
            if "out of memory" in str(exc).lower():
                _empty_cuda_cache()
            return ("failed", job, "generation_failed", f"{type(exc).__name__}: {exc}", None)


def _progress(stage: str, step: int, total_steps: int, eta_s: float | None,
              elapsed_s: float) -> dict[str, Any]:
    return {"stage": stage[:32], "queue_position": 0, "step": step, "total_steps": total_steps,
            "eta_s": None if eta_s is None else max(0.0, float(eta_s)),
            "elapsed_s": max(0.0, float(elapsed_s))}


def _empty_cuda_cache() -> None:
    try:
        import torch

        torch.cuda.empty_cache()
    except Exception:  # best effort after an OOM; the job already failed
        logger.debug("torch.cuda.empty_cache failed", exc_info=True)


# ---- protocol payload -> pipeline arguments ---------------------------------------------


def decode_frames(frames: dict[str, Any], buffers: list[Any]) -> np.ndarray:
    """RGB uint8 [T, H, W, 3] from the generate body's ``frames`` and the message buffers.

    Raises:
        MediaError: a JPEG/PNG frame does not decode, is too large, or differs in size.
        SourceUnavailable: source frames that cannot be read as the client sees them.
    """
    if frames["encoding"] == "source":
        return read_source_frames(frames["source"])[0]
    if frames["encoding"] == "rgb24":
        shape = tuple(frames["shape"])
        return np.frombuffer(buffers[frames["buffers"][0]], dtype=np.uint8).reshape(shape)
    from PIL import Image

    decoded: list[np.ndarray] = []
    size = None
    for i, index in enumerate(frames["buffers"]):
        path = f"body.frames.buffers[{i}]"
        try:
            image = Image.open(io.BytesIO(bytes(buffers[index])))
            expected_format = "JPEG" if frames["encoding"] == "jpeg" else "PNG"
            if image.format != expected_format:
                raise MediaError(f"frame {i} is {image.format}, not {expected_format}", path)
            width, height = image.size
            if not (1 <= width <= MAX_FRAME_SIDE_PX and 1 <= height <= MAX_FRAME_SIDE_PX):
                raise MediaError(f"frame {i} is {width}x{height} px; each side must be 1.."
                                 f"{MAX_FRAME_SIDE_PX}", path)
            if size is None:
                size = (width, height)
                total = len(frames["buffers"]) * width * height * 3
                if total > MAX_RAW_FRAMES_BYTES:
                    raise MediaError(f"decoded frames would take {total} bytes; the limit is "
                                     f"{MAX_RAW_FRAMES_BYTES}", "body.frames")
            elif (width, height) != size:
                raise MediaError(f"frame {i} is {width}x{height} px but frame 0 is "
                                 f"{size[0]}x{size[1]}", path)
            decoded.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
        except MediaError:
            raise
        except Exception as exc:  # PIL raises many types on corrupt input
            raise MediaError(f"frame {i} does not decode as {frames['encoding']}: "
                             f"{type(exc).__name__}: {exc}", path) from None
    return np.stack(decoded)


def onset_hint_array(times_s: list[float], n_frames: int, frames_per_s: float) -> np.ndarray:
    """Per-latent-frame hints [n_frames]: 1.0 in the 40 ms frame holding each hint time."""
    hints = np.zeros(n_frames, np.float32)
    for t in times_s:
        hints[min(n_frames - 1, max(0, int(math.floor(t * frames_per_s))))] = 1.0
    return hints


def inpaint_source(inpaint: dict[str, Any], buffers: list[Any], duration_s: float,
                   sample_rate: int) -> np.ndarray:
    """Mono float32 [round(duration_s * sample_rate)]: resampled, zero-padded or cut."""
    audio = np.frombuffer(buffers[inpaint["buffer"]], dtype="<f4").astype(np.float32)
    if not np.isfinite(audio).all():
        raise MediaError("inpaint audio contains NaN or infinity", "body.inpaint.buffer")
    if inpaint["sample_rate"] != sample_rate:
        import soxr

        audio = soxr.resample(audio, inpaint["sample_rate"], sample_rate).astype(np.float32)
    n = round(duration_s * sample_rate)
    out = np.zeros(n, np.float32)
    out[: min(n, len(audio))] = audio[:n]
    return out


def prepare_inputs(pipe: Any, body: dict[str, Any], buffers: list[Any],
                   frames: np.ndarray | None = None) -> dict[str, Any]:
    """Keyword arguments for ``pipe(...)`` from a validated generate body (``frames``: the
    video frames when already read, e.g. from a source file)."""
    duration_s = float(body["duration_s"])
    if frames is None:
        frames = decode_frames(body["frames"], buffers)
    kwargs: dict[str, Any] = {
        "frames": frames,
        "frames_fps": float(body["frames"]["fps"]),
        "duration_s": duration_s,
        "caption": body["caption"],
        "negative_caption": body.get("negative_caption", ""),
        "seed": body.get("seed"),
        "num_inference_steps": body.get("steps"),
        "sampler": body.get("sampler", "dpmpp"),
        "num_variations": int(body.get("variations", 1)),
    }
    if body.get("guidance") is not None:
        kwargs["guidance_scale"] = float(body["guidance"])
    hints = body.get("onset_hints_s")
    if hints:
        n_frames = pipe.window_plan(duration_s).total_frames
        kwargs["onset_hints"] = onset_hint_array(hints, n_frames, float(pipe.latent_fps))
    inpaint = body.get("inpaint")
    if inpaint is not None:
        kwargs["inpaint_audio"] = inpaint_source(inpaint, buffers, duration_s,
                                                 int(pipe.sample_rate))
        kwargs["inpaint_range_s"] = (float(inpaint["start_s"]), float(inpaint["end_s"]))
        kwargs["inpaint_margin_s"] = INPAINT_MARGIN_S
    return kwargs


# ---- pipeline output -> result body -----------------------------------------------------


def build_result(output: Any, request: dict[str, Any], steps: int,
                 onset_rate_hz: float) -> tuple[dict[str, Any], list[Any]]:
    """The ``result`` body (``model_id`` left empty) and its audio buffers.

    Args:
        output: the pipeline output (audio [V, N] float32, onsets, seed, timings).
        request: the validated generate body.
        steps: denoising steps per window actually run.
        onset_rate_hz: frame rate of ``output.onset_probs`` (the model's latent rate).
    """
    audio = np.asarray(output.audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    sample_rate = int(output.sample_rate)
    encoding = request.get("audio_format", "pcm_f32le")
    buffers: list[Any] = []
    for take in audio:
        if encoding == "flac":
            import soundfile

            stream = io.BytesIO()
            soundfile.write(stream, np.clip(take, -1.0, 1.0), sample_rate, format="FLAC",
                            subtype="PCM_24")
            buffers.append(stream.getvalue())
        else:
            buffers.append(memoryview(np.ascontiguousarray(take, dtype="<f4")).cast("B"))
    duration_s = float(request["duration_s"])
    curve = np.clip(np.nan_to_num(np.asarray(output.onset_probs, np.float32)), 0.0, 1.0)
    times = [min(max(0.0, float(t)), MAX_DURATION_S, duration_s) for t in output.onset_times_s]
    probs = [min(max(0.0, float(p)), 1.0) if math.isfinite(p) else 0.0
             for p in output.onset_strengths]
    body = {
        "audio": {"encoding": encoding, "sample_rate": sample_rate, "channels": 1,
                  "samples": int(audio.shape[1]), "buffers": list(range(len(buffers)))},
        "duration_s": duration_s,
        "start_time_s": float(request["frames"].get("start_time_s", 0.0)),
        "onset_times_s": times,
        "onset_probabilities": probs,
        "onset_curve": {"rate_hz": float(onset_rate_hz), "values": [float(v) for v in curve]},
        "seed": int(output.seed),
        "steps": int(steps),
        "sampler": str(request.get("sampler", "dpmpp")),
        "guidance": float(getattr(output, "guidance_scale", request.get("guidance") or 0.0)),
        "model_id": "",
        "timings_s": {str(k)[:64]: float(v) for k, v in dict(output.timings_s).items()
                      if isinstance(v, (int, float)) and math.isfinite(v)},
        "warnings": [str(w)[:2000] for w in list(getattr(output, "warnings", []))[:16]],
    }
    return body, buffers


# ---- sync review: motion events, audio onsets, sync pictures ----------------------------


_REVIEW_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="v2a-review")


def frame_motion(frames: np.ndarray, frames_fps: float):
    """The visual motion events of the frames received, computed as AV-Align does."""
    from v2a_server.metrics import motion_events

    return motion_events(np.asarray(frames, dtype=np.uint8), float(frames_fps))


def add_review(body: dict[str, Any], buffers: list[Any], request: dict[str, Any],
               motion: Any, frames_fps: float, audio: Any, sample_rate: int) -> None:
    """Add the sync review data to a result body (in place).

    ``motion``: the visual motion events of the frames received (``frame_motion``);
    ``audio_onsets``: the librosa onsets of each generated take (as AA-Align detects them);
    with ``request.sync_picture`` also one PNG per take (``sync_picture.draw_sync_picture``),
    appended to ``buffers``.
    """
    from v2a_server.metrics import audio_onsets_waveform

    energy = np.nan_to_num(motion.energy, nan=0.0, posinf=0.0)
    duration_s = float(request["duration_s"])
    times = motion.times_s[motion.times_s <= duration_s]  # frames past the audio: no sound there
    event_frames = np.rint(times * frames_fps).astype(int)
    peak = float(energy.max()) if energy.size else 0.0
    strengths = energy[event_frames] / peak if peak > 0 else np.zeros(len(event_frames))
    body["motion"] = {
        "fps": float(frames_fps),
        "energy": [float(v) for v in energy],
        "times_s": [float(t) for t in times],
        "strengths": [float(min(max(v, 0.0), 1.0)) for v in strengths],
    }
    takes = np.asarray(audio, dtype=np.float32)
    if takes.ndim == 1:
        takes = takes[None]
    onsets = [audio_onsets_waveform(take, sample_rate) for take in takes]
    body["audio_onsets"] = [
        {"times_s": [min(float(t), duration_s) for t in found.times_s],
         "strengths": [float(v) for v in found.strengths]} for found in onsets]
    options = request.get("sync_picture")
    if not options:
        return
    from v2a_server.sync_picture import HEIGHT_PX, WIDTH_PX, SyncPictureData, draw_sync_picture

    first_buffer = len(buffers)
    for take, found in zip(takes, onsets):
        data = SyncPictureData(
            audio=take, sample_rate=sample_rate, motion_energy=energy, motion_fps=frames_fps,
            motion_events_s=body["motion"]["times_s"], marker_times_s=body["onset_times_s"],
            frame_rate=float(options["frame_rate"]), onset_envelope=found.envelope,
            onset_envelope_rate_hz=found.envelope_rate_hz,
            title=f"\u201c{request['caption'][:80]}\u201d \u2014 seed {body['seed']}")
        buffers.append(draw_sync_picture(data))
    body["sync_pictures"] = {"encoding": "png", "width_px": WIDTH_PX, "height_px": HEIGHT_PX,
                             "buffers": list(range(first_buffer, len(buffers)))}
