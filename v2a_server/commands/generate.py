"""`v2a generate`: Foley for a video file, in-process (or on a running server with --server)."""

from __future__ import annotations

NAME = "generate"
HELP = "generate Foley audio + onset markers for a video file"


def add_arguments(parser) -> None:
    parser.add_argument("video", help="input video file")
    parser.add_argument("--caption", required=True, help="what should be heard")
    parser.add_argument("--negative-caption", default="speech, music", help="what should not be heard")
    parser.add_argument("--model", default="default", help="pipeline folder, or 'default' (embedded model)")
    parser.add_argument("--out", required=True, help="output WAV (16 kHz); variations add -2, -3, … before .wav")
    parser.add_argument("--onsets", help="output JSON with onset markers and the onset probability curve")
    parser.add_argument("--seed", type=int, help="random seed (default: random; printed)")
    parser.add_argument("--steps", type=int, help="denoising steps (default 25 for dpmpp, 200 for ddpm)")
    parser.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default 3)")
    parser.add_argument("--sampler", choices=("dpmpp", "ddpm"), default="dpmpp")
    parser.add_argument("--variations", type=int, default=1)
    parser.add_argument("--start", type=float, default=0.0, help="start time in the video, seconds")
    parser.add_argument("--duration", type=float, help="seconds of audio (default: to the end of the video)")
    parser.add_argument("--device", default="cpu", help="torch device for in-process generation")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def output_paths(out: str, variations: int) -> list:
    from pathlib import Path

    base = Path(out)
    return [base] + [base.with_name(f"{base.stem}-{i}{base.suffix}") for i in range(2, variations + 1)]


def run(args) -> int:
    import json
    import time

    import numpy as np
    import soundfile as sf
    import torch

    from v2a_server.model_store import load_pipeline
    from v2a_server.video_io import read_video

    paths = output_paths(args.out, args.variations)
    existing = [str(p) for p in paths + ([args.onsets] if args.onsets else []) if __import__("os").path.exists(p)]
    if existing and not args.overwrite:
        raise SystemExit(f"v2a generate: refusing to overwrite {', '.join(existing)} (use --overwrite)")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    pipe = load_pipeline(args.model, device=args.device)
    t_load = time.perf_counter() - t0
    limit = None if args.duration is None else args.start + args.duration
    video = read_video(args.video, fps=pipe.model_fps, max_duration_s=limit)
    first = int(round(args.start * video.fps))
    frames = video.frames[first:]
    if len(frames) == 0:
        raise SystemExit(f"v2a generate: --start {args.start} s is past the end of {args.video} ({video.duration_s:.2f} s)")
    duration = args.duration if args.duration is not None else video.duration_s - args.start
    out = pipe(
        frames=frames, frames_fps=video.fps, duration_s=duration, caption=args.caption,
        negative_caption=args.negative_caption, seed=args.seed, num_inference_steps=args.steps,
        guidance_scale=args.guidance, sampler=args.sampler, num_variations=args.variations,
    )
    for path, audio in zip(paths, out.audio):
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), audio, out.sample_rate, subtype="FLOAT")
    if args.onsets:
        record = {
            "video": str(args.video),
            "caption": args.caption,
            "duration_s": duration,
            "sample_rate": out.sample_rate,
            "seed": out.seed,
            "model": str(args.model),
            "onsets": [{"time_s": t, "probability": p} for t, p in zip(out.onset_times_s, out.onset_strengths)],
            "onset_frame_s": 1.0 / pipe.latent_fps,
            "onset_probs": np.round(out.onset_probs, 5).tolist(),
            "timings_s": {"load": t_load, **out.timings_s},
            "warnings": out.warnings,
        }
        with open(args.onsets, "w") as fh:
            json.dump(record, fh, indent=1)
    print(f"wrote {', '.join(map(str, paths))} ({duration:.2f} s, seed {out.seed}, {len(out.onset_times_s)} onsets)")
    return 0
