"""Reference-exact and gated onset scores against silence, noise and real-audio baselines.

librosa's onset strength is normalised, so a take that is only a -60 dBFS noise floor gets as
many "onsets" as a soundtrack and can score a higher reference AA-Align than real audio. For
each clip (the real clips of ``--real`` with their soundtracks; synthetic test clips with
their true audio) this scores, against the clip's own audio and its video, the takes:
  * ``silence`` (digital zeros), ``noise_-60dBFS`` (the default model's noise floor),
  * ``real`` (the clip's own audio: the ceiling), ``other_clip`` (the next clip's audio:
    real sound, wrong timing: chance),
  * ``model`` (the model's take, unless ``--no-model``),
with ``v2a_server.evaluation.metrics.evaluate_clip`` (reference-exact and ``*_gated``).

  python bench/onset_gate_baselines.py [--synthetic 8] [--seconds 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CAPTION = "the sounds of the actions and impacts in the video"
KEYS = ("aa_align", "aa_align_gated", "aa_align_one_to_one", "aa_align_one_to_one_gated",
        "onset_f1", "onset_f1_gated", "av_align", "av_align_gated", "n_onsets_generated",
        "n_onsets_generated_gated")
SAMPLE_RATE = 16_000


def score(take: np.ndarray, reference: np.ndarray, motion, folder: Path) -> dict:
    import soundfile as sf

    from v2a_server.evaluation import metrics

    gen, ref = folder / "take.wav", folder / "reference.wav"
    sf.write(str(gen), take, SAMPLE_RATE, subtype="FLOAT")
    sf.write(str(ref), reference, SAMPLE_RATE, subtype="FLOAT")
    out = metrics.evaluate_clip(generated_audio=gen, reference_audio=ref)
    y = metrics.load_audio_for_onsets(gen)
    onsets = metrics.detect_onsets(gen)
    gated = onsets[metrics.gate_onsets(onsets, y, metrics.ONSET_SAMPLE_RATE)]
    out["av_align"] = metrics.av_align(onsets, motion.times_s, motion.fps)
    out["av_align_gated"] = metrics.av_align(gated, motion.times_s, motion.fps)
    return {k: out[k] for k in KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--no-model", action="store_true", help="skip the model's takes")
    parser.add_argument("--real", default=str(REPO.parent / "shared" / "data" / "vggsound"))
    parser.add_argument("--synthetic", type=int, default=8, help="synthetic test clips")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json")
    args = parser.parse_args()

    import soxr
    import torch

    from v2a_server.evaluation.metrics import (
        VideoMotion,
        motion_events,
        video_motion_events,
    )
    from v2a_server.media.audio_io import load_container_audio
    from v2a_server.media.video_io import read_video
    from v2a_server.synth.clip import make_clip
    from v2a_server.synth.dataset import clip_seeds

    torch.set_num_threads(1)
    pipe = None
    if not args.no_model:
        from v2a_server.model_store import load_pipeline

        pipe = load_pipeline(args.model)
    clips = []  # (group, name, reference audio at 16 kHz, motion, take of the model or None)
    real = Path(args.real)
    for i, path in enumerate(sorted(real.glob("*.mp4")) if real.is_dir() else []):
        audio, rate = load_container_audio(path.with_suffix(".wav") if path.with_suffix(".wav")
                                           .is_file() else path)
        audio = np.asarray(audio, np.float32).mean(axis=0)
        audio = soxr.resample(audio, rate, SAMPLE_RATE)[: int(args.seconds * SAMPLE_RATE)]
        motion = video_motion_events(path)
        motion = motion._replace(times_s=motion.times_s[motion.times_s < args.seconds])
        take = None
        if pipe is not None:
            video = read_video(path, fps=pipe.model_fps, max_side=None,
                               max_duration_s=args.seconds)
            duration = min(args.seconds, video.frames.shape[0] / video.fps)
            take = pipe(frames=video.frames, frames_fps=video.fps, duration_s=duration,
                        caption=CAPTION, negative_caption="speech, music", seed=i).audio[0]
        clips.append(("real", path.stem, audio, motion, take))
        print(f"real {path.stem}", flush=True)
    for _, index, seed in clip_seeds(0, {"test": args.synthetic}):
        clip = make_clip(seed)
        events = motion_events(clip.frames, clip.fps)
        motion = VideoMotion(events.energy, events.times_s, clip.fps)
        take = None
        if pipe is not None:
            take = pipe(frames=clip.frames, frames_fps=clip.fps, duration_s=clip.duration_s,
                        caption=clip.caption, seed=index).audio[0]
        clips.append(("synthetic", f"synth_{seed}", clip.audio, motion, take))
        print(f"synthetic synth_{seed}", flush=True)

    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (group, name, reference, motion, take) in enumerate(clips):
            same_group = [c for c in clips if c[0] == group]
            other = same_group[(same_group.index(clips[k]) + 1) % len(same_group)][2]
            n = reference.size
            takes = {"silence": np.zeros(n, np.float32),
                     "noise_-60dBFS": (1e-3 * rng.standard_normal(n)).astype(np.float32),
                     "real": reference,
                     "other_clip": np.pad(other, (0, max(0, n - other.size)))[:n]}
            if take is not None:
                takes["model"] = np.pad(take, (0, max(0, n - take.size)))[:n]
            for kind, audio in takes.items():
                rows.append({"group": group, "clip": name, "take": kind,
                             **score(audio, reference, motion, Path(tmp))})
            print(f"scored {name}", flush=True)
    means = {}
    for group in dict.fromkeys(r["group"] for r in rows):
        for kind in dict.fromkeys(r["take"] for r in rows):
            sel = [r for r in rows if r["group"] == group and r["take"] == kind]
            if sel:
                means[f"{group}/{kind}"] = {key: round(float(np.mean([r[key] for r in sel])), 3)
                                            for key in KEYS} | {"clips": len(sel)}
    header = f"{'group/take':<28}" + "".join(f"{k[:18]:>19}" for k in KEYS)
    print(header)
    for name, m in means.items():
        print(f"{name:<28}" + "".join(f"{m[k]:>19}" for k in KEYS))
    if args.json:
        Path(args.json).write_text(json.dumps({"means": means, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
