"""Regenerating an unchanged strip sends the frames captured before (no render); any change
that could alter the picture captures again; a strip edited mid-capture is never cached."""

from __future__ import annotations

import os
import time
from fractions import Fraction

import numpy as np
import pytest

pytest.importorskip("bpy")

import bpy  # noqa: E402

from tests.blender.bpy_helpers import (  # noqa: E402
    add_movie,
    addon_module,
    foley_strips,
    generate,
    setup_scene,
    strips,
    trim,
)
from tests.blender.clips import write_index_movie  # noqa: E402

FPS = Fraction(25)


@pytest.fixture
def movie_path(tmp_path):
    # per test: one test touches the file's modification time
    path = tmp_path / "cache-index.mp4"
    write_index_movie(path, 60, FPS)
    return path


def _key(scene, strip, frames=(1, 2, 3), side=48):
    return addon_module("capture_cache").picture_key(scene, strip, list(frames), side)


def test_picture_key_changes_with_the_picture_and_only_then(project, movie_path):
    compat = addon_module("compat")
    scene = setup_scene(FPS)
    movie = add_movie(scene, movie_path, channel=1, frame_start=5)
    key = _key(scene, movie)
    assert key is not None and key == _key(scene, movie)

    # Not the picture: selection, the active strip, a strip on another channel muted anyway.
    movie.select = not movie.select
    scene.sequence_editor.active_strip = None
    compat.new_effect(strips(scene), "Colour", "COLOR", channel=3, frame_start=1, length=40)
    assert _key(scene, movie) == key  # rendering mutes it: not in the picture

    # The picture: capture size and frames, the transform, a modifier, trims, colour
    # management, the file on disk, an adjustment layer above.
    assert _key(scene, movie, side=64) != key
    assert _key(scene, movie, frames=(1, 2, 4)) != key
    changes = []
    movie.transform.offset_x += 7
    changes.append(_key(scene, movie))
    if bpy.app.version < (5, 0, 0):  # 5.0's strip.modifiers.new() segfaults headless (bpy 5.0.x)
        modifier = movie.modifiers.new(name="Bright", type="BRIGHT_CONTRAST")
        changes.append(_key(scene, movie))
        modifier.bright = 0.25
        changes.append(_key(scene, movie))
    movie.color_saturation = 0.5
    changes.append(_key(scene, movie))
    trim(movie, head=3)
    changes.append(_key(scene, movie))
    scene.view_settings.exposure = 0.5
    changes.append(_key(scene, movie))
    stat = movie_path.stat()
    os.utime(movie_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    changes.append(_key(scene, movie))
    compat.new_effect(strips(scene), "Grade", "ADJUSTMENT", channel=4, frame_start=1, length=40)
    changes.append(_key(scene, movie))
    assert len({key, *changes}) == len(changes) + 1, "every change gives a new key"


def test_keyframed_opacity_and_scene_strips(project, movie_path):
    scene = setup_scene(FPS)
    movie = add_movie(scene, movie_path, channel=1, frame_start=1)
    key = _key(scene, movie)
    movie.blend_alpha = 0.5
    movie.keyframe_insert("blend_alpha", frame=1)
    animated = _key(scene, movie)
    assert animated not in (None, key)
    curves = addon_module("capture_cache").sequencer_curves(scene)
    assert curves and curves[0][0].endswith("blend_alpha")
    # A scene strip's picture is a whole scene: never cached.
    inner = bpy.data.scenes.new("Inner")
    scene_strip = strips(scene).new_scene(name="Shot", scene=inner, channel=2, frame_start=1)
    assert _key(scene, scene_strip) is None


def _captioned_movie(server, prefs, movie_path, frame_start):
    prefs.server_address = server.endpoint
    scene = setup_scene(FPS)
    movie = add_movie(scene, movie_path, channel=1, frame_start=frame_start)
    movie.foley.caption = "knocks"
    return scene, movie


def test_regenerating_an_unchanged_strip_renders_nothing(project, capturing_server, prefs, jobs,
                                                        movie_path):
    cache = addon_module("capture_cache")
    scene, movie = _captioned_movie(capturing_server, prefs, movie_path, frame_start=10)

    assert generate(seed=1) == {"FINISHED"}
    jobs.wait_until_idle(timeout_s=120)
    first = jobs.manager().jobs[-1]
    assert first.state == "done", first.message
    assert first.timings_s["capture_cached"] == 0.0 and first.timings_s["capture_s"] > 0

    assert generate(seed=2) == {"FINISHED"}
    jobs.wait_until_idle(timeout_s=120)
    second = jobs.manager().jobs[-1]
    assert second.state == "done", second.message
    assert second.timings_s["capture_cached"] == 1.0 and second.timings_s["capture_s"] == 0.0
    assert len(foley_strips(scene)) == 2

    movie.transform.offset_x += 5  # a change to the picture: captured again
    assert generate(seed=3) == {"FINISHED"}
    jobs.wait_until_idle(timeout_s=120)
    third = jobs.manager().jobs[-1]
    assert third.state == "done", third.message
    assert third.timings_s["capture_cached"] == 0.0
    held = list(cache._entries.values())
    assert len(held) == 2 and not held[0].flags.writeable
    assert not np.array_equal(held[0], held[1])


def test_a_strip_edited_during_capture_is_not_cached(project, capturing_server, prefs, jobs,
                                                    movie_path, monkeypatch):
    cache = addon_module("capture_cache")
    # One frame per tick (the floor of the budget), so the edit lands between two frames: on a
    # fast machine the whole capture would otherwise fit in one tick.
    monkeypatch.setattr(jobs, "TICK_BUDGET_S", 0.0)
    scene, movie = _captioned_movie(capturing_server, prefs, movie_path, frame_start=1)
    manager = jobs.manager()
    assert generate(seed=1) == {"FINISHED"}
    job = manager.jobs[-1]
    deadline = time.monotonic() + 60
    while job.capture is None or job.capture.done == 0:
        assert job.state in ("connecting", "capturing") and time.monotonic() < deadline, \
            f"capture never seen half done: {job.state} {job.message}"
        jobs.poll_jobs()
    assert not job.capture.finished
    frames, side = job.capture.frames, job.capture.short_side_px
    before = _key(scene, movie, frames, side)
    movie.transform.offset_y += 4  # the user drags the picture while frames are rendered
    jobs.wait_until_idle(timeout_s=120)
    assert job.state == "done", job.message
    assert cache.get(before) is None
    assert cache.get(_key(scene, movie, frames, side)) is None
