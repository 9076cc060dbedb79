"""End-to-end tests of STAV2APipeline at tiny size (real diffusers/transformers modules)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import shared_clip
from v2a_server.pipelines import GenerationCancelled

CAPTION = "a rubber ball bouncing on a wooden floor"


def moving_square_frames(num_frames: int, size: int = 48) -> np.ndarray:
    frames = np.zeros((num_frames, size, size, 3), np.uint8)
    for i in range(num_frames):
        y = int(abs(np.sin(i / 5)) * (size - 8))
        frames[i, y : y + 8, 20:28] = 255
    return frames


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    """Relative difference: random-weight tiny vocoders output very quiet audio (~1e-9)."""
    return float(np.abs(a - b).max()) > 1e-3 * float(np.abs(a).max())


def run(pipe, **kwargs):
    args = dict(
        frames=moving_square_frames(50), frames_fps=12.5, duration_s=4.0, caption=CAPTION,
        seed=7, num_inference_steps=2,
    )
    args.update(kwargs)
    return pipe(**args)


def test_cli_generate_on_a_real_clip_writes_exact_duration_and_onsets(tiny_model_dir, tmp_path):
    clip = shared_clip("WguzItBThxY_000230.mp4")
    out_wav, out_json = tmp_path / "foley.wav", tmp_path / "onsets.json"
    cmd = [
        sys.executable, "-m", "v2a_server.cli", "generate", str(clip), "--caption", "a man hitting a drum",
        "--model", str(tiny_model_dir), "--out", str(out_wav), "--onsets", str(out_json),
        "--steps", "2", "--seed", "1", "--duration", "6.5",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    audio, sr = sf.read(out_wav)
    assert sr == 16000 and audio.shape == (104000,)  # 6.5 s exactly
    record = json.loads(out_json.read_text())
    assert record["seed"] == 1
    assert len(record["onset_probs"]) == 163  # ceil(6.5 / 0.04)
    for onset in record["onsets"]:
        assert 0 <= onset["time_s"] <= 6.5 and 0 <= onset["probability"] <= 1
    # Never overwrite: a second run to the same paths is refused.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr


def test_output_length_is_exact_for_any_short_duration(tiny_pipeline):
    for duration in (0.5, 3.33):
        out = run(tiny_pipeline, duration_s=duration)
        assert out.audio.shape == (1, round(duration * 16000))
        assert out.audio.dtype == np.float32
        assert out.onset_probs.shape == (int(np.ceil(duration / 0.04 - 1e-9)),)
        assert set(out.timings_s) >= {"video_encoder", "text_encoder", "conditioner", "denoise", "vae_decode", "vocoder"}


def test_same_seed_same_audio_and_different_seed_differs(tiny_pipeline):
    a = run(tiny_pipeline, seed=11)
    b = run(tiny_pipeline, seed=11)
    c = run(tiny_pipeline, seed=12)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.seed == 11
    assert differs(a.audio, c.audio)


def test_fresh_controlnet_adds_nothing(tiny_pipeline):
    """Zero-initialised ControlNet: the pipeline equals the UNet alone at creation."""
    with_cn = run(tiny_pipeline, controlnet_conditioning_scale=1.0)
    unet_only = run(tiny_pipeline, controlnet_conditioning_scale=0.0)
    np.testing.assert_array_equal(with_cn.audio, unet_only.audio)


def test_controlnet_changes_output_once_trained(tiny_model_dir):
    """Counter-check of the zero-init test: non-zero projections do change the output."""
    from v2a_server.model_store import load_pipeline

    pipe = load_pipeline(tiny_model_dir)
    with torch.no_grad():
        for block in pipe.controlnet.controlnet_down_blocks:
            block.weight.normal_(0, 0.5)
    a = run(pipe, controlnet_conditioning_scale=1.0)
    b = run(pipe, controlnet_conditioning_scale=0.0)
    assert differs(a.audio, b.audio)


def test_guidance_one_is_the_conditional_branch(tiny_pipeline):
    a = run(tiny_pipeline, guidance_scale=1.0, negative_caption="speech")
    b = run(tiny_pipeline, guidance_scale=1.0, negative_caption="metal glass music")
    np.testing.assert_array_equal(a.audio, b.audio)  # the unconditional branch plays no part
    c = run(tiny_pipeline, guidance_scale=3.0, negative_caption="speech")
    d = run(tiny_pipeline, guidance_scale=3.0, negative_caption="metal glass music")
    assert differs(c.audio, d.audio)


def test_variations_are_batched_and_distinct(tiny_pipeline):
    out = run(tiny_pipeline, num_variations=3)
    assert out.audio.shape == (3, 64000)
    assert differs(out.audio[0], out.audio[1])
    assert differs(out.audio[1], out.audio[2])


def test_deterministic_mode_removes_pooling_randomness(tiny_pipeline):
    """With fixed noise, only the pooling dropout differs between two calls' variations."""
    gen = tiny_pipeline.conditioner
    feats = torch.randn(2, 40, gen.config.feature_dim)
    with torch.no_grad():
        sto = gen(feats[:1].expand(2, -1, -1), generator=torch.Generator().manual_seed(0)).global_tokens
        det = gen(feats[:1].expand(2, -1, -1), global_dropout=0.0).global_tokens
    assert not torch.allclose(sto[0], sto[1])
    torch.testing.assert_close(det[0], det[1], rtol=0, atol=0)
    out1 = run(tiny_pipeline, deterministic=True, seed=3)
    out2 = run(tiny_pipeline, deterministic=True, seed=3)
    np.testing.assert_array_equal(out1.audio, out2.audio)


