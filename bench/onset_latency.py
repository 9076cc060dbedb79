"""Onset markers against the audible attacks of the generated audio: the model's onset latency.

The onset head learned librosa's onset labels, which come after the audible attack, so its
markers run late. This script
  1. calibrates: generates the first ``--val`` clips of the synthetic world's *validation*
     split, pairs each raw marker (the head's peaks, no correction) one-to-one with an attack
     of the take (``v2a_server.pipelines.attacks.find_attacks``, within ±0.1 s) and takes the
     median of marker − attack: the model's ``onset_latency_s``;
  2. measures on the held-out *test* split (and on the real clips of ``--real``): median
     |marker − attack| of the raw markers, of the calibrated ones (raw − latency) and of the
     markers the pipeline returns (calibrated, then moved onto the attacks; markers with
     nothing audible removed), plus |marker − true impact| on the synthetic clips (the
     physics' event times: a check that does not use the attack definition) and how many
     markers sit in the first 0.1 s of a real clip;
  3. with ``--write``, stores the latency in the model folder's ``model_index.json``.

  python bench/onset_latency.py [--model default] [--val 32] [--test 32] [--json FILE] [--write]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CAPTION = "the sounds of the actions and impacts in the video"
PAIR_WINDOW_S = 0.1  # AA-Align's tolerance
FIRST_FRAMES_S = 0.1


def generate_raw(pipe, frames, fps: float, duration_s: float, caption: str, seed: int):
    """(take [N], raw marker times): the head's peaks without latency or attack correction."""
    from v2a_server.pipelines.onsets import pick_onsets

    out = pipe(frames=frames, frames_fps=fps, duration_s=duration_s, caption=caption,
               negative_caption="speech, music", seed=seed, onsets_on_attacks=False)
    raw, strengths = pick_onsets(out.onset_probs, 1.0 / pipe.latent_fps)
    return out.audio[0], np.asarray(raw, np.float64), strengths


def offsets(markers, targets) -> np.ndarray:
    """marker − target (s) of one-to-one pairs within ±PAIR_WINDOW_S."""
    from v2a_server.evaluation.metrics import match_events

    markers, targets = np.asarray(markers, np.float64), np.asarray(targets, np.float64)
    return np.asarray([markers[i] - targets[j] for i, j in
                       match_events(markers, targets, PAIR_WINDOW_S, inclusive=True)])


def summary(values: list[np.ndarray], n_markers: int) -> dict:
    v = np.concatenate(values) * 1000.0 if values else np.zeros(0)
    return {"markers": n_markers, "pairs": int(v.size),
            "median_abs_ms": round(float(np.median(np.abs(v))), 2) if v.size else None,
            "median_ms": round(float(np.median(v)), 2) if v.size else None,
            "p90_abs_ms": round(float(np.percentile(np.abs(v), 90)), 2) if v.size else None}


def measure(rows: list[dict], latency_s: float, sample_rate: int) -> dict:
    """The three marker sets of every row against its attacks (and true events when known)."""
    from v2a_server.pipelines.attacks import find_attacks, refine_onsets

    sets = {"raw": [], "calibrated": [], "on_attacks": []}
    counts = dict.fromkeys(sets, 0)
    events = {k: [] for k in sets}
    first = dict.fromkeys(sets, 0)
    for row in rows:
        attacks = find_attacks(row["audio"], sample_rate).times_s
        calibrated = np.maximum(row["raw"] - latency_s, 0.0)
        refined, _ = refine_onsets(calibrated, row["strengths"], row["audio"], sample_rate)
        for name, markers in (("raw", row["raw"]), ("calibrated", calibrated),
                              ("on_attacks", np.asarray(refined))):
            sets[name].append(offsets(markers, attacks))
            counts[name] += len(markers)
            first[name] += int(np.sum(np.asarray(markers) < FIRST_FRAMES_S))
            if row.get("events") is not None:
                events[name].append(offsets(markers, row["events"]))
    out = {name: {"vs_attack": summary(sets[name], counts[name]),
                  f"markers_before_{FIRST_FRAMES_S}s": first[name]} for name in sets}
    if any(row.get("events") is not None for row in rows):
        for name in sets:
            out[name]["vs_true_impact"] = summary(events[name], counts[name])
        out["attack_vs_true_impact"] = summary(
            [offsets(find_attacks(r["audio"], sample_rate).times_s, r["events"]) for r in rows],
            sum(len(find_attacks(r["audio"], sample_rate).times_s) for r in rows))
    return out


