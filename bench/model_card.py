"""The default model's card numbers, from one script: generate on the held-out synthetic test
split under several settings and score against the reference audio and the video.

Usage:
  python bench/model_card.py --manifest runs/synth/manifest.jsonl --model default \
      [--t2a DIR] [--limit 200] [--ddpm-limit 40] [--json docs/default-model.json]

Rows (each on the same clips, same seeds):
  default, DPM-Solver++ 25 (the default settings) | DPM-Solver++ 10 | DDPM-200 (on --ddpm-limit
  clips: 8x the cost) | with onset hints at the true onsets | hints shifted by +200 ms
  (``hints_shift``) | hints only in the first half of the clip (``hints_region``: are onsets
  suppressed in the second half?) | T2A-only (``--t2a`` folder, video conditioning off) |
  ablation models (``--ablation NAME=DIR``, repeatable: e.g. CN, CN+Onset; default settings) |
  the timbre check (same video, "metal" vs "wood" captions: spectral centroid of the generated
  audio).
Hint rows also report the median offset of generated onsets from the reference onsets they
pair with (one-to-one, within 0.35 s), and onset counts in the second half of each clip.
Scores: AA-Align (reference formula, can exceed 1) and one-to-one, AV-Align (reference) against
optical-flow motion events of the clip, onset precision/recall/F1 at ±0.1 s; means over clips.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


SHIFT_S = 0.2  # the hints_shift row moves every hint this much later
PAIR_TOLERANCE_S = 0.35  # pairs generated onsets with reference onsets to measure shifts
PARTIAL_EVERY = 20  # clips between partial --json writes


def onset_offsets(reference_onsets, onsets) -> list[float]:
    """Generated minus reference time of each one-to-one pair within PAIR_TOLERANCE_S."""
    from v2a_server.evaluation.metrics import match_events

    pairs = match_events(np.asarray(reference_onsets), np.asarray(onsets), PAIR_TOLERANCE_S)
    return [float(onsets[j] - reference_onsets[i]) for i, j in pairs]


def score_clip(generated: np.ndarray, sample_rate: int, reference_onsets, motion,
               half_s: float | None = None) -> dict:
    from v2a_server.evaluation.metrics import (
        aa_align,
        aa_align_one_to_one,
        av_align,
        detect_onsets_waveform,
        onset_prf,
    )

    onsets = detect_onsets_waveform(generated, sample_rate)
    prf = onset_prf(reference_onsets, onsets)
    extra = {}
    if half_s is not None:
        extra = {"offsets_s": onset_offsets(reference_onsets, onsets),
                 "onsets_second_half": int(np.sum(onsets >= half_s)),
                 "reference_second_half": int(np.sum(np.asarray(reference_onsets) >= half_s))}
    return {**extra,
        "aa_align": aa_align(reference_onsets, onsets),
        "aa_align_1to1": aa_align_one_to_one(reference_onsets, onsets),
        "av_align": av_align(onsets, motion.times_s, motion.fps),
        "onset_f1": prf.f1,
        "onset_precision": prf.precision,
        "onset_recall": prf.recall,
        "num_onsets": len(onsets),
    }


def spectral_centroid_hz(audio: np.ndarray, sample_rate: int) -> float:
    spec = np.abs(np.fft.rfft(audio.astype(np.float64)))
    freqs = np.fft.rfftfreq(audio.size, 1.0 / sample_rate)
    return float((spec * freqs).sum() / max(spec.sum(), 1e-12))


def hint_frames(times_s: np.ndarray, n_frames: int, latent_fps: float) -> np.ndarray:
    """Per-latent-frame onset hints: 1 in the frame holding each time (times past the end dropped)."""
    hints = np.zeros(n_frames, np.float32)
    index = np.floor(np.asarray(times_s) * latent_fps).astype(int)
    hints[index[(index >= 0) & (index < n_frames)]] = 1
    return hints


def summarise(results: dict[str, list[dict]]) -> dict[str, dict]:
    """Mean scores per setting (plus the median onset offset) over the clips scored so far."""
    summary = {}
    for name, scores in results.items():
        if not scores:
            continue
        mean = {k: float(np.mean([s[k] for s in scores])) for k in scores[0] if k != "offsets_s"}
        offsets = [o for s in scores for o in s["offsets_s"]]
        mean["median_offset_s"] = float(np.median(offsets)) if offsets else float("nan")
        summary[name] = {"clips": len(scores), **mean}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--model", default="default")
    parser.add_argument("--t2a", help="pipeline folder of the T2A-only model (row skipped when absent)")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--ddpm-limit", type=int, default=40)
    parser.add_argument("--side-limit", type=int, help="clips for the dpmpp10 / hints / t2a rows (default: --limit)")
    parser.add_argument("--timbre-limit", type=int, default=40)
    parser.add_argument("--ablation", action="append", default=[], metavar="NAME=DIR",
                        help="an ablation model's pipeline folder, scored at the default settings")
    parser.add_argument("--rows", default="dpmpp25,dpmpp10,ddpm200,hints,hints_shift,hints_region,t2a,ablations,timbre")
    parser.add_argument("--timbre-guidance", type=float,
                        help="guidance scale of the timbre check (default: the model's own)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", help="write all numbers here")
    args = parser.parse_args()

    import torch

    from v2a_server.evaluation.metrics import detect_onsets_waveform, video_motion_events
    from v2a_server.model_store import load_pipeline
    from v2a_server.synth.dataset import read_manifest
    from v2a_server.training.data import read_audio_16k
    from v2a_server.media.video_io import read_video

    torch.set_num_threads(args.threads)
    manifest = Path(args.manifest)
    rows = [r for r in read_manifest(manifest) if r["split"] == "test"][: args.limit]
    pipe = load_pipeline(args.model)
    t2a = load_pipeline(args.t2a) if args.t2a else None
    wanted = args.rows.split(",")
    side = args.side_limit or args.limit
    settings = {
        "dpmpp25": dict(pipe=pipe, sampler="dpmpp", num_inference_steps=25),
        "dpmpp10": dict(pipe=pipe, sampler="dpmpp", num_inference_steps=10, limit=side),
        "ddpm200": dict(pipe=pipe, sampler="ddpm", num_inference_steps=200, limit=args.ddpm_limit),
        "hints": dict(pipe=pipe, sampler="dpmpp", num_inference_steps=25, hints=True, limit=side),
        "hints_shift": dict(pipe=pipe, sampler="dpmpp", num_inference_steps=25, hints="shift", limit=side),
        "hints_region": dict(pipe=pipe, sampler="dpmpp", num_inference_steps=25, hints="first_half", limit=side),
        "t2a": dict(pipe=t2a, sampler="dpmpp", num_inference_steps=25, video_conditioning=False, limit=side),
    }
    for spec in args.ablation if "ablations" in wanted else []:
        name, _, folder = spec.partition("=")
        settings[name] = dict(pipe=load_pipeline(folder), sampler="dpmpp", num_inference_steps=25, limit=side)
        wanted.append(name)
    results: dict[str, list[dict]] = {k: [] for k in settings if k in wanted and settings[k]["pipe"] is not None}
    timbre = []
    t_start = time.monotonic()
    for i, row in enumerate(rows):
        video_path, audio_path = manifest.parent / row["video"], manifest.parent / row["audio"]
        duration = min(10.24, float(row["duration_s"]))
        video = read_video(video_path, fps=pipe.model_fps, max_side=None, max_duration_s=duration)
        reference = read_audio_16k(audio_path, pipe.sample_rate)[: round(duration * pipe.sample_rate)]
        ref_onsets = detect_onsets_waveform(reference, pipe.sample_rate)
        motion = video_motion_events(str(video_path))
        n_frames = pipe.window_plan(duration).total_frames
        events = np.asarray([e["time_s"] for e in row["events"]])
        half_s = duration / 2
        hint_sets = {True: hint_frames(events, n_frames, pipe.latent_fps),
                     "shift": hint_frames(events + SHIFT_S, n_frames, pipe.latent_fps),
                     "first_half": hint_frames(events[events < half_s], n_frames, pipe.latent_fps)}
        for name, s in settings.items():
            if name not in results or i >= s.get("limit", len(rows)):
                continue
            out = s["pipe"](
                frames=video.frames, frames_fps=video.fps, duration_s=duration, caption=row["caption"],
                negative_caption="speech, music", seed=i, sampler=s["sampler"], num_inference_steps=s["num_inference_steps"],
                onset_hints=hint_sets[s["hints"]] if s.get("hints") else None,
                video_conditioning=s.get("video_conditioning", True),
            )
            results[name].append(score_clip(out.audio[0], out.sample_rate, ref_onsets, motion, half_s))
        if "timbre" in wanted and i < args.timbre_limit:
            cents = {}
            for material in ("metal", "wood"):
                out = pipe(frames=video.frames, frames_fps=video.fps, duration_s=duration, seed=i,
                           caption=f"a {material} object hitting a {material} floor", negative_caption="speech, music",
                           guidance_scale=args.timbre_guidance)
                cents[material] = spectral_centroid_hz(out.audio[0], out.sample_rate)
            timbre.append(cents)
        print(f"\r{i + 1}/{len(rows)} clips, {time.monotonic() - t_start:.0f} s", end="", flush=True)
        if args.json and (i + 1) % PARTIAL_EVERY == 0 and i + 1 < len(rows):
            # a long run leaves its numbers so far (marked partial) should it be stopped
            Path(args.json).write_text(json.dumps({"model": args.model, "t2a": args.t2a, "partial": True,
                                                   "summary": summarise(results)}, indent=1))
    print()
    summary = summarise(results)
    print(f"{'setting':<12} {'clips':>5} {'AA-Align':>9} {'AA 1:1':>8} {'AV-Align':>9} {'onset F1':>9} {'P':>6} {'R':>6}")
    for name, mean in summary.items():
        print(f"{name:<12} {mean['clips']:>5} {mean['aa_align']:9.3f} {mean['aa_align_1to1']:8.3f} {mean['av_align']:9.3f} "
              f"{mean['onset_f1']:9.3f} {mean['onset_precision']:6.3f} {mean['onset_recall']:6.3f}")
    print(f"{'setting':<12} {'median offset':>13} {'onsets 2nd half':>15} {'reference 2nd half':>18}")
    for name, m in summary.items():
        print(f"{name:<12} {1000 * m['median_offset_s']:11.0f} ms {m['onsets_second_half']:15.2f} "
              f"{m['reference_second_half']:18.2f}")
    if timbre:
        metal = [t["metal"] for t in timbre]
        wood = [t["wood"] for t in timbre]
        higher = sum(m > w for m, w in zip(metal, wood))
        summary["timbre"] = {"clips": len(timbre), "metal_centroid_hz_median": statistics.median(metal),
                             "wood_centroid_hz_median": statistics.median(wood), "metal_higher_share": higher / len(timbre)}
        print(f"timbre: spectral centroid median metal {statistics.median(metal):.0f} Hz vs wood {statistics.median(wood):.0f} Hz; "
              f"metal higher on {higher}/{len(timbre)} clips")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "t2a": args.t2a, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
