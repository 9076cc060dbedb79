"""Training at tiny size: the data cache, each stage lowers its loss, resume is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from v2a_server.training.data import CachedSplit, WindowSpec, build_cache, onset_labels, preprocess_audio
from v2a_server.training.stages import STAGES, StageOptions
from v2a_server.training.trainer import TrainConfig, batch_indices, train


@pytest.fixture(scope="module")
def synth_cache(tmp_path_factory, tiny_model_dir):
    from v2a_server.model_store import load_pipeline
    from v2a_server.synth import write_dataset

    root = tmp_path_factory.mktemp("train-data")
    manifest = write_dataset(root / "synth", {"train": 4, "val": 1, "test": 1}, base_seed=3, duration_s=10.24)
    spec = WindowSpec.from_pipeline(load_pipeline(tiny_model_dir))
    counts = build_cache(manifest, root / "cache", spec)
    assert counts == {"train": 4, "val": 1, "test": 1}
    return root / "cache"


def test_cache_holds_aligned_windows_and_onset_labels(synth_cache):
    split = CachedSplit(synth_cache, "train")
    assert len(split) == 4
    assert split.array("frames").shape == (4, 40, 32, 32, 3)  # 40 steps at 4 fps, 32 px
    assert split.array("audio").shape == (4, 163840)
    assert split.labels.shape == (4, 256)
    assert (split.labels.sum(axis=1) > 0).all()  # every synthetic clip has impacts
    assert (split.steps == 40).all()
    assert np.abs(np.asarray(split.array("audio"), np.float32)).max() == pytest.approx(0.5, abs=1e-3)


def test_onset_labels_put_a_click_in_its_40ms_frame():
    wave = np.zeros(16000 * 3, np.float32)
    for t in (0.5, 1.3, 2.22):
        n = int(t * 16000)
        wave[n : n + 400] = np.exp(-np.arange(400) / 60.0) * np.sin(np.arange(400) * 0.9)
    labels = onset_labels(preprocess_audio(wave, 16000 * 3), 16000, 75, 25.0)
    assert set(np.flatnonzero(labels)) <= {11, 12, 13, 31, 32, 33, 54, 55, 56}
    assert len(np.flatnonzero(labels)) == 3


def test_batch_indices_are_seeded_epoch_permutations():
    first_epoch = np.concatenate([batch_indices(10, 5, s, seed=1) for s in range(2)])
    assert sorted(first_epoch) == list(range(10))
    np.testing.assert_array_equal(batch_indices(10, 5, 3, seed=1), batch_indices(10, 5, 3, seed=1))
    assert not np.array_equal(batch_indices(10, 5, 0, seed=1), batch_indices(10, 5, 0, seed=2))


def _stage_for(name, tiny_model_dir, synth_cache):
    from v2a_server.model_store import load_pipeline

    pipe = load_pipeline(tiny_model_dir)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False).eval()
    stage = STAGES[name](pipe, StageOptions(cfg_dropout=0.0, hint_dropout=0.5))
    if name in ("t2a", "joint"):  # these need arrays written by earlier stages
        split = CachedSplit(synth_cache, "train")
        if not split.has("latents"):
            STAGES["vae"](pipe, StageOptions()).finish({"train": split})
        if name == "joint" and not split.has("features"):
            STAGES["onset"](pipe, StageOptions()).finish({"train": split})
    return stage


@pytest.mark.parametrize("name,lr,steps", [("vae", 3e-3, 8), ("vocoder", 3e-3, 8), ("t2a", 2e-3, 8), ("onset", 3e-3, 8), ("joint", 2e-3, 8)])
def test_each_stage_lowers_its_loss_on_a_fixed_batch(name, lr, steps, tiny_model_dir, synth_cache):
    stage = _stage_for(name, tiny_model_dir, synth_cache)
    split = CachedSplit(synth_cache, "train")
    idx = np.arange(2)
    modules = torch.nn.ModuleDict(stage.trainable()).train()
    modules.requires_grad_(True)
    opt = torch.optim.Adam([p for p in modules.parameters() if p.requires_grad], lr=lr)

    def fixed_loss():
        with torch.no_grad():
            return stage.loss(split, idx, torch.Generator().manual_seed(123))[0].item()

    before = fixed_loss()
    for step in range(steps):
        loss, _ = stage.loss(split, idx, torch.Generator().manual_seed(123))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_loss()
    assert after < before, (name, before, after)


def test_resume_from_a_checkpoint_continues_exactly(tiny_model_dir, synth_cache, tmp_path):
    common = dict(stage="onset", model_dir=str(tiny_model_dir), cache_dir=str(synth_cache), batch_size=2, learning_rate=1e-3, seed=5, log_every=1)
    straight = train(TrainConfig(out_dir=str(tmp_path / "straight"), steps=4, checkpoint_every=100, **common), progress=False)
    train(TrainConfig(out_dir=str(tmp_path / "split"), steps=2, checkpoint_every=2, **common), progress=False)
    resumed = train(TrainConfig(out_dir=str(tmp_path / "split"), steps=4, checkpoint_every=2, **common), resume=True, progress=False)
    from safetensors.torch import load_file

    for sub in ("video_encoder", "conditioner"):
        a = load_file(next((straight / sub).glob("*.safetensors")))
        b = load_file(next((resumed / sub).glob("*.safetensors")))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "straight" / "metrics.jsonl")]
    resumed_losses = [json.loads(line)["loss"] for line in open(tmp_path / "split" / "metrics.jsonl")]
    assert losses == resumed_losses


def test_v2a_train_cli_runs_a_stage_and_writes_a_loadable_pipeline(tiny_model_dir, synth_cache, tmp_path):
    from v2a_server.cli import main
    from v2a_server.model_store import load_pipeline

    code = main(["train", "--stage", "onset", "--cache", str(synth_cache), "--model", str(tiny_model_dir),
                 "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "2"])
    assert code == 0
    pipe = load_pipeline(tmp_path / "run" / "pipeline")
    assert pipe.model_fps == 4.0
    assert CachedSplit(synth_cache, "test").array("features").shape == (1, 40, 32)


def test_hint_shift_moves_audio_and_hints_together_only_for_hinted_samples(tiny_model_dir, synth_cache):
    stage = _stage_for("joint", tiny_model_dir, synth_cache)
    stage.options = StageOptions(hint_dropout=0.5, hint_shift_share=1.0, hint_shift_frames=3)
    given = torch.tensor([1.0, 0.0, 1.0, 0.0] * 64)
    shifts = stage.audio_shifts(given, torch.Generator().manual_seed(0))
    assert torch.all(shifts[given == 0] == 0)
    assert shifts.abs().max() <= 3 and (shifts[given == 1] != 0).any()
    stage.options = StageOptions(hint_dropout=0.5, hint_shift_share=0.0)
    assert torch.all(stage.audio_shifts(given, torch.Generator().manual_seed(0)) == 0)

    # The hints a shifted sample is trained with are its shifted audio's onsets.
    labels = torch.zeros(1, 16)
    labels[0, 5] = 1
    hints = stage.hints(torch.roll(labels, 2, dims=1), torch.ones(1), torch.Generator().manual_seed(0))
    assert hints[0, 7, 0] == 1 and hints[0, 5, 0] == 0 and torch.all(hints[0, :, 1] == 1)

    # A few steps with the augmentation still train (the loss goes down on a fixed batch).
    stage.options = StageOptions(cfg_dropout=0.0, hint_dropout=0.0, hint_shift_share=1.0, hint_shift_frames=4)
    split = CachedSplit(synth_cache, "train")
    modules = torch.nn.ModuleDict(stage.trainable()).train()
    modules.requires_grad_(True)
    opt = torch.optim.Adam([p for p in modules.parameters() if p.requires_grad], lr=2e-3)
    fixed = lambda: stage.loss(split, np.arange(2), torch.Generator().manual_seed(7))[0]  # noqa: E731
    with torch.no_grad():
        before = fixed().item()
    for _ in range(8):
        loss = fixed()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert fixed().item() < before


def test_v2a_pack_model_takes_another_vocoder_and_writes_sampling_defaults(tiny_model_dir, tmp_path):
    from v2a_server.cli import main
    from v2a_server.configs import build_pipeline
    from v2a_server.model_store import load_pipeline, save_pipeline

    other = tmp_path / "other"
    save_pipeline(build_pipeline("tiny", seed=7), other)
    out = tmp_path / "packed"
    assert main(["pack-model", "--pipeline", str(tiny_model_dir), "--vocoder-from", str(other),
                 "--guidance", "1.5", "--controlnet-scale", "1.25", "--out", str(out)]) == 0
    packed, base, donor = (load_pipeline(p) for p in (out, tiny_model_dir, other))
    assert (packed.config.default_guidance_scale, packed.config.default_controlnet_scale) == (1.5, 1.25)
    for name, p in packed.vocoder.state_dict().items():
        assert torch.equal(p, donor.vocoder.state_dict()[name]), name
    for name, p in packed.unet.state_dict().items():
        assert torch.equal(p, base.unet.state_dict()[name]), name
    with pytest.raises(SystemExit, match="not empty"):
        main(["pack-model", "--pipeline", str(tiny_model_dir), "--out", str(out)])
    with pytest.raises(SystemExit, match="--guidance"):
        main(["pack-model", "--pipeline", str(tiny_model_dir), "--guidance", "0.5", "--out", str(tmp_path / "x")])


def test_v2a_pack_model_makes_the_ablation_starting_points(tiny_model_dir, tmp_path):
    """CN: another folder's conditioner without global tokens; CN+Onset: own conditioner without them."""
    from v2a_server.cli import main
    from v2a_server.configs import build_pipeline
    from v2a_server.model_store import load_pipeline, save_pipeline

    donor_dir = tmp_path / "donor"
    save_pipeline(build_pipeline("tiny", seed=3), donor_dir)
    cn, cn_onset = tmp_path / "cn", tmp_path / "cn_onset"
    assert main(["pack-model", "--pipeline", str(tiny_model_dir), "--conditioner-from", str(donor_dir),
                 "--without-global-tokens", "--out", str(cn)]) == 0
    assert main(["pack-model", "--pipeline", str(tiny_model_dir), "--without-global-tokens",
                 "--out", str(cn_onset)]) == 0
    base, donor = load_pipeline(tiny_model_dir), load_pipeline(donor_dir)
    for folder, source in ((cn, donor), (cn_onset, base)):
        pipe = load_pipeline(folder)
        assert pipe.conditioner.config.num_global_tokens == 0
        assert pipe.conditioner.global_video_feature is None
        kept = source.conditioner.state_dict()
        for name, p in pipe.conditioner.state_dict().items():
            assert torch.equal(p, kept[name]), name
        for name, p in pipe.controlnet.state_dict().items():
            assert torch.equal(p, base.controlnet.state_dict()[name]), name
        feats = torch.zeros(1, pipe.conditioner.config.video_steps_per_window, pipe.conditioner.config.feature_dim)
        assert pipe.conditioner(feats).global_tokens.shape[1] == 0
        out = pipe(video_features=feats[0].numpy(), duration_s=4.0, caption="a knock", seed=0,
                   num_inference_steps=2, guidance_scale=2.0)
        assert np.isfinite(out.audio).all() and out.audio.shape[-1] == 4 * out.sample_rate
