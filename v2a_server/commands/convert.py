"""`v2a convert`: turn the official STA-V2A release (+ CAVP, AudioLDM, mT5) into a pipeline folder."""

from __future__ import annotations

NAME = "convert"
HELP = "convert the official STA-V2A release into a pipeline folder"


def add_arguments(parser) -> None:
    parser.add_argument("--summary", required=True, help="the release's summary.jsonl (training args)")
    parser.add_argument("--weights", required=True, help="the release's pytorch_model_*.bin (whole AudioDiffusion state dict)")
    parser.add_argument(
        "--audioldm", required=True,
        help="audioldm-s-full.ckpt (VAE + HiFi-GAN + scale_factor) or a diffusers cvssp/audioldm folder (vae/, vocoder/)",
    )
    parser.add_argument(
        "--cavp",
        help="Diff-Foley cavp_epoch66.ckpt; optional when --weights holds extract_cavp.stage1_model.* (which override it)",
    )
    parser.add_argument("--root", default=".", help="folder the summary's model names are resolved against (default: .)")
    parser.add_argument(
        "--unet-config",
        help="UNet config: a .json, or a folder with config.json or unet/config.json (default: ROOT/<unet_model_name>)",
    )
    parser.add_argument(
        "--scheduler-config",
        help="scheduler config: a .json, or a folder with scheduler_config.json or "
        "scheduler/scheduler_config.json (default: ROOT/<scheduler_name>)",
    )
    parser.add_argument(
        "--text-encoder", help="(m)T5 folder with config, tokenizer and weights (default: ROOT/<text_encoder_name>)"
    )
    parser.add_argument("--out", help="output pipeline folder (must not exist or be empty); required unless --check-only")
    parser.add_argument("--check-only", action="store_true", help="map and check every key, print the report, write nothing")
    parser.add_argument(
        "--vae-norm-groups", type=int, default=32,
        help="GroupNorm groups of the AudioLDM VAE, not stored in the weights (default 32 = audioldm-s-full)",
    )
    parser.add_argument(
        "--cavp-image-size", type=int, default=224,
        help="frame size CAVP resizes to, not stored in the weights (default 224 = the release)",
    )
    parser.add_argument(
        "--allow-pickle", action="store_true",
        help="allow checkpoints that need full unpickling (runs code from the file: only for files you trust)",
    )


def run(args) -> int:
    import sys

    from v2a_server.convert import ConversionError, convert_release

    if not args.check_only and not args.out:
        raise SystemExit("v2a convert: --out is required (or pass --check-only)")
    try:
        report = convert_release(
            args.summary,
            args.weights,
            None if args.check_only else args.out,
            audioldm=args.audioldm,
            root=args.root,
            unet_config=args.unet_config,
            scheduler_config=args.scheduler_config,
            text_encoder=args.text_encoder,
            cavp=args.cavp,
            vae_norm_num_groups=args.vae_norm_groups,
            cavp_image_size=args.cavp_image_size,
            allow_pickle=args.allow_pickle,
        )
    except (ConversionError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"v2a convert: {exc}", file=sys.stderr)
        return 2
    print(report.format())
    if args.check_only:
        print("check only: every key maps; nothing written")
    else:
        print(f"wrote pipeline to {args.out}")
    return 0
