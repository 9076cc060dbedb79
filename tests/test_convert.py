"""`v2a convert`: official release names → our pipeline folder.

The fake releases are made from our own models' state dicts renamed to the OFFICIAL names by
the inverse tables below, written independently of ``v2a_server.convert``; a handful of literal
official key names from the spec are also checked to be consumed.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from v2a_server.cli import main as v2a_main
from v2a_server.convert import ConversionError, plan_conversion

# ---- inverse of the conversion, written independently --------------------------------------------

# Our component key prefix → official key prefix in the release .bin (model.md §4).
RELEASE_PREFIX = {
    "unet": "unet.",
    "controlnet": "controlnet.",
    "text_encoder": "text_encoder.",
    "video_encoder": "extract_cavp.stage1_model.",  # video_encoder.* and video_project_head.*
    "conditioner": "",  # trans_cvap_feature.*, pre_onset.*, global_video_feature.* as they are
}

# diffusers AutoencoderKL → AudioLDM (LDM) names, except the reversed decoder levels.
VAE_TO_OFFICIAL = [
    (r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out."),
    (r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2."),
    (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.", r"encoder.down.\1.downsample.conv."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.mid.block_1."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.mid.block_2."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.group_norm\.", r"\1.mid.attn_1.norm."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.to_q\.", r"\1.mid.attn_1.q."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.to_k\.", r"\1.mid.attn_1.k."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.to_v\.", r"\1.mid.attn_1.v."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.to_out\.0\.", r"\1.mid.attn_1.proj_out."),
    (r"\.conv_shortcut\.", ".nin_shortcut."),
]


def official_vae_key(key: str, levels: int) -> str:
    m = re.match(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$", key)
    if m:
        key = f"decoder.up.{levels - 1 - int(m.group(1))}.block.{m.group(2)}.{m.group(3)}"
    m = re.match(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)$", key)
    if m:
        key = f"decoder.up.{levels - 1 - int(m.group(1))}.upsample.conv.{m.group(2)}"
    for pattern, repl in VAE_TO_OFFICIAL:
        key = re.sub(pattern, repl, key)
    return key


def official_vae_tensor(key: str, tensor: torch.Tensor) -> torch.Tensor:
    """LDM stores the mid-block attention projections as 1×1 convs."""
    if re.search(r"mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$", key):
        return tensor[:, :, None, None]
    return tensor


def official_vocoder_key(key: str) -> str | None:
    if key in ("mean", "scale"):  # not in the original HiFi-GAN
        return None
    return re.sub(r"^upsampler\.(\d+)\.", r"ups.\1.", key)


def official_release(pipe) -> dict[str, torch.Tensor]:
    out = {}
    for component, prefix in RELEASE_PREFIX.items():
        for key, tensor in getattr(pipe, component).state_dict().items():
            out[prefix + key] = tensor
    return out


def official_audioldm(pipe, scale_factor: float) -> dict[str, torch.Tensor]:
    levels = len(pipe.vae.config.block_out_channels)
    out = {"scale_factor": torch.tensor(scale_factor)}
    for key, tensor in pipe.vae.state_dict().items():
        out["first_stage_model." + official_vae_key(key, levels)] = official_vae_tensor(key, tensor)
    for key, tensor in pipe.vocoder.state_dict().items():
        name = official_vocoder_key(key)
        if name is not None:
            out["first_stage_model.vocoder." + name] = tensor
    # The rest of AudioLDM's LatentDiffusion checkpoint is not ours.
    out["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(4, 8, 3, 3)
    out["cond_stage_model.model.logit_scale_a"] = torch.zeros(())
    out["alphas_cumprod"] = torch.zeros(1000)
    return out


def official_cavp(pipe) -> dict[str, torch.Tensor]:
    """Diff-Foley's checkpoint: DataParallel prefix, plus the unused audio branch."""
    out = {"module." + k: t for k, t in pipe.video_encoder.state_dict().items()}
    out["module.spec_encoder.conv_block1.conv1.weight"] = torch.zeros(64, 1, 3, 3)
    out["module.logit_scale"] = torch.tensor(2.659)
    return out


