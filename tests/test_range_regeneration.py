"""Range regeneration (latent inpainting) and variations through a real server process.

The take to redo travels in the request (``inpaint`` buffer), so a server that never saw it
(or was restarted) regenerates it just the same. What is checked, per the issue:

* outside the range and its blended margin the new audio equals the old one exactly (the
  server composites the old waveform back; compared with the VAE round-trip error, which is
  measured on the default model below);
* inside the range it differs; the same seed gives the same result;
* no click at the boundaries. Statistic: the largest sample jump within ±5 ms of a boundary,
  against the 99th percentile of the same quantity (largest jump in a ±5 ms window) over the
  rest of the take. The literal "largest jump near the boundary vs the 99th percentile of
  single jumps elsewhere" compares a maximum of 160 values with a percentile of one: on
  untouched default-model audio it fails at ~89 % of random points (measured), so it cannot
  tell a boundary from anywhere else; both numbers are printed.
"""

from __future__ import annotations

import numpy as np
import pytest

from foley_protocol.client import FoleyClient, result_audio_numpy
from foley_protocol.protocol import INPAINT_MARGIN_S
from tests.test_server import JOB_TIMEOUT_S, ServerProcess, ready_server, small_frames, wait_ready

SAMPLE_RATE = 16000
TINY = dict(frames_fps=4.0, caption="glass clinks", steps=2, guidance=3.0)


@pytest.fixture(scope="module")
def tiny_server(tiny_model_dir, tmp_path_factory):
    with ready_server(tiny_model_dir, tmp_path_factory.mktemp("range-log")) as proc:
        yield proc


@pytest.fixture()
def client(tiny_server):
    with FoleyClient(tiny_server.endpoint, client_name="range test") as c:
        wait_ready(c, 30.0)
        yield c


def generate(client, frames, **kwargs) -> list[np.ndarray]:
    event = client.generate_blocking(frames, timeout_s=JOB_TIMEOUT_S * 3, **kwargs)
    return result_audio_numpy(event)


def regenerate(client, frames, take, range_s, **kwargs) -> list[np.ndarray]:
    return generate(client, frames, inpaint_audio=np.ascontiguousarray(take, np.float32),
                    inpaint_sample_rate=SAMPLE_RATE, inpaint_range_s=range_s, **kwargs)


def _window_max(jumps: np.ndarray, half: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(jumps, 2 * half).max(axis=1)


def click_ratio(audio: np.ndarray, boundary_s: float, sr: int = SAMPLE_RATE) -> float:
    """Largest jump within ±5 ms of ``boundary_s`` / 99th percentile of ±5 ms window maxima
    elsewhere (> 1: a click)."""
    half = int(0.005 * sr)
    b = int(round(boundary_s * sr))
    jumps = np.abs(np.diff(audio.astype(np.float64)))
    maxima = _window_max(jumps, half)
    elsewhere = np.ones(len(maxima), bool)
    elsewhere[max(0, b - 3 * half):b + half] = False  # windows that touch the boundary's
    return float(jumps[max(0, b - half):b + half].max() / np.percentile(maxima[elsewhere], 99))


def literal_ratio(audio: np.ndarray, boundary_s: float, sr: int = SAMPLE_RATE) -> float:
    half = int(0.005 * sr)
    b = int(round(boundary_s * sr))
    jumps = np.abs(np.diff(audio.astype(np.float64)))
    near = np.zeros(len(jumps), bool)
    near[max(0, b - half):b + half] = True
    return float(jumps[near].max() / np.percentile(jumps[~near], 99))


def assert_seamless(new, old, range_s, margin_s=INPAINT_MARGIN_S, sr=SAMPLE_RATE) -> None:
    start, end = range_s
    lo, hi = int(np.floor((start - margin_s) * sr)), int(np.ceil((end + margin_s) * sr))
    assert new.shape == old.shape and np.isfinite(new).all()
    np.testing.assert_array_equal(new[:max(0, lo)], old[:max(0, lo)])
    np.testing.assert_array_equal(new[hi:], old[hi:])
    inside = slice(int((start + 0.05) * sr), int((end - 0.05) * sr))
    scale = float(np.abs(old).max())
    assert np.abs(new[inside] - old[inside]).max() > 1e-2 * scale, "the range was not redone"
    for boundary in (start - margin_s, start, end, end + margin_s):
        if 0.01 < boundary < len(new) / sr - 0.01:
            ratio = click_ratio(new, boundary, sr)
            print(f"boundary {boundary:.2f} s: jump ratio {ratio:.3f} "
                  f"(literal reading {literal_ratio(new, boundary, sr):.3f})")
            assert ratio <= 1.0, f"click at {boundary:.2f} s (ratio {ratio:.3f})"


def test_click_check_catches_a_hard_splice():
    """The boundary statistic is not vacuous: a hard cut between two tones fails it."""
    t = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE
    noise = np.random.default_rng(0).normal(0, 0.005, len(t))
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) + noise).astype(np.float32)
    assert click_ratio(tone, 2.0) <= 1.0
    other = (0.5 * np.sin(2 * np.pi * 440 * t + 2.5) + noise).astype(np.float32)
    cut = int(2.0 * SAMPLE_RATE)
    spliced = np.concatenate([tone[:cut], other[cut:]])
    assert click_ratio(spliced, 2.0) > 1.0


