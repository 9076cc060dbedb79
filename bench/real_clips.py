"""The default model on real video: every clip in a folder (default ``../shared/data/vggsound``).

For each video, generate its first ``--seconds`` with one caption for all clips (the folder has no
labels, so the model hears only what the picture shows plus a generic caption), then score with
``v2a_server.evaluation.metrics.evaluate_clip``: AV-Align of the generated audio against the video's
optical-flow events, the same for the clip's own soundtrack (the ceiling: how well real sound
lines up with this video's motion), and AA-Align / onset F1 of generated against real audio.

  python bench/real_clips.py [--model default] [--folder DIR] [--out DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CAPTION = "the sounds of the actions and impacts in the video"
KEYS = ("av_align", "av_align_reference", "aa_align", "aa_align_one_to_one", "onset_f1",
        "n_onsets_generated", "n_onsets_reference", "n_video_events")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--folder", default=str(REPO.parent / "shared" / "data" / "vggsound"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--caption", default=CAPTION)
    parser.add_argument("--out", help="keep the generated WAVs here (default: a temporary folder)")
    parser.add_argument("--json", help="write per-clip and mean numbers here")
    args = parser.parse_args()

    import soundfile as sf

    from v2a_server.evaluation.metrics import evaluate_clip
    from v2a_server.model_store import load_pipeline
    from v2a_server.media.video_io import read_video

    clips = sorted(Path(args.folder).glob("*.mp4"))
    if not clips:
        raise SystemExit(f"no .mp4 clips in {args.folder}")
    out = Path(args.out or tempfile.mkdtemp(prefix="v2a-real-"))
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(args.model)
    rows = []
    for i, clip in enumerate(clips):
        t0 = time.perf_counter()
        video = read_video(clip, fps=pipe.model_fps, max_side=None, max_duration_s=args.seconds)
        duration = min(args.seconds, video.frames.shape[0] / video.fps)
        result = pipe(frames=video.frames, frames_fps=video.fps, duration_s=duration, caption=args.caption,
                      negative_caption="speech, music", seed=i)
        wav = out / f"{clip.stem}.wav"
        sf.write(wav, result.audio[0], result.sample_rate, subtype="FLOAT")
        scores = evaluate_clip(generated_audio=wav, reference_audio=clip, video=clip, length_s=duration)
        rows.append({"clip": clip.name, "seconds": round(duration, 2),
                     "generate_s": round(time.perf_counter() - t0, 1), **{k: scores.get(k) for k in KEYS}})
        print(json.dumps(rows[-1]), flush=True)
    mean = {k: float(np.mean([r[k] for r in rows if r[k] is not None])) for k in KEYS}
    print(f"{'clip':<28} {'AV gen':>7} {'AV real':>8} {'AA':>6} {'AA 1:1':>7} {'F1':>6} {'n gen':>6} {'n real':>7}")
    for r in rows + [{"clip": "mean", **mean}]:
        print(f"{r['clip']:<28} {r['av_align']:7.3f} {r['av_align_reference']:8.3f} {r['aa_align']:6.3f} "
              f"{r['aa_align_one_to_one']:7.3f} {r['onset_f1']:6.3f} {r['n_onsets_generated']:6.1f} "
              f"{r['n_onsets_reference']:7.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "caption": args.caption,
                                               "clips": rows, "mean": mean}, indent=1))


if __name__ == "__main__":
    main()
