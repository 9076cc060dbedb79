"""Losses of the training stages."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def diffusion_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """ε or v, whichever the scheduler's prediction_type says (model.md §2)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {kind!r}: use 'epsilon' or 'v_prediction'")


def diffusion_loss(pred, target, scheduler, timesteps, snr_gamma: float | None = None) -> torch.Tensor:
    """MSE over all elements; optional Min-SNR-γ weighting min(SNR, γ)/SNR per sample, with the
    ε-form weight also for v-prediction (a Tango-lineage quirk kept on purpose, model.md §2)."""
    if snr_gamma is None:
        return F.mse_loss(pred.float(), target.float())
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alphas / (1 - alphas)
    weight = torch.clamp(snr, max=snr_gamma) / snr
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (per_sample * weight).mean()


def onset_loss(logits: torch.Tensor, labels: torch.Tensor, positive_weight: float = 1.0) -> torch.Tensor:
    """2-class cross-entropy per latent frame, averaged (the release's loss; the paper says BCE).

    ``positive_weight`` > 1 counters the rarity of onset frames (an extension; 1 = release)."""
    weight = torch.tensor([1.0, positive_weight], device=logits.device, dtype=torch.float32)
    return F.cross_entropy(logits.reshape(-1, 2).float(), labels.reshape(-1).long(), weight=weight)


def kl_loss(posterior) -> torch.Tensor:
    return posterior.kl().mean() / posterior.mean[0].numel()


def stft_loss(pred: torch.Tensor, target: torch.Tensor, resolutions=((512, 128), (1024, 256), (256, 64))) -> torch.Tensor:
    """Multi-resolution STFT loss: spectral convergence + log-magnitude L1, averaged."""
    total = 0.0
    for n_fft, hop in resolutions:
        window = torch.hann_window(n_fft, device=pred.device)
        mags = []
        for x in (pred, target):
            spec = torch.stft(x.float(), n_fft, hop, window=window, return_complex=True).abs()
            mags.append(spec.clamp(min=1e-7))
        p, t = mags
        convergence = torch.linalg.norm(t - p, dim=(1, 2)) / torch.linalg.norm(t, dim=(1, 2)).clamp(min=1e-7)
        total = total + convergence.mean() + F.l1_loss(p.log(), t.log())
    return total / len(resolutions)
