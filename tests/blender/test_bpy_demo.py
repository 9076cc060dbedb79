"""`v2a demo` end to end (server + headless Blender + the add-on), then its .blend checked."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

pytest.importorskip("bpy")

import bpy  # noqa: E402

from tests.blender.bpy_helpers import addon_module, foley_strips, wav_info  # noqa: E402
from tests.blender.conftest import REPO, server_python  # noqa: E402


def test_demo_makes_a_synced_sound_strip_with_markers(addon, jobs, tiny_model, tmp_path):
    default = REPO / "v2a_server" / "default_model" / "model_index.json"
    model = "default" if default.is_file() else str(tiny_model)
    out = tmp_path / "demo"
    done = subprocess.run(
        [str(server_python()), "-m", "v2a_server.cli", "demo", "--model", model, "--out",
         str(out), "--steps", "2", "--blender-python", sys.executable],
        cwd=str(REPO), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("demo.blend", "demo_preview.mp4", "demo_sync.png", "demo_result.json"):
        assert (out / name).is_file(), name
    assert (out / "demo_sync.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "demo_result.json").read_text())

    compat = addon_module("compat")
    bpy.ops.wm.open_mainfile(filepath=str(out / "demo.blend"))
    scene = bpy.context.scene
    se = scene.sequence_editor
    movie = se.strips_all["Demo clip"] if hasattr(se, "strips_all") else se.sequences_all["Demo clip"]
    # The clip fills the canvas one pixel to one pixel: a scaled (zoomed) clip would show the
    # model a crop of the picture (the demo once made a constant buzz that way).
    element = movie.elements[0]
    assert (scene.render.resolution_x, scene.render.resolution_y) == (element.orig_width,
                                                                      element.orig_height)
    assert (movie.transform.scale_x, movie.transform.scale_y) == (1.0, 1.0)
    [sound] = foley_strips(scene)
    first, end = compat.strip_range(movie)
    assert compat.strip_range(sound) == (first, end)
    assert sound.channel == movie.channel + 1 and sound.foley.source == "Demo clip"
    take = sound.foley.takes[0]
    assert take.caption == movie.foley.caption != ""
    assert take.model_id == (model if model == "default" else tiny_model.name)
    rate = scene.render.fps / scene.render.fps_base
    # The stored float32 seconds give the same frames as the server's doubles did.
    frames = (math.floor(round(first + o.time_s * rate, 4) + 0.5) for o in take.onsets)
    expected = sorted({f for f in frames if f < end})
    markers = sorted(m.frame for m in scene.timeline_markers if m.name.startswith(take.marker_tag))
    assert markers == expected == result["marker_frames"]
    # Each marker's verdict against the picture's contact events, as the review list has them.
    # Every marker within one frame of a true impact (the clip's physics) is in sync, and a
    # marker far from any impact is not (docs/sync-review.md: 11 of 11 in sync, the stray one
    # "no visual cause", no silent hit; before contacts 10 of 13 markers were red, before the
    # fitted detector 9 of 12 were in sync with 9 false silent hits).
    review = result["review"]
    assert [math.floor(round(first + r["time_s"] * rate, 4) + 0.5) for r in review] == markers
    assert {r["state"] for r in review} <= {"in_sync", "late", "early", "no_visual_cause"}
    assert result["contacts"]["times_s"] and isinstance(result["silent_hits"], list)
    offset_s = result["source_offset_s"]
    truth = [t - offset_s for t in result["clip"]["events_s"]]
    on_impact = [r for r in review if min(abs(r["time_s"] - t) for t in truth) <= 1 / rate]
    assert len(on_impact) >= 0.7 * len(truth), review
    assert all(r["state"] == "in_sync" for r in on_impact), review
    far = [r for r in review if min(abs(r["time_s"] - t) for t in truth) > 6 / rate]
    assert all(r["state"] == "no_visual_cause" for r in far), review
    near = [min(abs(c - t) for c in result["contacts"]["times_s"]) for t in truth]
    assert sum(d <= 1 / rate + 1e-6 for d in near) >= len(truth) - 1, near  # impacts found
    wav = out / "foley" / "Demo_clip_take001.wav"
    assert bpy.path.abspath(sound.sound.filepath) == str(wav)
    file_rate, samples = wav_info(wav)
    assert file_rate == scene.render.ffmpeg.audio_mixrate
    assert samples == round((end - first) / rate * file_rate)

    import av

    with av.open(str(out / "demo_preview.mp4")) as container:
        kinds = sorted(s.type for s in container.streams)
        duration_s = container.duration / 1e6
    assert kinds == ["audio", "video"]
    assert abs(duration_s - (end - first) / rate) < 0.2
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
