"""`v2a generate`: Foley for a video file, in-process (or on a running server with --server)."""

from __future__ import annotations

import sys

from v2a_server.model_store import DTYPE_NAMES, OFFLOAD_MODES

NAME = "generate"
HELP = "generate Foley audio + onset markers for a video file"

# Seconds without any reply before --server is declared unreachable.
NO_ANSWER_S = 10.0


def add_arguments(parser) -> None:
    parser.add_argument("video", help="input video file")
    parser.add_argument("--caption", required=True, help="what should be heard")
    parser.add_argument("--negative-caption", default="speech, music", help="what should not be heard")
    parser.add_argument("--model", default="default", help="pipeline folder, an installed model's name (`v2a model list`), or 'default' (embedded model)")
    parser.add_argument("--out", required=True, help="output WAV (16 kHz); variations add -2, -3, … before .wav")
    parser.add_argument("--onsets", help="output JSON with onset markers and the onset probability curve")
    parser.add_argument("--seed", type=int, help="random seed (default: random; printed)")
    parser.add_argument("--steps", type=int, help="denoising steps (default 25 for dpmpp, 200 for ddpm)")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the model's own, 3 unless tuned)")
    parser.add_argument("--sampler", choices=("dpmpp", "ddpm"), default="dpmpp")
    parser.add_argument("--variations", type=int, default=1)
    parser.add_argument("--start", type=float, default=0.0, help="start time in the video, seconds")
    parser.add_argument("--duration", type=float, help="seconds of audio (default: to the end of the video)")
    parser.add_argument("--device", default="cpu", help="torch device for in-process generation")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_NAMES,
                        help="precision for in-process generation (auto: float16 on a GPU, float32 on CPU)")
    parser.add_argument("--offload", default="none", choices=OFFLOAD_MODES,
                        help="'model': components wait in RAM and run on the GPU one at a time (small cards)")
    parser.add_argument("--text-encoder-cpu", action="store_true",
                        help="run the text encoder on the CPU (float32), sparing GPU memory")
    parser.add_argument("--server", help="generate on a running v2a-server, e.g. tcp://127.0.0.1:5555 (default: in-process)")
    parser.add_argument("--server-key", help="the server's CURVE public key (z85 text or key file), for a non-loopback server")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the server's result")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def output_paths(out: str, variations: int) -> list:
    from pathlib import Path

    base = Path(out)
    return [base] + [base.with_name(f"{base.stem}-{i}{base.suffix}") for i in range(2, variations + 1)]


def run(args) -> int:
    import json
    import os
    import time

    import numpy as np
    import soundfile as sf

    from v2a_server.media.video_io import read_video

    paths = output_paths(args.out, args.variations)
    existing = [str(p) for p in paths + ([args.onsets] if args.onsets else []) if os.path.exists(p)]
    if existing and not args.overwrite:
        raise SystemExit(f"v2a generate: refusing to overwrite {', '.join(existing)} (use --overwrite)")
    t0 = time.perf_counter()
    if args.server:
        result = _generate_remote(args, read_video)
    else:
        result = _generate_local(args, read_video)
    for path, audio in zip(paths, result["audio"]):
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), audio, result["sample_rate"], subtype="FLOAT")
    if args.onsets:
        record = {
            "video": str(args.video),
            "caption": args.caption,
            "duration_s": result["duration_s"],
            "sample_rate": result["sample_rate"],
            "seed": result["seed"],
            "model": result["model"],
            "onsets": [{"time_s": t, "probability": p} for t, p in zip(result["onset_times_s"], result["onset_strengths"])],
            "onset_frame_s": result["onset_frame_s"],
            "onset_probs": np.round(np.asarray(result["onset_probs"], np.float64), 5).tolist(),
            "timings_s": {"total": time.perf_counter() - t0, **result["timings_s"]},
            "warnings": result["warnings"],
        }
        with open(args.onsets, "w") as fh:
            json.dump(record, fh, indent=1)
    print(f"wrote {', '.join(map(str, paths))} ({result['duration_s']:.2f} s, seed {result['seed']}, {len(result['onset_times_s'])} onsets)")
    for warning in result["warnings"]:  # a near-silent take, ignored hints: said, not buried in JSON
        print(f"v2a generate: warning: {warning}", file=sys.stderr)
    return 0


# Frames are decoded with their long side at most this (what the embedded model has always read).
DECODE_SIDE = 256


def decode_side(image_size: int | None) -> int:
    """Long side to decode a video at for an encoder reading image_size × image_size: never so
    small that the encoder's resize would upscale the short side of a frame up to 2:1 (a
    360×640 clip decoded at 256×144 loses a third of its lines before a 224 encoder)."""
    return max(DECODE_SIDE, 2 * int(image_size)) if image_size else DECODE_SIDE


