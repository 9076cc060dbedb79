"""Onset-alignment metrics of STA-V2A: AA-Align, AV-Align and onset precision / recall / F1.

Two families live here:

* **Reference versions** (``aa_align``, ``av_align``) reproduce the authors' ``EvalTools``
  numbers: an onset of the first list scores a hit when *any* event of the second list lies
  strictly within the tolerance, and ``score = hits / (N_a + N_b - hits)``. Several onsets may
  hit the same event, so ``hits`` can exceed ``N_b`` and the "IoU" can exceed 1.0: three
  generated onsets within 0.1 s of a single ground-truth onset give ``3 / (3 + 1 - 3) = 3.0``.
  Use these only to compare with published numbers.
* **One-to-one versions** (``aa_align_one_to_one``, ``av_align_one_to_one``, ``onset_prf``)
  pair each event at most once, using a maximum-cardinality matching (the optimal number of
  pairs, not a greedy-by-distance one), so the IoU is at most 1.0.

Audio events are librosa onsets detected exactly as the authors do (``librosa.load`` default:
mono, resampled to 22,050 Hz with ``soxr_hq``; ``onset_detect`` defaults). Visual events are
peaks of the mean Farneback optical-flow magnitude (``motion_events``); the server returns the
same events for frames a client sends.

Empty inputs, which make the authors' code divide by zero, are defined here: two empty lists
agree perfectly (1.0); one empty list against a non-empty one scores 0.0.

**Gated onsets** (``gate_onsets``; the ``*_gated`` scores of ``evaluate_clip``): librosa's
onset strength is normalised, so it finds as many "onsets" in a -60 dBFS noise floor as in a
soundtrack (30-40 per 4 s) and such a take scores a higher reference AA-Align than real
audio. A gated onset also needs audible energy around it: the RMS of the 100 ms centred on
it at least -50 dBFS (``pipelines.attacks.audible``: the near-silent test of a take,
``serving.result.NEAR_SILENT_DBFS``, applied to one onset; centred because librosa's onsets
come 0-45 ms after the attack, and a short click is over by then). The review uses gated onsets;
the ungated scores stay as the reference computes them.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np

from v2a_server.media.audio_io import load_container_audio
from v2a_server.media.files import existing_file

ONSET_SAMPLE_RATE = 22_050
"""Sample rate (Hz) of onset detection: ``librosa.load``'s default ``sr``."""

ONSET_GATE_LEAD_S = 0.05
"""A gated onset's 100 ms level window starts this long before it (centred on the onset)."""

ONSET_RES_TYPE = "soxr_hq"
"""Resampler of ``librosa.load``'s default ``res_type``."""

AA_ALIGN_TOLERANCE_S = 0.1
"""Half-width (s) of the AA-Align window: the authors' ``--tim_win``."""

FLOW_PEAK_THRESHOLD = 0.1
"""Flow maxima (pixels/frame, mean over the frame) at or below this are not visual events."""

FARNEBACK_ARGS = (0.5, 3, 15, 3, 5, 1.2, 0)
"""Farneback args: pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags."""


class MotionEvents(NamedTuple):
    """Visual motion of a frame sequence.

    Attributes:
        energy: ``[T]`` float64, mean optical-flow magnitude (pixels/frame) arriving at each
            frame; ``energy[0]`` repeats ``energy[1]`` (flow 0→1) so index i is frame i.
        times_s: ``[K]`` float64, event times in seconds (``i / fps`` of each peak frame).
    """

    energy: np.ndarray
    times_s: np.ndarray


class VideoMotion(NamedTuple):
    """``MotionEvents`` of a video file plus the frame rate its events were timed with."""

    energy: np.ndarray
    times_s: np.ndarray
    fps: float


class OnsetScores(NamedTuple):
    """Onset precision, recall and F1 of estimated onsets against reference onsets."""

    precision: float
    recall: float
    f1: float


# ---------------------------------------------------------------------------------------------
# Audio onsets
# ---------------------------------------------------------------------------------------------


