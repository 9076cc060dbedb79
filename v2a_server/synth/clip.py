"""One synthetic clip: a seed in, frames + audio + events + caption out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from v2a_server.synth.modal import synthesize_audio
from v2a_server.synth.render import render_frames
from v2a_server.synth.scene import Scene, SilentMotion, SoundEvent, sample_scene

DEFAULT_DURATION_S = 10.24  # STA-V2A's fixed window: 163,840 samples at 16 kHz
DEFAULT_FPS = 25.0
DEFAULT_SIZE_PX = 128
DEFAULT_SAMPLE_RATE = 16000
DEFAULT_NOISE_FLOOR_DB = -60.0


@dataclass
class Clip:
    """A generated clip.

    Attributes:
        seed: the seed that reproduces it.
        frames: [T, H, W, 3] uint8 RGB, T = round(duration_s * fps); frame k shows t = k / fps.
        audio: [round(duration_s * sample_rate)] float32 mono.
        sample_rate: audio rate, hertz.
        fps: video frame rate, frames per second.
        duration_s: clip length, seconds.
        caption: what is heard, e.g. "a rubber ball bouncing on a wooden floor".
        events: sounding impacts in time order (sound onset == ``time_s``).
        silent: motion that makes no sound (slides, floating, lifts, camera pan, flicker).
        scene: the full scene (bodies and trajectories), for geometry checks.
    """

    seed: int
    frames: np.ndarray
    audio: np.ndarray
    sample_rate: int
    fps: float
    duration_s: float
    caption: str
    events: list[SoundEvent]
    silent: list[SilentMotion]
    scene: Scene

    @property
    def event_times_s(self) -> np.ndarray:
        """[E] float64 event (sound onset) times, seconds."""
        return np.array([e.time_s for e in self.events], dtype=np.float64)


def _check(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def check_clip_args(seed: int, duration_s: float, fps: float, size_px: int, sample_rate: int) -> None:
    """Raise ValueError naming the first out-of-range ``make_clip`` argument."""
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _check("duration_s", duration_s, 1.0, 60.0)
    _check("fps", fps, 1.0, 60.0)
    _check("size_px", size_px, 32, 512)
    _check("sample_rate", sample_rate, 8000, 48000)


def make_clip(
    seed: int,
    *,
    duration_s: float = DEFAULT_DURATION_S,
    fps: float = DEFAULT_FPS,
    size_px: int = DEFAULT_SIZE_PX,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    noise_floor_db: float = DEFAULT_NOISE_FLOOR_DB,
    actions: tuple[str, ...] | None = None,
    silent_only: bool = False,
    pan: bool | None = None,
    flicker: bool | None = None,
    floor: str | None = None,
) -> Clip:
    """Generate one clip, fully determined by its arguments.

    Args:
        seed: non-negative integer seed.
        duration_s: clip length, seconds (1-60).
        fps: video frame rate (1-60); frame k is the world at k / fps.
        size_px: square image side, pixels (32-512).
        sample_rate: audio rate, hertz (8000-48000).
        noise_floor_db: background white-noise RMS, dBFS (below -150: none).
        actions: force the sounding actors, e.g. ("bounce",); None draws 1-3 at random.
        silent_only: only silent motion (sliding, floating, pan, flicker) and the noise floor.
        pan, flicker: force the camera pan / light flicker on or off (None: random).
        floor: force the floor material ("wood", "ceramic", "metal", "glass", "gravel", "cloth").
    Returns:
        The clip.
    """
    check_clip_args(seed, duration_s, fps, size_px, sample_rate)
    # Independent streams: changing the audio code never changes the pictures and vice versa.
    scene_seq, audio_seq = np.random.SeedSequence(int(seed)).spawn(2)
    scene = sample_scene(
        np.random.default_rng(scene_seq),
        float(duration_s),
        actions=actions,
        silent_only=silent_only,
        pan=pan,
        flicker=flicker,
        floor=floor,
    )
    frames = render_frames(scene, float(fps), int(size_px))
    audio = synthesize_audio(
        scene, int(sample_rate), np.random.default_rng(audio_seq), noise_floor_db=noise_floor_db
    )
    return Clip(
        seed=int(seed),
        frames=frames,
        audio=audio,
        sample_rate=int(sample_rate),
        fps=float(fps),
        duration_s=float(duration_s),
        caption=scene.caption,
        events=scene.events,
        silent=scene.silent,
        scene=scene,
    )
