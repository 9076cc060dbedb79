"""`v2a create-model`: write a randomly initialised pipeline folder from a named config."""

from __future__ import annotations

NAME = "create-model"
HELP = "write a randomly initialised pipeline folder (tiny | small | sta-v2a)"


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="tiny, small or sta-v2a")
    parser.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    parser.add_argument("--counts-only", action="store_true", help="print parameter counts per module (meta device) and write nothing")


def run(args) -> int:
    from pathlib import Path

    from v2a_server.configs import CONFIGS, build_pipeline, get_config, parameter_counts
    from v2a_server.model_store import save_pipeline

    if args.config not in CONFIGS:
        raise SystemExit(f"v2a create-model: unknown --config {args.config!r}; choose one of {sorted(CONFIGS)}")
    counts = parameter_counts(args.config)
    width = max(len(k) for k in counts)
    for name, n in counts.items():
        print(f"{name:<{width}}  {n / 1e6:10.2f} M")
    print(f"{'total':<{width}}  {sum(counts.values()) / 1e6:10.2f} M")
    if args.counts_only:
        return 0
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"v2a create-model: {out} exists and is not empty; choose a new folder")
    kind = get_config(args.config)["text_encoder"]["kind"]
    # A pretrained text encoder shipped by another package is referenced, not copied.
    external = kind if kind == "minilm" else None
    save_pipeline(build_pipeline(args.config, seed=args.seed), out, external_text_encoder=external)
    print(f"wrote {args.config} pipeline to {out}")
    return 0