# Literal official names (spec / model.md §4) and what each must become.
LITERAL_KEYS = {
    "release": {
        "controlnet.controlnet_cond_embedding.conv_out.weight": "controlnet.controlnet_cond_embedding.conv_out.weight",
        "global_video_feature.fga.un_models.0.embed.weight": "conditioner.global_video_feature.fga.un_models.0.embed.weight",
        "global_video_feature.fga.reduce_potentials.0.weight": "conditioner.global_video_feature.fga.reduce_potentials.0.weight",
        "extract_cavp.stage1_model.video_encoder.conv1.conv.weight": "video_encoder.video_encoder.conv1.conv.weight",
        "extract_cavp.stage1_model.video_project_head.weight": "video_encoder.video_project_head.weight",
        "trans_cvap_feature.fc1.weight": "conditioner.trans_cvap_feature.fc1.weight",
        "pre_onset.l2.bias": "conditioner.pre_onset.l2.bias",
        "unet.conv_in.weight": "unet.conv_in.weight",
        "text_encoder.shared.weight": "text_encoder.shared.weight",
        "text_encoder.encoder.block.0.layer.1.DenseReluDense.wi_0.weight":
            "text_encoder.encoder.block.0.layer.1.DenseReluDense.wi_0.weight",
    },
    "audioldm": {
        "first_stage_model.encoder.down.0.block.0.conv1.weight": "vae.encoder.down_blocks.0.resnets.0.conv1.weight",
        "first_stage_model.decoder.up.2.block.0.conv1.weight": "vae.decoder.up_blocks.0.resnets.0.conv1.weight",
        "first_stage_model.decoder.up.0.block.1.conv2.bias": "vae.decoder.up_blocks.2.resnets.1.conv2.bias",
        "first_stage_model.decoder.up.2.upsample.conv.weight": "vae.decoder.up_blocks.0.upsamplers.0.conv.weight",
        "first_stage_model.encoder.mid.attn_1.q.weight": "vae.encoder.mid_block.attentions.0.to_q.weight",
        "first_stage_model.decoder.mid.attn_1.proj_out.weight": "vae.decoder.mid_block.attentions.0.to_out.0.weight",
        "first_stage_model.encoder.norm_out.weight": "vae.encoder.conv_norm_out.weight",
        "first_stage_model.post_quant_conv.weight": "vae.post_quant_conv.weight",
        "first_stage_model.vocoder.conv_pre.weight": "vocoder.conv_pre.weight",
        "first_stage_model.vocoder.ups.0.weight": "vocoder.upsampler.0.weight",
        "first_stage_model.vocoder.resblocks.0.convs2.0.bias": "vocoder.resblocks.0.convs2.0.bias",
    },
}


def assert_literal_keys_consumed(report, labels):
    for source, expected in LITERAL_KEYS.items():
        consumed = report.consumed[labels[source]]
        for official, ours in expected.items():
            assert consumed.get(official) == ours, (official, consumed.get(official))


def assert_everything_consumed(report, sources):
    """Every source key is either mapped or ignored on purpose; nothing is left over."""
    for label, tensors in sources.items():
        consumed, ignored = report.consumed[label], report.ignored[label]
        assert not set(consumed) & set(ignored)
        assert set(consumed) | set(ignored) == set(tensors), label


# ---- tiny: a whole fake release on disk ---------------------------------------------------------------


def tiny_source_config():
    from v2a_server.configs import get_config

    cfg = get_config("tiny")
    cfg["controlnet"]["num_hint_channels"] = 0  # the release has no hint conv
    cfg["vae"]["scaling_factor"] = 0.5  # read back from the AudioLDM checkpoint's scale_factor
    return cfg


@pytest.fixture(scope="module")
def tiny_source():
    """A tiny pipeline whose ControlNet differs from its UNet (so a unet/controlnet mix-up shows)."""
    from v2a_server.configs import build_pipeline

    torch.set_num_threads(2)
    pipe = build_pipeline(tiny_source_config(), seed=11)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in pipe.controlnet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        for name, b in pipe.video_encoder.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5, generator=gen)
    return pipe


