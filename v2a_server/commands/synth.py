"""`v2a synth`: write a synthetic Foley dataset (mp4 + wav per clip and a JSONL manifest)."""

from __future__ import annotations

import argparse
import sys

NAME = "synth"
HELP = "generate a synthetic audio-visual Foley dataset (bouncing, dropping, hitting, footsteps)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (manifest.jsonl, train/, val/, test/)")
    parser.add_argument("--train", type=int, default=0, help="number of training clips")
    parser.add_argument("--val", type=int, default=0, help="number of validation clips")
    parser.add_argument("--test", type=int, default=0, help="number of test clips")
    parser.add_argument(
        "--seed", type=int, default=0, help="dataset seed; clip seeds and splits follow from it"
    )
    parser.add_argument("--fps", type=float, default=25.0, help="video frame rate")
    parser.add_argument("--size", type=int, default=128, help="square frame size in pixels (even)")
    parser.add_argument("--duration", type=float, default=10.24, help="clip length in seconds")
    parser.add_argument("--sample-rate", type=int, default=16000, help="audio sample rate in hertz")
    parser.add_argument("--noise-floor-db", type=float, default=-60.0, help="background noise RMS in dBFS")
    parser.add_argument("--float-wav", action="store_true", help="write 32-bit float wav instead of PCM_16")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (1 = simple loop)")
    parser.add_argument("--two-source", action="store_true",
                        help="two sounding sources side by side per clip; the manifest also "
                        "gives each source's contacts and box per frame (region-focus test set)")


def run(args: argparse.Namespace) -> int:
    import time

    from v2a_server.synth.dataset import write_dataset

    counts = {"train": args.train, "val": args.val, "test": args.test}
    for split, n in counts.items():
        if n < 0:
            print(f"error: --{split} must be >= 0, got {n}", file=sys.stderr)
            return 2
    total = sum(counts.values())
    if total == 0:
        print("error: ask for at least one clip with --train, --val or --test", file=sys.stderr)
        return 2
    start = time.perf_counter()

    def progress(done: int, total: int, row: dict) -> None:
        if done == total or done % 50 == 0:
            rate = (time.perf_counter() - start) / done
            print(f"{done}/{total} clips ({rate:.2f} s/clip)", file=sys.stderr)

    try:
        manifest = write_dataset(
            args.out,
            counts,
            base_seed=args.seed,
            duration_s=args.duration,
            fps=args.fps,
            size_px=args.size,
            sample_rate=args.sample_rate,
            noise_floor_db=args.noise_floor_db,
            wav_subtype="FLOAT" if args.float_wav else "PCM_16",
            workers=args.workers,
            progress=progress,
            two_source=args.two_source,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(manifest)
    return 0