def _onset_frames_22k(y: np.ndarray, length_s: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(onset strength envelope, onset frame indices) of a mono waveform at 22,050 Hz."""
    import librosa

    if length_s:
        y = y[: int(length_s * ONSET_SAMPLE_RATE)]
    onset_env = librosa.onset.onset_strength(y=y, sr=ONSET_SAMPLE_RATE)
    onset_frames = librosa.onset.onset_detect(onset_envelope=onset_env, sr=ONSET_SAMPLE_RATE)
    return onset_env, np.asarray(onset_frames, dtype=np.int64)


def _onsets_22k(y: np.ndarray, length_s: float | None) -> np.ndarray:
    """Onset times (s) of a mono float32 waveform already at 22,050 Hz (the authors' steps)."""
    import librosa

    _env, onset_frames = _onset_frames_22k(y, length_s)
    return np.asarray(librosa.frames_to_time(onset_frames, sr=ONSET_SAMPLE_RATE), dtype=np.float64)


def _resample_like_load(waveform: np.ndarray, sample_rate: float) -> np.ndarray:
    """``librosa.load`` after decoding: float32, mean over channels, soxr_hq to 22,050 Hz."""
    import librosa

    y = np.asarray(waveform)
    if y.dtype == np.int16 or y.dtype == np.int32:
        y = y.astype(np.float32) / np.float32(2 ** (8 * y.dtype.itemsize - 1))
    elif np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float32, copy=False)
    else:
        raise TypeError(f"waveform dtype {y.dtype} is not supported (float, int16 or int32)")
    if y.ndim not in (1, 2):
        raise ValueError(f"waveform must be [N] or [C, N], got shape {y.shape}")
    if y.ndim == 2 and y.shape[0] > y.shape[1]:
        raise ValueError(
            f"waveform shape {y.shape} has more channels than samples; pass [C, N] (channels first)"
        )
    if not sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    y = librosa.to_mono(np.ascontiguousarray(y))
    return librosa.resample(
        y, orig_sr=sample_rate, target_sr=ONSET_SAMPLE_RATE, res_type=ONSET_RES_TYPE
    )


def detect_onsets_waveform(
    waveform: np.ndarray, sample_rate: float, *, length_s: float | None = None
) -> np.ndarray:
    """Detect audio onsets in a waveform, exactly as ``detect_onsets`` would on its file.

    The waveform goes through the same steps as ``librosa.load`` (cast to float32, mean over
    channels, ``soxr_hq`` resampling to 22,050 Hz), so a waveform read from a file gives the
    same onsets as the file's path.

    Args:
        waveform: ``[N]`` or ``[C, N]`` (channels first, as librosa) samples. Float samples are
            used as they are (nominal range [-1, 1]); int16/int32 are scaled by 2**-15/2**-31
            as libsndfile does.
        sample_rate: Sample rate of ``waveform`` in Hz.
        length_s: If set, keep only the first ``length_s`` seconds (after resampling), like the
            authors' ``--length``.

    Returns:
        ``[K]`` float64 onset times in seconds, ascending.
    """
    return _onsets_22k(_resample_like_load(waveform, sample_rate), length_s)


class AudioOnsets(NamedTuple):
    """Audio onsets of a waveform with their strengths and the strength envelope.

    Attributes:
        times_s: ``[K]`` onset times (s), exactly ``detect_onsets_waveform``'s.
        strengths: ``[K]`` envelope value at each onset divided by the envelope's maximum (0..1).
        envelope: ``[F]`` librosa onset strength, one value per ``1 / envelope_rate_hz`` s.
        envelope_rate_hz: frames per second of ``envelope`` (22,050 / 512).
    """

    times_s: np.ndarray
    strengths: np.ndarray
    envelope: np.ndarray
    envelope_rate_hz: float


def audio_onsets_waveform(waveform: np.ndarray, sample_rate: float) -> AudioOnsets:
    """``detect_onsets_waveform`` plus each onset's strength and the strength envelope.

    Same steps as the metrics (``librosa.load``-like resampling, ``onset_detect`` defaults), so
    the times are the ones AA-Align and AV-Align score.
    """
    import librosa

    env, onset_frames = _onset_frames_22k(_resample_like_load(waveform, sample_rate), None)
    env = np.asarray(env, dtype=np.float64)
    peak = float(env.max()) if env.size else 0.0
    strengths = env[onset_frames] / peak if peak > 0 else np.zeros(len(onset_frames))
    times = np.asarray(librosa.frames_to_time(onset_frames, sr=ONSET_SAMPLE_RATE), np.float64)
    hop_length = 512  # librosa.onset.onset_strength's default
    return AudioOnsets(times, np.clip(strengths, 0.0, 1.0), env, ONSET_SAMPLE_RATE / hop_length)


def gate_onsets(times_s, waveform: np.ndarray, sample_rate: float) -> np.ndarray:
    """[K] bool: which onsets have audible energy around them: the RMS of the 100 ms centred
    on each at least -50 dBFS (``pipelines.attacks.audible``).

    Args:
        times_s: ``[K]`` onset times (s) of ``waveform``.
        waveform: ``[N]`` or ``[C, N]`` samples (float, nominal range [-1, 1]).
        sample_rate: Sample rate of ``waveform`` in Hz.
    """
    from v2a_server.pipelines.attacks import audible

    return audible(waveform, sample_rate, _as_times(times_s, "times_s"), ONSET_GATE_LEAD_S)


def gated_audio_onsets(found: AudioOnsets, waveform: np.ndarray, sample_rate: float
                       ) -> AudioOnsets:
    """``found`` (``audio_onsets_waveform`` of ``waveform``) without the onsets that have no
    audible energy around them (``gate_onsets``); the envelope is kept whole."""
    keep = gate_onsets(found.times_s, waveform, sample_rate)
    return found._replace(times_s=found.times_s[keep], strengths=found.strengths[keep])


def load_audio_for_onsets(path: str | os.PathLike) -> np.ndarray:
    """Load a file as the authors' onset detector sees it: mono float32 at 22,050 Hz.

    Plain audio files go through ``librosa.load(path)`` itself. Files soundfile cannot read
    (video containers such as .mp4) are decoded with PyAV and then mixed and resampled the way
    ``librosa.load`` would (the authors used extracted audio files there).

    Args:
        path: Audio file (wav, flac, ogg, ...) or a container with an audio stream.

    Returns:
        ``[N]`` float32 samples at ``ONSET_SAMPLE_RATE``.
    """
    import librosa
    import soundfile

    path = existing_file(path, "audio")
    try:
        soundfile.info(str(path))
    except Exception:  # noqa: BLE001 - any soundfile failure means "not a plain audio file"
        return _resample_like_load(*load_container_audio(path))
    try:
        y, _ = librosa.load(str(path))
    except Exception as exc:  # noqa: BLE001 - re-raised naming the file
        raise ValueError(f"cannot read audio from {path}: {exc}") from exc
    return y


def detect_onsets(path: str | os.PathLike, *, length_s: float | None = None) -> np.ndarray:
    """Detect audio onsets in a file as the authors' ``detect_audio_peaks`` does.

    ``librosa.load(path)`` (mono, 22,050 Hz, ``soxr_hq``) → ``onset_strength`` defaults →
    ``onset_detect`` defaults → ``frames_to_time`` (see ``load_audio_for_onsets`` for
    containers such as .mp4).

    Args:
        path: Audio file or a container with an audio stream.
        length_s: If set, keep only the first ``length_s`` seconds.

    Returns:
        ``[K]`` float64 onset times in seconds, ascending.
    """
    return _onsets_22k(load_audio_for_onsets(path), length_s)


# ---------------------------------------------------------------------------------------------
# Matching and IoU scores
# ---------------------------------------------------------------------------------------------


def _as_times(times_s, name: str) -> np.ndarray:
    times = np.asarray(times_s, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(times)):
        raise ValueError(f"{name} contains non-finite times")
    return times


def _any_hit_iou(candidates: np.ndarray, targets: np.ndarray, tolerance_s: float) -> float:
    """The authors' loop: a candidate hits when a target lies strictly within ±tolerance."""
    if len(candidates) == 0 and len(targets) == 0:
        return 1.0
    if len(candidates) == 0 or len(targets) == 0:
        return 0.0
    # Same comparison form as the reference (target - tol < candidate < target + tol), so the
    # floating-point boundary cases agree with it exactly.
    inside = (targets[None, :] - tolerance_s < candidates[:, None]) & (
        candidates[:, None] < targets[None, :] + tolerance_s
    )
    hits = int(np.count_nonzero(inside.any(axis=1)))
    return hits / (len(candidates) + len(targets) - hits)


def match_events(
    candidates_s, targets_s, tolerance_s: float, *, inclusive: bool = False
) -> list[tuple[int, int]]:
    """Pair candidates with targets one-to-one, maximising the number of pairs.

    A candidate ``c`` may pair with a target ``t`` when ``t - tol < c < t + tol`` (the
    reference metrics' strict window) or, with ``inclusive``, when ``c - tol <= t <= c + tol``
    (mir_eval's window). Every candidate's admissible targets form a contiguous run of the
    sorted targets whose ends never move left as the candidate grows, so scanning candidates in
    time order and taking the earliest free admissible target yields a maximum matching (same
    cardinality as mir_eval's Hopcroft-Karp) in O(n log n).

    Args:
        candidates_s: ``[N]`` event times (s), any order.
        targets_s: ``[M]`` event times (s), any order.
        tolerance_s: Half-width of the window in seconds.
        inclusive: Use ``<=`` (mir_eval) instead of the strict ``<`` of the reference metrics.

    Returns:
        ``(candidate_index, target_index)`` pairs into the given arrays, by candidate time.
    """
    candidates = _as_times(candidates_s, "candidates_s")
    targets = _as_times(targets_s, "targets_s")
    c_order = np.argsort(candidates, kind="stable")
    t_order = np.argsort(targets, kind="stable")
    pairs: list[tuple[int, int]] = []
    j = 0
    for ci in c_order:
        c = candidates[ci]
        # Skip targets too early for c: they are too early for every later candidate too.
        if inclusive:
            while j < len(t_order) and targets[t_order[j]] < c - tolerance_s:
                j += 1
            admissible = j < len(t_order) and targets[t_order[j]] <= c + tolerance_s
        else:
            while j < len(t_order) and not c < targets[t_order[j]] + tolerance_s:
                j += 1
            admissible = j < len(t_order) and targets[t_order[j]] - tolerance_s < c
        if admissible:
            pairs.append((int(ci), int(t_order[j])))
            j += 1
    return pairs


def _one_to_one_iou(candidates: np.ndarray, targets: np.ndarray, tolerance_s: float) -> float:
    if len(candidates) == 0 and len(targets) == 0:
        return 1.0
    matched = len(match_events(candidates, targets, tolerance_s))
    return matched / (len(candidates) + len(targets) - matched)


def aa_align(
    reference_onsets_s, generated_onsets_s, *, tolerance_s: float = AA_ALIGN_TOLERANCE_S
) -> float:
    """AA-Align as the authors compute it (``EvalTools/aa_align.py``); can exceed 1.0.

    For each generated onset, count 1 if some reference (ground-truth) onset lies strictly
    within ±``tolerance_s``; ``score = hits / (N_gen + N_ref - hits)``. The matching is not
    one-to-one: three generated onsets within the window of one reference onset give
    ``3 / (3 + 1 - 3) = 3.0``. Both lists empty → 1.0 (the authors divide by zero); exactly
    one empty → 0.0.

    Args:
        reference_onsets_s: ``[N_ref]`` ground-truth onset times (s).
        generated_onsets_s: ``[N_gen]`` generated onset times (s).
        tolerance_s: Half-width of the window (the authors' ``--tim_win``, 0.1 s).

    Returns:
        The reference-compatible score, >= 0 and possibly > 1.
    """
    return _any_hit_iou(
        _as_times(generated_onsets_s, "generated_onsets_s"),
        _as_times(reference_onsets_s, "reference_onsets_s"),
        tolerance_s,
    )


def aa_align_one_to_one(
    reference_onsets_s, generated_onsets_s, *, tolerance_s: float = AA_ALIGN_TOLERANCE_S
) -> float:
    """AA-Align with each onset used at most once: a true IoU in [0, 1].

    ``matched / (N_gen + N_ref - matched)`` where ``matched`` is the size of a maximum
    one-to-one matching under the same strict ±``tolerance_s`` window (``match_events``). It
    equals ``aa_align`` whenever no two generated onsets compete for one reference onset.
    Both lists empty → 1.0; exactly one empty → 0.0.

    Args:
        reference_onsets_s: ``[N_ref]`` ground-truth onset times (s).
        generated_onsets_s: ``[N_gen]`` generated onset times (s).
        tolerance_s: Half-width of the window in seconds.

    Returns:
        The score in [0, 1].
    """
    return _one_to_one_iou(
        _as_times(generated_onsets_s, "generated_onsets_s"),
        _as_times(reference_onsets_s, "reference_onsets_s"),
        tolerance_s,
    )


def onset_prf(
    reference_onsets_s, estimated_onsets_s, *, tolerance_s: float = AA_ALIGN_TOLERANCE_S
) -> OnsetScores:
    """Onset precision, recall and F1 with one-to-one matching, as ``mir_eval.onset.f_measure``.

    Pairs are a maximum matching with ``|estimated - reference| <= tolerance_s`` (inclusive,
    like mir_eval; note mir_eval's default window is 0.05 s, ours 0.1 s to match AA-Align).
    ``precision = matched / N_est``, ``recall = matched / N_ref``, ``f1`` their harmonic mean
    (0 when both are 0). Exactly one list empty → all 0.0 (as mir_eval); both empty → all 1.0
    (mir_eval returns 0.0 there; two silent tracks agree).

    Args:
        reference_onsets_s: ``[N_ref]`` ground-truth onset times (s).
        estimated_onsets_s: ``[N_est]`` generated onset times (s).
        tolerance_s: Half-width of the window in seconds.

    Returns:
        ``OnsetScores(precision, recall, f1)``.
    """
    reference = _as_times(reference_onsets_s, "reference_onsets_s")
    estimated = _as_times(estimated_onsets_s, "estimated_onsets_s")
    if len(reference) == 0 and len(estimated) == 0:
        return OnsetScores(1.0, 1.0, 1.0)
    if len(reference) == 0 or len(estimated) == 0:
        return OnsetScores(0.0, 0.0, 0.0)
    matched = len(match_events(estimated, reference, tolerance_s, inclusive=True))
    precision = matched / len(estimated)
    recall = matched / len(reference)
    f1 = 0.0 if matched == 0 else 2 * precision * recall / (precision + recall)
    return OnsetScores(precision, recall, f1)


def av_align(audio_onsets_s, video_events_s, fps: float) -> float:
    """AV-Align as the authors compute it (``EvalTools/av_align.py``); can exceed 1.0.

    For each audio onset, count 1 if some visual event lies strictly within ±1/``fps``;
    ``IoU = hits / (N_audio + N_video - hits)``. Not one-to-one, so several audio onsets near
    one visual event can push it above 1 (3 onsets, 1 event → 3.0). Both lists empty → 1.0;
    exactly one empty → 0.0.

    Args:
        audio_onsets_s: ``[N_audio]`` onset times (s) of the (generated) audio.
        video_events_s: ``[N_video]`` visual event times (s), e.g. ``motion_events(...).times_s``.
        fps: Frame rate of the video in frames/s; the window is one frame each side.

    Returns:
        The reference-compatible score, >= 0 and possibly > 1.
    """
    if not fps or fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return _any_hit_iou(
        _as_times(audio_onsets_s, "audio_onsets_s"),
        _as_times(video_events_s, "video_events_s"),
        1 / fps,
    )


def av_align_one_to_one(audio_onsets_s, video_events_s, fps: float) -> float:
    """AV-Align with each onset and each visual event used at most once: an IoU in [0, 1].

    Same strict ±1/``fps`` window as ``av_align``, with a maximum one-to-one matching
    (``match_events``). Both lists empty → 1.0; exactly one empty → 0.0.

    Args:
        audio_onsets_s: ``[N_audio]`` onset times (s).
        video_events_s: ``[N_video]`` visual event times (s).
        fps: Frame rate of the video in frames/s.

    Returns:
        The score in [0, 1].
    """
    if not fps or fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return _one_to_one_iou(
        _as_times(audio_onsets_s, "audio_onsets_s"),
        _as_times(video_events_s, "video_events_s"),
        1 / fps,
    )


# ---------------------------------------------------------------------------------------------
# Visual motion events
# ---------------------------------------------------------------------------------------------


def _flow_magnitude(prev_gray: np.ndarray, next_gray: np.ndarray) -> float:
    """Mean Farneback flow magnitude (pixels/frame) over all pixels of one frame pair."""
    import cv2

    flow = cv2.calcOpticalFlowFarneback(prev_gray, next_gray, None, *FARNEBACK_ARGS)
    magnitude = cv2.magnitude(flow[..., 0], flow[..., 1])
    # cv2.mean accumulates in double; np.mean on float32 would differ in the last bits.
    return float(cv2.mean(magnitude)[0])


def flow_peaks(energy, fps: float, *, threshold: float = FLOW_PEAK_THRESHOLD) -> np.ndarray:
    """Visual event times: strict local maxima of the motion energy above ``threshold``.

    Frame ``i`` (1 <= i <= T-2) is an event when ``energy[i-1] < energy[i] > energy[i+1]`` and
    ``energy[i] > threshold``; the first and last frames never are. Because ``energy[0]``
    repeats ``energy[1]``, frame 1 cannot be an event either (as in the reference).

    Args:
        energy: ``[T]`` motion energy per frame (pixels/frame).
        fps: Frame rate in frames/s.
        threshold: Minimum peak value, exclusive.

    Returns:
        ``[K]`` float64 event times ``i / fps`` in seconds.
    """
    if not fps or fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    e = np.asarray(energy, dtype=np.float64).reshape(-1)
    if len(e) < 3:
        return np.zeros(0, dtype=np.float64)
    mid = e[1:-1]
    index = np.flatnonzero((e[:-2] < mid) & (mid > e[2:]) & (mid > threshold)) + 1
    return index / float(fps)


def _to_gray(frame: np.ndarray, channel_order: str) -> np.ndarray:
    import cv2

    if frame.ndim == 2:
        return frame
    code = cv2.COLOR_RGB2GRAY if channel_order == "rgb" else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(frame, code)


def _energy_from_pair_values(values: list[float], n_frames: int) -> np.ndarray:
    if n_frames < 2:
        return np.zeros(n_frames, dtype=np.float64)
    return np.asarray([values[0], *values], dtype=np.float64)


def motion_events(frames: np.ndarray, fps: float, *, channel_order: str = "rgb") -> MotionEvents:
    """Motion energy and visual events of a frame sequence, computed as AV-Align does.

    Each consecutive pair of grayscale frames gets the mean magnitude of its Farneback flow
    (pyr_scale 0.5, levels 3, winsize 15, iterations 3, poly_n 5, poly_sigma 1.2, flags 0);
    the curve is prefixed with flow(0→1) so ``energy[i]`` belongs to frame i; events are
    ``flow_peaks(energy, fps)``. Feed full-resolution frames at the native rate to reproduce
    the reference; other sizes/rates change the flow values. OpenCV's threaded Farneback
    repeats itself only to about 1e-12, so compare energies with a tolerance, not equality.

    Args:
        frames: ``[T, H, W]`` grayscale or ``[T, H, W, 3]`` colour frames, uint8.
        fps: Frame rate in frames/s.
        channel_order: ``"rgb"`` (decoders such as PyAV, the wire protocol) or ``"bgr"``
            (OpenCV) for colour frames; ignored for grayscale.

    Returns:
        ``MotionEvents(energy [T] float64, times_s [K] float64)``. Fewer than 2 frames give
        zero energy and no events (the reference fails there).
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise TypeError(f"frames must be uint8, got {frames.dtype}")
    if not (frames.ndim == 3 or (frames.ndim == 4 and frames.shape[-1] == 3)):
        raise ValueError(f"frames must be [T, H, W] or [T, H, W, 3], got shape {frames.shape}")
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if not fps or fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    values = []
    prev = None
    for frame in frames:
        gray = _to_gray(np.ascontiguousarray(frame), channel_order)
        if prev is not None:
            values.append(_flow_magnitude(prev, gray))
        prev = gray
    energy = _energy_from_pair_values(values, len(frames))
    return MotionEvents(energy, flow_peaks(energy, fps))


def video_motion_events(path: str | os.PathLike) -> VideoMotion:
    """``motion_events`` of a video file read as AV-Align reads it.

    OpenCV ``VideoCapture`` at the container's fps (``CAP_PROP_FPS``), every frame, full
    resolution, BGR → grayscale. Frames are processed as a stream (two in memory at a time).

    Args:
        path: Video file.

    Returns:
        ``VideoMotion(energy [T], times_s [K], fps)``.
    """
    import cv2

    path = existing_file(path, "video")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError(f"cannot open video {path}")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        if not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"video {path} reports an unusable frame rate {fps}")
        values: list[float] = []
        prev = None
        n_frames = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            n_frames += 1
            gray = _to_gray(frame, "bgr")
            if prev is not None:
                values.append(_flow_magnitude(prev, gray))
            prev = gray
    finally:
        cap.release()
    if n_frames == 0:
        raise ValueError(f"cannot read any frame from video {path}")
    energy = _energy_from_pair_values(values, n_frames)
    return VideoMotion(energy, flow_peaks(energy, fps), fps)


# ---------------------------------------------------------------------------------------------
# One clip, every metric its inputs allow
# ---------------------------------------------------------------------------------------------


def evaluate_clip(
    *,
    generated_audio: str | os.PathLike | None = None,
    reference_audio: str | os.PathLike | None = None,
    video: str | os.PathLike | None = None,
    tolerance_s: float = AA_ALIGN_TOLERANCE_S,
    length_s: float | None = None,
) -> dict[str, float | int]:
    """Every metric that the given inputs allow, for one clip.

    * generated + reference audio: ``aa_align``, ``aa_align_one_to_one``, ``onset_precision``,
      ``onset_recall``, ``onset_f1`` (generated judged against reference).
    * generated audio + video: ``av_align``, ``av_align_one_to_one``.
    * reference audio + video: ``av_align_reference``, ``av_align_reference_one_to_one`` (how
      well the real soundtrack itself aligns: a ceiling for the generated one).
    Each has a ``*_gated`` twin computed on gated onsets (``gate_onsets``: an onset needs
    audible energy around it) of both audios; the plain ones are the reference's. Counts
    ``n_onsets_generated``, ``n_onsets_reference`` (and their ``*_gated``),
    ``n_video_events`` and ``fps`` come with them.

    Args:
        generated_audio: Generated audio file (or container with audio).
        reference_audio: Ground-truth audio file (or container with audio, e.g. the source .mp4).
        video: Video file whose frames are judged.
        tolerance_s: AA-Align / onset-F1 window half-width in seconds.
        length_s: If set, audio-vs-audio metrics use only the first ``length_s`` seconds (the
            authors' ``--length``); AV-Align always uses the whole audio, as the reference.

    Returns:
        ``{metric name: value}``; metrics the inputs do not allow are absent.
    """
    out: dict[str, float | int] = {}
    gen_y = load_audio_for_onsets(generated_audio) if generated_audio else None
    ref_y = load_audio_for_onsets(reference_audio) if reference_audio else None

    def onsets(y: np.ndarray | None, length: float | None) -> dict[str, np.ndarray] | None:
        if y is None:
            return None
        times = _onsets_22k(y, length)
        return {"": times, "_gated": times[gate_onsets(times, y, ONSET_SAMPLE_RATE)]}

    gen, ref = onsets(gen_y, None), onsets(ref_y, None)
    for gated in ("", "_gated"):
        if gen is not None:
            out[f"n_onsets_generated{gated}"] = len(gen[gated])
        if ref is not None:
            out[f"n_onsets_reference{gated}"] = len(ref[gated])
    if gen is not None and ref is not None:
        gen_cut = onsets(gen_y, length_s) if length_s else gen
        ref_cut = onsets(ref_y, length_s) if length_s else ref
        for gated in ("", "_gated"):
            g, r = gen_cut[gated], ref_cut[gated]
            out[f"aa_align{gated}"] = aa_align(r, g, tolerance_s=tolerance_s)
            out[f"aa_align_one_to_one{gated}"] = aa_align_one_to_one(r, g, tolerance_s=tolerance_s)
            scores = onset_prf(r, g, tolerance_s=tolerance_s)
            out[f"onset_precision{gated}"] = scores.precision
            out[f"onset_recall{gated}"] = scores.recall
            out[f"onset_f1{gated}"] = scores.f1
    if video:
        motion = video_motion_events(video)
        out["n_video_events"] = len(motion.times_s)
        out["fps"] = motion.fps
        for gated in ("", "_gated"):
            if gen is not None:
                out[f"av_align{gated}"] = av_align(gen[gated], motion.times_s, motion.fps)
                out[f"av_align_one_to_one{gated}"] = av_align_one_to_one(
                    gen[gated], motion.times_s, motion.fps)
            if ref is not None:
                out[f"av_align_reference{gated}"] = av_align(ref[gated], motion.times_s,
                                                             motion.fps)
                out[f"av_align_reference_one_to_one{gated}"] = av_align_one_to_one(
                    ref[gated], motion.times_s, motion.fps)
    return out
