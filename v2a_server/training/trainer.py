"""The training loop shared by all stages, on Accelerate.

One run trains one stage of a pipeline folder and writes a pipeline folder. Resuming is exact:
the batch order and every random draw (timesteps, noise, dropouts, crops) are functions of
(seed, step), and Accelerate's ``save_state`` keeps weights, optimiser and LR schedule. The same
command scales out with ``accelerate launch``: each process takes its share of every batch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from v2a_server.training.data import CachedSplit
from v2a_server.training.stages import STAGES, StageOptions

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    stage: str
    model_dir: str
    cache_dir: str
    out_dir: str
    steps: int = 1000
    batch_size: int = 4
    learning_rate: float = 1e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 0
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 10
    max_minutes: float | None = None
    options: StageOptions = field(default_factory=StageOptions)


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Indices of a step's batch: epochs are seeded permutations of the split."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out.extend(perm[offset : offset + batch_size - len(out)].tolist())
    return np.asarray(out)


def _checkpoint_dirs(out_dir: Path) -> list[Path]:
    ckpts = [p for p in (out_dir / "checkpoints").glob("step_*") if (p / "trainer_state.json").is_file()]
    return sorted(ckpts, key=lambda p: int(p.name.split("_")[1]))


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train one stage; returns the output pipeline folder."""
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    from v2a_server.model_store import external_text_encoder, load_pipeline, save_pipeline

    if cfg.stage not in STAGES:
        raise ValueError(f"unknown stage {cfg.stage!r}; choose one of {sorted(STAGES)}")
    accelerator = Accelerator()
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(cfg.model_dir, device="cpu", dtype=torch.float32)
    for module in pipe.components.values():
        if isinstance(module, nn.Module):
            module.requires_grad_(False).eval()
    stage = STAGES[cfg.stage](pipe, cfg.options)
    train_split = CachedSplit(cfg.cache_dir, "train")
    for name in stage.needs:
        train_split.array(name)  # fails early, naming the missing array
    trainable = nn.ModuleDict(stage.trainable())
    trainable.requires_grad_(True).train()
    params = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    lr_schedule = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=cfg.warmup_steps)
    trainable, optimizer, lr_schedule = accelerator.prepare(trainable, optimizer, lr_schedule)

    step = 0
    if resume:
        ckpts = _checkpoint_dirs(out_dir)
        if not ckpts:
            raise FileNotFoundError(f"--resume: no checkpoint under {out_dir / 'checkpoints'}")
        accelerator.load_state(str(ckpts[-1]))
        step = json.loads((ckpts[-1] / "trainer_state.json").read_text())["step"]
        logger.info("resumed from %s at step %d", ckpts[-1], step)

    log_path = out_dir / "metrics.jsonl"
    t_start = time.monotonic()
    bar = tqdm(total=cfg.steps, initial=step, disable=not (progress and accelerator.is_main_process), desc=cfg.stage)
    rank, world = accelerator.process_index, accelerator.num_processes
    with open(log_path, "a") as log:
        while step < cfg.steps:
            idx = batch_indices(len(train_split), cfg.batch_size * world, step, cfg.seed)[rank::world]
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            loss, parts = stage.loss(train_split, idx, gen)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(params, 1.0)
            optimizer.step()
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                record = {"stage": cfg.stage, "step": step, "loss": loss.item(), **parts, "elapsed_s": round(time.monotonic() - t_start, 1)}
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{loss.item():.4f}")
            out_of_time = cfg.max_minutes is not None and time.monotonic() - t_start > cfg.max_minutes * 60
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
                _save_checkpoint(accelerator, out_dir, step)
            if out_of_time:
                logger.info("stopping at step %d: --max-minutes %.1f reached", step, cfg.max_minutes)
                break
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for module in pipe.components.values():
            if isinstance(module, nn.Module):
                module.eval()
        splits = {s: CachedSplit(cfg.cache_dir, s) for s in ("train", "val", "test") if (Path(cfg.cache_dir) / s / "meta.jsonl").is_file()}
        stage.finish(splits)
        save_pipeline(pipe, out_dir / "pipeline", external_text_encoder=external_text_encoder(cfg.model_dir))
        with open(out_dir / "train_config.json", "w") as fh:
            json.dump({**asdict(cfg), "final_step": step}, fh, indent=1)
    return out_dir / "pipeline"


def _save_checkpoint(accelerator, out_dir: Path, step: int) -> None:
    path = out_dir / "checkpoints" / f"step_{step}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        (path / "trainer_state.json").write_text(json.dumps({"step": step}))
        for old in _checkpoint_dirs(out_dir)[:-2]:  # keep the last two
            import shutil

            shutil.rmtree(old, ignore_errors=True)