@pytest.fixture(scope="module")
def tiny_release(tiny_source, tmp_path_factory):
    """A release folder laid out like the official one, with tiny shapes."""
    from v2a_server.configs import FOLEY_WORDS, build_text_encoder, get_config
    from v2a_server.models.text import build_word_tokenizer

    root = tmp_path_factory.mktemp("release")
    pipe = tiny_source
    (root / "saved" / "STA-V2A" / "best").mkdir(parents=True)
    summary = {
        "text_encoder_name": "mt5-tiny", "scheduler_name": "sched-tiny", "unet_model_name": "tta-tiny",
        "unet_model_config": None, "snr_gamma": 5.0, "uncondition": True, "prefix": "",
    }
    (root / "saved" / "STA-V2A" / "summary.jsonl").write_text(json.dumps(summary) + "\n" + json.dumps({"epoch": 1}) + "\n")
    torch.save(official_release(pipe), root / "saved" / "STA-V2A" / "best" / "pytorch_model_2.bin")
    pipe.unet.save_config(root / "tta-tiny" / "unet")
    pipe.scheduler.save_config(root / "sched-tiny" / "scheduler")
    torch.save({"state_dict": official_cavp(pipe), "epoch": 66}, root / "cavp_epoch66.ckpt")
    torch.save({"state_dict": official_audioldm(pipe, 0.5)}, root / "audioldm-s-full.ckpt")
    # The text-encoder folder holds DIFFERENT weights: the release's text_encoder.* must win.
    torch.manual_seed(99)
    other = build_text_encoder(get_config("tiny")["text_encoder"])
    other.save_pretrained(root / "mt5-tiny")
    build_word_tokenizer(FOLEY_WORDS).save_pretrained(root / "mt5-tiny")
    return root


def test_tiny_release_converts_loads_equal_and_generates(tiny_source, tiny_release, tmp_path, capsys):
    from v2a_server.pipelines import STAV2APipeline

    root, out = tiny_release, tmp_path / "converted"
    rc = v2a_main([
        "convert", "--root", str(root),
        "--summary", str(root / "saved/STA-V2A/summary.jsonl"),
        "--weights", str(root / "saved/STA-V2A/best/pytorch_model_2.bin"),
        "--cavp", str(root / "cavp_epoch66.ckpt"),
        "--audioldm", str(root / "audioldm-s-full.ckpt"),
        "--out", str(out), "--vae-norm-groups", "4", "--cavp-image-size", "32",
    ])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "wrote pipeline to" in printed.out

    converted = STAV2APipeline.from_pretrained(str(out))
    for component in ("video_encoder", "conditioner", "text_encoder", "unet", "controlnet", "vae", "vocoder"):
        ours, src = getattr(converted, component).state_dict(), getattr(tiny_source, component).state_dict()
        assert ours.keys() == src.keys(), component
        for key in src:
            torch.testing.assert_close(ours[key], src[key], rtol=0, atol=0, msg=f"{component}.{key}")
    assert converted.vae.config.scaling_factor == 0.5
    for component in ("video_encoder", "conditioner"):
        for name, value in getattr(tiny_source, component).config.items():
            if not name.startswith("_"):
                assert json.dumps(getattr(converted, component).config[name]) == json.dumps(value), (component, name)
    assert converted.controlnet.config.num_hint_channels == 0
    assert converted.scheduler.config.prediction_type == "v_prediction"

    # Same weights, configs, tokenizer and scheduler → the same audio as the source pipeline.
    frames = np.random.default_rng(0).integers(0, 255, (8, 40, 40, 3), dtype=np.uint8)
    args = dict(frames=frames, frames_fps=4.0, duration_s=1.0, caption="a ball bouncing on a wooden floor",
                seed=3, num_inference_steps=2, sampler="ddpm")
    a, b = converted(**args), tiny_source(**args)
    assert a.audio.shape == (1, 16000) and np.isfinite(a.audio).all()
    np.testing.assert_array_equal(a.audio, b.audio)


def tiny_plan(pipe, release=None, **kwargs):
    args = dict(
        unet_config=dict(pipe.unet.config),
        scheduler_config=dict(pipe.scheduler.config),
        text_config=pipe.text_encoder.config,
        audioldm=official_audioldm(pipe, 0.5),
        vae_norm_num_groups=4,
        cavp_image_size=32,
    )
    args.update(kwargs)
    return plan_conversion(official_release(pipe) if release is None else release, **args)


