"""`v2a eval`: AA-Align, AV-Align and onset F1 over a folder of generated audio or a manifest.

The command line only: finding the clips and scoring them is ``v2a_server.evaluation.clip_sets``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from v2a_server.evaluation.clip_sets import (
    EvalInputError,
    format_table,
    items_from_folders,
    items_from_manifest,
    score_clips,
    summarize,
)

NAME = "eval"
HELP = "Score generated audio: AA-Align, AV-Align (reference and one-to-one) and onset F1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("inputs (a manifest, or folders)")
    source.add_argument(
        "--manifest", type=Path, help="JSONL file: generated_audio, reference_audio, video per line"
    )
    source.add_argument("--generated", type=Path, help="folder of generated audio files")
    source.add_argument(
        "--reference",
        type=Path,
        help="folder of ground-truth audio (or videos with their soundtrack)",
    )
    source.add_argument(
        "--videos", type=Path, help="folder of videos whose frames the audio should follow"
    )
    parser.add_argument(
        "--tolerance-s",
        type=float,
        default=0.1,
        help="AA-Align / onset-F1 window half-width in s (default 0.1)",
    )
    parser.add_argument(
        "--length-s",
        type=float,
        default=None,
        help="use only the first N s of audio for audio-vs-audio metrics",
    )
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="in folder mode, skip clips without a reference/video counterpart",
    )
    parser.add_argument(
        "--json", type=Path, help="write per-file and mean metrics as JSON to this file"
    )
    parser.add_argument(
        "--stdout",
        choices=("table", "json", "none"),
        default="table",
        help="what to print (default table)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    from v2a_server.evaluation import metrics

    try:
        if not args.tolerance_s > 0:
            raise EvalInputError(f"--tolerance-s must be > 0, got {args.tolerance_s}")
        if args.length_s is not None and not args.length_s > 0:
            raise EvalInputError(f"--length-s must be > 0, got {args.length_s}")
        if args.manifest is not None:
            if args.generated or args.reference or args.videos:
                raise EvalInputError(
                    "give either --manifest or folders (--generated/--reference/--videos), not both"
                )
            items = items_from_manifest(args.manifest)
        else:
            items = items_from_folders(
                args.generated, args.reference, args.videos, skip_missing=args.skip_missing
            )
        quiet = args.quiet

        def progress(index: int, total: int, clip_id: str) -> None:
            if not quiet:
                print(f"v2a eval: [{index}/{total}] {clip_id}", file=sys.stderr)

        results = score_clips(items, args.tolerance_s, args.length_s, progress)
    except EvalInputError as exc:
        print(f"v2a eval: error: {exc}", file=sys.stderr)
        return 2

    mean, counts = summarize(results)
    report = {
        "settings": {
            "tolerance_s": args.tolerance_s,
            "length_s": args.length_s,
            "onset_sample_rate": metrics.ONSET_SAMPLE_RATE,
            "flow_peak_threshold": metrics.FLOW_PEAK_THRESHOLD,
        },
        "files": results,
        "mean": mean,
        "count": counts,
    }
    text = json.dumps(report, indent=2)
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"v2a eval: error: cannot write {args.json}: {exc}", file=sys.stderr)
            return 2
    if args.stdout == "json":
        print(text)
    elif args.stdout == "table":
        print(format_table(results, mean))
    return 0
