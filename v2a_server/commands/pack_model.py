"""`v2a pack-model`: make a shippable pipeline folder from trained stage outputs.

Takes a trained pipeline (e.g. the joint stage's), optionally the vocoder of another folder
(e.g. ``--stage vocoder`` output), and writes the model with its own sampling defaults in
``model_index.json`` (used whenever a request leaves guidance / ControlNet scale unset). A text
encoder that an installed package ships (MiniLM) stays referenced, not copied.

It also makes the starting points of the paper's ablations (Table III): ``--conditioner-from``
takes the video conditioner of another folder (e.g. the T2A stage's, never trained, for "CN":
a local path trained by the diffusion loss alone) and ``--without-global-tokens`` removes the
attentively pooled global video tokens (for "CN" and "CN+Onset").
"""

from __future__ import annotations

NAME = "pack-model"
HELP = "write a shippable pipeline folder: trained pipeline + vocoder + sampling defaults"


def add_arguments(parser) -> None:
    parser.add_argument("--pipeline", required=True, help="trained pipeline folder")
    parser.add_argument("--vocoder-from", help="take the vocoder of this pipeline folder")
    parser.add_argument("--conditioner-from", help="take the video conditioner of this pipeline folder")
    parser.add_argument("--without-global-tokens", action="store_true",
                        help="remove the global video tokens (the conditioner's attentive pooling)")
    parser.add_argument("--guidance", type=float, help="default classifier-free guidance scale")
    parser.add_argument("--controlnet-scale", type=float, help="default ControlNet scale")
    parser.add_argument("--text-encoder-package", choices=("minilm",),
                        help="reference the text encoder of this installed package instead of "
                        "copying it (default: as the source folder does)")
    parser.add_argument("--out", required=True, help="output folder (must not exist or be empty)")


def run(args) -> int:
    from pathlib import Path

    from v2a_server.model_store import external_text_encoder, load_pipeline, save_pipeline

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"v2a pack-model: {out} exists and is not empty; choose a new folder")
    if args.guidance is not None and args.guidance < 1.0:
        raise SystemExit(f"v2a pack-model: --guidance must be >= 1, got {args.guidance}")
    if args.controlnet_scale is not None and args.controlnet_scale < 0.0:
        raise SystemExit(f"v2a pack-model: --controlnet-scale must be >= 0, got {args.controlnet_scale}")
    pipe = load_pipeline(args.pipeline)
    if args.vocoder_from:
        pipe.register_modules(vocoder=load_pipeline(args.vocoder_from).vocoder)
    if args.conditioner_from:
        pipe.register_modules(conditioner=load_pipeline(args.conditioner_from).conditioner)
    if args.without_global_tokens:
        pipe.register_modules(conditioner=without_global_tokens(pipe.conditioner))
    defaults = {}
    if args.guidance is not None:
        defaults["default_guidance_scale"] = float(args.guidance)
    if args.controlnet_scale is not None:
        defaults["default_controlnet_scale"] = float(args.controlnet_scale)
    pipe.register_to_config(**defaults)
    external = args.text_encoder_package or external_text_encoder(args.pipeline)
    save_pipeline(pipe, out, external_text_encoder=external)
    print(f"wrote {out} (guidance {pipe.config.default_guidance_scale}, ControlNet scale "
          f"{pipe.config.default_controlnet_scale})")
    return 0


def without_global_tokens(conditioner):
    """The same conditioner with ``num_global_tokens=0``: every other weight kept."""
    config = {k: v for k, v in conditioner.config.items() if not k.startswith("_")}
    config["num_global_tokens"] = 0
    stripped = type(conditioner).from_config(config)
    missing, unexpected = stripped.load_state_dict(conditioner.state_dict(), strict=False)
    dropped = [k for k in unexpected if not k.startswith("global_video_feature.")]
    if missing or dropped:
        raise ValueError(f"conditioner weights do not match: missing {missing}, unexpected {dropped}")
    return stripped