def test_tiny_mapping_consumes_every_key(tiny_source):
    cavp = official_cavp(tiny_source)
    release = official_release(tiny_source)
    audioldm = official_audioldm(tiny_source, 0.5)
    plan = tiny_plan(tiny_source, release, cavp=cavp, audioldm=audioldm)
    report = plan.report
    labels = {"release": "release", "audioldm": "audioldm"}
    assert_literal_keys_consumed(report, labels)
    assert_everything_consumed(report, {"release": release, "audioldm": audioldm, "cavp": {k[7:]: v for k, v in cavp.items()}})
    assert set(report.ignored["cavp"]) == {"spec_encoder.conv_block1.conv1.weight", "logit_scale"}
    assert "scale_factor" in report.ignored["audioldm"]
    # The release's CAVP keys override the CAVP checkpoint's, one for one.
    assert len([k for k, v in report.overridden.items() if v == ("cavp", "release")]) == len(
        tiny_source.video_encoder.state_dict()
    )
    assert set(report.defaulted) == {"vocoder.mean", "vocoder.scale"}
    total = sum(len(getattr(tiny_source, c).state_dict()) for c in report.mapped)
    assert report.total_mapped == total - 2  # all but the vocoder's mean/scale
    print(f"tiny: {report.total_mapped} keys mapped", dict(report.mapped))


def test_cavp_checkpoint_fills_in_when_the_release_has_no_cavp_keys(tiny_source):
    release = {k: v for k, v in official_release(tiny_source).items() if not k.startswith("extract_cavp.")}
    cavp = {k: v + 1 if v.is_floating_point() else v for k, v in official_cavp(tiny_source).items()}
    plan = tiny_plan(tiny_source, release, cavp=cavp)
    torch.testing.assert_close(
        plan.state["video_encoder"]["video_project_head.weight"], tiny_source.video_encoder.video_project_head.weight + 1
    )
    with pytest.raises(ConversionError, match=r"missing    every video_encoder key — .*--cavp cavp_epoch66\.ckpt"):
        tiny_plan(tiny_source, release)  # and without the checkpoint the message says what to pass


def test_diffusers_audioldm_folder_instead_of_the_checkpoint(tiny_source, tiny_release, tmp_path, capsys):
    root = tiny_release
    tiny_source.vae.save_pretrained(tmp_path / "audioldm" / "vae")
    tiny_source.vocoder.save_pretrained(tmp_path / "audioldm" / "vocoder")
    rc = v2a_main([
        "convert", "--check-only", "--root", str(root), "--summary", str(root / "saved/STA-V2A/summary.jsonl"),
        "--weights", str(root / "saved/STA-V2A/best/pytorch_model_2.bin"), "--audioldm", str(tmp_path / "audioldm"),
        "--cavp-image-size", "32",
    ])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "check only" in printed.out
    assert not (tmp_path / "out").exists()


def test_the_release_caption_prefix_is_stored_and_applied(tiny_release, tmp_path):
    """summary.jsonl's ``prefix`` becomes the pipeline's caption_prefix (the reference puts it
    before every caption); the tiny release's empty prefix stores none."""
    from v2a_server.convert import convert_release
    from v2a_server.pipelines import STAV2APipeline

    root = tiny_release
    summary = json.loads((root / "saved/STA-V2A/summary.jsonl").read_text().splitlines()[0])
    with_prefix = tmp_path / "summary.jsonl"
    with_prefix.write_text(json.dumps({**summary, "prefix": "loud "}) + "\n")
    paths = dict(weights=root / "saved/STA-V2A/best/pytorch_model_2.bin", audioldm=root / "audioldm-s-full.ckpt",
                 cavp=root / "cavp_epoch66.ckpt", root=root, vae_norm_num_groups=4, cavp_image_size=32)
    report = convert_release(with_prefix, out=tmp_path / "prefixed", **paths)
    assert any("'loud '" in note and "caption_prefix" in note for note in report.notes), report.notes
    prefixed = STAV2APipeline.from_pretrained(str(tmp_path / "prefixed"))
    assert prefixed.config.caption_prefix == "loud "
    assert prefixed.conditioning_caption("a ball") == "loud a ball"
    assert json.loads((tmp_path / "prefixed" / "model_index.json").read_text())["caption_prefix"] == "loud "

    convert_release(root / "saved/STA-V2A/summary.jsonl", out=tmp_path / "plain", **paths)
    assert STAV2APipeline.from_pretrained(str(tmp_path / "plain")).conditioning_caption("a ball") == "a ball"