def synthetic_rows(pipe, split: str, count: int) -> list[dict]:
    from v2a_server.synth.clip import make_clip
    from v2a_server.synth.dataset import clip_seeds

    rows = []
    for _, index, seed in clip_seeds(0, {split: count}):
        clip = make_clip(seed)
        audio, raw, strengths = generate_raw(pipe, clip.frames, clip.fps, clip.duration_s,
                                             clip.caption, index)
        rows.append({"name": f"synth_{seed}", "audio": audio, "raw": raw,
                     "strengths": strengths, "events": clip.event_times_s})
        print(f"{split} synth_{seed}: {len(raw)} markers, {len(clip.events)} impacts", flush=True)
    return rows


def real_rows(pipe, folder: Path, seconds: float) -> list[dict]:
    from v2a_server.media.video_io import read_video
    from v2a_server.serving.result import take_level

    rows = []
    for i, path in enumerate(sorted(folder.glob("*.mp4"))):
        video = read_video(path, fps=pipe.model_fps, max_side=None, max_duration_s=seconds)
        duration = min(seconds, video.frames.shape[0] / video.fps)
        audio, raw, strengths = generate_raw(pipe, video.frames, video.fps, duration, CAPTION, i)
        level = take_level(audio, pipe.sample_rate)
        rows.append({"name": path.stem, "audio": audio, "raw": raw, "strengths": strengths,
                     "near_silent": level.near_silent})
        print(f"real {path.stem}: {len(raw)} markers, loudest {level.loudest_dbfs:.1f} dBFS",
              flush=True)
    return rows


def find_all(audio, sample_rate: int) -> np.ndarray:
    from v2a_server.pipelines.attacks import find_attacks

    return find_attacks(audio, sample_rate).times_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--val", type=int, default=32, help="validation clips to calibrate on")
    parser.add_argument("--test", type=int, default=32, help="test clips to measure on")
    parser.add_argument("--real", default=str(REPO.parent / "shared" / "data" / "vggsound"),
                        help="folder of real clips (skipped when absent)")
    parser.add_argument("--seconds", type=float, default=10.0, help="of each real clip")
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument("--write", action="store_true",
                        help="store the measured latency in the model's model_index.json")
    args = parser.parse_args()

    import torch

    from v2a_server.model_store import load_pipeline, resolve_model_dir

    torch.set_num_threads(1)
    pipe = load_pipeline(args.model)
    stored = float(pipe.config.onset_latency_s)
    t0 = time.perf_counter()
    val = synthetic_rows(pipe, "val", args.val)
    diffs = np.concatenate([offsets(r["raw"], find_all(r["audio"], pipe.sample_rate))
                            for r in val])
    latency_s = round(float(np.median(diffs)), 3)
    print(f"onset latency: {latency_s * 1000:.0f} ms (median of {diffs.size} marker-attack "
          f"pairs on {len(val)} validation clips; the model folder says {stored * 1000:.0f} ms)")
    report = {"model": args.model, "stored_latency_s": stored, "latency_s": latency_s,
              "calibration_pairs": int(diffs.size), "val_clips": len(val),
              "validation": measure(val, latency_s, pipe.sample_rate)}
    test = synthetic_rows(pipe, "test", args.test)
    report["test_clips"] = len(test)
    report["test"] = measure(test, latency_s, pipe.sample_rate)
    real = Path(args.real)
    if real.is_dir():
        rows = real_rows(pipe, real, args.seconds)
        audible = [r for r in rows if not r["near_silent"]]
        report["real_clips"] = {"clips": len(rows), "audible_takes": len(audible),
                                "all": measure(rows, latency_s, pipe.sample_rate),
                                "audible": measure(audible, latency_s, pipe.sample_rate)}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if args.write:
        index = resolve_model_dir(args.model) / "model_index.json"
        data = json.loads(index.read_text(encoding="utf-8"))
        data["onset_latency_s"] = latency_s
        index.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote onset_latency_s = {latency_s} into {index}")


if __name__ == "__main__":
    main()
