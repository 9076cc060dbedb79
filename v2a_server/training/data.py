"""Training data: any manifest (synthetic world, VGGSound, …) → a cache of fixed-size arrays.

One row of a manifest (JSONL) needs ``video``, ``audio`` (paths relative to the manifest) and
``caption``; ``split`` is optional. The cache holds, per split, memory-mapped arrays:

- ``frames.npy``  uint8 [N, S, s, s, 3]: S video steps of one 10.24 s window at the model's frame
  rate, resized to the video encoder's input size (what ``CAVPVideoEncoder.preprocess`` does);
- ``steps.npy``   int16 [N]: how many of the S steps are real video (the rest are padding and get
  zero features, as the release pads);
- ``audio.npy``   float16 [N, window samples]: Tango-lineage preprocessing (model.md §2);
- ``labels.npy``  uint8 [N, F]: onset pseudo-labels per 40 ms latent frame, from the same librosa
  onset detector the metrics use;
- ``av_align.npy`` float32 [N]: AV-Align of the reference audio (NaN when not computed);
- ``meta.jsonl``: id, caption, source paths.
Later stages add ``latents.npy`` (after the VAE is trained) and ``features.npy`` (after the
video encoder is trained).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CACHE_VERSION = 1


@dataclass(frozen=True)
class WindowSpec:
    """Sizes of one model window, read from a pipeline's configs."""

    sample_rate: int
    window_samples: int
    latent_frames: int
    latent_fps: float
    video_fps: float
    video_steps: int
    image_size: int
    resize_antialias: bool = True

    @classmethod
    def from_pipeline(cls, pipe) -> "WindowSpec":
        cond = pipe.conditioner.config
        return cls(
            sample_rate=pipe.sample_rate,
            window_samples=cond.latent_frames_per_window * pipe.samples_per_latent_frame,
            latent_frames=cond.latent_frames_per_window,
            latent_fps=float(cond.latent_fps),
            video_fps=float(cond.video_fps),
            video_steps=cond.video_steps_per_window,
            image_size=pipe.video_encoder.config.image_size,
            resize_antialias=pipe.video_encoder.config.resize_antialias,
        )


def preprocess_audio(wave: np.ndarray, window_samples: int) -> np.ndarray:
    """Remove the mean, peak-normalise to 0.5, crop or zero-pad to the window, normalise again
    (the Tango/STA-V2A training preprocessing; crop from the start, not at random, so that the
    audio stays aligned with the video window)."""
    wave = np.asarray(wave, np.float64)
    wave = wave - wave.mean() if wave.size else wave

    def peak_normalise(x):
        peak = np.abs(x).max() if x.size else 0.0
        return x * (0.5 / peak) if peak > 1e-8 else x

    wave = peak_normalise(wave)[:window_samples]
    wave = np.pad(wave, (0, window_samples - wave.size))
    return peak_normalise(wave).astype(np.float32)


def onset_labels(wave: np.ndarray, sample_rate: int, num_frames: int, latent_fps: float) -> np.ndarray:
    """Onset pseudo-labels [num_frames] (1 = an onset in that 40 ms frame), model.md §2."""
    from v2a_server.evaluation.metrics import detect_onsets_waveform

    labels = np.zeros(num_frames, np.uint8)
    times = detect_onsets_waveform(wave, sample_rate)
    frames = np.floor(np.asarray(times) * latent_fps).astype(int)
    labels[np.clip(frames, 0, num_frames - 1)] = 1
    return labels


def resize_frames(frames: np.ndarray, size: int, antialias: bool = True) -> np.ndarray:
    """uint8 [T, H, W, 3] → uint8 [T, size, size, 3], the encoder's preprocess resize."""
    import torch

    from v2a_server.models.cavp import resize_bilinear

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if x.shape[-2:] != (size, size):
        x = resize_bilinear(x, size, antialias)
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def read_audio_16k(path: Path, sample_rate: int) -> np.ndarray:
    """Mono audio at ``sample_rate`` from a wav (soundfile) or any container (PyAV)."""
    import soundfile as sf
    import soxr

    try:
        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
        wave = wave.mean(axis=1)
    except sf.LibsndfileError:
        from v2a_server.media.audio_io import load_container_audio

        wave, sr = load_container_audio(str(path))
        wave = np.asarray(wave, np.float32).mean(axis=0)
    if sr != sample_rate:
        wave = soxr.resample(wave, sr, sample_rate)
    return wave