def test_tied_text_embedding_is_filled_from_shared(tiny_source):
    release = official_release(tiny_source)
    del release["text_encoder.encoder.embed_tokens.weight"]
    plan = tiny_plan(tiny_source, release)
    assert plan.report.tied == {"text_encoder.encoder.embed_tokens.weight": "text_encoder.shared.weight"}


# ---- corrupted releases ------------------------------------------------------------------------------


def test_corrupted_release_names_every_bad_key(tiny_source):
    release = official_release(tiny_source)
    del release["unet.down_blocks.0.resnets.0.conv1.bias"]
    release["pre_onset.l3.weight"] = torch.zeros(2, 16)
    release["global_video_feature.conv.weight"] = torch.zeros(4, 1, 5)
    release["controlnet.controlnet_cond_embedding.conv_in.weight"] = torch.zeros(16, 3, 3, 3)
    release["controlnet.controlnet_cond_embedding.blocks.0.weight"] = torch.zeros(16, 16, 3, 3)
    audioldm = official_audioldm(tiny_source, 0.5)
    audioldm["first_stage_model.vocoder.ups.0.weight_g"] = torch.zeros(64, 1, 1)
    del audioldm["first_stage_model.decoder.up.2.block.0.conv1.weight"]
    audioldm["first_stage_model.encoder.mid.attn_1.k.weight"] = torch.zeros(16, 8, 1, 1)
    with pytest.raises(ConversionError) as info:
        tiny_plan(tiny_source, release, audioldm=audioldm)
    message = str(info.value)
    print(message)
    assert "8 problems" in message
    assert (
        "missing    audioldm: first_stage_model.decoder.up.2.block.0.conv1.weight → "
        "vae.decoder.up_blocks.0.resnets.0.conv1.weight: expected shape [16, 16, 3, 3]"
    ) in message
    assert (
        "shape      audioldm: first_stage_model.encoder.mid.attn_1.k.weight → "
        "vae.encoder.mid_block.attentions.0.to_k.weight: expected [16, 16], got [16, 8]"
    ) in message
    assert (
        "missing    release: unet.down_blocks.0.resnets.0.conv1.bias → unet.down_blocks.0.resnets.0.conv1.bias: "
        "expected shape [16]"
    ) in message
    assert "unexpected release: pre_onset.l3.weight → conditioner.pre_onset.l3.weight: got shape [2, 16]" in message
    assert (
        "shape      release: global_video_feature.conv.weight → conditioner.global_video_feature.conv.weight: "
        "expected [4, 1, 3], got [4, 1, 5]"
    ) in message
    assert (
        "release: controlnet.controlnet_cond_embedding.conv_in.weight → "
        "controlnet.controlnet_cond_embedding.conv_in.weight: got shape [16, 3, 3, 3]"
    ) in message
    assert "release: controlnet.controlnet_cond_embedding.blocks.0.weight" in message
    assert message.count("stock ControlNet image-conditioning embedding") == 2
    assert "unexpected audioldm: first_stage_model.vocoder.ups.0.weight_g" in message


def test_corrupted_release_fails_from_the_cli_without_writing(tiny_release, tmp_path, capsys):
    root = tiny_release
    release = torch.load(root / "saved/STA-V2A/best/pytorch_model_2.bin")
    del release["trans_cvap_feature.fc2.bias"]
    bad = tmp_path / "pytorch_model_2.bin"
    torch.save(release, bad)
    out = tmp_path / "out"
    rc = v2a_main([
        "convert", "--root", str(root), "--summary", str(root / "saved/STA-V2A/summary.jsonl"),
        "--weights", str(bad), "--audioldm", str(root / "audioldm-s-full.ckpt"), "--out", str(out),
        "--vae-norm-groups", "4", "--cavp-image-size", "32",
    ])
    err = capsys.readouterr().err
    assert rc == 2
    assert (
        "missing    pytorch_model_2.bin: trans_cvap_feature.fc2.bias → conditioner.trans_cvap_feature.fc2.bias: "
        "expected shape [16]"
    ) in err
    assert not out.exists()


