"""The audible attack of a transient in a waveform, and onset markers moved onto it.

**Attack** (one definition, used by the pipeline's markers and the bench that measures them;
the review's gated onsets use its level test): with ``E(t)`` the RMS of the waveform over
the ``ENVELOPE_WINDOW_S`` (10 ms) *ending* at ``t``, a transient is a peak of ``E`` that is
the largest value from ``RISE_MAX_S`` before it to ``HOLD_S`` after it and that ``E`` rose to
from below ``ATTACK_FRACTION`` (30 %, -10.5 dB) of it within those ``RISE_MAX_S``; its attack
is the time at which ``E`` last rose through ``ATTACK_FRACTION`` of the peak before the peak
(linearly interpolated between envelope frames). It is **audible** when the RMS of the
``LEVEL_WINDOW_S`` (100 ms) starting ``LEVEL_LEAD_S`` before the attack is at least
``AUDIBLE_DBFS`` (-50 dBFS).

Why these numbers: a trailing 10 ms window spans one period of the 100 Hz ripple the default
model's vocoder leaves in its noise floor (a 4 ms window swings between -73 and -56 dBFS
there) and puts the crossing of a sudden onset 0.9 ms after it (30 %² of 10 ms); 30 % of an
audible transient's peak lies at or above the -60 dBFS floor. The level test is
``serving.result``'s near-silent test (loudest 100 ms below -50 dBFS) applied to the 100 ms
around one attack: a near-silent take has no audible attack, and a take's noise floor
(-60 dBFS for the default model) never passes it. A sound already playing at the first sample
has no attack there: ``E`` does not rise, so the first frames get a marker only when a sound
starts in them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

ENVELOPE_WINDOW_S = 0.010
ENVELOPE_HOP_S = 0.001  # the envelope is read every 1 ms
ATTACK_FRACTION = 0.3
RISE_MAX_S = 0.050  # an attack rises to its peak within this
HOLD_S = 0.020  # a peak is the largest value this long after it too
LEVEL_WINDOW_S = 0.100  # as serving.result.LEVEL_WINDOW_S
LEVEL_LEAD_S = 0.010
AUDIBLE_DBFS = -50.0  # as serving.result.NEAR_SILENT_DBFS (tests check they agree)
SNAP_WINDOW_S = 0.060  # a marker moves onto an attack at most this far away
SWELL_DB = 3.0  # a marker without an attack stays where the sound swells this much


class Attacks(NamedTuple):
    """The audible attacks of one waveform, in time order.

    Attributes:
        times_s: ``[K]`` attack times (s).
        peaks_dbfs: ``[K]`` each transient's peak envelope level (dBFS).
        levels_dbfs: ``[K]`` RMS of the 100 ms around each attack (dBFS), all >= AUDIBLE_DBFS.
    """

    times_s: np.ndarray
    peaks_dbfs: np.ndarray
    levels_dbfs: np.ndarray


def _mono(waveform, sample_rate: float) -> np.ndarray:
    if not sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    x = np.asarray(waveform, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"waveform must be [N] or [C, N], got shape {np.shape(waveform)}")
    return np.nan_to_num(x)


def _dbfs(amplitude: float) -> float:
    return 20.0 * math.log10(max(float(amplitude), 1e-6))


def window_level_dbfs(waveform, sample_rate: float, start_s, length_s: float = LEVEL_WINDOW_S
                      ) -> np.ndarray:
    """RMS (dBFS) of the ``length_s`` window starting at each of ``start_s`` (clipped to the
    waveform; a window wholly outside it reads -120)."""
    x = _mono(waveform, sample_rate)
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    starts = np.atleast_1d(np.asarray(start_s, dtype=np.float64))
    lo = np.clip(np.round(starts * sample_rate).astype(np.int64), 0, x.size)
    hi = np.clip(lo + max(1, round(length_s * sample_rate)), 0, x.size)
    mean_square = (energy[hi] - energy[lo]) / np.maximum(hi - lo, 1)
    return 20.0 * np.log10(np.maximum(np.sqrt(np.maximum(mean_square, 0.0)), 1e-6))


def audible(waveform, sample_rate: float, times_s, lead_s: float = LEVEL_LEAD_S) -> np.ndarray:
    """[K] bool: whether each time has audible energy around it: the RMS of the 100 ms from
    ``lead_s`` before it is at least ``AUDIBLE_DBFS`` (the near-silent test of one take,
    applied to one onset)."""
    times = np.asarray(times_s, dtype=np.float64).reshape(-1)
    if times.size == 0:
        return np.zeros(0, dtype=bool)
    return window_level_dbfs(waveform, sample_rate, times - lead_s) >= AUDIBLE_DBFS


def envelope(waveform, sample_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """(``E``, its frame times in s): the RMS of the 10 ms ending at each frame, one frame per
    1 ms from the first full window (t = 10 ms) on. Before it a window would reach outside the
    take, where nothing is known: a sound cut at the first sample must not read as a rise."""
    x = _mono(waveform, sample_rate)
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    width = max(1, round(ENVELOPE_WINDOW_S * sample_rate))
    hop = ENVELOPE_HOP_S * sample_rate
    ends = np.round(width + np.arange(max(0, int((x.size - width) / hop) + 1)) * hop)
    ends = np.minimum(ends.astype(np.int64), x.size)
    mean_square = (energy[ends] - energy[ends - width]) / width
    return np.sqrt(np.maximum(mean_square, 0.0)), ends / float(sample_rate)


def find_attacks(waveform, sample_rate: float) -> Attacks:
    """Every audible attack of a mono (or ``[C, N]``, averaged) waveform, as defined above."""
    env, frame_times = envelope(waveform, sample_rate)
    rise, hold = round(RISE_MAX_S / ENVELOPE_HOP_S), round(HOLD_S / ENVELOPE_HOP_S)
    n = env.size
    if n < 2:
        return Attacks(np.zeros(0), np.zeros(0), np.zeros(0))
    padded = np.concatenate([np.full(rise, -np.inf), env, np.full(hold, -np.inf)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, rise + hold + 1)
    # a peak: the largest value over [i - rise, i + hold]; on a plateau, its first frame
    is_peak = (env > 0) & (env >= windows.max(axis=1))
    before = np.concatenate([np.full(rise, np.inf), env])
    before_min = np.lib.stride_tricks.sliding_window_view(before, rise + 1).min(axis=1)
    candidates = np.flatnonzero(is_peak & (before_min < ATTACK_FRACTION * env))
    times, peaks = [], []
    last_peak = -1
    for p in candidates:
        if p - last_peak <= hold and last_peak >= 0:
            continue  # the same plateau or its ripple
        last_peak = p
        level = ATTACK_FRACTION * env[p]
        below = np.flatnonzero(env[max(0, p - rise):p] < level)
        j = max(0, p - rise) + int(below[-1])  # last frame below, then j + 1 is at or above
        fraction = (level - env[j]) / max(env[j + 1] - env[j], 1e-12)
        times.append(frame_times[j] + min(max(fraction, 0.0), 1.0) * ENVELOPE_HOP_S)
        peaks.append(_dbfs(env[p]))
    times_s = np.asarray(times, dtype=np.float64)
    levels = window_level_dbfs(waveform, sample_rate, times_s - LEVEL_LEAD_S)
    heard = levels >= AUDIBLE_DBFS
    return Attacks(times_s[heard], np.asarray(peaks, np.float64)[heard], levels[heard])


def snap_to_attacks(marker_times_s, attack_times_s, window_s: float = SNAP_WINDOW_S
                    ) -> list[float | None]:
    """Each marker moved onto the attack nearest to it within ±``window_s``; None for a marker
    with no attack there. One attack takes one marker: where two markers want the same attack,
    the nearer gets it and the other takes its next nearest free attack in its window (or
    None)."""
    markers = np.asarray(marker_times_s, dtype=np.float64).reshape(-1)
    attacks = np.asarray(attack_times_s, dtype=np.float64).reshape(-1)
    out: list[float | None] = [None] * markers.size
    if markers.size == 0 or attacks.size == 0:
        return out
    distance = np.abs(markers[:, None] - attacks[None, :])
    pairs = sorted((float(distance[i, j]), i, j) for i, j in zip(*np.nonzero(distance <= window_s)))
    taken: set[int] = set()
    for _, i, j in pairs:  # nearest pairs first: greedy by distance
        if out[i] is None and j not in taken:
            out[i] = float(attacks[j])
            taken.add(j)
    return out


def has_sound(waveform, sample_rate: float, time_s: float, window_s: float = SNAP_WINDOW_S
              ) -> bool:
    """Whether a sound is heard at ``time_s`` without a clean attack: the 100 ms from
    ``LEVEL_LEAD_S`` before it are audible and the envelope swells by ``SWELL_DB`` or more
    within ±``window_s`` (its maximum there over the minimum before that maximum). A hit in
    a sustained sound (a bounce in a roll) rises only a few dB; a sound already playing at the
    first sample, or a steady one, does not swell."""
    return bool(audible(waveform, sample_rate, [time_s])[0]) and _swells(
        *envelope(waveform, sample_rate), time_s, window_s)


def _swells(env: np.ndarray, frame_times: np.ndarray, time_s: float, window_s: float) -> bool:
    lo, hi = np.searchsorted(frame_times, [time_s - window_s, time_s + window_s])
    if hi - lo < 2:
        return False
    piece = env[lo:hi]
    p = int(np.argmax(piece))
    return p > 0 and piece[p] >= 10.0 ** (SWELL_DB / 20.0) * max(float(piece[:p].min()), 1e-9)


def refine_onsets(times_s, strengths, takes, sample_rate: float,
                  window_s: float = SNAP_WINDOW_S) -> tuple[list[float], list[float]]:
    """Onset markers moved onto the audible attacks of the generated takes.

    Each marker goes to the attack nearest to it (``snap_to_attacks``) in every take; its new
    time is the median of those takes' attacks (the markers are shared by the takes of one
    result; with one take, exactly its attack). A marker with no attack of its own is removed
    when another marker took the attack in its window (two markers on one sound), stays where
    it is when some take ``has_sound`` there (a hit inside a sustained sound), and is removed
    otherwise: the take has nothing to hear there.

    Args:
        times_s / strengths: the markers (seconds) and their onset probabilities.
        takes: ``[V, N]`` (or ``[N]``) generated audio at ``sample_rate``.
    Returns:
        (times, strengths) of the kept markers, in time order.
    """
    takes = np.asarray(takes, dtype=np.float32)
    if takes.ndim == 1:
        takes = takes[None]
    times = [float(t) for t in np.asarray(times_s, dtype=np.float64).reshape(-1)]
    attacks = [find_attacks(take, sample_rate).times_s for take in takes]
    envelopes = [envelope(take, sample_rate) for take in takes]
    heard = [audible(take, sample_rate, times) for take in takes]
    per_take = [snap_to_attacks(times, found, window_s) for found in attacks]
    kept = []
    for k, (time_s, strength) in enumerate(zip(times, strengths)):
        found = [snapped[k] for snapped in per_take if snapped[k] is not None]
        if found:
            kept.append((float(np.median(found)), float(strength)))
        elif any(np.any(np.abs(a - time_s) <= window_s) for a in attacks):
            continue  # its attack went to a nearer marker: a second marker on one sound
        elif any(heard[v][k] and _swells(*envelopes[v], time_s, window_s)
                 for v in range(len(takes))):  # has_sound, with each take's envelope once
            kept.append((time_s, float(strength)))
    kept.sort()
    return [t for t, _ in kept], [p for _, p in kept]