def test_range_regeneration_keeps_the_take_outside_and_reproduces_with_a_seed(client):
    frames = small_frames(16, seed=3)
    duration = dict(duration_s=4.0)
    [take] = generate(client, frames, seed=1, **TINY, **duration)
    range_s = (1.5, 2.5)
    [new] = regenerate(client, frames, take, range_s, seed=9, **TINY, **duration)
    assert_seamless(new, take, range_s)
    [again] = regenerate(client, frames, take, range_s, seed=9, **TINY, **duration)
    np.testing.assert_array_equal(again, new)  # same seed, same take: same result
    [other] = regenerate(client, frames, take, range_s, seed=10, **TINY, **duration)
    inside = slice(int(1.6 * SAMPLE_RATE), int(2.4 * SAMPLE_RATE))
    assert not np.array_equal(other[inside], new[inside])


def test_range_across_a_window_join_of_a_long_take(client, tiny_pipeline):
    duration_s = 25.0
    plan = tiny_pipeline.window_plan(duration_s)
    assert plan.num_windows == 3
    join_s = plan.hop_samples / SAMPLE_RATE  # window 1 starts here (crossfade follows)
    frames = small_frames(100, seed=5)
    long = dict(frames_fps=4.0, caption="footsteps", steps=1, guidance=1.0,
                duration_s=duration_s)
    [take] = generate(client, frames, seed=2, **long)
    range_s = (join_s - 0.6, join_s + 1.4)
    [new] = regenerate(client, frames, take, range_s, seed=4, **long)
    assert_seamless(new, take, range_s)


def test_four_variations_of_a_range_in_one_request(client):
    frames = small_frames(12, seed=7)
    duration = dict(duration_s=3.0)
    [take] = generate(client, frames, seed=5, **TINY, **duration)
    range_s = (1.0, 2.0)
    takes = regenerate(client, frames, take, range_s, seed=6, variations=4, **TINY, **duration)
    assert len(takes) == 4
    for new in takes:
        assert_seamless(new, take, range_s)
    inside = slice(int(1.1 * SAMPLE_RATE), int(1.9 * SAMPLE_RATE))
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.array_equal(takes[i][inside], takes[j][inside]), (i, j)


def test_a_fresh_server_regenerates_a_take_it_never_saw(client, tiny_model_dir, tmp_path):
    frames = small_frames(8, seed=1)
    args = dict(**TINY, duration_s=2.0)
    [take] = generate(client, frames, seed=3, **args)
    [here] = regenerate(client, frames, take, (0.5, 1.2), seed=8, **args)
    fresh = ServerProcess(tiny_model_dir, tmp_path).start()
    try:
        with FoleyClient(fresh.endpoint, client_name="after restart") as other:
            wait_ready(other)
            [there] = regenerate(other, frames, take, (0.5, 1.2), seed=8, **args)
    finally:
        fresh.stop()
    np.testing.assert_array_equal(there, here)


# ---- the embedded default model ------------------------------------------------------------


def test_default_model_regenerates_a_range_of_a_real_clip(tmp_path):
    """On the trained default model and a real clip: seamless, and the outside error (0) is
    below the VAE round-trip error measured here."""
    import torch

    from tests.conftest import shared_clip
    from v2a_server.model_store import load_pipeline
    from v2a_server.media.video_io import read_video

    clip = shared_clip("WguzItBThxY_000230.mp4")
    pipe = load_pipeline("default")
    video = read_video(clip, fps=pipe.model_fps, max_duration_s=4.0)
    args = dict(frames_fps=pipe.model_fps, duration_s=4.0, caption="hitting a metal can",
                steps=8)
    fresh = ServerProcess("default", tmp_path).start()
    try:
        with FoleyClient(fresh.endpoint, client_name="default model") as client:
            wait_ready(client)
            [take] = generate(client, video.frames, seed=1, **args)
            range_s = (1.5, 2.5)
            [new] = regenerate(client, video.frames, take, range_s, seed=2, **args)
    finally:
        fresh.stop()
    assert_seamless(new, take, range_s)

    # The VAE round trip of the same take (encode -> decode -> vocoder), for comparison.
    plan = pipe.window_plan(4.0)
    with torch.no_grad():
        latents = pipe._window_source_latents(take, plan, 0)
        mel = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        wave = pipe.vocoder(mel.squeeze(1).to(pipe.vocoder.dtype))[0, :len(take)]
    round_trip = wave.float().numpy() - take
    lo = int((range_s[0] - INPAINT_MARGIN_S) * SAMPLE_RATE)
    outside_error = float(np.abs(new[:lo] - take[:lo]).max())
    print(f"VAE round trip: max |error| {np.abs(round_trip).max():.4g}, rms "
          f"{np.sqrt(np.mean(round_trip ** 2)):.4g} (take rms {np.sqrt(np.mean(take ** 2)):.4g});"
          f" outside the range: max |error| {outside_error:.4g}")
    assert outside_error < np.abs(round_trip).max()
