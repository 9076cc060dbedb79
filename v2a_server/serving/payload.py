"""A generate request's payload -> the pipeline's keyword arguments.

``prepare_inputs`` turns a validated ``generate`` body and its raw buffers into ``pipe(...)``
arguments: frames (JPEG/PNG/raw RGB decoded, or read from the movie a loopback client named),
caption and sampling settings, onset hints as a per-latent-frame array, the audio to keep
around an inpainted range, and a focus region applied to the frames (``focus_region``: the
model and the sync review then see the region's motion only). A payload that does not decode
raises ``MediaError`` naming the protocol field.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from foley_protocol.protocol import INPAINT_MARGIN_S, MAX_FRAME_SIDE_PX, MAX_RAW_FRAMES_BYTES
from v2a_server.serving.focus_region import focused_frames
from v2a_server.serving.source_frames import read_source_frames


class MediaError(ValueError):
    """A frame or audio payload that does not decode; carries the protocol field."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


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
    if body.get("focus_region") is not None:
        frames = focused_frames(frames, body["focus_region"], float(body["frames"]["fps"]))
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
        # Hints are markers, on the audible attack; the model learned hints at its onset
        # labels, its latency later (the same shift its markers were moved back by).
        latency_s = float(pipe.config.get("onset_latency_s", 0.0) or 0.0)
        kwargs["onset_hints"] = onset_hint_array([t + latency_s for t in hints], n_frames,
                                                 float(pipe.latent_fps))
    inpaint = body.get("inpaint")
    if inpaint is not None:
        kwargs["inpaint_audio"] = inpaint_source(inpaint, buffers, duration_s,
                                                 int(pipe.sample_rate))
        kwargs["inpaint_range_s"] = (float(inpaint["start_s"]), float(inpaint["end_s"]))
        kwargs["inpaint_margin_s"] = INPAINT_MARGIN_S
    return kwargs

