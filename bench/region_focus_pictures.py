"""Sync pictures of one two-source clip: a take without a region beside one focused on a source.

Both takes come from the embedded default model with the same seed; each picture is drawn by
``evaluation.sync_picture`` from what the server would compute (the motion of the frames the
model saw, the take's audio onsets, its onset markers), with the focused source's true contacts
dotted. Writes ``<out>/region-focus-none.png``, ``<out>/region-focus-<side>.png`` and prints
the onset F1 against the focused source's contacts for each.

Usage: OMP_NUM_THREADS=1 python bench/region_focus_pictures.py --out docs [--seed 13]
       [--steps 25] [--side right|left]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=13, help="two-source clip seed (and the takes' seed)")
    parser.add_argument("--side", choices=("left", "right"), default="right")
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from v2a_server.evaluation.metrics import audio_onsets_waveform, onset_prf
    from v2a_server.evaluation.sync_picture import SyncPictureData, draw_sync_picture
    from v2a_server.model_store import load_pipeline
    from v2a_server.serving.focus_region import DEFAULT_FOCUS_METHOD, focused_frames
    from v2a_server.serving.result import frame_motion
    from v2a_server.synth.two_source import make_two_source_clip

    pipe = load_pipeline("default")
    pair = make_two_source_clip(args.seed)
    clip, source = pair.clip, pair.sources()[args.side]
    n = len(clip.frames)
    region = {"boxes": [[float(v) for v in b] for b in source.boxes],
              "times_s": [k / clip.fps for k in range(n)]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, frames in (("none", clip.frames),
                         (args.side, focused_frames(clip.frames, region, clip.fps))):
        take = pipe(frames=frames, frames_fps=clip.fps, duration_s=clip.duration_s,
                    caption=clip.caption, negative_caption="speech, music", seed=args.seed,
                    num_inference_steps=args.steps)
        audio = take.audio[0]
        motion = frame_motion(frames, clip.fps)
        onsets = audio_onsets_waveform(audio, take.sample_rate)
        f1 = onset_prf(source.contact_times_s, onsets.times_s).f1
        focus = "whole frame" if name == "none" else f"focus on the {name} source ({DEFAULT_FOCUS_METHOD})"
        data = SyncPictureData(
            audio=audio, sample_rate=take.sample_rate, motion_energy=np.nan_to_num(motion.energy),
            motion_fps=clip.fps, motion_events_s=list(motion.times_s),
            marker_times_s=take.onset_times_s, frame_rate=clip.fps,
            onset_envelope=onsets.envelope, onset_envelope_rate_hz=onsets.envelope_rate_hz,
            reference_events_s=list(source.contact_times_s),
            title=f"two-source clip {args.seed}, {focus}: onset F1 vs the {args.side} source's "
                  f"contacts (dotted) {f1:.2f}")
        path = out / f"region-focus-{name}.png"
        draw_sync_picture(data, path)
        print(f"{path}: onset F1 {f1:.2f}")


if __name__ == "__main__":
    main()