def test_dpmpp_and_ddpm_samplers_run_with_their_step_counts(tiny_pipeline):
    steps = []
    run(tiny_pipeline, sampler="ddpm", num_inference_steps=3, on_step=lambda s: steps.append((s.step_index, s.total_steps, s.stage)))
    assert steps == [(0, 3, "denoise"), (1, 3, "denoise"), (2, 3, "denoise")]


def test_cancel_from_the_step_hook_stops_at_the_next_step(tiny_pipeline):
    seen = []

    def cancel_after_first(progress):
        seen.append(progress.step_index)
        if progress.step_index == 0:
            raise GenerationCancelled()

    with pytest.raises(GenerationCancelled):
        run(tiny_pipeline, num_inference_steps=5, on_step=cancel_after_first)
    assert seen == [0]


def test_bad_inputs_name_the_argument(tiny_pipeline):
    cases = [
        (dict(frames=np.zeros((4, 8, 8), np.uint8)), "frames"),
        (dict(frames_fps=0), "frames_fps"),
        (dict(duration_s=-1), "duration_s"),
        (dict(sampler="euler"), "sampler"),
        (dict(guidance_scale=0.5), "guidance_scale"),
        (dict(num_variations=0), "num_variations"),
        (dict(onset_hints=np.zeros(3)), "onset_hints"),
        (dict(inpaint_audio=np.zeros(64000, np.float32)), "inpaint"),
        (dict(inpaint_audio=np.zeros(64000, np.float32), inpaint_range_s=(3.0, 1.0)), "inpaint_range_s"),
    ]
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=name):
            run(tiny_pipeline, **kwargs)


def test_precomputed_features_equal_frames_path(tiny_pipeline):
    frames = moving_square_frames(50)
    feats = tiny_pipeline.encode_video(frames, 12.5, 16)  # 4 s at 4 fps
    a = run(tiny_pipeline, frames=frames)
    b = tiny_pipeline(video_features=feats.numpy(), duration_s=4.0, caption=CAPTION, seed=7, num_inference_steps=2)
    np.testing.assert_allclose(a.audio, b.audio, atol=1e-6)


def test_frames_are_sampled_nearest_at_the_model_rate(tiny_pipeline):
    idx = tiny_pipeline.sample_frame_indices(num_frames=30, frames_fps=10.0, num_steps=16)
    # model fps 4: t = 0, .25, .5, … → source frames round(t * 10); after 3.0 s the video ended
    assert list(idx[:6]) == [0, 2, 5, 8, 10, 12]  # numpy rounds half to even: 2.5 → 2, 7.5 → 8
    assert list(idx[12:]) == [-1, -1, -1, -1]


def test_onset_hints_ignored_cleanly_without_hint_weights_and_used_with_them(tiny_model_dir):
    from v2a_server.model_store import load_pipeline

    pipe = load_pipeline(tiny_model_dir)
    hints = np.zeros(100, np.float32)
    hints[::10] = 1
    plain = run(pipe)
    hinted = run(pipe, onset_hints=hints)
    np.testing.assert_array_equal(plain.audio, hinted.audio)  # zero-initialised hint conv
    with torch.no_grad():
        pipe.controlnet.controlnet_cond_embedding.hint_conv.weight.normal_(0, 1.0)
        for block in pipe.controlnet.controlnet_down_blocks:
            block.weight.normal_(0, 0.5)
    assert differs(run(pipe).audio, run(pipe, onset_hints=hints).audio)


