"""The pipeline's output -> a ``result`` body: audio buffers, levels, onsets and review data.

``build_result`` encodes each take (raw float32 or FLAC) and copies the onsets, seed and
timings into the body; it also measures each take's level (``take_level``) and flags a
near-silent take, with a warning naming the model's scope; ``add_review`` adds the frames'
motion events and contact events (``frame_motion``, run on the review thread beside the
generation), each take's audio onsets and, when asked, one sync picture per take.
"""

from __future__ import annotations

import io
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from foley_protocol.protocol import MAX_DURATION_S, MAX_LEVEL_DBFS, MIN_LEVEL_DBFS
from v2a_server.model_card import ModelCard

# ---- take levels: is a take near-silent? ------------------------------------------------

LEVEL_WINDOW_S = 0.1  # a take's loudness is that of its loudest window this long
# A take whose loudest window is below this is near-silent: the model made only its noise
# floor. Measured with the default model (bench/take_levels.py; docs/default-model.md,
# "Scope, and near-silent takes"): its noise-floor takes on real clips peak at -59.1 to -60.1
# dBFS (the synthetic world's -60 dBFS floor); its quietest take with any sound at -42.1; on
# its own synthetic world its takes at -28.6 to -31.0; the clips' real soundtracks at -11.5
# to -16.4 (their quietest 4 s included). -50 lies 9 dB above the floor and 8 dB below the
# quietest sound; the quietest real soundtrack would have to be 33 dB quieter to be flagged.
NEAR_SILENT_DBFS = -50.0
NO_CARD = ModelCard()  # a model folder that says nothing of itself


@dataclass(frozen=True)
class TakeLevel:
    """One take's level, in dBFS (full scale = 1.0; digital silence reads ``MIN_LEVEL_DBFS``)."""

    rms_dbfs: float  # the whole take
    peak_dbfs: float  # the largest sample
    loudest_dbfs: float  # rms of the loudest LEVEL_WINDOW_S window
    near_silent: bool  # loudest_dbfs < NEAR_SILENT_DBFS


def dbfs(amplitude: float) -> float:
    """20 log10(amplitude), within the protocol's [MIN_LEVEL_DBFS, MAX_LEVEL_DBFS]."""
    floor = 10.0 ** (MIN_LEVEL_DBFS / 20.0)
    return min(20.0 * math.log10(max(float(amplitude), floor)), MAX_LEVEL_DBFS)


def take_level(take: Any, sample_rate: int) -> TakeLevel:
    """The level of one mono take (float samples, nominally in [-1, 1])."""
    x = np.nan_to_num(np.asarray(take, dtype=np.float64).reshape(-1))
    if x.size == 0:
        return TakeLevel(MIN_LEVEL_DBFS, MIN_LEVEL_DBFS, MIN_LEVEL_DBFS, True)
    window = max(1, min(x.size, round(LEVEL_WINDOW_S * sample_rate)))
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    window_ms = (energy[window:] - energy[:-window]) / window  # mean square of each window
    loudest = dbfs(math.sqrt(max(float(window_ms.max()), 0.0)))
    return TakeLevel(rms_dbfs=dbfs(math.sqrt(float(energy[-1]) / x.size)),
                     peak_dbfs=dbfs(float(np.abs(x).max())), loudest_dbfs=loudest,
                     near_silent=loudest < NEAR_SILENT_DBFS)


def near_silent_warning(levels: list[TakeLevel], card: ModelCard) -> str | None:
    """What to tell the editor about the near-silent takes among ``levels`` (None: none is):
    which takes, how loud, the model's scope and its card's advice."""
    silent = [i for i, level in enumerate(levels) if level.near_silent]
    if not silent:
        return None
    loudest = max(levels[i].loudest_dbfs for i in silent)
    if len(levels) == 1:
        which = "the take is"
    else:
        which = (f"take{'s' if len(silent) > 1 else ''} "
                 f"{', '.join(str(i + 1) for i in silent)} of {len(levels)} "
                 f"{'are' if len(silent) > 1 else 'is'}")
    text = (f"{which} near-silent (loudest {LEVEL_WINDOW_S * 1000:.0f} ms at {loudest:.0f} "
            f"dBFS): the model heard nothing it knows in this picture")
    if card.scope:
        text += f" (it knows {card.scope})"
    if card.when_silent:
        text += f": {card.when_silent}"
    return text


