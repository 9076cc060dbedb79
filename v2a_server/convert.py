"""Converting the official STA-V2A release into a pipeline folder (`v2a convert`).

Inputs (model.md §4):
- the release: ``summary.jsonl`` (training args) and ``pytorch_model_*.bin`` (the whole
  ``AudioDiffusion`` state dict: ``unet.``, ``controlnet.``, ``text_encoder.``,
  ``extract_cavp.stage1_model.``, ``trans_cvap_feature.``, ``pre_onset.``, ``global_video_feature.``);
- the UNet and scheduler config folders named by the summary (diffusers format);
- Diff-Foley's ``cavp_epoch66.ckpt`` (overridden by the release's ``extract_cavp.stage1_model.*``);
- AudioLDM's ``audioldm-s-full.ckpt`` (original LDM naming, VAE + HiFi-GAN + ``scale_factor``) or a
  diffusers ``cvssp/audioldm`` folder (``vae/`` + ``vocoder/``);
- the (m)T5 folder (config, tokenizer, weights; the release's ``text_encoder.*`` override them).

Every rename is a ``KeyRule`` in the tables below (a source template and a target template with
named fields); nothing is renamed anywhere else. Keys that are dropped on purpose are
``IgnoreRule``s with the reason. The conversion is planned first — map every source key, derive
each component's config from tensor shapes and configs, build the components on the meta device
and check every key and shape, collecting all problems — and only then materialised. Planning
works on meta tensors too, so the real-size mapping is testable without the real files.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from v2a_server.model_card import STA_V2A_SCOPE, ModelCard, write_model_card

# ---- reference facts that are not stored in any weight ---------------------------------------

# The release's ControlNet video embedding (ConditioningEmbeddingForVideo_40_Multi_new) hard-codes
# 128 output channels and adds them to conv_in's output (model.md §1.7).
RELEASE_CONTROLNET_CHANNELS = 128
# CAVP features are extracted at 4 fps, 40 steps per 10 s window (model.md §1.1).
REFERENCE_VIDEO_FPS = 4.0
REFERENCE_VIDEO_STEPS = 40
# Multi-scale window half-sizes of the release (use_feature_window on).
REFERENCE_WINDOW_SCALES = (1, 2, 4, 8)
# CAVP: frames resized to 224 × 224; SlowOnly spatial strides (1, 2, 2, 2).
REFERENCE_CAVP_IMAGE_SIZE = 224
REFERENCE_CAVP_SPATIAL_STRIDES = (1, 2, 2, 2)
# AudioLDM's VAE uses GroupNorm(32) everywhere (not recorded in the weights).
REFERENCE_VAE_NORM_GROUPS = 32
# AudioLDM's HiFi-GAN: upsample rates and dilations are not recorded in the weights.
REFERENCE_HIFIGAN_UPSAMPLE_RATES = (5, 4, 2, 2, 2)
REFERENCE_HIFIGAN_DILATIONS = (1, 3, 5)
# The scaling_factor diffusers' converted cvssp/audioldm records (model.md §1.9), for a sanity note.
CVSSP_AUDIOLDM_SCALING_FACTOR = 0.9227914214134216
KNOWN_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")

COMPONENTS = ("video_encoder", "conditioner", "text_encoder", "unet", "controlnet", "vae", "vocoder")


# ---- key rules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One named field of a key template.

    Args:
        vocabulary: source name → target name (the field's allowed values); None = free text.
        pattern: regex of a free field.
        reversed_level: the value is a resolution level counted from the other end
            (LDM ``decoder.up.N`` ↔ diffusers ``up_blocks.{levels-1-N}``).
    """

    vocabulary: Mapping[str, str] | None = None
    pattern: str = r"\d+"
    reversed_level: bool = False

    def regex(self, side: str) -> str:
        if self.vocabulary is None:
            return self.pattern
        names = self.vocabulary.keys() if side == "source" else self.vocabulary.values()
        return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))

    def convert(self, value: str, forward: bool, levels: int) -> str:
        if self.vocabulary is not None:
            if forward:
                return self.vocabulary[value]
            return {t: s for s, t in self.vocabulary.items()}[value]
        if self.reversed_level:
            return str(levels - 1 - int(value))
        return value


