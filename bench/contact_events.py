"""Visual contact events against the truth, beside the flow-peak events and chance.

1. The synthetic world's held-out test split (``v2a_server.synth``; contact times come from
   the physics): precision and recall of the contact events at ±1 frame (25 fps), one to one
   (``metrics.match_events``), for ``evaluation.contacts.contact_events``, AV-Align's flow
   peaks (``metrics.motion_events``: what the review paired onsets with before) and chance
   (uniform random times, as many per clip as the contact detector found, 20 draws).
2. Real clips (default ``../shared/data/vggsound``): each clip's events against the onsets of
   its own soundtrack (the .wav beside it when there is one, else the mp4's audio track;
   ``metrics.detect_onsets``): onset F1 at ±0.1 s (``metrics.onset_prf``), the same three.

Frames: the synthetic clips' rendered frames (128 px, as the dataset); real clips decoded at
25 fps with the longer side at most 256 px (what a server reads for a movie strip).

  python bench/contact_events.py [--clips 40] [--base-seed 0] [--folder DIR] [--seconds 10]
                                 [--detector NPZ] [--json OUT]

``--detector`` measures another fitted detector (``python -m
v2a_server.training.contact_detector --out NPZ``) instead of the one shipped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FPS = 25.0
CHANCE_DRAWS = 20
REAL_TOLERANCE_S = 0.1


def chance_times(rng: np.random.Generator, count: int, duration_s: float) -> np.ndarray:
    return np.sort(rng.uniform(0.0, duration_s, count))


def prf(matched: int, n_found: int, n_true: int) -> dict:
    precision = matched / n_found if n_found else 0.0
    recall = matched / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "found": n_found,
            "true": n_true}


def synthetic(clips: int, base_seed: int, detector=None) -> dict:
    from v2a_server.evaluation.contacts import contact_events
    from v2a_server.evaluation.metrics import match_events, motion_events
    from v2a_server.synth.clip import make_clip
    from v2a_server.synth.dataset import clip_seeds

    tolerance = 1.0 / FPS + 1e-6  # one frame, inclusive
    rng = np.random.default_rng(base_seed)
    counts = {"contacts": [0, 0], "flow_peaks": [0, 0], "chance": [0.0, 0.0],
              "chance_at_flow_peak_rate": [0.0, 0.0]}
    n_true = 0
    rows = []
    for _split, _index, seed in clip_seeds(base_seed, {"test": clips}):
        clip = make_clip(seed, fps=FPS)
        truth = clip.event_times_s
        found = {"contacts": contact_events(clip.frames, FPS, detector=detector).times_s,
                 "flow_peaks": motion_events(clip.frames, FPS).times_s}
        row = {"seed": seed, "true": len(truth)}
        for name, times in found.items():
            matched = len(match_events(times, truth, tolerance, inclusive=True))
            counts[name][0] += matched
            counts[name][1] += len(times)
            row[name] = {"found": len(times), "matched": matched}
        for name, rate_of in (("chance", "contacts"), ("chance_at_flow_peak_rate", "flow_peaks")):
            draws = [len(match_events(chance_times(rng, len(found[rate_of]), clip.duration_s),
                                      truth, tolerance, inclusive=True))
                     for _ in range(CHANCE_DRAWS)]
            counts[name][0] += float(np.mean(draws))
            counts[name][1] += len(found[rate_of])
        n_true += len(truth)
        rows.append(row)
        print(f"synthetic {seed}: {len(truth)} true, contacts {row['contacts']}, "
              f"flow peaks {row['flow_peaks']}", flush=True)
    return {"clips": len(rows), "tolerance_frames": 1, "fps": FPS,
            **{name: prf(m, n, n_true) for name, (m, n) in counts.items()}, "per_clip": rows}


def real(folder: Path, seconds: float, seed: int, detector=None) -> dict:
    from v2a_server.evaluation.contacts import contact_events
    from v2a_server.evaluation.metrics import detect_onsets, motion_events, onset_prf
    from v2a_server.media.video_io import read_video

    rng = np.random.default_rng(seed)
    rows = []
    for path in sorted(folder.glob("*.mp4")):
        video = read_video(path, fps=FPS, max_side=256, max_duration_s=seconds)
        duration = video.frames.shape[0] / video.fps
        wav = path.with_suffix(".wav")
        reference = detect_onsets(wav if wav.is_file() else path, length_s=duration)
        found = {"contacts": contact_events(video.frames, video.fps, detector=detector).times_s,
                 "flow_peaks": motion_events(video.frames, video.fps).times_s}
        row = {"clip": path.name, "seconds": round(duration, 2), "audio_onsets": len(reference),
               "soundtrack": wav.name if wav.is_file() else "mp4 audio track"}
        for name, times in found.items():
            row[name] = {"found": len(times),
                         "f1": onset_prf(reference, times, tolerance_s=REAL_TOLERANCE_S).f1}
        for name, rate_of in (("chance", "contacts"), ("chance_at_flow_peak_rate", "flow_peaks")):
            row[name] = {"found": len(found[rate_of]), "f1": float(np.mean([
                onset_prf(reference, chance_times(rng, len(found[rate_of]), duration),
                          tolerance_s=REAL_TOLERANCE_S).f1 for _ in range(CHANCE_DRAWS)]))}
        rows.append(row)
        print(f"real {path.name}: {len(reference)} onsets, contacts {row['contacts']}, "
              f"flow peaks {row['flow_peaks']}, chance {row['chance']['f1']:.3f}, at the flow "
              f"peaks' rate {row['chance_at_flow_peak_rate']['f1']:.3f}", flush=True)
    names = ("contacts", "flow_peaks", "chance", "chance_at_flow_peak_rate")
    mean = {name: float(np.mean([r[name]["f1"] for r in rows])) if rows else None
            for name in names}
    return {"clips": len(rows), "tolerance_s": REAL_TOLERANCE_S, "mean_f1": mean,
            "per_clip": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=40, help="synthetic test clips")
    parser.add_argument("--base-seed", type=int, default=0, help="the synthetic dataset seed")
    parser.add_argument("--folder", default=str(REPO.parent / "shared" / "data" / "vggsound"))
    parser.add_argument("--seconds", type=float, default=10.0, help="of each real clip")
    parser.add_argument("--detector", help="a fitted contact detector (.npz) to measure "
                        "instead of the shipped one")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args()
    detector = None  # the shipped one
    if args.detector:
        from v2a_server.evaluation.contacts import ContactDetector

        detector = ContactDetector.load(args.detector)
    t0 = time.perf_counter()
    report = {"synthetic_test_split": synthetic(args.clips, args.base_seed, detector)}
    folder = Path(args.folder)
    if folder.is_dir():
        report["real_clips"] = real(folder, args.seconds, args.base_seed, detector)
    else:
        print(f"no real clips: {folder} is not a folder")
    report["seconds"] = time.perf_counter() - t0
    summary = {k: v for k, v in report["synthetic_test_split"].items() if k != "per_clip"}
    print(json.dumps(summary, indent=1))
    if "real_clips" in report:
        print("real clips, mean onset F1 at ±0.1 s:", json.dumps(report["real_clips"]["mean_f1"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
