"""STA-V2A video conditioner: CAVP features → ControlNet condition, onset logits, global tokens.

One ``ModelMixin`` holding the three trainable refinement parts of the release under their
checkpoint names (``trans_cvap_feature``, ``pre_onset``, ``global_video_feature``), plus an
optional ``text_projection`` for text encoders whose width differs from the UNet's
cross-attention width (absent at reference size: mT5-large is already 1024-d).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from v2a_server.models.attentive_pooling import GlobalVideoFeature
from v2a_server.models.local_path import (
    OnsetHead,
    TransVideoFeature,
    multiscale_window_means,
    upsample_steps_to_latent_frames,
)


@dataclass
class VideoConditioning(BaseOutput):
    """Per-window video conditioning.

    Attributes:
        control: [B, F, C] ControlNet condition per latent frame (F = latent frames per window).
        onset_logits: [B, F, 2] onset logits per latent frame (class 1 = onset).
        global_tokens: [B, K, D] global video tokens appended to the text context.
    """

    control: torch.Tensor
    onset_logits: torch.Tensor
    global_tokens: torch.Tensor


class STAVideoConditioner(ModelMixin, ConfigMixin):
    """Refines CAVP features into the local and global video conditions (model.md §1.2–1.4).

    Args (config):
        feature_dim: CAVP feature size (512).
        mlp_hidden_dims / temporal_dim: TransVideoFeature sizes ((256, 256, 128) and 128).
        window_scales: multi-scale mean half-sizes ((1, 2, 4, 8)); empty disables the windows
            (the release's ``use_feature_window=False``).
        control_dim: onset-head hidden size = ControlNet condition channels (128).
        global_dim / num_global_tokens: attentive pooling width (1024) and token count (4; 0
            removes the global path).
        global_dropout: the always-on unary dropout of the release (0.5).
        video_fps: frame rate of the video features (reference 4).
        video_steps_per_window: feature steps per 10.24 s window (reference 40 = first 10 s).
        latent_frames_per_window: 256 (40 ms each).
        latent_fps: 25.
        upsample_mode: "nearest" (reference) or "linear".
        text_dim: width of the text encoder's hidden states; a Linear maps it to global_dim
            when they differ.
    """

    @register_to_config
    def __init__(
        self,
        feature_dim: int = 512,
        mlp_hidden_dims: tuple[int, int, int] = (256, 256, 128),
        temporal_dim: int = 128,
        window_scales: tuple[int, ...] = (1, 2, 4, 8),
        control_dim: int = 128,
        global_dim: int = 1024,
        num_global_tokens: int = 4,
        global_dropout: float = 0.5,
        video_fps: float = 4.0,
        video_steps_per_window: int = 40,
        latent_frames_per_window: int = 256,
        latent_fps: float = 25.0,
        upsample_mode: str = "nearest",
        text_dim: int = 1024,
    ):
        super().__init__()
        num_upsampled = round(video_steps_per_window * latent_fps / video_fps)
        if num_upsampled > latent_frames_per_window:
            raise ValueError(
                f"video_steps_per_window={video_steps_per_window} at video_fps={video_fps} covers "
                f"{num_upsampled} latent frames, more than latent_frames_per_window="
                f"{latent_frames_per_window}"
            )
        self.num_upsampled = num_upsampled
        self.trans_cvap_feature = TransVideoFeature(feature_dim, tuple(mlp_hidden_dims), temporal_dim)
        self.pre_onset = OnsetHead(temporal_dim * (1 + len(window_scales)), control_dim)
        # num_global_tokens=0 removes the global path (the paper's "CN+Onset" ablation).
        self.global_video_feature = (
            GlobalVideoFeature(feature_dim, global_dim, num_global_tokens) if num_global_tokens else None
        )
        self.text_projection = nn.Linear(text_dim, global_dim) if text_dim != global_dim else None

    def local_features(self, features: torch.Tensor) -> torch.Tensor:
        """[B, T, feature_dim] → [B, T, temporal_dim * (1 + len(window_scales))]."""
        temporal = self.trans_cvap_feature(features)
        scales = tuple(self.config.window_scales)
        if not scales:
            return temporal
        return torch.cat([temporal, multiscale_window_means(temporal, scales)], dim=-1)

    def forward(
        self,
        features: torch.Tensor,
        global_dropout: float | None = None,
        generator: torch.Generator | None = None,
    ) -> VideoConditioning:
        """Condition one window.

        Args:
            features: [B, video_steps_per_window, feature_dim] CAVP features.
            global_dropout: overrides the config's unary dropout (0 = deterministic mode).
            generator: seeds the dropout mask.
        """
        cfg = self.config
        local = upsample_steps_to_latent_frames(
            self.local_features(features),
            self.num_upsampled,
            cfg.latent_frames_per_window,
            cfg.upsample_mode,
        )
        control, onset_logits = self.pre_onset(local)
        p = cfg.global_dropout if global_dropout is None else global_dropout
        if self.global_video_feature is None:
            tokens = features.new_zeros(features.shape[0], 0, cfg.global_dim)
        else:
            tokens = self.global_video_feature(features, p, generator)
        return VideoConditioning(control=control, onset_logits=onset_logits, global_tokens=tokens)

    def project_text(self, text_states: torch.Tensor) -> torch.Tensor:
        """Text hidden states [B, L, text_dim] → [B, L, global_dim]."""
        return text_states if self.text_projection is None else self.text_projection(text_states)
