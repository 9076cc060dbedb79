"""Writing clips to disk: mp4 + wav per clip, one JSONL manifest row per clip, seed-hashed splits.

Split membership is a pure function of the clip seed (a SHA-256 hash), and clip seeds are
``base_seed * 1_000_000 + i`` for i = 0, 1, 2, ...; asking for N clips of a split takes the first N
seeds that hash into it. So the test set of a base seed is the same whatever train size is asked
for, and a clip can always be regenerated from its manifest row with ``make_clip(row["seed"], ...)``.
"""

from __future__ import annotations

import hashlib
import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from v2a_server.synth.clip import (
    DEFAULT_DURATION_S,
    DEFAULT_FPS,
    DEFAULT_NOISE_FLOOR_DB,
    DEFAULT_SAMPLE_RATE,
    DEFAULT_SIZE_PX,
    Clip,
    check_clip_args,
    make_clip,
)

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_FRACTIONS: tuple[float, ...] = (0.8, 0.1, 0.1)
SEEDS_PER_BASE = 1_000_000
GENERATOR_VERSION = 1  # bump when a change alters the clips a seed produces


def split_for_seed(seed: int) -> str:
    """Deterministic split of a clip seed: 80 % train, 10 % val, 10 % test by SHA-256 hash."""
    digest = hashlib.sha256(f"sta-v2a-synth:{int(seed)}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    edges = np.cumsum(SPLIT_FRACTIONS)
    return SPLITS[int(np.searchsorted(edges, u, side="right"))]


def clip_seeds(base_seed: int, counts: dict[str, int]) -> Iterator[tuple[str, int, int]]:
    """The first ``counts[split]`` clip seeds of each split, in seed order.

    Args:
        base_seed: non-negative dataset seed.
        counts: clips wanted per split name (missing splits: 0).
    Yields:
        (split, index within the split, clip seed).
    """
    bad = [k for k in counts if k not in SPLITS]
    if bad:
        raise ValueError(f"unknown split names {bad}; expected {SPLITS}")
    if base_seed < 0:
        raise ValueError(f"base_seed must be >= 0, got {base_seed}")
    left = {s: int(counts.get(s, 0)) for s in SPLITS}
    if any(n < 0 for n in left.values()):
        raise ValueError(f"counts must be >= 0, got {counts}")
    done = {s: 0 for s in SPLITS}
    for i in range(SEEDS_PER_BASE):
        if not any(left.values()):
            return
        seed = base_seed * SEEDS_PER_BASE + i
        split = split_for_seed(seed)
        if left[split]:
            yield split, done[split], seed
            left[split] -= 1
            done[split] += 1
    raise ValueError(f"counts {counts} need more than {SEEDS_PER_BASE} seeds per base seed")


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def video_codec() -> str:
    """ "libx264" when PyAV's bundled FFmpeg can encode H.264 with it, else "mpeg4"."""
    import av

    try:
        av.Codec("libx264", "w")
    except Exception:  # PyAV raises UnknownCodecError (or a bare ValueError in old releases)
        return "mpeg4"
    return "libx264"


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float) -> str:
    """Encode RGB frames as H.264 (libx264, else MPEG-4 Part 2) yuv420p mp4 with PyAV.

    Args:
        path: output file.
        frames: [T, H, W, 3] uint8 RGB; H and W must be even (yuv420p).
        fps: frames per second.
    Returns:
        The codec name used.
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be [T, H, W, 3] uint8, got {frames.shape} {frames.dtype}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"yuv420p needs even width and height, got {frames.shape[2]}x{frames.shape[1]}")
    codec = video_codec()
    rate = _fps_fraction(fps)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        # One thread: clips are tiny and the caller may already run a worker per core; CRF 18 keeps
        # the flat shapes crisp enough that the contact frame still shows contact.
        stream.thread_count = 1
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast"}
        else:
            stream.bit_rate = 2_000_000
        for k, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = k
            vf.time_base = 1 / rate
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return codec


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write mono audio with soundfile (``subtype`` "PCM_16" or "FLOAT")."""
    import soundfile as sf

    sf.write(str(path), np.asarray(audio, dtype=np.float32), int(sample_rate), subtype=subtype)