def test_checkpoint_needing_arbitrary_unpickling_is_refused_unless_allowed(tmp_path):
    import argparse

    from v2a_server.convert import load_state_dict_file

    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hparams": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ConversionError, match=r"argparse\.Namespace.*--allow-pickle"):
        load_state_dict_file(path)
    assert load_state_dict_file(path, allow_pickle=True).keys() == {"w"}
    legacy = tmp_path / "legacy.ckpt"  # the pre-zip format cannot be memory-mapped
    torch.save({"module.w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    assert load_state_dict_file(legacy).keys() == {"module.w"}


# ---- real shapes on the meta device ----------------------------------------------------------------


@pytest.fixture(scope="module")
def real_meta():
    """The sta-v2a config on the meta device, renamed to the official names."""
    from accelerate import init_empty_weights

    from v2a_server.configs import build_pipeline

    with init_empty_weights():
        pipe = build_pipeline("sta-v2a")
    return pipe, official_release(pipe), official_audioldm(pipe, 0.9227914214134216)


def test_real_size_release_maps_every_key_on_meta(real_meta):
    pipe, release, audioldm = real_meta
    # The real release: 128-channel video embedding, no hint conv, no stock embedding keys.
    assert tuple(release["controlnet.controlnet_cond_embedding.conv_out.weight"].shape) == (128, 128, 3, 3)
    assert tuple(release["global_video_feature.fga.un_models.0.embed.weight"].shape) == (1024, 1024, 1)
    assert tuple(audioldm["first_stage_model.encoder.mid.attn_1.q.weight"].shape) == (512, 512, 1, 1)
    cavp = {"module." + k: v for k, v in pipe.video_encoder.state_dict().items()}
    cavp["module.logit_scale"] = torch.empty((), device="meta")
    cavp["module.spec_encoder.bn0.weight"] = torch.empty(64, device="meta")
    plan = plan_conversion(
        release, unet_config=dict(pipe.unet.config), scheduler_config=dict(pipe.scheduler.config),
        text_config=pipe.text_encoder.config, cavp=cavp, audioldm=audioldm,
    )
    report = plan.report
    assert_literal_keys_consumed(report, {"release": "release", "audioldm": "audioldm"})
    assert_everything_consumed(report, {"release": release, "audioldm": audioldm})
    expected = {c: len(getattr(pipe, c).state_dict()) for c in report.mapped}
    expected["vocoder"] -= 2  # mean/scale are defaulted
    assert report.mapped == expected
    assert tuple(report.configs["unet"]["block_out_channels"]) == (128, 256, 384, 640)
    assert report.configs["conditioner"]["window_scales"] == (1, 2, 4, 8)
    assert report.configs["conditioner"]["text_dim"] == 1024
    assert report.configs["video_encoder"]["stage_blocks"] == (3, 4, 6, 3)
    assert report.configs["video_encoder"]["inflate"] == (0, 0, 1, 1)
    assert report.configs["vocoder"]["resblock_kernel_sizes"] == [3, 7, 11]
    assert report.configs["vocoder"]["upsample_kernel_sizes"] == [16, 16, 8, 4, 4]
    assert tuple(report.configs["vae"]["block_out_channels"]) == (128, 256, 512)
    assert report.configs["controlnet"]["video_condition_channels"] == 128
    for component, model in plan.models.items():
        assert {k: tuple(v.shape) for k, v in plan.state[component].items()} == {
            k: tuple(v.shape) for k, v in model.state_dict().items()
        }, component
    print(f"real size: {report.total_mapped} keys mapped", dict(report.mapped))


def test_tango_320_unet_is_refused_against_the_128_release(real_meta):
    pipe, release, audioldm = real_meta
    tango = dict(pipe.unet.config)
    tango.update(
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, upcast_attention=True,
    )
    with pytest.raises(ConversionError) as info:
        plan_conversion(
            release, unet_config=tango, scheduler_config=dict(pipe.scheduler.config),
            text_config=pipe.text_encoder.config, audioldm=audioldm,
        )
    message = str(info.value)
    assert "refusing this UNet" in message and "1 problem" in message
    assert "block_out_channels[0] = 320" in message and "128" in message
    assert "conv_in" in message  # says why: the embedding is added to conv_in's output
