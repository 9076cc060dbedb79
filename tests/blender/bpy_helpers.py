"""Scene building and project snapshots for the bpy tests (imports bpy)."""

from __future__ import annotations

import hashlib
import importlib
import os
from fractions import Fraction
from pathlib import Path

import bpy

from tests.blender.conftest import ADDON_MODULE


def addon_module(name: str):
    return importlib.import_module(f"{ADDON_MODULE}.{name}")


def rate_settings(fps: Fraction) -> tuple[int, float]:
    """(render.fps, render.fps_base) for a frame rate (29.97 = 30 / 1.001)."""
    if fps.denominator == 1:
        return int(fps), 1.0
    fps_int = round(float(fps))
    return fps_int, fps_int / float(fps)


def setup_scene(fps: Fraction, width: int = 320, height: int = 240, mix_rate: int = 48000):
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = rate_settings(fps)
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.ffmpeg.audio_mixrate = mix_rate
    scene.view_settings.view_transform = "Standard"
    scene.sequence_editor_create()
    return scene


def strips(scene):
    return addon_module("compat").strips(scene.sequence_editor)


def add_movie(scene, path: Path, channel: int = 1, frame_start: int = 1, name: str = "Clip"):
    movie = strips(scene).new_movie(name=name, filepath=str(path), channel=channel,
                                    frame_start=frame_start, fit_method="FIT")
    movie.select = True
    scene.sequence_editor.active_strip = movie
    return movie


def trim(strip, head: int = 0, tail: int = 0) -> None:
    """Trim ``head`` frames off the start and ``tail`` off the end (moves the handles)."""
    compat = addon_module("compat")
    first, end = compat.strip_range(strip)
    if head:
        if hasattr(strip, "left_handle"):
            strip.left_handle = first + head
        else:
            strip.frame_final_start = first + head
    if tail:
        compat.set_strip_end(strip, end - tail)


def move(strip, frames: int) -> None:
    """Slide a whole strip along the timeline (5.2+: ``content_start``; before: frame_start)."""
    if hasattr(strip, "content_start"):
        strip.content_start += frames
    else:
        strip.frame_start += frames


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def folder_state(folder: Path) -> dict:
    """Every file under ``folder``: relative path -> sha256 (missing folder: {})."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): file_digest(p)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def project_state(scene, folder: Path) -> dict:
    """What a failed or cancelled Generate must leave exactly as it was."""
    compat = addon_module("compat")
    se = scene.sequence_editor
    render = scene.render
    strip_rows = []
    for s in compat.all_strips(se):
        row = (s.name, s.type, s.channel, *compat.strip_range(s), s.mute, s.select,
               s.foley.caption, s.foley.is_foley, len(s.foley.takes))
        if s.type == "MOVIE":
            row += (s.filepath,)
        strip_rows.append(row)
    image = render.image_settings
    return {
        "strips": sorted(strip_rows),
        "markers": sorted((m.name, m.frame) for m in scene.timeline_markers),
        "render": (render.resolution_percentage, render.resolution_x, render.resolution_y,
                   render.use_sequencer, render.use_border, image.file_format,
                   getattr(image, "media_type", None), image.color_mode, render.filepath),
        "frame": (scene.frame_current, scene.frame_start, scene.frame_end),
        "next_take_uid": scene.foley.next_take_uid,
        "sounds": sorted(s.name for s in bpy.data.sounds),
        "files": folder_state(folder),
        "channels_muted": [c.mute for c in se.channels] if hasattr(se, "channels") else None,
    }


def foley_strips(scene) -> list:
    compat = addon_module("compat")
    return sorted((s for s in compat.all_strips(scene.sequence_editor) if s.foley.is_foley),
                  key=lambda s: s.channel)


def sound_file(strip) -> Path:
    return Path(bpy.path.abspath(strip.sound.filepath))


def generate(**kwargs) -> set:
    """Run Generate Foley as the UI would (INVOKE runs execute in background)."""
    return bpy.ops.sequencer.foley_generate("EXEC_DEFAULT", **kwargs)


def wav_info(path: Path) -> tuple[int, int]:
    """(sample rate, frames) of a WAV file."""
    import soundfile

    info = soundfile.info(str(path))
    return info.samplerate, info.frames


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false")
