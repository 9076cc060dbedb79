"""CAVP video encoder: a 3-D ResNet "SlowOnly" backbone plus a per-step projection.

Reimplements Diff-Foley's CAVP Stage-1 video branch (``Slowonly_pool`` + ``video_project_head``)
in plain torch so that ``cavp_epoch66.ckpt`` loads by key name without mmcv/mmaction:
module names follow mmaction's ``ResNet3d`` (``conv1.conv``/``conv1.bn``,
``layerN.M.conv{1,2,3}.{conv,bn}``, ``layerN.0.downsample.{conv,bn}``).

Reference behaviour (model.md §1.1): frames resized to 224×224 (aspect not kept) with PIL's
bilinear filter, which antialiases when shrinking; RGB in [0, 1] with no mean/std normalisation; all temporal strides are 1 so every input frame yields one
feature step; spatial average pooling, Linear 2048→512 and an L2 normalisation per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class ConvBNReLU3d(nn.Module):
    """mmcv ``ConvModule`` layout: ``.conv`` (no bias) then ``.bn``, optional ReLU."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, relu=True):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm3d(out_channels)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class Bottleneck3d(nn.Module):
    """mmaction ``Bottleneck3d`` (pytorch style: stride on conv2, inflate style 3x1x1)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, spatial_stride: int, inflate: bool):
        super().__init__()
        out_channels = planes * self.expansion
        # Inflated blocks mix 3 neighbouring time steps in conv1; temporal stride is always 1.
        conv1_kernel, conv1_pad = ((3, 1, 1), (1, 0, 0)) if inflate else ((1, 1, 1), (0, 0, 0))
        self.conv1 = ConvBNReLU3d(in_channels, planes, conv1_kernel, 1, conv1_pad)
        self.conv2 = ConvBNReLU3d(
            planes, planes, (1, 3, 3), (1, spatial_stride, spatial_stride), (0, 1, 1)
        )
        self.conv3 = ConvBNReLU3d(planes, out_channels, 1, 1, 0, relu=False)
        self.downsample = None
        if spatial_stride != 1 or in_channels != out_channels:
            self.downsample = ConvBNReLU3d(
                in_channels, out_channels, 1, (1, spatial_stride, spatial_stride), 0, relu=False
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class ResNet3dSlowOnly(nn.Module):
    """SlowOnly ResNet3d backbone: stem (1,7,7)/2 + max-pool /2, four stages, no pool2."""

    def __init__(
        self,
        stage_blocks: tuple[int, ...],
        base_channels: int,
        spatial_strides: tuple[int, ...],
        inflate: tuple[int, ...],
    ):
        super().__init__()
        self.conv1 = ConvBNReLU3d(3, base_channels, (1, 7, 7), (1, 2, 2), (0, 3, 3))
        self.maxpool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        in_channels = base_channels
        for i, num_blocks in enumerate(stage_blocks):
            planes = base_channels * 2**i
            blocks = []
            for j in range(num_blocks):
                stride = spatial_strides[i] if j == 0 else 1
                blocks.append(Bottleneck3d(in_channels, planes, stride, bool(inflate[i])))
                in_channels = planes * Bottleneck3d.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(stage_blocks)
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x


def resize_bilinear(x: torch.Tensor, size: int, antialias: bool) -> torch.Tensor:
    """float [N, C, H, W] → [N, C, size, size], bilinear with half-pixel centres.

    ``antialias=True`` is PIL's ``Image.resize(..., BILINEAR)``, the reference's resize: when
    shrinking, the triangle filter widens with the scale so that every source pixel counts
    (equal to PIL within its uint8 rounding, ≤ 1/255). ``False`` reads 4 pixels per output
    pixel and aliases fine detail (up to 97/255 per pixel on a 360×640 frame); the embedded
    default model was trained so. Computed in float32: half-precision antialiasing is not
    available on every device."""
    return F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=antialias).to(x.dtype)


class CAVPVideoEncoder(ModelMixin, ConfigMixin):
    """Frames → unit-norm per-step video embeddings (CAVP).

    Args (config):
        stage_blocks: bottleneck blocks per stage ((3, 4, 6, 3) = ResNet-50).
        base_channels: width of the stem (64 for ResNet-50).
        spatial_strides / inflate: per-stage values (reference (1,2,2,2) and (0,0,1,1)).
        embed_dim: output feature size (512).
        image_size: frames are resized to image_size × image_size (224), aspect not kept.
        resize_antialias: resize as PIL's bilinear does (the reference; see ``resize_bilinear``).
    """

    @register_to_config
    def __init__(
        self,
        stage_blocks: tuple[int, ...] = (3, 4, 6, 3),
        base_channels: int = 64,
        spatial_strides: tuple[int, ...] = (1, 2, 2, 2),
        inflate: tuple[int, ...] = (0, 0, 1, 1),
        embed_dim: int = 512,
        image_size: int = 224,
        resize_antialias: bool = True,
    ):
        super().__init__()
        self.video_encoder = ResNet3dSlowOnly(
            tuple(stage_blocks), base_channels, tuple(spatial_strides), tuple(inflate)
        )
        self.video_project_head = nn.Linear(self.video_encoder.out_channels, embed_dim)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 RGB frames [B, T, H, W, 3] → float [B, 3, T, S, S] in [0, 1] (S = image_size)."""
        b, t, h, w, _ = frames.shape
        x = frames.reshape(b * t, h, w, 3).permute(0, 3, 1, 2).float() / 255.0
        size = self.config.image_size
        if (h, w) != (size, size):
            x = resize_bilinear(x, size, self.config.resize_antialias)
        return x.to(self.dtype).reshape(b, t, 3, size, size).permute(0, 2, 1, 3, 4)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Encode frames.

        Args:
            frames: uint8 [B, T, H, W, 3] RGB, or float [B, 3, T, S, S] already preprocessed.
        Returns:
            [B, T, embed_dim] features, each step L2-normalised.
        """
        x = self.preprocess(frames) if frames.dtype == torch.uint8 else frames
        x = self.video_encoder(x)  # [B, C, T, h, w]
        x = x.mean(dim=(3, 4)).transpose(1, 2)  # spatial average → [B, T, C]
        return F.normalize(self.video_project_head(x), dim=-1)