def test_model_without_hint_channels_warns_and_ignores_hints(tiny_model_dir, tmp_path):
    from v2a_server.configs import build_pipeline, get_config

    cfg = get_config("tiny")
    cfg["controlnet"]["num_hint_channels"] = 0
    pipe = build_pipeline(cfg)
    assert not any("hint" in k for k in pipe.controlnet.state_dict())
    hints = np.ones(100, np.float32)
    out = run(pipe, onset_hints=hints)
    np.testing.assert_array_equal(out.audio, run(pipe).audio)
    assert any("without onset hints" in w for w in out.warnings)


def test_inpainting_keeps_audio_outside_the_range(tiny_pipeline):
    source = run(tiny_pipeline, seed=1).audio[0]
    out = run(tiny_pipeline, seed=2, inpaint_audio=source, inpaint_range_s=(1.0, 2.0), inpaint_margin_s=0.1)
    sr = 16000
    np.testing.assert_array_equal(out.audio[0, : int(0.9 * sr) - 1], source[: int(0.9 * sr) - 1])
    np.testing.assert_array_equal(out.audio[0, int(2.1 * sr) + 1 :], source[int(2.1 * sr) + 1 :])
    inside = slice(int(1.1 * sr), int(1.9 * sr))
    assert differs(out.audio[0, inside], source[inside])
    again = run(tiny_pipeline, seed=2, inpaint_audio=source, inpaint_range_s=(1.0, 2.0), inpaint_margin_s=0.1)
    np.testing.assert_array_equal(out.audio, again.audio)


def test_long_input_is_exact_and_has_no_discontinuity_at_window_joins(tiny_pipeline):
    duration = 25.0
    out = run(tiny_pipeline, frames=moving_square_frames(250), frames_fps=10.0, duration_s=duration, num_inference_steps=1)
    audio = out.audio[0]
    assert audio.shape == (400000,)
    plan = tiny_pipeline.window_plan(duration)
    assert plan.num_windows == 3
    jumps = np.abs(np.diff(audio.astype(np.float64)))
    # Where a window's gain curve has a corner: the start and the end of each crossfade.
    corners = []
    for w in range(1, plan.num_windows):
        start = w * plan.hop_samples
        corners += [start, start + plan.crossfade_frames * plan.samples_per_frame]
    near = np.zeros(jumps.shape, bool)
    for c in corners:
        near[c - 80 : c + 80] = True  # ±5 ms
    # Random tiny weights make noise-like audio, so "no click" means the joins hold no jump
    # larger than the rest of the take has; the sine test in test_models checks the crossfade
    # itself strictly.
    assert jumps[near].max() <= jumps[~near].max(), (jumps[near].max(), jumps[~near].max())
    assert np.isfinite(audio).all()


def test_save_and_load_round_trip(tiny_pipeline, tmp_path):
    from v2a_server.model_store import load_pipeline

    tiny_pipeline.save_pretrained(str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "model_index.json").is_file()
    assert list((tmp_path / "copy" / "controlnet").glob("*.safetensors"))
    copy = load_pipeline(tmp_path / "copy")
    np.testing.assert_array_equal(run(copy).audio, run(tiny_pipeline).audio)


def test_a_model_folder_carries_its_own_sampling_defaults(tiny_pipeline, tmp_path):
    from v2a_server.model_store import load_pipeline

    assert tiny_pipeline.config.default_guidance_scale == 3.0
    assert tiny_pipeline.config.default_controlnet_scale == 1.0
    tiny_pipeline.save_pretrained(str(tmp_path / "tuned"))
    index = tmp_path / "tuned" / "model_index.json"
    data = json.loads(index.read_text())
    data.update(default_guidance_scale=1.0, default_controlnet_scale=1.7)
    index.write_text(json.dumps(data))
    tuned = load_pipeline(tmp_path / "tuned")
    assert (tuned.config.default_guidance_scale, tuned.config.default_controlnet_scale) == (1.0, 1.7)
    # None means "the model's defaults": the same audio as asking for them explicitly.
    by_default = run(tuned)
    np.testing.assert_array_equal(by_default.audio, run(tuned, guidance_scale=1.0, controlnet_conditioning_scale=1.7).audio)
    assert by_default.guidance_scale == 1.0
    # ... and not the audio of the class defaults (the ControlNet is made non-zero so its scale matters).
    torch.manual_seed(0)
    for p in tuned.controlnet.parameters():
        p.data.normal_(0, 0.05)
    assert not np.array_equal(run(tuned).audio, run(tuned, guidance_scale=3.0, controlnet_conditioning_scale=1.0).audio)