def build_result(output: Any, request: dict[str, Any], steps: int, onset_rate_hz: float,
                 card: ModelCard = NO_CARD) -> tuple[dict[str, Any], list[Any]]:
    """The ``result`` body (``model_id`` left empty) and its audio buffers.

    Args:
        output: the pipeline output (audio [V, N] float32, onsets, seed, timings).
        request: the validated generate body.
        steps: denoising steps per window actually run.
        onset_rate_hz: frame rate of ``output.onset_probs`` (the model's latent rate).
        card: the model's card: its scope and advice go into a near-silent take's warning.
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
    levels = [take_level(take, sample_rate) for take in audio]
    body["audio_levels"] = [
        {"rms_dbfs": level.rms_dbfs, "peak_dbfs": level.peak_dbfs,
         "loudest_dbfs": level.loudest_dbfs, "near_silent": level.near_silent}
        for level in levels]
    warning = near_silent_warning(levels, card)
    if warning is not None:  # in warnings too: every client, of any version, shows it
        body["warnings"] = (body["warnings"] + [warning[:2000]])[-16:]
    return body, buffers


# ---- sync review: motion events, audio onsets, sync pictures ----------------------------


REVIEW_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="v2a-review")


def frame_motion_soon(frames: np.ndarray, frames_fps: float) -> Future:
    """``frame_motion`` on the review thread: the motion events need only the frames, so they
    are computed beside the generation (OpenCV releases the GIL)."""
    return REVIEW_POOL.submit(frame_motion, frames, frames_fps)


class FrameMotion(NamedTuple):
    """What the review needs of the frames: AV-Align's motion (``energy``, ``times_s``, as
    ``metrics.MotionEvents``) and the contact events (``contacts.ContactEvents``)."""

    energy: np.ndarray
    times_s: np.ndarray
    contacts: Any


def frame_motion(frames: np.ndarray, frames_fps: float) -> FrameMotion:
    """The motion events of the frames received (computed as AV-Align does) and their visual
    contact events (``evaluation.contacts``)."""
    from v2a_server.evaluation.contacts import contact_events
    from v2a_server.evaluation.metrics import motion_events

    frames = np.asarray(frames, dtype=np.uint8)
    motion = motion_events(frames, float(frames_fps))
    return FrameMotion(motion.energy, motion.times_s, contact_events(frames, float(frames_fps)))


def add_review(body: dict[str, Any], buffers: list[Any], request: dict[str, Any],
               motion: Any, frames_fps: float, audio: Any, sample_rate: int) -> list[Any]:
    """Add the sync review data to a result body (in place); returns what each take's sync
    picture shows (``SyncPictureData``, one per take), so that it can be redrawn later with
    other markers (``v2a_server.serving.review``).

    ``motion``: the visual motion events of the frames received (``frame_motion``);
    ``contacts``: their contact events (when ``motion`` has them: ``FrameMotion``), the events
    the review pairs onsets with;
    ``audio_onsets``: the librosa onsets of each generated take (as AA-Align detects them)
    that have audible energy around them (``metrics.gated_audio_onsets``: a noise floor's
    "onsets" are not sounds to review);
    with ``request.sync_picture`` also one PNG per take
    (``evaluation.sync_picture.draw_sync_picture``), appended to ``buffers``.
    """
    from v2a_server.evaluation.metrics import audio_onsets_waveform, gated_audio_onsets
    from v2a_server.evaluation.sync_picture import (
        HEIGHT_PX,
        WIDTH_PX,
        SyncPictureData,
        draw_sync_picture,
    )

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
    contacts = getattr(motion, "contacts", None)
    if contacts is not None:
        inside = contacts.times_s <= duration_s
        body["contacts"] = {
            "times_s": [float(t) for t in contacts.times_s[inside]],
            "strengths": [float(min(max(v, 0.0), 1.0)) for v in contacts.strengths[inside]],
        }
    takes = np.asarray(audio, dtype=np.float32)
    if takes.ndim == 1:
        takes = takes[None]
    onsets = [gated_audio_onsets(audio_onsets_waveform(take, sample_rate), take, sample_rate)
              for take in takes]
    body["audio_onsets"] = [
        {"times_s": [min(float(t), duration_s) for t in found.times_s],
         "strengths": [float(v) for v in found.strengths]} for found in onsets]
    options = request.get("sync_picture")
    pictures = [
        SyncPictureData(
            audio=take, sample_rate=sample_rate, motion_energy=energy, motion_fps=frames_fps,
            motion_events_s=body["motion"]["times_s"], marker_times_s=body["onset_times_s"],
            frame_rate=float(options["frame_rate"]) if options else float(frames_fps),
            onset_envelope=found.envelope, onset_envelope_rate_hz=found.envelope_rate_hz,
            contacts_s=body["contacts"]["times_s"] if "contacts" in body else None,
            contact_strengths=body.get("contacts", {}).get("strengths", []),
            title=f"\u201c{request['caption'][:80]}\u201d \u2014 seed {body['seed']}")
        for take, found in zip(takes, onsets)]
    if not options:
        return pictures
    first_buffer = len(buffers)
    for data in pictures:
        buffers.append(draw_sync_picture(data))
    body["sync_pictures"] = {"encoding": "png", "width_px": WIDTH_PX, "height_px": HEIGHT_PX,
                             "buffers": list(range(first_buffer, len(buffers)))}
    return pictures
