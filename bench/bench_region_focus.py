"""Region-focused Foley on two-source clips: does the take follow the marked source only?

Makes ``--clips`` synthetic two-source clips (``v2a_server.synth.two_source``: two sounding
actors side by side, contacts at different times), puts the focus region on one of them (A;
left and right alternate) and generates with the embedded default model, once without a region
and once per way of showing the region (``serving.focus_region.FOCUS_METHODS``). For each run:

- ``focused_onset_f1``: onsets of the generated audio (the metrics' librosa detector) against
  A's contacts, one-to-one F1 at ±0.1 s, averaged over clips;
- ``other_source_hit_share``: of B's contacts with no A contact within 0.1 s, the share with a
  generated onset within ±0.1 s (pooled over clips).

The same two figures from the model's onset head (the take's onset markers) are reported beside
them, and the baselines: silence (no onsets), chance (as many onsets as A has contacts, uniform
in time) and "every contact" (onsets at all of A's and B's contacts: a take that ignores the
region perfectly). The top-level figures are the chosen method's (``DEFAULT_FOCUS_METHOD``).

The region is the focused source's box at every frame (``--box moving``: as a Mask that follows
it gives) or one box holding it over the whole clip (``--box static``: as a Box drawn once gives).

Usage: OMP_NUM_THREADS=1 python bench/bench_region_focus.py --clips 16 --json OUT
       [--steps 25] [--threads 1] [--seed 0] [--box moving|static] [--methods mean,still]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

TOLERANCE_S = 0.1
NEGATIVE_CAPTION = "speech, music"
CHANCE_DRAWS = 200


def hit_share(onsets_s: np.ndarray, contacts_s: np.ndarray, tolerance_s: float = TOLERANCE_S) -> tuple[int, int]:
    """(contacts with an onset within ±tolerance, contacts)."""
    onsets = np.asarray(onsets_s, np.float64)
    hits = sum(bool(len(onsets) and np.min(np.abs(onsets - c)) <= tolerance_s) for c in contacts_s)
    return hits, len(contacts_s)


def score(onsets_s, focused_s, other_only_s) -> dict:
    from v2a_server.evaluation.metrics import onset_prf

    hits, total = hit_share(onsets_s, other_only_s)
    return {"f1": onset_prf(focused_s, onsets_s, tolerance_s=TOLERANCE_S).f1,
            "other_hits": hits, "other_total": total}


def summarise(rows: list[dict]) -> dict:
    hits = sum(r["other_hits"] for r in rows)
    total = sum(r["other_total"] for r in rows)
    return {"focused_onset_f1": round(float(np.mean([r["f1"] for r in rows])), 4),
            "other_source_hit_share": round(hits / total, 4) if total else None}


def chance_rows(pair, side: str, other: str, duration_s: float, rng: np.random.Generator) -> dict:
    """Mean F1 / hit share of uniform random onsets, as many as A's contacts."""
    a = pair.sources()[side].contact_times_s
    b_only = pair.only_contacts_s(other)
    f1s, hits = [], 0
    for _ in range(CHANCE_DRAWS):
        s = score(np.sort(rng.uniform(0, duration_s, len(a))), a, b_only)
        f1s.append(s["f1"])
        hits += s["other_hits"]
    return {"f1": float(np.mean(f1s)), "other_hits": hits / CHANCE_DRAWS, "other_total": len(b_only)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--json", required=True, help="where to write the figures")
    parser.add_argument("--steps", type=int, default=25, help="sampler steps (dpmpp)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="first clip seed")
    parser.add_argument("--model", default="default")
    parser.add_argument("--box", choices=("moving", "static"), default="moving")
    parser.add_argument("--methods", default="", help="comma-separated subset of the ways (default: all)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from v2a_server.evaluation.metrics import detect_onsets_waveform
    from v2a_server.model_store import load_pipeline
    from v2a_server.serving.focus_region import (
        DEFAULT_FOCUS_METHOD,
        FOCUS_METHODS,
        apply_focus,
    )
    from v2a_server.synth.two_source import make_two_source_clip

    pipe = load_pipeline(args.model)
    chosen_methods = tuple(m for m in args.methods.split(",") if m) or FOCUS_METHODS
    unknown = set(chosen_methods) - set(FOCUS_METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {FOCUS_METHODS}")
    runs = ("none",) + chosen_methods
    audio_rows: dict[str, list[dict]] = {m: [] for m in runs}
    head_rows: dict[str, list[dict]] = {m: [] for m in runs}
    base_rows: dict[str, list[dict]] = {"silence": [], "chance": [], "every_contact": []}
    clips, started = [], time.perf_counter()
    rng = np.random.default_rng(args.seed)
    for i in range(args.clips):
        pair = make_two_source_clip(args.seed + i)
        clip = pair.clip
        side, other = ("left", "right") if i % 2 == 0 else ("right", "left")
        focused = pair.sources()[side]
        boxes = focused.boxes if args.box == "moving" else np.repeat([focused.box], len(clip.frames), 0)
        a, b_only = focused.contact_times_s, pair.only_contacts_s(other)
        every = np.sort(np.concatenate([pair.left.contact_times_s, pair.right.contact_times_s]))
        base_rows["silence"].append(score([], a, b_only))
        base_rows["every_contact"].append(score(every, a, b_only))
        base_rows["chance"].append(chance_rows(pair, side, other, clip.duration_s, rng))
        record = {"seed": args.seed + i, "caption": clip.caption, "focus": side,
                  "box": [round(v, 4) for v in focused.box], "contacts_s": [round(t, 3) for t in a],
                  "other_only_s": [round(t, 3) for t in b_only], "runs": {}}
        for method in runs:
            frames = clip.frames if method == "none" else apply_focus(clip.frames, boxes, method)
            out = pipe(frames=frames, frames_fps=clip.fps, duration_s=clip.duration_s,
                       caption=clip.caption, negative_caption=NEGATIVE_CAPTION, seed=i,
                       num_inference_steps=args.steps)
            onsets = detect_onsets_waveform(out.audio[0], out.sample_rate)
            audio_rows[method].append(score(onsets, a, b_only))
            head_rows[method].append(score(out.onset_times_s, a, b_only))
            record["runs"][method] = {"audio_onsets_s": [round(float(t), 3) for t in onsets],
                                      "marker_onsets_s": [round(float(t), 3) for t in out.onset_times_s],
                                      "f1": round(audio_rows[method][-1]["f1"], 3)}
        clips.append(record)
        print(f"clip {i + 1}/{args.clips} ({time.perf_counter() - started:.0f} s): "
              + ", ".join(f"{m} {record['runs'][m]['f1']:.2f}" for m in runs), flush=True)

    methods = {m: {"audio": summarise(audio_rows[m]), "onset_markers": summarise(head_rows[m])} for m in runs}
    chosen = methods.get(DEFAULT_FOCUS_METHOD, methods[runs[-1]])["audio"]
    result = {
        "settings": {"model": args.model, "clips": args.clips, "steps": args.steps, "sampler": "dpmpp",
                     "threads": args.threads, "first_seed": args.seed, "tolerance_s": TOLERANCE_S,
                     "box": args.box, "device": "cpu", "seconds": round(time.perf_counter() - started, 1)},
        "method": DEFAULT_FOCUS_METHOD if DEFAULT_FOCUS_METHOD in methods else runs[-1],
        "focused_onset_f1": chosen["focused_onset_f1"],
        "other_source_hit_share": chosen["other_source_hit_share"],
        "without_region": methods["none"]["audio"],
        "methods": methods,
        "baselines": {k: summarise(v) for k, v in base_rows.items()},
        "clips": clips,
    }
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: result[k] for k in ("method", "focused_onset_f1", "other_source_hit_share",
                                              "without_region", "baselines")}))
    for m in runs:
        print(f"{m:6s} audio {methods[m]['audio']}  markers {methods[m]['onset_markers']}")


if __name__ == "__main__":
    main()
