"""GPU check: the real-size STA-V2A pipeline (random weights) on one accelerator, as is.

Run on a GPU machine with nothing else: ``python bench/gpu_check.py [--json OUT]`` (about
3-5 minutes on an H200, most of it torch.compile). It builds the released model's shapes
(``configs.py`` "sta-v2a": CAVP ResNet-50, mT5-large encoder, 128-base UNet + ControlNet,
AudioLDM-S VAE and HiFi-GAN) with random weights in float16 on the device, and measures, once
eagerly and once with the UNet and ControlNet under ``torch.compile``:

- seconds per denoising step: ControlNet + UNet with the CFG batch of 2, the median step
  interval of the DDPM run (the device is synchronised at every step);
- 10.24 s of audio end to end (frames at the encoder's size → CAVP → text → denoise → VAE →
  vocoder) with DPM-Solver++ 25 steps and DDPM 200 steps;
- the VAE decode and the vocoder of one window, alone;
- peak device memory of each end-to-end run (``torch.cuda.max_memory_allocated``);
- the first call's seconds (kernel selection, and for the compiled model the compilation).

Prints one table and, with ``--json OUT``, writes the numbers. Random weights in float16 can
overflow to inf/NaN audio; speed and memory are still the real model's (the JSON says whether
the audio was finite). ``--device cpu --quick`` runs the same code on the tiny config with 2
steps in seconds (the test suite runs it so); peak memory on the CPU is the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, as is

from v2a_server.configs import build_pipeline  # noqa: E402
from v2a_server.model_store import resolve_dtype  # noqa: E402
from v2a_server.pipelines.device_memory import peak_memory_bytes, reset_peak_memory  # noqa: E402

WINDOW_S = 10.24
CAPTION = "a man hitting a metal can with a stick"


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def build(config: str, device: str, dtype: torch.dtype):
    """Random weights built on the device itself (no CPU copy of the real-size model)."""
    with torch.device(device):
        pipe = build_pipeline(config, seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def timed(device: str, fn):
    synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - t0, out


def end_to_end(pipe, device: str, frames: np.ndarray, sampler: str, steps: int) -> dict:
    """One 10.24 s generation: seconds, peak memory, step intervals, finite audio."""
    stamps: list[float] = []

    def on_step(progress) -> None:
        synchronize(device)
        stamps.append(time.perf_counter())

    reset_peak_memory(device)
    seconds, out = timed(device, lambda: pipe(
        frames=frames, frames_fps=pipe.model_fps, duration_s=WINDOW_S, caption=CAPTION,
        negative_caption="", seed=0, sampler=sampler, num_inference_steps=steps, on_step=on_step))
    intervals = np.diff(stamps)
    return {
        "seconds": seconds,
        "peak_bytes": peak_memory_bytes(device),
        "step_s": float(np.median(intervals)) if len(intervals) else None,
        "audio_finite": bool(np.isfinite(out.audio).all()),
        "samples": int(out.audio.shape[-1]),
    }


@torch.no_grad()
def decoders(pipe, device: str, repeats: int) -> dict:
    """The VAE decode and the vocoder of one window, alone (median of ``repeats``)."""
    plan = pipe.window_plan(WINDOW_S)
    latents = torch.randn(1, pipe.unet.config.in_channels, plan.window_frames,
                          pipe.controlnet.config.latent_freq_bins, device=device, dtype=pipe.vae.dtype)
    decode = lambda: pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample  # noqa: E731
    mel = decode()
    vocode = lambda: pipe.vocoder(mel.squeeze(1).to(pipe.vocoder.dtype))  # noqa: E731
    return {
        "vae_decode_s": statistics.median(timed(device, decode)[0] for _ in range(repeats)),
        "vocoder_s": statistics.median(timed(device, vocode)[0] for _ in range(repeats)),
    }


def measure(pipe, device: str, frames: np.ndarray, steps: dict[str, int], repeats: int) -> dict:
    warmup_s, _ = timed(device, lambda: pipe(
        frames=frames, frames_fps=pipe.model_fps, duration_s=WINDOW_S, caption=CAPTION, seed=0,
        sampler="dpmpp", num_inference_steps=2))
    dpmpp = end_to_end(pipe, device, frames, "dpmpp", steps["dpmpp"])
    ddpm = end_to_end(pipe, device, frames, "ddpm", steps["ddpm"])
    return {"first_call_s": warmup_s, "step_s": ddpm["step_s"], "dpmpp": dpmpp, "ddpm": ddpm,
            **decoders(pipe, device, repeats)}


def compile_denoiser(pipe) -> None:
    """UNet and ControlNet compiled in place (they are where the time goes)."""
    pipe.unet.compile()
    pipe.controlnet.compile()


def table(report: dict) -> str:
    steps = report["steps"]
    modes = list(report["results"])
    gib = lambda b: f"{b / 2**30:.2f}" if b is not None else "?"  # noqa: E731
    rows = [
        ("seconds per denoising step (CFG x2)", lambda r: f"{r['step_s']:.4f}"),
        (f"10.24 s audio, DPM-Solver++ {steps['dpmpp']} steps, s", lambda r: f"{r['dpmpp']['seconds']:.2f}"),
        (f"10.24 s audio, DDPM {steps['ddpm']} steps, s", lambda r: f"{r['ddpm']['seconds']:.2f}"),
        ("VAE decode of a window, s", lambda r: f"{r['vae_decode_s']:.4f}"),
        ("vocoder of a window, s", lambda r: f"{r['vocoder_s']:.4f}"),
        (f"peak memory, DPM-Solver++ {steps['dpmpp']}, GiB", lambda r: gib(r["dpmpp"]["peak_bytes"])),
        (f"peak memory, DDPM {steps['ddpm']}, GiB", lambda r: gib(r["ddpm"]["peak_bytes"])),
        ("first call (warm-up / compile), s", lambda r: f"{r['first_call_s']:.1f}"),
        ("audio finite (random weights)", lambda r: str(r["dpmpp"]["audio_finite"] and r["ddpm"]["audio_finite"])),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{report['config']} on {report['device_name']}, {report['dtype']}, build {report['build_s']:.1f} s",
             f"{'':<{width}}  " + "  ".join(f"{m:>10}" for m in modes)]
    for name, cell in rows:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{cell(report['results'][m]):>10}" for m in modes))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
                        help="default auto: float16 on a GPU, float32 on the CPU")
    parser.add_argument("--quick", action="store_true", help="tiny config, 2 steps (a CPU check of this script)")
    parser.add_argument("--compile", default="both", choices=("both", "off", "only"),
                        help="eager and compiled (default), eager only, compiled only")
    parser.add_argument("--repeats", type=int, default=5, help="VAE/vocoder timings: median of this many")
    parser.add_argument("--json", metavar="OUT", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here (use --device cpu --quick to check the script)")
    config = "tiny" if args.quick else "sta-v2a"
    steps = {"dpmpp": 2, "ddpm": 2} if args.quick else {"dpmpp": 25, "ddpm": 200}
    dtype = resolve_dtype(args.dtype, args.device)
    device_name = (torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda")
                   else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    build_s, pipe = timed(args.device, lambda: build(config, args.device, dtype))
    image = pipe.video_encoder.config.image_size
    frames = np.random.default_rng(0).integers(0, 256, (int(WINDOW_S * pipe.model_fps) + 1, image, image, 3), np.uint8)
    results = {}
    if args.compile != "only":
        results["eager"] = measure(pipe, args.device, frames, steps, args.repeats)
    if args.compile != "off":
        compile_denoiser(pipe)
        results["compiled"] = measure(pipe, args.device, frames, steps, args.repeats)
    report = {"config": config, "device": args.device, "device_name": device_name, "dtype": str(dtype),
              "torch": torch.__version__, "steps": steps, "build_s": build_s, "results": results}
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