def build_cache(manifest: str | Path, cache_dir: str | Path, spec: WindowSpec, splits=("train", "val", "test"),
                min_av_align: float | None = None, limit: int | None = None, progress=None) -> dict[str, int]:
    """Decode every clip of a manifest into the cache described in the module docstring.

    Args:
        min_av_align: drop clips whose reference AV-Align is below this (the paper keeps ≥ 0.2);
            None skips the (slow) optical-flow computation.
        limit: at most this many clips per split (for tests).
    Returns:
        clips written per split.
    """
    from v2a_server.synth.dataset import read_manifest
    from v2a_server.media.video_io import read_video

    manifest = Path(manifest)
    rows = read_manifest(manifest)
    cache_dir = Path(cache_dir)
    counts = {}
    for split in splits:
        chosen = [r for r in rows if r.get("split", "train") == split][: limit]
        if not chosen:
            continue
        out = cache_dir / split
        out.mkdir(parents=True, exist_ok=True)
        n = len(chosen)
        frames = np.lib.format.open_memmap(out / "frames.npy", "w+", np.uint8, (n, spec.video_steps, spec.image_size, spec.image_size, 3))
        audio = np.lib.format.open_memmap(out / "audio.npy", "w+", np.float16, (n, spec.window_samples))
        labels = np.zeros((n, spec.latent_frames), np.uint8)
        steps = np.zeros(n, np.int16)
        av = np.full(n, np.nan, np.float32)
        meta = []
        for i, row in enumerate(chosen):
            video_path = manifest.parent / row["video"]
            audio_path = manifest.parent / row["audio"]
            window_s = spec.video_steps / spec.video_fps
            video = read_video(video_path, fps=spec.video_fps, max_side=None, max_duration_s=window_s)
            k = min(len(video.frames), spec.video_steps)
            frames[i, :k] = resize_frames(video.frames[:k], spec.image_size, spec.resize_antialias)
            steps[i] = k
            wave = preprocess_audio(read_audio_16k(audio_path, spec.sample_rate), spec.window_samples)
            audio[i] = wave.astype(np.float16)
            labels[i] = onset_labels(wave, spec.sample_rate, spec.latent_frames, spec.latent_fps)
            if min_av_align is not None:
                from v2a_server.evaluation.metrics import (
                    av_align,
                    detect_onsets_waveform,
                    video_motion_events,
                )

                motion = video_motion_events(str(video_path))
                av[i] = av_align(detect_onsets_waveform(wave, spec.sample_rate), motion.times_s, motion.fps)
            meta.append({"id": row.get("id", video_path.stem), "caption": row["caption"], "video": str(video_path), "audio": str(audio_path)})
            if progress is not None:
                progress(split, i + 1, n)
        keep = np.ones(n, bool) if min_av_align is None else av >= min_av_align
        frames.flush()
        audio.flush()
        if not keep.all():  # rewrite without the filtered clips
            _compact(out, keep)
        np.save(out / "labels.npy", labels[keep])
        np.save(out / "steps.npy", steps[keep])
        np.save(out / "av_align.npy", av[keep])
        with open(out / "meta.jsonl", "w") as fh:
            for m, k in zip(meta, keep):
                if k:
                    fh.write(json.dumps(m) + "\n")
        counts[split] = int(keep.sum())
    with open(cache_dir / "cache.json", "w") as fh:
        json.dump({"version": CACHE_VERSION, "spec": spec.__dict__, "manifest": str(manifest), "counts": counts}, fh, indent=1)
    return counts


def _compact(out: Path, keep: np.ndarray) -> None:
    for name in ("frames.npy", "audio.npy"):
        data = np.load(out / name, mmap_mode="r")[keep]
        np.save(out / (name + ".tmp.npy"), data)
        (out / (name + ".tmp.npy")).replace(out / name)


class CachedSplit:
    """Read access to one split of a cache (arrays memory-mapped, loaded lazily)."""

    def __init__(self, cache_dir: str | Path, split: str):
        self.dir = Path(cache_dir) / split
        if not (self.dir / "meta.jsonl").is_file():
            raise FileNotFoundError(f"no cached split {split!r} in {cache_dir} (run `v2a train --stage prepare` first)")
        with open(self.dir / "meta.jsonl") as fh:
            self.meta = [json.loads(line) for line in fh]
        self.captions = [m["caption"] for m in self.meta]
        self.labels = np.load(self.dir / "labels.npy")
        self.steps = np.load(self.dir / "steps.npy")

    def __len__(self) -> int:
        return len(self.meta)

    def array(self, name: str) -> np.ndarray:
        path = self.dir / f"{name}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the stage that writes {name!r} has not run on this cache")
        return np.load(path, mmap_mode="r")

    def has(self, name: str) -> bool:
        return (self.dir / f"{name}.npy").is_file()
