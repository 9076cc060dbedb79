"""The STA-V2A ControlNet: a diffusers ``ControlNetModel`` whose conditioning embedding takes
per-latent-frame video features instead of an image.

The release's ``ConditioningEmbeddingForVideo_40_Multi_new`` (model.md §1.7): the condition
``h`` [B, F, C] is laid out as [B, C, F, 1], broadcast over the latent's mel bins and passed
through one zero-initialised 3×3 conv, whose output is added to ``conv_in(noisy latent)`` by the
stock ControlNet forward. The only checkpoint keys it adds are
``controlnet_cond_embedding.conv_out.{weight,bias}``.

Extension (off by default, ``num_hint_channels=0`` keeps the reference keys and output):
onset hints. The condition tensor then carries ``num_hint_channels`` extra channels after the
video features — the hint value per latent frame and a 0/1 "hint given" flag — embedded by a
second zero-initialised 3×3 conv. A model trained without hints has no such conv and drops the
extra channels, so hints are ignored cleanly.
"""

from __future__ import annotations

import inspect

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from diffusers.configuration_utils import register_to_config

# DiffusionPipeline.from_pretrained finds a custom component's loader by looking up its base
# classes in the component's module, so ModelMixin must be importable from here.
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401
from torch import nn


def zero_module(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class VideoConditioningEmbedding(nn.Module):
    """[B, F, C (+ hint channels)] → [B, out_channels, F, freq_bins]."""

    def __init__(self, in_channels: int, out_channels: int, freq_bins: int, num_hint_channels: int):
        super().__init__()
        self.in_channels = in_channels
        self.freq_bins = freq_bins
        self.conv_out = zero_module(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.hint_conv = None
        if num_hint_channels:
            self.hint_conv = zero_module(nn.Conv2d(num_hint_channels, out_channels, 3, padding=1))

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        grid = condition.transpose(1, 2).unsqueeze(-1).expand(-1, -1, -1, self.freq_bins)
        out = self.conv_out(grid[:, : self.in_channels])
        if self.hint_conv is not None and grid.shape[1] > self.in_channels:
            out = out + self.hint_conv(grid[:, self.in_channels :])
        return out


class STAControlNetModel(ControlNetModel):
    """ControlNet with the video conditioning embedding swapped in.

    Args (config, beyond ``ControlNetModel``'s):
        video_condition_channels: channels of the condition ``h`` (128 in the release).
        latent_freq_bins: mel bins of the latent (16) the condition is broadcast over.
        num_hint_channels: 0 (reference) or 2 (onset hint value + "given" flag).

    The embedding's output is added to ``conv_in``'s, so ``block_out_channels[0]`` is the
    embedding's output width; the release hard-codes 128 there, which is why the released
    ControlNet only pairs with a 128-channel first UNet block (see ``v2a_server.convert``).
    """

    @register_to_config
    def __init__(
        self,
        video_condition_channels: int = 128,
        latent_freq_bins: int = 16,
        num_hint_channels: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.controlnet_cond_embedding = VideoConditioningEmbedding(
            video_condition_channels,
            self.conv_in.out_channels,
            latent_freq_bins,
            num_hint_channels,
        )

    @staticmethod
    def _get_init_keys(input_class):
        # from_config passes only the keys of __init__'s signature; the stock ControlNet
        # arguments travel through **kwargs, so they must count as init keys too.
        return set(inspect.signature(input_class.__init__).parameters) | set(
            inspect.signature(ControlNetModel.__init__).parameters
        )

    @classmethod
    def from_unet(
        cls,
        unet: UNet2DConditionModel,
        video_condition_channels: int = 128,
        latent_freq_bins: int = 16,
        num_hint_channels: int = 0,
        load_weights_from_unet: bool = True,
    ) -> "STAControlNetModel":
        """Copy the UNet's encoder half (conv_in, time embedding, down blocks, mid block)."""
        cfg = unet.config
        controlnet = cls(
            video_condition_channels=video_condition_channels,
            latent_freq_bins=latent_freq_bins,
            num_hint_channels=num_hint_channels,
            in_channels=cfg.in_channels,
            flip_sin_to_cos=cfg.flip_sin_to_cos,
            freq_shift=cfg.freq_shift,
            down_block_types=cfg.down_block_types,
            only_cross_attention=cfg.only_cross_attention,
            block_out_channels=cfg.block_out_channels,
            layers_per_block=cfg.layers_per_block,
            downsample_padding=cfg.downsample_padding,
            mid_block_scale_factor=cfg.mid_block_scale_factor,
            act_fn=cfg.act_fn,
            norm_num_groups=cfg.norm_num_groups,
            norm_eps=cfg.norm_eps,
            cross_attention_dim=cfg.cross_attention_dim,
            attention_head_dim=cfg.attention_head_dim,
            num_attention_heads=cfg.num_attention_heads,
            use_linear_projection=cfg.use_linear_projection,
            upcast_attention=cfg.upcast_attention,
            resnet_time_scale_shift=cfg.resnet_time_scale_shift,
            mid_block_type=cfg.mid_block_type,
            transformer_layers_per_block=cfg.transformer_layers_per_block,
        )
        if load_weights_from_unet:
            for name in ("conv_in", "time_proj", "time_embedding", "down_blocks", "mid_block"):
                getattr(controlnet, name).load_state_dict(getattr(unet, name).state_dict())
        return controlnet