def manifest_row(clip: Clip, clip_id: str, split: str, video: str, audio: str) -> dict:
    """The manifest row of a written clip (paths relative to the manifest's folder)."""
    return {
        "id": clip_id,
        "split": split,
        "seed": clip.seed,
        "caption": clip.caption,
        "video": video,
        "audio": audio,
        "duration_s": clip.duration_s,
        "fps": clip.fps,
        "num_frames": int(clip.frames.shape[0]),
        "width": int(clip.frames.shape[2]),
        "height": int(clip.frames.shape[1]),
        "sample_rate": clip.sample_rate,
        "num_samples": int(clip.audio.shape[0]),
        "floor": clip.scene.floor_material,
        "events": [e.to_dict() for e in clip.events],
        "silent_events": [s.to_dict() for s in clip.silent],
        "generator_version": GENERATOR_VERSION,
    }


def _write_one(job: tuple) -> dict:
    out_dir, split, seed, clip_kwargs, wav_subtype, two_source = job
    pair = None
    if two_source:
        from v2a_server.synth.two_source import make_two_source_clip

        pair = make_two_source_clip(seed, **clip_kwargs)
        clip = pair.clip
    else:
        clip = make_clip(seed, **clip_kwargs)
    clip_id = f"synth_{seed}"
    video = f"{split}/{clip_id}.mp4"
    audio = f"{split}/{clip_id}.wav"
    write_mp4(Path(out_dir) / video, clip.frames, clip.fps)
    write_wav(Path(out_dir) / audio, clip.audio, clip.sample_rate, wav_subtype)
    row = manifest_row(clip, clip_id, split, video, audio)
    if pair is not None:
        from v2a_server.synth.two_source import sources_row

        # ``seed`` reproduces the pair (make_two_source_clip); the clip drawn for it had its own
        row["seed"], row["clip_seed"] = seed, clip.seed
        row["sources"] = sources_row(pair)
    return row


def write_dataset(
    out_dir: str | os.PathLike,
    counts: dict[str, int],
    *,
    base_seed: int = 0,
    duration_s: float = DEFAULT_DURATION_S,
    fps: float = DEFAULT_FPS,
    size_px: int = DEFAULT_SIZE_PX,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    noise_floor_db: float = DEFAULT_NOISE_FLOOR_DB,
    wav_subtype: str = "PCM_16",
    workers: int = 1,
    progress: Callable[[int, int, dict], None] | None = None,
    two_source: bool = False,
) -> Path:
    """Generate and write a dataset: ``out_dir/manifest.jsonl`` and ``out_dir/{split}/*.mp4|*.wav``.

    Args:
        out_dir: output folder (created; existing files of the same names are overwritten).
        counts: clips per split, e.g. {"train": 2000, "val": 100, "test": 200}.
        base_seed: dataset seed (see the module note on how clip seeds and splits follow from it).
        duration_s, fps, size_px, sample_rate, noise_floor_db: passed to ``make_clip``.
        wav_subtype: soundfile subtype, "PCM_16" or "FLOAT".
        workers: processes (1 = a plain loop in this process). Rows come out in the same order.
        progress: optional callback(done, total, row) after each clip.
        two_source: two-source clips (``two_source.make_two_source_clip``) whose rows also
            hold ``sources``: each side's contacts and boxes (the region-focus test set).
    Returns:
        Path of the manifest.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if wav_subtype not in ("PCM_16", "FLOAT"):
        raise ValueError(f"wav_subtype must be 'PCM_16' or 'FLOAT', got {wav_subtype!r}")
    check_clip_args(base_seed, duration_s, fps, size_px, sample_rate)  # fail before any file is written
    if size_px % 2:
        raise ValueError(f"size_px must be even for yuv420p video, got {size_px}")
    out = Path(out_dir)
    clip_kwargs = dict(
        duration_s=duration_s,
        fps=fps,
        size_px=size_px,
        sample_rate=sample_rate,
        noise_floor_db=noise_floor_db,
    )
    jobs = [
        (str(out), split, seed, clip_kwargs, wav_subtype, two_source)
        for split, _, seed in clip_seeds(base_seed, counts)
    ]
    for split in SPLITS:
        if counts.get(split, 0):
            (out / split).mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    tmp = out / "manifest.jsonl.partial"
    with open(tmp, "w", encoding="utf-8") as fh:
        if workers == 1:
            rows = map(_write_one, jobs)
            pool = None
        else:
            import multiprocessing

            pool = multiprocessing.get_context("spawn").Pool(workers)
            rows = pool.imap(_write_one, jobs)
        try:
            for done, row in enumerate(rows, start=1):
                fh.write(json.dumps(row) + "\n")
                if progress is not None:
                    progress(done, len(jobs), row)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    # Replace the manifest only once every clip is written: a crash leaves the old one intact.
    os.replace(tmp, manifest)
    return manifest


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Rows of a manifest.jsonl."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
