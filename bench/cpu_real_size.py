"""The real-size STA-V2A pipeline (random weights) on the CPU: resident memory per dtype, and
one 10.24 s window end to end in bfloat16 (dtype mismatches that only show at real size).

Usage: python bench/cpu_real_size.py --model-dir DIR [--threads 2] [--json docs/cpu-real-size.json]
DIR is written by ``v2a create-model --config sta-v2a`` when it does not exist yet (5 GB).
Every measurement runs in a fresh subprocess, so that one's memory never counts in another's;
memory is read from /proc (VmRSS now, VmHWM the peak). Needs about 12 GB of free RAM.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINDOW_S = 10.24
MEASUREMENTS = (("load", "float32"), ("load", "bfloat16"), ("generate", "float32"), ("generate", "bfloat16"))


def proc_memory() -> dict[str, int]:
    """This process's resident memory now (all; anonymous; file-backed, e.g. memory-mapped
    safetensors) and at its peak, bytes."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
                key, kib = line.split()[:2]
                values[key.rstrip(":")] = int(kib) * 1024
    return {"rss_bytes": values["VmRSS"], "anon_bytes": values["RssAnon"], "file_bytes": values["RssFile"],
            "peak_rss_bytes": values["VmHWM"]}


def touch_every_weight(pipe) -> int:
    """Read every parameter and buffer once: float32 weights loaded from safetensors stay
    memory-mapped and count as resident only once read. Returns the bytes read."""
    import torch

    total = 0
    with torch.no_grad():
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                for tensor in list(module.parameters()) + list(module.buffers()):
                    tensor.sum()
                    total += tensor.numel() * tensor.element_size()
    return total


def child(kind: str, dtype: str, model_dir: str, threads: int) -> dict:
    import numpy as np
    import torch

    from v2a_server.model_store import load_pipeline
    from v2a_server.pipelines.device_memory import reset_peak_memory

    torch.set_num_threads(threads)
    baseline = proc_memory()["rss_bytes"]  # torch + diffusers + transformers imported
    t0 = time.perf_counter()
    pipe = load_pipeline(model_dir, dtype=dtype)
    record = {"kind": kind, "dtype": dtype, "threads": threads, "load_s": time.perf_counter() - t0,
              "load_average_1min": os.getloadavg()[0],  # other work on the machine slows the times
              "imports_rss_bytes": baseline, "loaded": proc_memory()}
    record["weight_bytes"] = touch_every_weight(pipe)
    record["weights_read"] = proc_memory()
    if kind == "generate":
        image = pipe.video_encoder.config.image_size
        frames = np.random.default_rng(0).integers(0, 256, (int(WINDOW_S * pipe.model_fps) + 1, image, image, 3), np.uint8)
        reset_peak_memory("cpu")  # the peak of the generation alone, not of the load's cast
        t0 = time.perf_counter()
        out = pipe(frames=frames, frames_fps=pipe.model_fps, duration_s=WINDOW_S, caption="a man hitting a metal can",
                   negative_caption="", seed=0, sampler="dpmpp", num_inference_steps=2)
        record.update(generate_s=time.perf_counter() - t0, timings_s=out.timings_s, after_generate=proc_memory(),
                      audio_shape=list(out.audio.shape), audio_finite=bool(np.isfinite(out.audio).all()),
                      component_dtypes=sorted({str(m.dtype) for m in pipe.components.values() if hasattr(m, "dtype")}))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.model_dir, args.threads)))
        return 0
    if not (Path(args.model_dir) / "model_index.json").is_file():
        subprocess.run([sys.executable, "-m", "v2a_server.cli", "create-model", "--config", "sta-v2a",
                        "--out", args.model_dir], check=True, cwd=ROOT)
    results = []
    for kind, dtype in MEASUREMENTS:
        proc = subprocess.run([sys.executable, __file__, "--model-dir", args.model_dir, "--threads", str(args.threads),
                               "--child", kind, dtype], capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        gib = lambda key, field: r[key][field] / 2**30  # noqa: E731
        line = (f"{kind:<9} {dtype:<9} load {r['load_s']:5.1f} s, weights {r['weight_bytes'] / 2**30:.2f} GiB; "
                f"RSS loaded {gib('loaded', 'rss_bytes'):5.2f} GiB, every weight read {gib('weights_read', 'rss_bytes'):5.2f} GiB "
                f"(anon {gib('weights_read', 'anon_bytes'):.2f}, file {gib('weights_read', 'file_bytes'):.2f}), "
                f"peak {gib('weights_read', 'peak_rss_bytes'):5.2f} GiB")
        if kind == "generate":
            line += (f"  | 10.24 s at 2 steps: {r['generate_s']:.1f} s, peak while generating {gib('after_generate', 'peak_rss_bytes'):.2f} GiB,"
                     f" finite {r['audio_finite']}")
        print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": "sta-v2a random weights", "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
