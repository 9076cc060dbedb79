"""Global video path: attentive pooling (Factor-Graph Attention, unary + self potentials).

Mirrors ``GlobalVideoFeature`` of the STA-V2A release (model.md §1.4). Attribute names match
its checkpoint keys (``fc``, ``fga.un_models.0.*``, ``fga.pp_models.0.*``,
``fga.reduce_potentials.0``, ``conv``). Two release quirks are kept on purpose:
the unary branch's dropout (p=0.5) is active also at inference, and the module computes a GELU
of its input that it never uses (so it is simply not computed here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class UnaryPotential(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.embed = nn.Conv1d(dim, dim, 1)
        self.feature_reduce = nn.Conv1d(dim, 1, 1)


class SelfPotential(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.embed_X = nn.Conv1d(dim, dim, 1)
        self.embed_Y = nn.Conv1d(dim, dim, 1)


class FactorGraphAttention(nn.Module):
    """One utility with unary and pairwise-self potentials, no prior."""

    def __init__(self, dim: int):
        super().__init__()
        self.un_models = nn.ModuleList([UnaryPotential(dim)])
        self.pp_models = nn.ModuleList([SelfPotential(dim)])
        self.reduce_potentials = nn.ModuleList([nn.Conv1d(2, 1, 1, bias=False)])

    def forward(
        self, x: torch.Tensor, dropout_p: float, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Attention weights over time.

        Args:
            x: [B, D, T].
            dropout_p: dropout on the unary branch (0 disables it: the deterministic mode).
            generator: seeds the dropout mask so a seed reproduces the global tokens.
        Returns:
            [B, T] softmax weights.
        """
        unary = self.un_models[0]
        hidden = F.relu(unary.embed(x))
        if dropout_p > 0:
            keep = torch.rand(hidden.shape, generator=generator, device="cpu") >= dropout_p
            hidden = hidden * keep.to(hidden.device, hidden.dtype) / (1.0 - dropout_p)
        u = unary.feature_reduce(hidden)  # [B, 1, T]

        pair = self.pp_models[0]
        q = F.normalize(pair.embed_X(x), dim=1)
        k = F.normalize(pair.embed_Y(x), dim=1)
        p = torch.einsum("bdt,bds->bts", q, k).mean(dim=2, keepdim=True).transpose(1, 2)

        z = self.reduce_potentials[0](torch.cat([u, p], dim=1))  # [B, 1, T]
        return z.squeeze(1).softmax(dim=-1)


class GlobalVideoFeature(nn.Module):
    """CAVP features [B, T, 512] → K global tokens [B, K, 1024].

    The K tokens are K learned 3-tap filterings (Conv1d over the feature axis) of one pooled
    vector, not K separate pools (model.md §1.4 step 3).
    """

    def __init__(self, in_dim: int, dim: int, num_tokens: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, dim)
        self.fga = FactorGraphAttention(dim)
        self.conv = nn.Conv1d(1, num_tokens, 3, padding=1)

    def forward(
        self,
        features: torch.Tensor,
        dropout_p: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        x = self.fc(features)  # [B, T, D]
        weights = self.fga(x.transpose(1, 2), dropout_p, generator)  # [B, T]
        pooled = torch.einsum("bt,btd->bd", weights, x)
        return self.conv(pooled.unsqueeze(1))  # [B, K, D]