# ---- the training run's caption prefix ----------------------------------------------------------

PREFIX = "loud and heavy "  # words the tiny tokenizer knows: they decode back as themselves


def texts_the_encoder_receives(pipe, **kwargs) -> list[str]:
    """Every text the text encoder is run on during one generation (read from its input ids)."""
    seen = []

    def record(module, args, inputs):
        for ids in inputs["input_ids"]:
            seen.append(pipe.tokenizer.decode(ids, skip_special_tokens=True))

    handle = pipe.text_encoder.register_forward_pre_hook(record, with_kwargs=True)
    try:
        result = run(pipe, **kwargs)
    finally:
        handle.remove()
    return seen, result


def test_the_caption_prefix_is_in_the_text_the_encoder_receives(tiny_model_dir, tmp_path):
    from v2a_server.model_store import load_pipeline

    index = tiny_model_dir / "model_index.json"
    data = json.loads(index.read_text())
    assert "caption_prefix" not in data or data["caption_prefix"] == ""
    prefixed_dir = tmp_path / "prefixed"
    load_pipeline(tiny_model_dir).save_pretrained(str(prefixed_dir))
    prefixed_index = prefixed_dir / "model_index.json"
    prefixed_index.write_text(json.dumps({**json.loads(prefixed_index.read_text()), "caption_prefix": PREFIX}))
    prefixed = load_pipeline(prefixed_dir)
    assert prefixed.config.caption_prefix == PREFIX
    assert prefixed.conditioning_caption(CAPTION) == PREFIX + CAPTION

    seen, with_prefix = texts_the_encoder_receives(prefixed, negative_caption="a drum")
    assert seen == [(PREFIX + CAPTION).strip(), "a drum"]  # the negative caption has none
    # The same as a model without a prefix asked for prefix + caption.
    plain = load_pipeline(tiny_model_dir)
    assert plain.config.caption_prefix == ""
    seen_plain, by_hand = texts_the_encoder_receives(plain, caption=PREFIX + CAPTION, negative_caption="a drum")
    assert seen_plain == seen
    np.testing.assert_array_equal(with_prefix.audio, by_hand.audio)
    # A model without a prefix reads the caption unchanged.
    seen_plain, _ = texts_the_encoder_receives(plain, negative_caption="a drum")
    assert seen_plain == [CAPTION, "a drum"]


def test_the_embedded_default_model_has_no_caption_prefix():
    from v2a_server.model_store import DEFAULT_MODEL_DIR

    index = DEFAULT_MODEL_DIR / "model_index.json"
    if not index.is_file():
        pytest.skip("the embedded default model is not installed")
    from v2a_server.pipelines import STAV2APipeline

    assert STAV2APipeline.load_config(str(DEFAULT_MODEL_DIR)).get("caption_prefix", "") == ""


def test_ablation_switches_global_path_off_and_video_off(tiny_pipeline):
    from v2a_server.configs import build_pipeline, get_config

    cfg = get_config("tiny")
    cfg["conditioner"]["num_global_tokens"] = 0
    pipe = build_pipeline(cfg)
    assert pipe.conditioner.global_video_feature is None
    assert not any(k.startswith("global_video_feature") for k in pipe.conditioner.state_dict())
    out = run(pipe)
    assert out.audio.shape == (1, 64000) and np.isfinite(out.audio).all()
    # Without video conditioning the output no longer depends on the frames.
    other = np.random.default_rng(0).integers(0, 256, (50, 48, 48, 3), dtype=np.uint8)
    a = run(tiny_pipeline, video_conditioning=False)
    b = run(tiny_pipeline, video_conditioning=False, frames=other)
    np.testing.assert_array_equal(a.audio, b.audio)
    # (the attentive pooling ignores frame order, so the counter-check uses other frames)
    # (random tokens move a fresh tiny UNet only slightly, hence exact inequality here)
    assert not np.array_equal(run(tiny_pipeline).audio, run(tiny_pipeline, frames=other).audio)


def test_no_pipeline_function_takes_more_than_8_positional_parameters():
    # Long positional lists are where arguments get swapped silently (the denoiser once took 19).
    import ast
    from pathlib import Path

    import v2a_server.pipelines

    too_long = []
    for path in sorted(Path(v2a_server.pipelines.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                positional = len(node.args.posonlyargs) + len(node.args.args)  # self included
                if positional > 8:
                    too_long.append(f"{path.name}:{node.lineno} {node.name} ({positional})")
    assert not too_long, too_long