def _frames_for(args, read_video, fps, image_size):
    limit = None if args.duration is None else args.start + args.duration
    video = read_video(args.video, fps=fps, max_side=decode_side(image_size), max_duration_s=limit)
    frames = video.frames[int(round(args.start * video.fps)) :]
    if len(frames) == 0:
        raise SystemExit(f"v2a generate: --start {args.start} s is past the end of {args.video} ({video.duration_s:.2f} s)")
    duration = args.duration if args.duration is not None else video.duration_s - args.start
    return frames, video.fps, duration


def _generate_local(args, read_video) -> dict:
    from v2a_server.model_store import load_pipeline

    try:
        pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype, offload=args.offload,
                             text_encoder_cpu=args.text_encoder_cpu)
    except ValueError as exc:  # an offload the device cannot do: say so, not a traceback
        raise SystemExit(f"v2a generate: {exc}") from None
    encoder = getattr(pipe, "video_encoder", None)
    frames, fps, duration = _frames_for(args, read_video, pipe.model_fps,
                                        encoder.config.image_size if encoder is not None else None)
    out = pipe(
        frames=frames, frames_fps=fps, duration_s=duration, caption=args.caption,
        negative_caption=args.negative_caption, seed=args.seed, num_inference_steps=args.steps,
        guidance_scale=args.guidance, sampler=args.sampler, num_variations=args.variations,
    )
    # the same near-silence verdict the server gives (serving/result.py), so a take of nothing
    # is said to be one here too
    from v2a_server.model_card import read_model_card
    from v2a_server.model_store import resolve_model_dir
    from v2a_server.serving.result import near_silent_warning, take_level

    levels = [take_level(take, int(out.sample_rate)) for take in out.audio]
    silent = near_silent_warning(levels, read_model_card(resolve_model_dir(args.model)))
    return dict(
        audio=list(out.audio), sample_rate=out.sample_rate, duration_s=duration, seed=out.seed,
        model=str(args.model), onset_times_s=out.onset_times_s, onset_strengths=out.onset_strengths,
        onset_probs=out.onset_probs, onset_frame_s=1.0 / pipe.latent_fps, timings_s=out.timings_s,
        warnings=list(out.warnings) + ([silent] if silent else []),
    )


def _generate_remote(args, read_video) -> dict:
    """Through foley_protocol's client: hello (learn the model's frame rate), then generate."""
    import time

    from foley_protocol.client import FoleyClient, RequestFailed, result_audio_numpy

    with FoleyClient(args.server, client_name="v2a-generate", server_public_key=args.server_key) as client:
        # The first hello_reply may say "loading"; the client says hello again once ready.
        # No reply at all within NO_ANSWER_S means nothing is listening there.
        started = time.monotonic()
        ready_within = min(args.timeout, 120.0)
        info = None
        while info is None:
            for event in client.poll(0.1):
                if event.type == "connected" and event.body.get("state") == "ready":
                    info = event.body
                elif event.type == "disconnected":
                    raise SystemExit(f"v2a generate: no answer from {args.server}: {event.body.get('message')}")
            waited = time.monotonic() - started
            if info is None and (waited > ready_within or (client.server_info is None and waited > NO_ANSWER_S)):
                state = (client.server_info or {}).get("state", "no answer")
                raise SystemExit(f"v2a generate: {args.server} is not ready after {waited:.0f} s ({state}); is v2a-server running there?")
        frames, fps, duration = _frames_for(args, read_video, float(info["model_fps"]),
                                            info.get("model_image_size"))
        try:
            event = client.generate_blocking(
                frames, timeout_s=args.timeout, frames_fps=fps, duration_s=duration, caption=args.caption,
                negative_caption=args.negative_caption, seed=args.seed, steps=args.steps,
                guidance=args.guidance, sampler=args.sampler, variations=args.variations,
            )
        except RequestFailed as exc:
            raise SystemExit(f"v2a generate: the server refused or failed the job: {exc}") from exc
    body = event.body
    return dict(
        audio=result_audio_numpy(event), sample_rate=body["audio"]["sample_rate"], duration_s=duration,
        seed=body["seed"], model=body["model_id"], onset_times_s=list(body["onset_times_s"]),
        onset_strengths=list(body["onset_probabilities"]), onset_probs=body["onset_curve"]["values"],
        onset_frame_s=1.0 / float(body["onset_curve"]["rate_hz"]), timings_s=body["timings_s"],
        warnings=list(body["warnings"]),
    )
