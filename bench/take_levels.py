"""Where a near-silent take begins: levels of generated takes and of real soundtracks.

Measures ``v2a_server.serving.result.take_level`` (rms, peak, loudest 100 ms window, dBFS) of
  * the model's takes on every real clip in a folder (default ``../shared/data/vggsound``),
    several seeds, the first ``--seconds`` of each clip, one generic caption;
  * the clips' own soundtracks over the same spans (real sound, quiet parts included: a
    threshold must not flag these), and their quietest 4 s spans;
  * the model's takes on clips of the synthetic world it was trained on (its own ground).
The threshold ``NEAR_SILENT_DBFS`` in ``serving/result.py`` is chosen from these numbers
(docs/default-model.md, "Near-silent takes").

  python bench/take_levels.py [--model default] [--seeds 3] [--synthetic 6] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CAPTION = "the sounds of the actions and impacts in the video"
QUIET_SPAN_S = 4.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--folder", default=str(REPO.parent / "shared" / "data" / "vggsound"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--synthetic", type=int, default=6, help="synthetic clips to generate")
    parser.add_argument("--json", help="write every row here")
    args = parser.parse_args()

    from v2a_server.media.audio_io import load_container_audio
    from v2a_server.media.video_io import read_video
    from v2a_server.model_store import load_pipeline
    from v2a_server.serving.result import NEAR_SILENT_DBFS, take_level
    from v2a_server.synth.clip import make_clip

    pipe = load_pipeline(args.model)
    rows = []

    def row(kind: str, name: str, audio, rate: int, **extra) -> None:
        level = take_level(audio, rate)
        rows.append({"kind": kind, "name": name, **extra,
                     "rms_dbfs": round(level.rms_dbfs, 1), "peak_dbfs": round(level.peak_dbfs, 1),
                     "peak": round(10 ** (level.peak_dbfs / 20), 4),
                     "loudest_dbfs": round(level.loudest_dbfs, 1),
                     "near_silent": level.near_silent})
        print(json.dumps(rows[-1]), flush=True)

    for clip in sorted(Path(args.folder).glob("*.mp4")):
        video = read_video(clip, fps=pipe.model_fps, max_side=None, max_duration_s=args.seconds)
        duration = min(args.seconds, video.frames.shape[0] / video.fps)
        for seed in range(args.seeds):
            out = pipe(frames=video.frames, frames_fps=video.fps, duration_s=duration,
                       caption=CAPTION, negative_caption="speech, music", seed=seed)
            row("generated (real clip)", clip.stem, out.audio[0], out.sample_rate, seed=seed)
        wav = clip.with_suffix(".wav")
        audio, rate = load_container_audio(wav if wav.is_file() else clip)
        audio = np.asarray(audio, np.float32).mean(axis=0)  # [C, N] -> mono
        row("real soundtrack", clip.stem, audio[: int(duration * rate)], rate)
        span = int(QUIET_SPAN_S * rate)
        starts = range(0, max(1, len(audio) - span + 1), rate // 2)
        quietest = min(starts, key=lambda s: float(np.mean(audio[s:s + span] ** 2)))
        row("real soundtrack, quietest 4 s", clip.stem, audio[quietest:quietest + span], rate,
            start_s=quietest / rate)
    for seed in range(args.synthetic):
        clip = make_clip(1000 + seed, duration_s=10.24)
        video_fps = float(clip.fps)
        out = pipe(frames=clip.frames, frames_fps=video_fps, duration_s=clip.duration_s,
                   caption=clip.caption, seed=seed)
        row("generated (synthetic clip)", clip.caption, out.audio[0], out.sample_rate,
            seed=seed)
        row("synthetic ground truth", clip.caption, clip.audio, clip.sample_rate)

    print(f"\nnear-silent threshold: loudest 100 ms window < {NEAR_SILENT_DBFS} dBFS")
    for kind in dict.fromkeys(r["kind"] for r in rows):
        group = [r for r in rows if r["kind"] == kind]
        flagged = sum(r["near_silent"] for r in group)
        loudest = sorted(r["loudest_dbfs"] for r in group)
        print(f"{kind:<32} {len(group):3d} takes, {flagged:3d} flagged; loudest-window dBFS "
              f"{loudest}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "caption": CAPTION,
                                               "threshold_dbfs": NEAR_SILENT_DBFS,
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
