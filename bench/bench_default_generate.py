"""Time to generate 10.24 s of audio with the embedded default model at its default sampler
settings, on this machine (issue 4 target: median <= 10 s on the 2-core CPU).

Usage: python bench/bench_default_generate.py [--model default] [--runs 5]
Prints the cold first call (includes one-off kernel set-up), the median of the warm runs and
the ratio median / 10 s target.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

TARGET_S = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="default")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from v2a_server.model_store import load_pipeline
    from v2a_server.synth import make_clip

    t0 = time.perf_counter()
    pipe = load_pipeline(args.model)
    load_s = time.perf_counter() - t0
    clip = make_clip(2024, duration_s=10.24, fps=25.0, size_px=128)
    kwargs = dict(frames=clip.frames, frames_fps=clip.fps, duration_s=10.24, caption=clip.caption, negative_caption="speech, music")
    times, stages = [], []
    for i in range(args.runs + 1):
        t0 = time.perf_counter()
        out = pipe(seed=i, **kwargs)
        times.append(time.perf_counter() - t0)
        stages.append(out.timings_s)
    warm = times[1:]
    median = statistics.median(warm)
    print(f"model {args.model}: load {load_s:.2f} s, torch threads {torch.get_num_threads()}")
    print(f"cold first call {times[0]:.2f} s; warm runs {', '.join(f'{t:.2f}' for t in warm)}")
    mean_stages = {k: float(np.mean([s[k] for s in stages[1:]])) for k in stages[1]}
    print("warm stage means: " + ", ".join(f"{k} {v:.2f} s" for k, v in mean_stages.items()))
    print(f"median {median:.2f} s for 10.24 s of audio; ratio to the {TARGET_S:.0f} s target: {median / TARGET_S:.2f}")


if __name__ == "__main__":
    main()
