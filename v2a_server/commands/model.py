"""`v2a model pull|list|remove`: install a named model (e.g. the full STA-V2A) into the user's cache."""

from __future__ import annotations

NAME = "model"
HELP = "install (pull), list and remove named models such as the full STA-V2A model"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    pull = sub.add_parser(
        "pull", help="download, verify, convert and install a model",
        description="Download every file of a model with huggingface_hub (into the Hugging Face cache: "
        "HF_HOME, HF_ENDPOINT, HF_HUB_OFFLINE and HF_TOKEN apply), verify sizes and hashes, convert, and "
        "install it as $V2A_HOME/models/NAME (V2A_HOME defaults to $XDG_CACHE_HOME/v2a, ~/.cache/v2a).",
    )
    pull.add_argument("model", help="which model: sta-v2a")
    pull.add_argument("--name", help="install under this name (default: the model's)")
    pull.add_argument("--from-dir", metavar="DIR",
                      help="a folder with files you already have (at their repo paths or by file name; "
                      "audioldm-s-full.ckpt stands in for the AudioLDM folder); the rest is downloaded")
    pull.add_argument("--repo", action="append", metavar="SOURCE=REPO_ID[@REVISION]",
                      help="take a source from another repository or revision (see `v2a model sources`)")
    pull.add_argument("--file", action="append", metavar="PART=PATH",
                      help="take a part from another path in its repository")
    pull.add_argument("--sha256", action="append", metavar="PART=HEX", help="require this sha256 for a part")
    pull.add_argument("--replace", action="store_true", help="replace an installed model of the same name")
    pull.add_argument("--force-download", action="store_true", help="download again even what the cache holds")
    pull.add_argument("--allow-pickle", action="store_true",
                      help="allow checkpoints that need full unpickling (runs code from the file: only for files "
                      "you trust)")
    pull.add_argument("--vae-norm-groups", type=int, help="converter option (see `v2a convert --help`)")
    pull.add_argument("--cavp-image-size", type=int, help="converter option (see `v2a convert --help`)")
    sub.add_parser("list", help="show the embedded and the installed models")
    sources = sub.add_parser("sources", help="show where each file of a model comes from (the manifest)")
    sources.add_argument("model", nargs="?", default="sta-v2a")
    remove = sub.add_parser("remove", help="delete an installed model (never the embedded one)")
    remove.add_argument("name")


def _run_pull(args) -> int:
    from pathlib import Path

    from v2a_server.hub.install import PullOptions, pull
    from v2a_server.hub.manifest import ManifestOverrides, get_manifest

    manifest = ManifestOverrides.parse(args.repo, args.file, args.sha256).apply(get_manifest(args.model))
    from_dir = Path(args.from_dir).expanduser() if args.from_dir else None
    if from_dir is not None and not from_dir.is_dir():
        raise ValueError(f"--from-dir {from_dir}: not a folder")
    options = PullOptions(name=args.name, from_dir=from_dir, replace=args.replace,
                          force_download=args.force_download, vae_norm_groups=args.vae_norm_groups,
                          cavp_image_size=args.cavp_image_size, allow_pickle=args.allow_pickle)
    pull(manifest, options)
    return 0


def _run_sources(args) -> int:
    from v2a_server.hub.manifest import get_manifest

    manifest = get_manifest(args.model)
    print(f"{manifest.name}: {manifest.description}")
    for source in manifest.sources:
        mark = "" if source.verified else (
            "  [not checked against the release]" if source.builtin else "  [repository not verified]")
        print(f"  {source.key}: {source.describe()} — {source.what}{mark}")
        for part in manifest.parts_of(source.key):
            alt = f" (else {', '.join(part.alternatives)})" if part.alternatives else ""
            pin = f" sha256 {part.sha256}" if part.sha256 else ""
            unchecked = not (part.verified or source.builtin)
            opt = " (optional)" if part.optional else ""
            print(f"    {part.key}: {part.path}{alt}{opt}{pin}{'  [path not verified]' if unchecked else ''}")
    return 0


def _run_list(args) -> int:
    from v2a_server.hub.fetch import GB
    from v2a_server.hub.install import list_models
    from v2a_server.model_store import installed_models_dir

    for row in list_models():
        print(f"{row['name']:<16} {row['bytes'] / GB:6.2f} GB  {row['path']}\n{'':16} {row['scope']}")
    print(f"(installed models live in {installed_models_dir()}; set V2A_HOME to move them)")
    return 0


def _run_remove(args) -> int:
    from v2a_server.hub.install import remove

    folder = remove(args.name)
    print(f"removed {args.name} ({folder}); its downloaded source files stay in the Hugging Face cache "
          "(`hf cache --help` shows how to delete them)")
    return 0


def run(args) -> int:
    import sys

    from v2a_server.hub.fetch import PullError

    actions = {"pull": _run_pull, "list": _run_list, "sources": _run_sources, "remove": _run_remove}
    try:
        return actions[args.model_command](args)
    except (PullError, ValueError) as exc:
        print(f"v2a model {args.model_command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"v2a model {args.model_command}: interrupted. Files downloaded completely stay in the Hugging Face "
              "cache; run the same command again to continue (the file in progress starts over).", file=sys.stderr)
        return 130
