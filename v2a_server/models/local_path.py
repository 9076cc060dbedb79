"""Local (onset-aware) video path: feature MLP, multi-scale window means and the onset head.

Mirrors ``TransVideoFeature`` and ``PreOnSet_by_MultiScaleFeature`` of the STA-V2A release
(model.md §1.2–1.3); attribute names match its checkpoint keys (``fc1``…``fc4``, ``l1``, ``l2``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def multiscale_window_means(x: torch.Tensor, scales: tuple[int, ...]) -> torch.Tensor:
    """Means over time windows of several sizes, vectorised with a cumulative sum.

    For scale k, step i averages steps [max(i-k, 0), min(i+k, T)): k back, k-1 forward,
    truncated at the edges (the release's loop, without the loop).

    Args:
        x: [B, T, C].
        scales: window half-sizes, e.g. (1, 2, 4, 8).
    Returns:
        [B, T, C * len(scales)], scales concatenated in order along channels.
    """
    b, t, c = x.shape
    # Prefix sums in float64: summing long sequences in fp16/fp32 loses the small differences.
    prefix = torch.cat([x.new_zeros(b, 1, c, dtype=torch.float64), x.double().cumsum(1)], dim=1)
    steps = torch.arange(t, device=x.device)
    outs = []
    for k in scales:
        lo = (steps - k).clamp(min=0)
        hi = (steps + k).clamp(max=t)
        total = prefix[:, hi] - prefix[:, lo]
        outs.append((total / (hi - lo).to(total.dtype)[None, :, None]).to(x.dtype))
    return torch.cat(outs, dim=-1)


class TransVideoFeature(nn.Module):
    """Per-step MLP 512→256→256→128→128 (exact GELU between layers, none at the end)."""

    def __init__(self, in_dim: int, hidden_dims: tuple[int, int, int], out_dim: int):
        super().__init__()
        h1, h2, h3 = hidden_dims
        self.fc1 = nn.Linear(in_dim, h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc3 = nn.Linear(h2, h3)
        self.fc4 = nn.Linear(h3, out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.fc1(features))
        x = F.gelu(self.fc2(x))
        x = F.gelu(self.fc3(x))
        return self.fc4(x)


def upsample_steps_to_latent_frames(
    x: torch.Tensor, num_upsampled: int, num_frames: int, mode: str
) -> torch.Tensor:
    """Video steps → latent frames along time.

    Reference (mode "nearest"): 40 steps → 250 frames by nearest interpolation, then the last
    frame repeated up to 256 (model.md §0). "linear" interpolates instead (an extension for
    higher-rate local paths, off by default).

    Args:
        x: [B, T_video, C].
    Returns:
        [B, num_frames, C].
    """
    x = x.transpose(1, 2)
    if mode == "nearest":
        x = F.interpolate(x, size=num_upsampled, mode="nearest")
    elif mode == "linear":
        x = F.interpolate(x, size=num_upsampled, mode="linear", align_corners=False)
    else:
        raise ValueError(f"upsample_mode must be 'nearest' or 'linear', got {mode!r}")
    if num_frames > num_upsampled:
        x = torch.cat([x, x[:, :, -1:].expand(-1, -1, num_frames - num_upsampled)], dim=2)
    return x[:, :, :num_frames].transpose(1, 2)


class OnsetHead(nn.Module):
    """``PreOnSet_by_MultiScaleFeature``: per latent frame Linear→SiLU gives the ControlNet
    condition ``h``; Linear→2 gives onset logits (class 1 = an onset in that 40 ms frame)."""

    def __init__(self, in_dim: int, hidden_dim: int):
        super().__init__()
        self.l1 = nn.Linear(in_dim, hidden_dim)
        self.l2 = nn.Linear(hidden_dim, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.silu(self.l1(x))
        return h, self.l2(h)
