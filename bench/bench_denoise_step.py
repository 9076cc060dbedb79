"""Seconds per denoising step (ControlNet + UNet, CFG batch of 2) for a named config, plus
the VAE decode and vocoder cost of one 10.24 s window, on this machine.

Usage: python bench/bench_denoise_step.py [--configs tiny,small,sta-v2a] [--repeats 5]
Prints absolute seconds (this is a measurement for the model card / notes) and each config's
step time as a ratio to the tiny config's, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def time_call(fn, repeats: int) -> float:
    fn()  # warm-up (first-call allocation and kernel selection)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


@torch.no_grad()
def bench(name: str, repeats: int, device: str, dtype) -> dict[str, float]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    from v2a_server.configs import get_config
    from v2a_server.models import STAControlNetModel

    cfg = get_config(name)
    unet = UNet2DConditionModel(**cfg["unet"]).to(device, dtype).eval()
    controlnet = STAControlNetModel.from_unet(unet, **cfg["controlnet"]).to(device, dtype).eval()
    frames, bins = 256, cfg["controlnet"]["latent_freq_bins"]
    cond_ch = cfg["controlnet"]["video_condition_channels"] + cfg["controlnet"]["num_hint_channels"]
    latents = torch.randn(2, unet.config.in_channels, frames, bins, device=device, dtype=dtype)
    context = torch.randn(2, 16, unet.config.cross_attention_dim, device=device, dtype=dtype)
    mask = torch.ones(2, 16, dtype=torch.bool, device=device)
    control = torch.randn(2, frames, cond_ch, device=device, dtype=dtype)
    t = torch.tensor(500, device=device)

    def step():
        down, mid = controlnet(latents, t, encoder_hidden_states=context, controlnet_cond=control, return_dict=False)
        unet(latents, t, encoder_hidden_states=context, encoder_attention_mask=mask,
             down_block_additional_residuals=down, mid_block_additional_residual=mid)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    step_s = time_call(step, repeats)
    unet = controlnet = None  # free them before the VAE (step() is done with them)
    vae = AutoencoderKL(**cfg["vae"]).to(device, dtype).eval()
    z = torch.randn(1, 8, frames, bins, device=device, dtype=dtype)
    decode_s = time_call(lambda: vae.decode(z), max(1, repeats // 2))
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(**cfg["vocoder"])).to(device, dtype).eval()
    mel = torch.randn(1, frames * 4, 64, device=device, dtype=dtype)
    vocoder_s = time_call(lambda: vocoder(mel), max(1, repeats // 2))
    return {"step_s": step_s, "vae_decode_s": decode_s, "vocoder_s": vocoder_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", default="tiny,small,sta-v2a")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    print(f"device {args.device}, dtype {dtype}, torch threads {torch.get_num_threads()}")
    results = {name: bench(name, args.repeats, args.device, dtype) for name in args.configs.split(",")}
    base = results.get("tiny", next(iter(results.values())))["step_s"]
    print(f"{'config':<10} {'s/step':>9} {'x tiny':>8} {'vae s':>8} {'vocoder s':>10} {'DDPM-200 s':>11} {'DPM++-25 s':>11}")
    for name, r in results.items():
        ddpm = 200 * r["step_s"] + r["vae_decode_s"] + r["vocoder_s"]
        dpm = 25 * r["step_s"] + r["vae_decode_s"] + r["vocoder_s"]
        print(f"{name:<10} {r['step_s']:9.3f} {r['step_s'] / base:8.1f} {r['vae_decode_s']:8.3f} {r['vocoder_s']:10.3f} {ddpm:11.1f} {dpm:11.1f}")


if __name__ == "__main__":
    main()