INDEX = Field()
REST = Field(pattern=r".+")
PARAM = Field({"weight": "weight", "bias": "bias"})
CODER = Field({"encoder": "encoder", "decoder": "decoder"})
UP_LEVEL = Field(reversed_level=True)
RESNET_PART = Field(
    {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
)
MID_RESNET = Field({"block_1": "resnets.0", "block_2": "resnets.1"})
ATTENTION_PART = Field({"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"})
HIFIGAN_CONVS = Field({"convs1": "convs1", "convs2": "convs2"})
DEFAULT_FIELDS = {"i": INDEX, "j": INDEX, "rest": REST, "p": PARAM}


def squeeze_1x1_conv(tensor: torch.Tensor) -> torch.Tensor:
    """A 1×1 conv weight [O, I, 1, 1] (or [O, I, 1]) → a linear weight [O, I]; others unchanged."""
    if tensor.ndim in (3, 4) and all(s == 1 for s in tensor.shape[2:]):
        return tensor.reshape(tensor.shape[0], tensor.shape[1])
    return tensor


class KeyRule:
    """Renames keys matching ``source`` (a template with ``{field}`` parts) to ``target`` in
    ``component``, optionally transforming the tensor. Works in both directions (the reverse
    direction names the expected source key of a missing target key in error messages)."""

    def __init__(
        self,
        source: str,
        component: str,
        target: str,
        fields: Mapping[str, Field] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.source = source
        self.component = component
        self.target = target
        self.fields = dict(DEFAULT_FIELDS, **(fields or {}))
        self.transform = transform
        self._regex = {side: self._compile(template, side) for side, template in (("source", source), ("target", target))}

    def _compile(self, template: str, side: str) -> re.Pattern:
        parts = re.split(r"\{(\w+)\}", template)
        regex = ""
        for n, part in enumerate(parts):
            regex += re.escape(part) if n % 2 == 0 else f"(?P<{part}>{self.fields[part].regex(side)})"
        return re.compile(regex + r"\Z")

    def apply(self, key: str, forward: bool = True, levels: int = 0) -> str | None:
        """The renamed key, or None when this rule does not match."""
        match = self._regex["source" if forward else "target"].match(key)
        if match is None:
            return None
        out = self.target if forward else self.source
        for name, value in match.groupdict().items():
            out = out.replace("{" + name + "}", self.fields[name].convert(value, forward, levels))
        return out


@dataclass(frozen=True)
class IgnoreRule:
    """Source keys dropped on purpose (matched as a regex from the key's start)."""

    pattern: str
    reason: str

    def matches(self, key: str) -> bool:
        return re.match(self.pattern, key) is not None


@dataclass(frozen=True)
class SourceSpec:
    """How one kind of input file maps onto our components."""

    kind: str
    rules: tuple[KeyRule, ...]
    ignored: tuple[IgnoreRule, ...] = ()


def _prefix_rules(pairs: Iterable[tuple[str, str, str]]) -> tuple[KeyRule, ...]:
    return tuple(KeyRule(src + "{rest}", comp, dst + "{rest}") for src, comp, dst in pairs)


# The release .bin: AudioDiffusion.state_dict() (model.md §4 table).
RELEASE = SourceSpec(
    "release",
    _prefix_rules(
        [
            ("unet.", "unet", ""),
            ("controlnet.", "controlnet", ""),
            ("text_encoder.", "text_encoder", ""),
            ("extract_cavp.stage1_model.video_encoder.", "video_encoder", "video_encoder."),
            ("extract_cavp.stage1_model.video_project_head.", "video_encoder", "video_project_head."),
            ("trans_cvap_feature.", "conditioner", "trans_cvap_feature."),
            ("pre_onset.", "conditioner", "pre_onset."),
            ("global_video_feature.", "conditioner", "global_video_feature."),
        ]
    ),
    (
        IgnoreRule(r"extract_cavp\.stage1_model\.spec_encoder\.", "CAVP's audio branch (Cnn14), unused for video-to-audio"),
        IgnoreRule(r"extract_cavp\.stage1_model\.logit_scale\Z", "CAVP's contrastive temperature, unused at inference"),
    ),
)

# Diff-Foley cavp_epoch66.ckpt (after stripping `module.`).
CAVP_CHECKPOINT = SourceSpec(
    "cavp",
    _prefix_rules(
        [
            ("video_encoder.", "video_encoder", "video_encoder."),
            ("video_project_head.", "video_encoder", "video_project_head."),
        ]
    ),
    (
        IgnoreRule(r"spec_encoder\.", "CAVP's audio branch (Cnn14), unused for video-to-audio"),
        IgnoreRule(r"logit_scale\Z", "CAVP's contrastive temperature, unused at inference"),
    ),
)

# AudioLDM original first stage (LDM naming) → diffusers AutoencoderKL; HiFi-GAN → SpeechT5HifiGan.
_VAE = "first_stage_model."
_HIFIGAN = "first_stage_model.vocoder."
AUDIOLDM_CHECKPOINT = SourceSpec(
    "audioldm",
    (
        KeyRule(_HIFIGAN + "conv_pre.{p}", "vocoder", "conv_pre.{p}"),
        KeyRule(_HIFIGAN + "ups.{i}.{p}", "vocoder", "upsampler.{i}.{p}"),
        KeyRule(_HIFIGAN + "resblocks.{i}.{convs}.{j}.{p}", "vocoder", "resblocks.{i}.{convs}.{j}.{p}", {"convs": HIFIGAN_CONVS}),
        KeyRule(_HIFIGAN + "conv_post.{p}", "vocoder", "conv_post.{p}"),
        KeyRule(_VAE + "{coder}.conv_in.{p}", "vae", "{coder}.conv_in.{p}", {"coder": CODER}),
        KeyRule(_VAE + "{coder}.conv_out.{p}", "vae", "{coder}.conv_out.{p}", {"coder": CODER}),
        KeyRule(_VAE + "{coder}.norm_out.{p}", "vae", "{coder}.conv_norm_out.{p}", {"coder": CODER}),
        KeyRule(_VAE + "quant_conv.{p}", "vae", "quant_conv.{p}"),
        KeyRule(_VAE + "post_quant_conv.{p}", "vae", "post_quant_conv.{p}"),
        KeyRule(
            _VAE + "encoder.down.{i}.block.{j}.{part}.{p}", "vae", "encoder.down_blocks.{i}.resnets.{j}.{part}.{p}",
            {"part": RESNET_PART},
        ),
        KeyRule(_VAE + "encoder.down.{i}.downsample.conv.{p}", "vae", "encoder.down_blocks.{i}.downsamplers.0.conv.{p}"),
        KeyRule(
            _VAE + "decoder.up.{u}.block.{j}.{part}.{p}", "vae", "decoder.up_blocks.{u}.resnets.{j}.{part}.{p}",
            {"u": UP_LEVEL, "part": RESNET_PART},
        ),
        KeyRule(_VAE + "decoder.up.{u}.upsample.conv.{p}", "vae", "decoder.up_blocks.{u}.upsamplers.0.conv.{p}", {"u": UP_LEVEL}),
        KeyRule(
            _VAE + "{coder}.mid.{mid}.{part}.{p}", "vae", "{coder}.mid_block.{mid}.{part}.{p}",
            {"coder": CODER, "mid": MID_RESNET, "part": RESNET_PART},
        ),
        KeyRule(
            _VAE + "{coder}.mid.attn_1.{part}.{p}", "vae", "{coder}.mid_block.attentions.0.{part}.{p}",
            {"coder": CODER, "part": ATTENTION_PART}, transform=squeeze_1x1_conv,
        ),
    ),
    (
        IgnoreRule(r"scale_factor\Z", "read into the VAE config as scaling_factor"),
        IgnoreRule(r"(?!first_stage_model\.)", "AudioLDM's own diffusion model, CLAP and noise schedule"),
        IgnoreRule(r"first_stage_model\.loss\.", "training-only VAE loss/discriminator"),
    ),
)

# The (m)T5 folder's own weights and a diffusers cvssp/audioldm folder: already in our naming.
TEXT_FOLDER = SourceSpec("text folder", (KeyRule("{rest}", "text_encoder", "{rest}"),))
AUDIOLDM_FOLDER = SourceSpec(
    "audioldm folder",
    (KeyRule("vae.{rest}", "vae", "{rest}"), KeyRule("vocoder.{rest}", "vocoder", "{rest}")),
)

# Keys that share one tensor in the target model (filled from each other when only one is given).
TIED_KEYS = {"text_encoder": (("encoder.embed_tokens.weight", "shared.weight"),)}

# Target keys with a safe default when no source provides them.
DEFAULTED_KEYS: tuple[tuple[str, str, Callable[[torch.Tensor], torch.Tensor], str], ...] = (
    ("video_encoder", r".*\.num_batches_tracked\Z", torch.zeros_like, "BatchNorm step counter, unused in eval"),
    ("vocoder", r"mean\Z", torch.zeros_like, "unused with normalize_before=False; 0 as in diffusers' converter"),
    ("vocoder", r"scale\Z", torch.ones_like, "unused with normalize_before=False; 1 as in diffusers' converter"),
)

# What to do when no input provides any key of a component.
NO_SOURCE_HINTS = {
    "video_encoder": "the release has no extract_cavp.stage1_model.* keys and no CAVP checkpoint was given "
    "(--cavp cavp_epoch66.ckpt)",
    "conditioner": "the release has no trans_cvap_feature.*, pre_onset.* or global_video_feature.* keys",
    "vae": "the AudioLDM checkpoint has no first_stage_model.* keys",
    "vocoder": "the AudioLDM checkpoint has no first_stage_model.vocoder.* keys",
}

# Extra words for unexpected keys whose cause is known.
UNEXPECTED_HINTS = (
    (
        "controlnet",
        r"controlnet_cond_embedding\.(conv_in|blocks)\.",
        (
            "a stock ControlNet image-conditioning embedding key: the release's ControlNet must carry the "
            "video embedding (only controlnet_cond_embedding.conv_out)"
        ),
    ),
)


# ---- problems and the report ---------------------------------------------------------------------


def _shape(shape) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


@dataclass
class Problem:
    """One reason the release does not convert."""

    kind: str  # "missing" | "unexpected" | "shape" | "config" | "file"
    key: str  # the source key (with its file's label) or the config value at fault
    detail: str = ""
    expected: tuple | None = None
    got: tuple | None = None
    target: str = ""  # our "component.key" it maps to

    def __str__(self) -> str:
        text = f"{self.kind:<10} {self.key}" + (f" → {self.target}" if self.target else "")
        if self.kind == "shape":
            text += f": expected {_shape(self.expected)}, got {_shape(self.got)}"
        elif self.kind == "missing" and self.expected is not None:
            text += f": expected shape {_shape(self.expected)}"
        elif self.kind == "unexpected" and self.got is not None:
            text += f": got shape {_shape(self.got)}"
        return text + (f" — {self.detail}" if self.detail else "")


class ConversionError(ValueError):
    """The release cannot be converted; ``problems`` lists every reason found."""

    def __init__(self, problems: list[Problem], header: str = "the release does not match the model it should convert to"):
        self.problems = list(problems)
        lines = [f"{header} ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):"]
        lines += [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))


@dataclass
class ConversionReport:
    """What the conversion consumed and produced.

    Attributes:
        mapped: component → number of target keys filled from a source key.
        consumed: source label → {source key: "component.target_key"} for every mapped source key.
        ignored: source label → {source key: reason} for keys dropped on purpose.
        overridden: "component.key" → (label of the source whose value lost, label of the winner).
        tied / defaulted: "component.key" → what it was filled from / why.
        configs: component → the config it was built with.
        notes: things the user should know (e.g. a caption prefix of the training run).
    """

    mapped: dict[str, int] = field(default_factory=dict)
    consumed: dict[str, dict[str, str]] = field(default_factory=dict)
    ignored: dict[str, dict[str, str]] = field(default_factory=dict)
    overridden: dict[str, tuple[str, str]] = field(default_factory=dict)
    tied: dict[str, str] = field(default_factory=dict)
    defaulted: dict[str, str] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total_mapped(self) -> int:
        return sum(self.mapped.values())

    def format(self) -> str:
        lines = ["keys mapped per component:"]
        width = max(len(c) for c in COMPONENTS)
        for component in COMPONENTS:
            lines.append(f"  {component:<{width}}  {self.mapped.get(component, 0):6d}")
        lines.append(f"  {'total':<{width}}  {self.total_mapped:6d}")
        for label, keys in self.consumed.items():
            lines.append(f"{label}: {len(keys)} keys consumed, {len(self.ignored.get(label, {}))} ignored")
            reasons: dict[str, int] = defaultdict(int)
            for reason in self.ignored.get(label, {}).values():
                reasons[reason] += 1
            for reason, count in reasons.items():
                lines.append(f"  ignored {count:6d}: {reason}")
        by: dict[tuple[str, str], int] = defaultdict(int)
        for pair in self.overridden.values():
            by[pair] += 1
        for (loser, winner), count in by.items():
            lines.append(f"{count} keys of {loser} overridden by {winner}")
        for key, source in self.tied.items():
            lines.append(f"tied: {key} ← {source}")
        for key, why in self.defaulted.items():
            lines.append(f"defaulted: {key} ({why})")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# ---- mapping ---------------------------------------------------------------------------------------


@dataclass
class Source:
    """One loaded input: its spec, a label for messages (usually the file name) and its tensors."""

    spec: SourceSpec
    label: str
    tensors: Mapping[str, torch.Tensor]


def count_vae_levels(keys: Iterable[str]) -> int:
    """Resolution levels of an LDM-named VAE: 1 + the highest ``encoder.down.N``/``decoder.up.N``."""
    levels = 0
    for key in keys:
        match = re.match(r"(?:first_stage_model\.)?(?:encoder\.down|decoder\.up)\.(\d+)\.", key)
        if match:
            levels = max(levels, int(match.group(1)) + 1)
    return levels


@dataclass
class _Mapped:
    tensors: dict[str, dict[str, torch.Tensor]]
    origin: dict[str, dict[str, tuple[str, str]]]
    unmatched: list[tuple[str, str, tuple]]


def map_sources(sources: list[Source], report: ConversionReport) -> _Mapped:
    """Rename every source key into (component, target key); later sources override earlier ones.

    Keys that match no rule and no ignore rule are returned as ``unmatched`` (unexpected)."""
    tensors: dict[str, dict[str, torch.Tensor]] = {c: {} for c in COMPONENTS}
    origin: dict[str, dict[str, tuple[str, str]]] = {c: {} for c in COMPONENTS}
    unmatched = []
    for source in sources:
        levels = count_vae_levels(source.tensors)
        consumed = report.consumed.setdefault(source.label, {})
        ignored = report.ignored.setdefault(source.label, {})
        for key, tensor in source.tensors.items():
            for rule in source.spec.rules:
                target = rule.apply(key, forward=True, levels=levels)
                if target is not None:
                    if target in tensors[rule.component]:
                        loser = origin[rule.component][target][0]
                        report.overridden[f"{rule.component}.{target}"] = (loser, source.label)
                    tensors[rule.component][target] = rule.transform(tensor) if rule.transform else tensor
                    origin[rule.component][target] = (source.label, key)
                    consumed[key] = f"{rule.component}.{target}"
                    break
            else:
                reason = next((r.reason for r in source.spec.ignored if r.matches(key)), None)
                if reason is not None:
                    ignored[key] = reason
                else:
                    unmatched.append((source.label, key, tuple(tensor.shape)))
    return _Mapped(tensors, origin, unmatched)


def expected_source_names(component: str, key: str, sources: list[Source], levels: int) -> list[str]:
    """Where a target key should have come from, in each source feeding the component."""
    names = []
    for source in reversed(sources):
        for rule in source.spec.rules:
            if rule.component != component:
                continue
            name = rule.apply(key, forward=False, levels=levels)
            if name is not None:
                names.append(f"{source.label}: {name}")
                break
    return names


# ---- configs derived from the weights --------------------------------------------------------------


class _Underivable(Exception):
    def __init__(self, key: str):
        self.key = key


def _need(sd: Mapping[str, torch.Tensor], key: str) -> torch.Size:
    if key not in sd:
        raise _Underivable(key)
    return sd[key].shape


def _indices(sd: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (one group) over the keys."""
    found = {int(m.group(1)) for k in sd for m in [re.match(pattern, k)] if m}
    return sorted(found)


def derive_video_encoder_config(sd: Mapping[str, torch.Tensor], image_size: int) -> dict[str, Any]:
    """CAVPVideoEncoder config from mmaction-named weights (stages, blocks, widths, inflation)."""
    stages = _indices(sd, r"video_encoder\.layer(\d+)\.")
    if not stages:
        raise _Underivable("video_encoder.layer1.0.conv1.conv.weight")
    stage_blocks, inflate = [], []
    for s in stages:
        stage_blocks.append(len(_indices(sd, rf"video_encoder\.layer{s}\.(\d+)\.")))
        inflate.append(int(_need(sd, f"video_encoder.layer{s}.0.conv1.conv.weight")[2] == 3))
    return dict(
        stage_blocks=tuple(stage_blocks),
        base_channels=int(_need(sd, "video_encoder.conv1.conv.weight")[0]),
        spatial_strides=REFERENCE_CAVP_SPATIAL_STRIDES[: len(stages)],
        inflate=tuple(inflate),
        embed_dim=int(_need(sd, "video_project_head.weight")[0]),
        image_size=image_size,
    )


def derive_conditioner_config(sd: Mapping[str, torch.Tensor], text_dim: int) -> tuple[dict[str, Any], list[Problem]]:
    """STAVideoConditioner config from the local/global path weights (reference 4 fps, 40 steps)."""
    problems = []
    fc = [_need(sd, f"trans_cvap_feature.fc{n}.weight") for n in (1, 2, 3, 4)]
    temporal_dim = int(fc[3][0])
    onset_in = int(_need(sd, "pre_onset.l1.weight")[1])
    window_scales = REFERENCE_WINDOW_SCALES
    if onset_in == temporal_dim:
        window_scales = ()  # the release's use_feature_window=False
    elif onset_in != temporal_dim * (1 + len(REFERENCE_WINDOW_SCALES)):
        problems.append(Problem(
            "config", "pre_onset.l1.weight",
            f"input width {onset_in} is neither {temporal_dim} (no feature windows) nor "
            f"{temporal_dim * (1 + len(REFERENCE_WINDOW_SCALES))} (windows {REFERENCE_WINDOW_SCALES})",
        ))
    global_dim = int(_need(sd, "global_video_feature.fc.weight")[0])
    if text_dim != global_dim:
        problems.append(Problem(
            "config", "text_encoder d_model",
            f"the text encoder's width {text_dim} differs from the global video width {global_dim}; "
            "the release concatenates them without a projection, so they must be equal",
        ))
    config = dict(
        feature_dim=int(fc[0][1]),
        mlp_hidden_dims=(int(fc[0][0]), int(fc[1][0]), int(fc[2][0])),
        temporal_dim=temporal_dim,
        window_scales=window_scales,
        control_dim=int(_need(sd, "pre_onset.l1.weight")[0]),
        global_dim=global_dim,
        num_global_tokens=int(_need(sd, "global_video_feature.conv.weight")[0]),
        video_fps=REFERENCE_VIDEO_FPS,
        video_steps_per_window=REFERENCE_VIDEO_STEPS,
        text_dim=global_dim,  # no text_projection: the release has none
    )
    return config, problems


def derive_vae_config(sd: Mapping[str, torch.Tensor], scaling_factor: float, norm_num_groups: int) -> dict[str, Any]:
    """AutoencoderKL config from diffusers-named weights of an AudioLDM first stage."""
    from v2a_server.configs import AUDIOLDM_VAE

    levels = _indices(sd, r"encoder\.down_blocks\.(\d+)\.")
    if not levels:
        raise _Underivable("encoder.down_blocks.0.resnets.0.conv1.weight")
    return dict(
        AUDIOLDM_VAE,
        in_channels=int(_need(sd, "encoder.conv_in.weight")[1]),
        out_channels=int(_need(sd, "decoder.conv_out.weight")[0]),
        latent_channels=int(_need(sd, "quant_conv.weight")[0]) // 2,
        block_out_channels=tuple(int(_need(sd, f"encoder.down_blocks.{i}.resnets.0.conv1.weight")[0]) for i in levels),
        down_block_types=("DownEncoderBlock2D",) * len(levels),
        up_block_types=("UpDecoderBlock2D",) * len(levels),
        layers_per_block=len(_indices(sd, r"encoder\.down_blocks\.0\.resnets\.(\d+)\.")),
        norm_num_groups=norm_num_groups,
        scaling_factor=scaling_factor,
    )


def derive_vocoder_config(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any] | None, list[Problem]]:
    """SpeechT5HifiGan config from HiFi-GAN weights (rates and dilations: AudioLDM's reference)."""
    from v2a_server.configs import AUDIOLDM_HIFIGAN

    problems = []
    ups = _indices(sd, r"upsampler\.(\d+)\.")
    blocks = _indices(sd, r"resblocks\.(\d+)\.")
    if not ups:
        raise _Underivable("upsampler.0.weight")
    if len(ups) != len(REFERENCE_HIFIGAN_UPSAMPLE_RATES):
        problems.append(Problem(
            "config", "upsampler.*",
            f"{len(ups)} upsampling layers; AudioLDM's HiFi-GAN has {len(REFERENCE_HIFIGAN_UPSAMPLE_RATES)} "
            f"(rates {REFERENCE_HIFIGAN_UPSAMPLE_RATES}, which the weights do not record)",
        ))
        return None, problems
    num_kernels = max(1, len(blocks) // len(ups))
    num_dilations = len(_indices(sd, r"resblocks\.0\.convs1\.(\d+)\."))
    config = dict(
        AUDIOLDM_HIFIGAN,
        model_in_dim=int(_need(sd, "conv_pre.weight")[1]),
        upsample_initial_channel=int(_need(sd, "conv_pre.weight")[0]),
        upsample_rates=list(REFERENCE_HIFIGAN_UPSAMPLE_RATES),
        upsample_kernel_sizes=[int(_need(sd, f"upsampler.{i}.weight")[2]) for i in ups],
        resblock_kernel_sizes=[int(_need(sd, f"resblocks.{j}.convs1.0.weight")[2]) for j in range(num_kernels)],
        resblock_dilation_sizes=[list(REFERENCE_HIFIGAN_DILATIONS[:num_dilations])] * num_kernels,
        normalize_before=False,
    )
    return config, problems


def check_controlnet_width(unet_config: Mapping[str, Any], conv_out_shape) -> None:
    """Refuse a UNet whose first block cannot take the ControlNet's video embedding.

    The embedding's output (``controlnet_cond_embedding.conv_out``, [C, C_video, 3, 3]) is added
    to ``conv_in``'s output, so C must equal the UNet's ``block_out_channels[0]``; the release
    hard-codes C = 128.
    """
    # diffusers' default when the config omits it
    first = int(unet_config.get("block_out_channels", (320, 640, 1280, 1280))[0])
    width = int(conv_out_shape[0])
    if first == width:
        return
    key = "controlnet.controlnet_cond_embedding.conv_out.weight"
    if width == RELEASE_CONTROLNET_CHANNELS:
        detail = (
            f"the UNet config has block_out_channels[0] = {first}, but the release's ControlNet video "
            f"embedding outputs {RELEASE_CONTROLNET_CHANNELS} channels (hard-coded in "
            f"ConditioningEmbeddingForVideo_40_Multi_new) that are added to conv_in's output, so the UNet's "
            f"first block must have {RELEASE_CONTROLNET_CHANNELS} channels; a {first}-channel UNet (e.g. "
            "Tango's 320 config) cannot be the released prior — point --unet-config at the 128-base UNet "
            "config the release was trained with"
        )
    else:
        detail = (
            f"the UNet config has block_out_channels[0] = {first}, but the ControlNet video embedding "
            f"outputs {width} channels ({key} {_shape(conv_out_shape)}); they are added, so they must be equal"
        )
    raise ConversionError([Problem("config", "unet block_out_channels[0]", detail)], header="refusing this UNet")


# ---- planning ----------------------------------------------------------------------------------------


@dataclass
class ConversionPlan:
    """Components built on the meta device plus the complete state dict for each of them."""

    models: dict[str, torch.nn.Module]
    state: dict[str, dict[str, torch.Tensor]]
    scheduler_config: dict[str, Any]
    report: ConversionReport


def _text_encoder_class(text_config):
    from transformers import MT5EncoderModel, T5EncoderModel

    model_type = getattr(text_config, "model_type", None)
    if model_type == "mt5":
        return MT5EncoderModel
    if model_type == "t5":
        return T5EncoderModel
    raise ConversionError(
        [Problem(
            "config", "text encoder",
            f"model_type must be 't5' or 'mt5' (the release loads T5EncoderModel), got {model_type!r}",
        )]
    )


def plan_conversion(
    release: Mapping[str, torch.Tensor],
    *,
    unet_config: Mapping[str, Any],
    scheduler_config: Mapping[str, Any],
    text_config,
    text_weights: Mapping[str, torch.Tensor] | None = None,
    cavp: Mapping[str, torch.Tensor] | None = None,
    audioldm: Mapping[str, torch.Tensor] | None = None,
    audioldm_folder: Mapping[str, Any] | None = None,
    vae_norm_num_groups: int = REFERENCE_VAE_NORM_GROUPS,
    cavp_image_size: int = REFERENCE_CAVP_IMAGE_SIZE,
    labels: Mapping[str, str] | None = None,
) -> ConversionPlan:
    """Map, derive and check everything; raise ``ConversionError`` listing every problem.

    Args:
        release: the release's state dict (``unet.``, ``controlnet.``, … keys); tensors may be meta.
        unet_config / scheduler_config: the diffusers configs the summary names.
        text_config: the (m)T5 ``PretrainedConfig``.
        text_weights: the (m)T5 folder's own state dict; the release's ``text_encoder.*`` override it.
        cavp: the CAVP checkpoint's state dict (``module.`` prefixes allowed); the release's
            ``extract_cavp.stage1_model.*`` override it.
        audioldm: the AudioLDM checkpoint's state dict (``first_stage_model.*``, ``scale_factor``).
        audioldm_folder: instead of ``audioldm``: ``{"vae": AutoencoderKL, "vocoder": SpeechT5HifiGan}``
            loaded from a diffusers folder.
        vae_norm_num_groups / cavp_image_size: values the weights do not record.
        labels: names for messages, keyed by "release", "cavp", "audioldm", "text".
    """
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    from v2a_server.models import (
        CAVPVideoEncoder,
        STAControlNetModel,
        STAVideoConditioner,
    )

    if (audioldm is None) == (audioldm_folder is None):
        raise ValueError("give exactly one of `audioldm` (original checkpoint) or `audioldm_folder` (diffusers vae/vocoder)")
    labels = dict({"release": "release", "cavp": "cavp", "audioldm": "audioldm", "text": "text folder"}, **(labels or {}))
    report = ConversionReport()
    problems: list[Problem] = []

    # 1. gather the sources, lowest priority first
    sources = []
    if text_weights is not None:
        sources.append(Source(TEXT_FOLDER, labels["text"], text_weights))
    if cavp is not None:
        sources.append(Source(CAVP_CHECKPOINT, labels["cavp"], strip_module_prefix(cavp)))
    scaling_factor = None
    if audioldm is not None:
        sources.append(Source(AUDIOLDM_CHECKPOINT, labels["audioldm"], audioldm))
        if "scale_factor" in audioldm:
            scaling_factor = float(audioldm["scale_factor"])
            if abs(scaling_factor - CVSSP_AUDIOLDM_SCALING_FACTOR) > 1e-6:
                report.notes.append(
                    f"scale_factor {scaling_factor} differs from the {CVSSP_AUDIOLDM_SCALING_FACTOR} that diffusers' "
                    "cvssp/audioldm records for audioldm-s-full; using the checkpoint's"
                )
        else:
            problems.append(Problem("missing", f"{labels['audioldm']}: scale_factor", "the latent scale of the VAE"))
    else:
        vae_model, vocoder_model = audioldm_folder["vae"], audioldm_folder["vocoder"]
        folder_tensors = {f"vae.{k}": v for k, v in vae_model.state_dict().items()}
        folder_tensors.update({f"vocoder.{k}": v for k, v in vocoder_model.state_dict().items()})
        sources.append(Source(AUDIOLDM_FOLDER, labels["audioldm"], folder_tensors))
    sources.append(Source(RELEASE, labels["release"], release))

    # 2. rename every key
    mapped = map_sources(sources, report)
    for label, key, shape in mapped.unmatched:
        problems.append(Problem("unexpected", f"{label}: {key}", "matches no mapping rule", got=shape))
    sd = mapped.tensors

    # 3. configs, derived from configs and tensor shapes
    configs: dict[str, dict[str, Any]] = {}
    if "controlnet_cond_embedding.conv_out.weight" in sd["controlnet"]:
        conv_out = sd["controlnet"]["controlnet_cond_embedding.conv_out.weight"].shape
        check_controlnet_width(unet_config, conv_out)  # a refusal, raised on its own
    else:
        conv_out = None

    def derive(component, fn, *args):
        if not sd[component]:
            problems.append(Problem("missing", f"every {component} key", NO_SOURCE_HINTS[component]))
            return None
        try:
            result = fn(sd[component], *args)
        except _Underivable as exc:
            names = expected_source_names(component, exc.key, sources, 0) or [f"{component}.{exc.key}"]
            problems.append(Problem("missing", " or ".join(names), f"needed to derive the {component} config"))
            return None
        if isinstance(result, tuple):
            result, found = result
            problems.extend(found)
        if result is not None:
            configs[component] = result
        return result

    derive("video_encoder", derive_video_encoder_config, cavp_image_size)
    derive("conditioner", derive_conditioner_config, int(text_config.d_model))
    configs["text_encoder"] = text_config.to_dict()
    configs["unet"] = {k: v for k, v in dict(unet_config).items() if not k.startswith("_")}
    if audioldm is not None:
        if scaling_factor is not None:
            derive("vae", derive_vae_config, scaling_factor, vae_norm_num_groups)
        derive("vocoder", derive_vocoder_config)
    else:
        configs["vae"] = dict(audioldm_folder["vae"].config)
        configs["vocoder"] = audioldm_folder["vocoder"].config.to_dict()

    prediction_type = scheduler_config.get("prediction_type", "epsilon")
    if prediction_type not in KNOWN_PREDICTION_TYPES:
        problems.append(Problem(
            "config", "scheduler prediction_type", f"{prediction_type!r} is not one of {KNOWN_PREDICTION_TYPES}"
        ))
    cross = configs["unet"].get("cross_attention_dim", 1280)  # diffusers' default
    if any(int(d) != int(text_config.d_model) for d in (cross if isinstance(cross, (list, tuple)) else [cross])):
        problems.append(Problem(
            "config", "unet cross_attention_dim",
            f"{cross} ≠ the text encoder's d_model {text_config.d_model} (text and video tokens share the context)",
        ))

    # 4. build every component on the meta device
    models: dict[str, torch.nn.Module] = {}
    with init_empty_weights():
        if "video_encoder" in configs:
            models["video_encoder"] = CAVPVideoEncoder(**configs["video_encoder"])
        if "conditioner" in configs:
            models["conditioner"] = STAVideoConditioner(**configs["conditioner"])
        models["text_encoder"] = _text_encoder_class(text_config)(text_config)
        unet = UNet2DConditionModel.from_config(configs["unet"])
        models["unet"] = unet
        if "vae" in configs:
            models["vae"] = AutoencoderKL.from_config(configs["vae"])
        if "vocoder" in configs:
            models["vocoder"] = SpeechT5HifiGan(SpeechT5HifiGanConfig(**configs["vocoder"]))
        mel_bins = int(configs["vocoder"]["model_in_dim"]) if "vocoder" in configs else 64
        levels = len(configs["vae"]["block_out_channels"]) if "vae" in configs else 3
        freq_bins = mel_bins // 2 ** (levels - 1)
        hint = sd["controlnet"].get("controlnet_cond_embedding.hint_conv.weight")
        control_dim = configs.get("conditioner", {}).get("control_dim", RELEASE_CONTROLNET_CHANNELS)
        controlnet_args = dict(
            video_condition_channels=int(conv_out[1]) if conv_out is not None else control_dim,
            latent_freq_bins=freq_bins,
            num_hint_channels=int(hint.shape[1]) if hint is not None else 0,
        )
        models["controlnet"] = STAControlNetModel.from_unet(unet, load_weights_from_unet=False, **controlnet_args)
    configs["controlnet"] = {k: v for k, v in dict(models["controlnet"].config).items() if not k.startswith("_")}
    if conv_out is not None and "conditioner" in configs and int(conv_out[1]) != configs["conditioner"]["control_dim"]:
        problems.append(Problem(
            "config", "controlnet.controlnet_cond_embedding.conv_out.weight",
            f"takes {int(conv_out[1])} condition channels but the onset head (pre_onset.l1) gives "
            f"{configs['conditioner']['control_dim']}",
        ))
    if "vae" in configs and int(configs["unet"]["in_channels"]) != int(configs["vae"]["latent_channels"]):
        problems.append(Problem(
            "config", "unet in_channels",
            f"{configs['unet']['in_channels']} ≠ the VAE's latent channels {configs['vae']['latent_channels']}",
        ))

    # 5. check every key and shape of every component
    state: dict[str, dict[str, torch.Tensor]] = {}
    for component, model in models.items():
        state[component] = _check_component(component, model, mapped, sources, levels, report, problems)
    if problems:
        raise ConversionError(problems)
    report.configs = configs
    return ConversionPlan(models, state, dict(scheduler_config), report)


def _check_component(component, model, mapped: _Mapped, sources, levels, report, problems) -> dict[str, torch.Tensor]:
    expected = model.state_dict()
    given = mapped.tensors[component]
    origin = mapped.origin[component]
    ties = {}
    for a, b in TIED_KEYS.get(component, ()):
        ties[a], ties[b] = b, a
    out: dict[str, torch.Tensor] = {}
    for key, want in expected.items():
        if key in given:
            tensor = given[key]
            if tuple(tensor.shape) != tuple(want.shape):
                label, source_key = origin[key]
                problems.append(Problem(
                    "shape", f"{label}: {source_key}", target=f"{component}.{key}",
                    expected=tuple(want.shape), got=tuple(tensor.shape),
                ))
            out[key] = tensor
            report.mapped[component] = report.mapped.get(component, 0) + 1
            continue
        partner = ties.get(key)
        if partner is not None and partner in given:
            out[key] = given[partner]
            report.tied[f"{component}.{key}"] = f"{component}.{partner}"
            continue
        default = next(
            ((fn, why) for comp, pattern, fn, why in DEFAULTED_KEYS if comp == component and re.match(pattern, key)), None
        )
        if default is not None:
            fn, why = default
            out[key] = fn(torch.empty(want.shape, dtype=want.dtype))
            report.defaulted[f"{component}.{key}"] = why
            continue
        names = expected_source_names(component, key, sources, levels) or [f"{component}.{key}"]
        problems.append(Problem("missing", " or ".join(names), target=f"{component}.{key}", expected=tuple(want.shape)))
    for key in given.keys() - expected.keys():
        label, source_key = origin[key]
        hint = next((h for comp, pattern, h in UNEXPECTED_HINTS if comp == component and re.match(pattern, key)), "")
        detail = f"the {component} has no such key" + (f"; {hint}" if hint else "")
        problems.append(Problem(
            "unexpected", f"{label}: {source_key}", detail, got=tuple(given[key].shape), target=f"{component}.{key}"
        ))
    for a, b in TIED_KEYS.get(component, ()):
        both = a in given and b in given and not given[a].is_meta and not given[b].is_meta
        if both and given[a].shape == given[b].shape and not torch.equal(given[a], given[b]):
            problems.append(Problem("config", f"{component}.{a}", f"is tied to {component}.{b} but their values differ"))
    return out


def materialize(plan: ConversionPlan, tokenizer, caption_prefix: str = ""):
    """Load the planned tensors into the meta-built components (float32) → ``STAV2APipeline``
    (``caption_prefix``: what the training run put before every caption)."""
    from diffusers import DDPMScheduler

    from v2a_server.pipelines import STAV2APipeline

    for component, model in plan.models.items():
        expected = model.state_dict()
        state = {k: v.to(expected[k].dtype).contiguous() for k, v in plan.state[component].items()}
        model.load_state_dict(state, strict=True, assign=True)
        if component == "text_encoder":
            model.tie_weights()
        still_meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
        if still_meta:
            raise RuntimeError(f"{component}: tensors left on the meta device after loading: {still_meta[:5]}")
        model.eval()
    return STAV2APipeline(
        video_encoder=plan.models["video_encoder"],
        conditioner=plan.models["conditioner"],
        tokenizer=tokenizer,
        text_encoder=plan.models["text_encoder"],
        unet=plan.models["unet"],
        controlnet=plan.models["controlnet"],
        scheduler=DDPMScheduler.from_config(plan.scheduler_config),
        vae=plan.models["vae"],
        vocoder=plan.models["vocoder"],
        caption_prefix=caption_prefix,
    )


# ---- files -----------------------------------------------------------------------------------------


def strip_module_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DataParallel's ``module.`` (as the release's CAVP loader does: every occurrence)."""
    return {k.replace("module.", ""): v for k, v in sd.items()}


def load_state_dict_file(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors: ``.safetensors``, or a torch file (its ``state_dict`` entry if any).

    Torch files are read with ``weights_only=True`` (memory-mapped when possible); a file that
    needs arbitrary unpickling is refused unless ``allow_pickle``.
    """
    import pickle

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as exc:
        if not allow_pickle:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
            what = f"a {found.group(1)} object" if found else "objects other than tensors"
            raise ConversionError(
                [Problem("file", str(path), f"holds {what}, which loading it would execute as code; "
                         "pass --allow-pickle only if you trust this file")],
                header="refusing to unpickle",
            ) from None
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ConversionError([Problem("file", str(path), f"is not a state dict (got {type(obj).__name__})")])
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def read_summary(path: str | Path) -> dict[str, Any]:
    """The training args: the first JSON line of ``summary.jsonl`` (as the release reads it)."""
    path = Path(path)
    with path.open() as f:
        first = f.readline()
    try:
        args = json.loads(first)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: the first line is not JSON ({exc})") from None
    if not isinstance(args, dict):
        raise ValueError(f"{path}: the first line must be a JSON object of training args")
    return args


def find_config_file(path: str | Path, subfolder: str, filename: str, what: str, hint: str) -> Path:
    """``path`` itself (a .json), ``path/filename`` or ``path/subfolder/filename``."""
    path = Path(path)
    for candidate in (path, path / filename, path / subfolder / filename):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{what} not found: looked for {path}, {path / filename} and {path / subfolder / filename} ({hint})")


def _is_audioldm_folder(path: Path) -> bool:
    return path.is_dir() and (path / "vae").is_dir() and (path / "vocoder").is_dir()


def _has_weights(folder: Path) -> bool:
    names = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
    return any((folder / n).is_file() for n in names)


def convert_release(
    summary: str | Path,
    weights: str | Path,
    out: str | Path | None,
    *,
    audioldm: str | Path,
    root: str | Path = ".",
    unet_config: str | Path | None = None,
    scheduler_config: str | Path | None = None,
    text_encoder: str | Path | None = None,
    cavp: str | Path | None = None,
    vae_norm_num_groups: int = REFERENCE_VAE_NORM_GROUPS,
    cavp_image_size: int = REFERENCE_CAVP_IMAGE_SIZE,
    allow_pickle: bool = False,
) -> ConversionReport:
    """Convert the release files into a pipeline folder at ``out`` (None = check only).

    Paths the summary names (``unet_model_name``/``unet_model_config``, ``scheduler_name``,
    ``text_encoder_name``) are resolved relative to ``root`` unless given explicitly.
    """
    from transformers import AutoConfig, AutoTokenizer

    if out is not None:
        out = Path(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise FileExistsError(f"{out} exists and is not an empty folder; choose a new one")
    args = read_summary(summary)
    root = Path(root)
    notes = []

    # 1. configs named by the summary
    if unet_config is None:
        name = args.get("unet_model_name") or args.get("unet_model_config")
        if not name:
            raise ValueError(f"{summary} names no unet_model_name or unet_model_config; pass --unet-config")
        unet_config = root / name
    unet_path = find_config_file(unet_config, "unet", "config.json", "UNet config", "pass --unet-config or --root")
    if scheduler_config is None:
        if not args.get("scheduler_name"):
            raise ValueError(f"{summary} names no scheduler_name; pass --scheduler-config")
        scheduler_config = root / args["scheduler_name"]
    scheduler_path = find_config_file(
        scheduler_config, "scheduler", "scheduler_config.json", "scheduler config", "pass --scheduler-config or --root"
    )
    if text_encoder is None:
        if not args.get("text_encoder_name"):
            raise ValueError(f"{summary} names no text_encoder_name; pass --text-encoder")
        text_encoder = root / args["text_encoder_name"]
    text_folder = Path(text_encoder)
    if not (text_folder / "config.json").is_file():
        raise FileNotFoundError(f"text encoder folder {text_folder} has no config.json (pass --text-encoder or --root)")
    unet_cfg = json.loads(unet_path.read_text())
    scheduler_cfg = json.loads(scheduler_path.read_text())
    text_config = AutoConfig.from_pretrained(str(text_folder))
    caption_prefix = str(args.get("prefix") or "")
    if caption_prefix:
        notes.append(f"the training run prepended {caption_prefix!r} to every caption: stored as the "
                     "pipeline's caption_prefix, which the pipeline puts before every caption")

    # 2. weights
    release = load_state_dict_file(weights, allow_pickle)
    text_weights = None
    if not any(k.startswith("text_encoder.") for k in release):
        if not _has_weights(text_folder):
            raise FileNotFoundError(f"the release has no text_encoder.* keys and {text_folder} has no weights")
        text_weights = _text_encoder_class(text_config).from_pretrained(str(text_folder), dtype=torch.float32).state_dict()
        notes.append(f"text encoder weights from {text_folder} (the release has no text_encoder.* keys)")
    cavp_sd = load_state_dict_file(cavp, allow_pickle) if cavp is not None else None
    audioldm_path = Path(audioldm)
    audioldm_sd = audioldm_folder = None
    if _is_audioldm_folder(audioldm_path):
        from diffusers import AutoencoderKL
        from transformers import SpeechT5HifiGan

        audioldm_folder = {
            "vae": AutoencoderKL.from_pretrained(str(audioldm_path), subfolder="vae"),
            "vocoder": SpeechT5HifiGan.from_pretrained(str(audioldm_path), subfolder="vocoder"),
        }
    else:
        audioldm_sd = load_state_dict_file(audioldm_path, allow_pickle)

    # 3. plan (all checks), then write
    plan = plan_conversion(
        release,
        unet_config=unet_cfg,
        scheduler_config=scheduler_cfg,
        text_config=text_config,
        text_weights=text_weights,
        cavp=cavp_sd,
        audioldm=audioldm_sd,
        audioldm_folder=audioldm_folder,
        vae_norm_num_groups=vae_norm_num_groups,
        cavp_image_size=cavp_image_size,
        labels={
            "release": Path(weights).name,
            "cavp": Path(cavp).name if cavp is not None else "cavp",
            "audioldm": audioldm_path.name,
            "text": text_folder.name,
        },
    )
    plan.report.notes.extend(notes)
    if out is not None:
        pipe = materialize(plan, AutoTokenizer.from_pretrained(str(text_folder)), caption_prefix)
        pipe.save_pretrained(str(out))
        write_model_card(out, ModelCard(scope=STA_V2A_SCOPE))
    return plan.report


__all__ = [
    "ConversionError",
    "ConversionPlan",
    "ConversionReport",
    "KeyRule",
    "Problem",
    "convert_release",
    "load_state_dict_file",
    "map_sources",
    "materialize",
    "plan_conversion",
]
