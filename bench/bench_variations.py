"""4 variations in one request (one batch on the server) vs 4 sequential requests.

Runs a real ``v2a-server`` subprocess on the default model and times, through the protocol:
one ``generate`` with ``variations=4``, and 4 ``generate`` requests with ``variations=1``
sent one after another (each waits for the previous result). Both in the same run, on the
same clip and settings, alternating which goes first; prints every timing and the ratio
sequential / batched (> 1: the batch is faster).

Usage: OMP_NUM_THREADS=1 python bench/bench_variations.py [--model default] [--runs 2]
       [--threads 1] [--duration 10.24] [--steps 0] [--range 4.0 6.0]
``--range`` regenerates that range of a first take (inpainting) instead of whole takes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VARIATIONS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="default")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.24)
    parser.add_argument("--steps", type=int, default=0, help="0: the model's default")
    parser.add_argument("--range", type=float, nargs=2, default=None, metavar=("START", "END"))
    args = parser.parse_args()

    from foley_protocol.client import FoleyClient, result_audio_numpy
    from v2a_server.synth import make_clip

    sys.path.insert(0, str(REPO))
    from tests.test_server import ServerProcess, wait_ready

    clip = make_clip(2024, duration_s=args.duration, fps=25.0, size_px=128)
    request = dict(frames_fps=clip.fps, duration_s=args.duration, caption=clip.caption,
                   negative_caption="speech, music", steps=args.steps or None)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-variations-"))
    server = ServerProcess(args.model, log_dir, "--threads", str(args.threads)).start()
    try:
        with FoleyClient(server.endpoint, client_name="bench_variations") as client:
            wait_ready(client, 300.0)

            def run(seed: int, variations: int) -> tuple[float, list[np.ndarray]]:
                t0 = time.perf_counter()
                event = client.generate_blocking(clip.frames, seed=seed, variations=variations,
                                                 timeout_s=1800, **request, **inpaint)
                return time.perf_counter() - t0, result_audio_numpy(event)

            inpaint: dict = {}
            _, [first] = run(1, 1)  # warm-up (one-off kernel set-up); the take for --range
            if args.range:
                inpaint = dict(inpaint_audio=np.ascontiguousarray(first, np.float32),
                               inpaint_sample_rate=16000, inpaint_range_s=tuple(args.range))
            batched, sequential = [], []
            for r in range(args.runs):
                order = ("batch", "sequential") if r % 2 == 0 else ("sequential", "batch")
                for kind in order:
                    if kind == "batch":
                        seconds, takes = run(100 + r, VARIATIONS)
                        assert len(takes) == VARIATIONS
                        batched.append(seconds)
                    else:
                        seconds = sum(run(200 + 10 * r + k, 1)[0] for k in range(VARIATIONS))
                        sequential.append(seconds)
                print(f"run {r + 1}: {VARIATIONS} variations in one request {batched[-1]:.2f} s; "
                      f"{VARIATIONS} sequential requests {sequential[-1]:.2f} s", flush=True)
    finally:
        server.stop()
    what = f"range {args.range[0]}-{args.range[1]} s of " if args.range else ""
    b, s = statistics.median(batched), statistics.median(sequential)
    print(f"model {args.model}, {what}{args.duration} s, {args.threads} torch thread(s), "
          f"steps {args.steps or 'default'}")
    print(f"median: batch {b:.2f} s, sequential {s:.2f} s; ratio sequential / batch = "
          f"{s / b:.2f} (> 1: one batched request is faster)")


if __name__ == "__main__":
    main()
