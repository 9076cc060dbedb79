"""Impact sounds by modal synthesis: every sound starts at its event's exact time.

An impact excites both parties: each modal body rings as a sum of exponentially damped sinusoids
(its modes, drawn once per body so one object always sounds like itself), a short noise burst
marks the contact itself, and gravel or cloth floors add a crunch of tiny grains or a soft thud
instead of modes. Amplitude is proportional to the event's strength (impact speed), soft partners
dull the other's high modes, and a small white-noise floor runs under everything.

Onset accuracy: the first sample of an event is the first sample at or after ``time_s``
(``ceil(time_s * sample_rate)``) and every partial uses the exact time offset ``n / sr - time_s``,
so the attack is at the event time to within one sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from v2a_server.synth.materials import MATERIALS
from v2a_server.synth.scene import Body, Scene, SoundEvent

# Size of the "reference" object for modal frequencies and of a floor panel, metres.
_REFERENCE_SIZE_M = 0.12
_FLOOR_SIZE_M = 0.3
# Partials are cut once they have decayed by this many time constants (exp(-7) ~ -61 dB).
_DECAY_SPAN = 7.0
_BLOCK = 512  # samples per exactly computed block in damped_sine
# Loudness of a strength-1 impact before the clip-level limiter (peak of the sum stays < 1).
MASTER_GAIN = 0.35
PEAK_LIMIT = 0.95
NOISE_FADE_IN_S = 0.5
NOISE_FADE_IN_DB = 40.0


@dataclass(frozen=True)
class Modes:
    """Modal model of one body or floor.

    Attributes:
        freqs_hz: [M] modal frequencies, hertz (all below 0.45 * sample_rate).
        decays_s: [M] exponential decay time constants, seconds.
        gains: [M] excitation amplitudes.
    """

    freqs_hz: np.ndarray
    decays_s: np.ndarray
    gains: np.ndarray


def sample_modes(rng: np.random.Generator, material: str, size_m: float, sample_rate: int) -> Modes:
    """Draw the modes of a body of ``material`` and characteristic size ``size_m``.

    Larger bodies ring lower (f ~ size^-0.6) and slightly longer; ratios get +-2 % jitter so that
    two cans are never identical.

    Args:
        rng: random source.
        material: ``MATERIALS`` key (noise materials get no modes).
        size_m: characteristic size, metres.
        sample_rate: audio rate, hertz (modes above 0.45 * rate are dropped).
    Returns:
        The body's modes (possibly empty).
    """
    mat = MATERIALS[material]
    if not mat.mode_ratios:
        return Modes(np.zeros(0), np.zeros(0), np.zeros(0))
    f0 = rng.uniform(*mat.f0_range_hz) * (_REFERENCE_SIZE_M / size_m) ** 0.6
    ratios = np.asarray(mat.mode_ratios) * (1.0 + rng.uniform(-0.02, 0.02, size=len(mat.mode_ratios)))
    ratios[0] = 1.0
    freqs = f0 * ratios
    d0 = rng.uniform(*mat.decay_range_s) * (size_m / _REFERENCE_SIZE_M) ** 0.3
    decays = d0 * ratios ** (-mat.decay_exponent)
    gains = np.asarray(mat.mode_gains) * rng.uniform(0.7, 1.3, size=len(mat.mode_gains))
    keep = freqs < 0.45 * sample_rate
    return Modes(freqs[keep], decays[keep], gains[keep])


def _add(buf: np.ndarray, n0: int, signal: np.ndarray) -> None:
    n = min(signal.size, buf.size - n0)
    if n > 0:
        buf[n0 : n0 + n] += signal[:n]


def _first_sample(time_s: float, sample_rate: int) -> int:
    """Index of the first sample at or after ``time_s`` (a 1e-9 slack absorbs float error in t * sr)."""
    return int(np.ceil(time_s * sample_rate - 1e-9))


def _tau(time_s: float, sample_rate: int, n0: int, length: int) -> np.ndarray:
    """Exact seconds since the event for samples n0 .. n0 + length - 1 (all >= 0)."""
    return (n0 + np.arange(length)) / sample_rate - time_s


def damped_sine(
    time_s: float, n0: int, length: int, sample_rate: int, freq_hz: float, decay_s: float
) -> np.ndarray:
    """exp(-tau / decay) * sin(2 pi f tau) at tau = n / sr - time_s for n = n0 .. n0 + length - 1.

    Computed as a complex exponential: one exact block, then each next block is the previous one
    times a constant complex factor (a complex multiply per sample instead of an exp and a sin).

    Returns:
        [length] float64.
    """
    s = complex(-1.0 / decay_s, 2.0 * np.pi * freq_hz)
    block = min(length, _BLOCK)
    first = np.exp(s * _tau(time_s, sample_rate, n0, block))
    n_blocks = -(-length // block)
    steps = np.exp(s * block / sample_rate) ** np.arange(n_blocks)
    return (steps[:, None] * first[None, :]).ravel()[:length].imag


def _ring(buf, time_s, n0, sample_rate, modes: Modes, amp: float, partner_softness: float, rng) -> None:
    """Add damped sinusoids; a soft partner (cloth, rubber) damps high modes like a slow mallet."""
    if modes.freqs_hz.size == 0 or amp <= 0:
        return
    f0 = modes.freqs_hz[0]
    excite = modes.gains * rng.uniform(0.6, 1.4, size=modes.gains.size)  # hit position varies
    excite *= (f0 / modes.freqs_hz) ** (2.0 * partner_softness)
    for f, d, g in zip(modes.freqs_hz, modes.decays_s, excite):
        length = min(int(np.ceil(_DECAY_SPAN * d * sample_rate)), buf.size - n0)
        if length > 0:
            _add(buf, n0, (amp * g) * damped_sine(time_s, n0, length, sample_rate, f, d))


def _one_pole_lowpass(x: np.ndarray, coeff: float) -> np.ndarray:
    """y[n] = (1 - c) x[n] + c y[n-1] (zero initial state), as a convolution with the truncated
    impulse response (c^k below 1e-4 is dropped); c = 0 returns ``x`` unchanged."""
    if coeff <= 0:
        return x
    taps = int(np.ceil(np.log(1e-4) / np.log(coeff)))
    kernel = (1.0 - coeff) * coeff ** np.arange(taps)
    return np.convolve(x, kernel)[: x.size]


def _click(buf, time_s, n0, sample_rate, amp: float, softness: float, rng) -> None:
    """Contact noise burst: 0.5 ms for hard pairs up to ~5 ms and duller for soft ones."""
    decay = 0.0005 + 0.004 * softness
    length = min(int(np.ceil(_DECAY_SPAN * decay * sample_rate)), buf.size - n0)
    if length <= 0:
        return
    tau = _tau(time_s, sample_rate, n0, length)
    noise = _one_pole_lowpass(rng.standard_normal(length), 0.85 * softness)
    noise /= max(np.max(np.abs(noise)), 1e-9)
    _add(buf, n0, amp * noise * np.exp(-tau / decay))


def _gravel(buf, time_s, n0, sample_rate, amp: float, rng) -> None:
    """Crunch: 6-16 tiny grain clicks over ~20-80 ms, the first and loudest exactly at the onset."""
    n_grains = int(rng.integers(6, 17))
    offsets = np.concatenate([[0.0], np.cumsum(rng.exponential(0.005, size=n_grains - 1))])
    for i, off in enumerate(offsets):
        t = time_s + off
        start = _first_sample(t, sample_rate)
        if start >= buf.size:
            break
        g = amp * np.exp(-i / 4.0) * rng.uniform(0.5, 1.0) if i else amp
        f = rng.uniform(1500.0, min(6000.0, 0.45 * sample_rate))
        d = rng.uniform(0.001, 0.004)
        length = min(int(np.ceil(_DECAY_SPAN * d * sample_rate)), buf.size - start)
        tau = _tau(t, sample_rate, start, length)
        grain = 0.6 * np.sin(2 * np.pi * f * tau) + 0.4 * rng.standard_normal(length)
        _add(buf, start, g * grain * np.exp(-tau / d))


def _cloth(buf, time_s, n0, sample_rate, amp: float, rng) -> None:
    """Soft thud: low-passed noise with a 1 ms rise and a 30-60 ms decay, plus a low body thump."""
    mat = MATERIALS["cloth"]
    decay = rng.uniform(*mat.decay_range_s)
    length = min(int(np.ceil(_DECAY_SPAN * decay * sample_rate)), buf.size - n0)
    if length <= 0:
        return
    tau = _tau(time_s, sample_rate, n0, length)
    noise = _one_pole_lowpass(rng.standard_normal(length), 0.75)
    noise /= max(np.max(np.abs(noise)), 1e-9)
    env = np.minimum(tau / 0.001, 1.0) * np.exp(-tau / decay)
    thump = np.sin(2 * np.pi * rng.uniform(70.0, 120.0) * tau) * np.exp(-tau / 0.03)
    _add(buf, n0, amp * env * (0.8 * noise + 0.5 * thump))


def _render_event(
    buf, event: SoundEvent, sample_rate: int, modes: dict[int, Modes], floor_modes: Modes, rng
) -> None:
    n0 = _first_sample(event.time_s, sample_rate)
    if n0 >= buf.size:
        return
    amp = MASTER_GAIN * event.strength
    mat_a = MATERIALS[event.body.material]
    mat_b = MATERIALS[event.surface_material]
    # The moving body rings, damped by a soft surface; the surface rings, damped by a soft body.
    _ring(
        buf,
        event.time_s,
        n0,
        sample_rate,
        modes[event.body.body_id],
        amp * mat_a.level * (1.0 - 0.6 * mat_b.softness),
        mat_b.softness,
        rng,
    )
    other_modes = floor_modes if event.other is None else modes[event.other.body_id]
    _ring(
        buf,
        event.time_s,
        n0,
        sample_rate,
        other_modes,
        amp * mat_b.level * (1.0 - 0.6 * mat_a.softness),
        mat_a.softness,
        rng,
    )
    if mat_b.noise_kind == "gravel":
        _gravel(buf, event.time_s, n0, sample_rate, amp * mat_b.level, rng)
    elif mat_b.noise_kind == "cloth":
        _cloth(buf, event.time_s, n0, sample_rate, amp * mat_b.level, rng)
    _click(buf, event.time_s, n0, sample_rate, 0.5 * amp, max(mat_a.softness, mat_b.softness), rng)


def synthesize_audio(
    scene: Scene, sample_rate: int, rng: np.random.Generator, *, noise_floor_db: float = -60.0
) -> np.ndarray:
    """Render the soundtrack of ``scene``.

    Args:
        scene: the scene (its events, bodies and floor material).
        sample_rate: audio rate, hertz.
        rng: random source (modes, excitations, noise).
        noise_floor_db: RMS of the white background noise, dB relative to full scale; -inf or
            below -150 for none.
    Returns:
        [round(duration_s * sample_rate)] float32 mono in [-1, 1].
    """
    n = int(round(scene.duration_s * sample_rate))
    buf = np.zeros(n, dtype=np.float64)
    modes = {b.body_id: sample_modes(rng, b.material, _body_size_m(b), sample_rate) for b in scene.bodies}
    floor_modes = sample_modes(rng, scene.floor_material, _FLOOR_SIZE_M, sample_rate)
    for event in scene.events:
        _render_event(buf, event, sample_rate, modes, floor_modes, rng)
    peak = float(np.max(np.abs(buf))) if n else 0.0
    if peak > PEAK_LIMIT:
        # One gain for the whole clip keeps the loudness order of events (strength stays meaningful).
        buf *= PEAK_LIMIT / peak
    noise = rng.standard_normal(n)  # drawn even when silent, so the random stream does not depend on it
    if noise_floor_db > -150.0:
        # Fade the floor in dB-linearly: a noise floor that starts abruptly at sample 0 is itself an
        # "onset" to a spectral-flux detector (librosa reports one at ~0.07 s in every clip).
        ramp_n = min(n, int(NOISE_FADE_IN_S * sample_rate))
        fade_db = np.zeros(n)
        fade_db[:ramp_n] = np.linspace(-NOISE_FADE_IN_DB, 0.0, ramp_n)
        buf += 10.0 ** ((noise_floor_db + fade_db) / 20.0) * noise
    return np.clip(buf, -1.0, 1.0).astype(np.float32)


def _body_size_m(body: Body) -> float:
    """Characteristic size for modal frequencies: the larger side (a shoe sole is its length)."""
    return max(body.width_m, body.height_m) if body.shape != "shoe" else body.width_m
