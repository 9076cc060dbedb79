"""Transport + codec overhead of the Foley protocol, as a fraction of generation time.

A 10 s clip at the model's frame rate (RGB frames, 224x224 by default) goes to a real
``v2a-server`` subprocess on loopback (tiny model unless --model/--server say otherwise).
For each run:

    total     = client wall time from building the request to holding the decoded result
    pipeline  = the server's own pipeline time (result.timings_s.pipeline_s)
    overhead  = total - pipeline: request encode + validation, ZeroMQ transfer both ways,
                server decode, frames -> numpy, audio -> bytes, progress traffic, result decode

and prints ``overhead / total`` (target <= 2 %). A second table times the codec alone
(encode + decode of the same generate and result messages, no sockets).

Usage:
    python bench/bench_transport.py                       # builds a tiny model in a temp dir
    python bench/bench_transport.py --model /tmp/tiny --runs 5
    python bench/bench_transport.py --server tcp://127.0.0.1:5555   # an already running server
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from foley_protocol.client import FoleyClient, build_generate, result_audio_numpy
from foley_protocol.protocol import Message, decode, encode

CLIP_S = 10.0
TARGET_RATIO = 0.02


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, log_path: Path) -> tuple[subprocess.Popen, str]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    # the checked-out code's server, not whatever an installed `v2a-server` script names
    head = [sys.executable, "-m", "v2a_server.commands.serve"]
    log = open(log_path, "wb")
    proc = subprocess.Popen([*head, "--model", model, "--bind", endpoint], stdout=log,
                            stderr=subprocess.STDOUT)
    return proc, endpoint


def wait_ready(client: FoleyClient, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not (client.connected and client.server_info["state"] == "ready"):
        if time.monotonic() > deadline:
            raise SystemExit(f"server not ready after {timeout_s} s")
        client.poll(0.1)


def one_run(client: FoleyClient, frames: np.ndarray, fps: float, steps: int | None) -> dict:
    t0 = time.perf_counter()
    result = client.generate_blocking(frames, frames_fps=fps, duration_s=CLIP_S,
                                      caption="footsteps on a wooden floor", steps=steps,
                                      seed=0, timeout_s=600.0)
    audio = result_audio_numpy(result)
    t_total = time.perf_counter() - t0
    timings = result.body["timings_s"]
    assert audio[0].shape == (round(CLIP_S * result.body["audio"]["sample_rate"]),)
    return {"total_s": t_total, "pipeline_s": timings["pipeline_s"],
            "server_codec_s": timings["prepare_s"] + timings["encode_s"],
            "queue_s": timings["queue_s"]}


def codec_only(frames: np.ndarray, fps: float, sample_rate: int, repeats: int = 5) -> dict:
    """Encode + decode (validation included) of the generate request and a result reply."""
    samples = round(CLIP_S * sample_rate)
    audio = np.zeros(samples, np.float32)
    n_curve = round(CLIP_S * 25)
    result = Message("result", {
        "audio": {"encoding": "pcm_f32le", "sample_rate": sample_rate, "channels": 1,
                  "samples": samples, "buffers": [0]},
        "duration_s": CLIP_S, "start_time_s": 0.0, "onset_times_s": [0.5] * 20,
        "onset_probabilities": [0.9] * 20,
        "onset_curve": {"rate_hz": 25.0, "values": [0.1] * n_curve},
        "seed": 0, "steps": 25, "sampler": "dpmpp", "model_id": "bench", "timings_s": {},
        "warnings": []}, parent="x", buffers=[memoryview(audio).cast("B")])
    out = {}
    for name, make, direction in (
        ("generate", lambda: build_generate(frames, frames_fps=fps, duration_s=CLIP_S,
                                            caption="footsteps"), "request"),
        ("result", lambda: result, "reply"),
    ):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            decode(encode(make()), direction=direction)
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: build tiny)")
    parser.add_argument("--server", default=None, help="use a running server at ENDPOINT")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=224, help="frame side in pixels")
    parser.add_argument("--steps", type=int, default=None, help="default: the model's own")
    args = parser.parse_args(argv)

    proc = None
    tmp = tempfile.TemporaryDirectory(prefix="bench-transport-")
    try:
        endpoint = args.server
        if endpoint is None:
            model = args.model
            if model is None:
                model = str(Path(tmp.name) / "tiny")
                v2a = Path(sys.executable).with_name("v2a")
                subprocess.run([str(v2a), "create-model", "--config", "tiny", "--out", model],
                               check=True, capture_output=True)
            proc, endpoint = start_server(model, Path(tmp.name) / "server.log")
        with FoleyClient(endpoint, client_name="bench_transport") as client:
            wait_ready(client)
            fps = float(client.server_info["model_fps"])
            sample_rate = int(client.server_info["sample_rate"])
            n_frames = int(round(CLIP_S * fps))
            frames = np.random.default_rng(0).integers(0, 256, (n_frames, args.size, args.size, 3),
                                                       dtype=np.uint8)
            print(f"clip: {CLIP_S:.0f} s at {fps:g} fps = {n_frames} frames of "
                  f"{args.size}x{args.size} RGB ({frames.nbytes / 1e6:.1f} MB); audio "
                  f"{sample_rate} Hz float32 ({CLIP_S * sample_rate * 4 / 1e6:.2f} MB)")
            one_run(client, frames, fps, args.steps)  # warm-up (first-call allocations)
            runs = [one_run(client, frames, fps, args.steps) for _ in range(args.runs)]
        codec = codec_only(frames, fps, sample_rate)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        tmp.cleanup()

    print(f"{'run':>4} {'total s':>9} {'pipeline s':>11} {'overhead s':>11} {'ratio':>7}")
    ratios = []
    for i, r in enumerate(runs, 1):
        overhead = r["total_s"] - r["pipeline_s"]
        ratios.append(overhead / r["total_s"])
        print(f"{i:>4} {r['total_s']:>9.3f} {r['pipeline_s']:>11.3f} {overhead:>11.4f} "
              f"{ratios[-1]:>7.2%}")
    print(f"codec only (encode+decode, validated): generate {codec['generate'] * 1e3:.2f} ms, "
          f"result {codec['result'] * 1e3:.2f} ms; server frames->numpy + audio->bytes "
          f"{statistics.median(r['server_codec_s'] for r in runs) * 1e3:.2f} ms")
    ratio = statistics.median(ratios)
    verdict = "OK" if ratio <= TARGET_RATIO else "ABOVE TARGET"
    print(f"transport+codec / total generation time: {ratio:.2%} (median of {len(runs)}; "
          f"target <= {TARGET_RATIO:.0%}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
