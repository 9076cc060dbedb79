"""`v2a train`: the paper's training recipe, one stage per call (or all in order)."""

from __future__ import annotations

NAME = "train"
HELP = "train a pipeline folder: prepare | vae | t2a | onset | joint | all (| vocoder: refine the vocoder alone)"

ORDER = ("vae", "t2a", "onset", "joint")


def add_arguments(parser) -> None:
    parser.add_argument("--stage", required=True, choices=("prepare",) + ORDER + ("vocoder", "all"))
    parser.add_argument("--manifest", help="JSONL manifest (for --stage prepare / all)")
    parser.add_argument("--cache", required=True, help="cache folder of decoded clips, labels, latents, features")
    parser.add_argument("--model", required=True, help="pipeline folder to start from (see `v2a create-model`)")
    parser.add_argument("--out", required=True, help="output folder (a pipeline is written to OUT/pipeline; with --stage all, OUT/<stage>/pipeline)")
    parser.add_argument("--steps", type=int, nargs="+", default=[1000], help="steps (one value, or one per stage for --stage all)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-4], help="learning rate (one value, or one per stage)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, nargs="+", help="time budget per stage (one value, or one per stage)")
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT")
    parser.add_argument("--min-av-align", type=float, help="prepare: drop clips whose reference AV-Align is below this (paper: 0.2)")
    parser.add_argument("--limit", type=int, help="prepare: at most this many clips per split")
    parser.add_argument("--no-train-unet", action="store_true", help="joint: keep the UNet frozen (the release's default)")
    parser.add_argument("--hint-dropout", type=float, default=0.5)
    parser.add_argument("--hint-shift-share", type=float, default=0.0,
                        help="joint: share of hinted samples whose audio is moved against the "
                        "video (by up to --hint-shift-frames), so hints set the timing")
    parser.add_argument("--hint-shift-frames", type=int, default=8)
    parser.add_argument("--onset-weight", type=float, default=1.0)
    parser.add_argument("--cfg-dropout", type=float, default=0.1)


def _per_stage(values, stages, what):
    if values is None:
        return [None] * len(stages)
    if len(values) == 1:
        return list(values) * len(stages)
    if len(values) != len(stages):
        raise SystemExit(f"v2a train: give one {what} or one per stage ({len(stages)}), got {len(values)}")
    return list(values)


def run(args) -> int:
    from pathlib import Path

    import torch

    from v2a_server.model_store import load_pipeline
    from v2a_server.training.data import WindowSpec, build_cache
    from v2a_server.training.stages import StageOptions
    from v2a_server.training.trainer import TrainConfig, train

    torch.manual_seed(args.seed)
    cache_ready = (Path(args.cache) / "cache.json").is_file()
    if args.stage == "prepare" or (args.stage == "all" and not cache_ready):
        if not args.manifest:
            raise SystemExit(f"v2a train: no cache in {args.cache} yet: --manifest is required to prepare it")
        spec = WindowSpec.from_pipeline(load_pipeline(args.model))
        counts = build_cache(args.manifest, args.cache, spec, min_av_align=args.min_av_align, limit=args.limit,
                             progress=lambda split, i, n: print(f"\rprepare {split}: {i}/{n}", end="", flush=True))
        print(f"\ncached {counts} in {args.cache}")
        if args.stage == "prepare":
            return 0
    stages = ORDER if args.stage == "all" else (args.stage,)
    steps = _per_stage(args.steps, stages, "--steps")
    lrs = _per_stage(args.lr, stages, "--lr")
    minutes = _per_stage(args.max_minutes, stages, "--max-minutes")
    options = StageOptions(
        cfg_dropout=args.cfg_dropout, hint_dropout=args.hint_dropout, onset_weight=args.onset_weight,
        hint_shift_share=args.hint_shift_share, hint_shift_frames=args.hint_shift_frames,
        train_unet=not args.no_train_unet,
    )
    model = args.model
    for stage, n, lr, budget in zip(stages, steps, lrs, minutes):
        out = Path(args.out) / stage if args.stage == "all" else Path(args.out)
        cfg = TrainConfig(
            stage=stage, model_dir=str(model), cache_dir=args.cache, out_dir=str(out), steps=int(n),
            batch_size=args.batch_size, learning_rate=float(lr), seed=args.seed,
            checkpoint_every=args.checkpoint_every, max_minutes=budget, options=options,
        )
        model = train(cfg, resume=args.resume and (out / "checkpoints").is_dir())
        print(f"stage {stage}: wrote {model}")
    return 0
