"""The focus region in real bpy: a box or an animated Mask on the picture strip becomes the
request's region (the mask's bounds at every frame), a take records it, it survives save and
reopen, Regenerate Range sends it again, and the panel shows it and clears it in one click."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

pytest.importorskip("bpy")

import bpy

from tests.blender.bpy_helpers import (
    add_movie,
    addon_module,
    foley_strips,
    generate,
    setup_scene,
)
from tests.blender.clips import write_index_movie
from tests.blender.conftest import REPO, ServerProcess, server_python

FPS = Fraction(25)
CLIP_FRAMES = 50
CLIP_START = 10
WIDTH, HEIGHT = 320, 240  # landscape: mask y spans the frame's height over 0.5 ± 0.375
# Two mask points keyed at three frames (shape keys, as the Mask editor's I key makes them);
# between keys Blender interpolates linearly.
KEYS = {10: [(0.10, 0.30), (0.30, 0.55)], 30: [(0.40, 0.35), (0.60, 0.65)],
        59: [(0.70, 0.30), (0.90, 0.50)]}


def _movie(clip_dir):
    path = clip_dir / f"focus-index-25-{CLIP_FRAMES}.mp4"
    if not path.exists():
        write_index_movie(path, CLIP_FRAMES, FPS)
    return path


def _animated_mask(scene):
    """A mask whose two points follow KEYS (shape keys inserted through the Image editor)."""
    mask = bpy.data.masks.new("Ball")
    spline = mask.layers.new(name="Layer").splines.new()
    spline.points.add(1)  # a new spline has one point already
    points = list(spline.points)
    assert len(points) == 2
    for point in points:
        point.select = True
    window = bpy.context.window_manager.windows[0]
    area = window.screen.areas[0]
    old_type = area.type
    area.type = "IMAGE_EDITOR"
    space = area.spaces.active
    space.mode, space.mask = "MASK", mask
    region = next(r for r in area.regions if r.type == "WINDOW")
    try:
        for frame, cos in KEYS.items():
            scene.frame_set(frame)
            for point, co in zip(points, cos):
                point.co = point.handle_left = point.handle_right = co
            with bpy.context.temp_override(window=window, area=area, region=region):
                assert bpy.ops.mask.shape_key_insert() == {"FINISHED"}
    finally:
        space.mask = None
        area.type = old_type
    return mask


def _expected_box(frame: int) -> list[float]:
    """The two points' bounds at ``frame``, worked out here from KEYS: linear between keys,
    mask y -> frame y over the longer side (320 x 240), then origin top left."""
    keys = sorted(KEYS)
    lo = max(k for k in keys if k <= frame)
    hi = min(k for k in keys if k >= frame)
    a = 0.0 if hi == lo else (frame - lo) / (hi - lo)
    cos = [((1 - a) * p[0] + a * q[0], (1 - a) * p[1] + a * q[1]) for p, q in zip(KEYS[lo], KEYS[hi])]
    xs = [c[0] for c in cos]
    ys = [(c[1] - 0.5) * (WIDTH / HEIGHT) + 0.5 for c in cos]
    return [min(xs), 1.0 - max(ys), max(xs) - min(xs), max(ys) - min(ys)]


def test_an_animated_mask_gives_its_bounds_at_every_frame_of_the_strip(project, clip_dir):
    focus = addon_module("focus")
    scene = setup_scene(FPS, WIDTH, HEIGHT)
    movie = add_movie(scene, _movie(clip_dir), frame_start=CLIP_START)
    mask = _animated_mask(scene)
    scene.frame_set(3)
    movie.foley.focus.mode = "MASK"
    movie.foley.focus.mask = mask
    region = focus.request_region(scene, movie, CLIP_START, CLIP_START + CLIP_FRAMES, 25.0)
    assert scene.frame_current == 3, "the editor's frame is put back"
    assert len(region["boxes"]) == CLIP_FRAMES
    assert region["times_s"] == pytest.approx([k / 25.0 for k in range(CLIP_FRAMES)])
    for k, box in enumerate(region["boxes"]):
        assert box == pytest.approx(_expected_box(CLIP_START + k), abs=1e-4), k
    assert region["boxes"][0] != region["boxes"][-1]  # it moved

    # A box is one box; a mask hidden from render, or gone, is the editor's to fix.
    movie.foley.focus.mode = "BOX"
    movie.foley_focus_box = (0.1, 0.2, 0.3, 0.4)
    assert focus.request_region(scene, movie, 10, 60, 25.0) == {
        "boxes": [pytest.approx([0.1, 0.2, 0.3, 0.4], abs=1e-6)]}
    # Keyed (I over its fields): one box per frame, Blender's interpolation between the keys.
    movie.keyframe_insert(focus.BOX_PROPERTY, frame=10)
    movie.foley_focus_box = (0.5, 0.4, 0.3, 0.4)
    movie.keyframe_insert(focus.BOX_PROPERTY, frame=60)
    assert focus.box_is_keyed(scene, movie)
    keyed = focus.request_region(scene, movie, 10, 60, 25.0)
    assert len(keyed["boxes"]) == 50 and keyed["times_s"][1] == pytest.approx(0.04)
    assert keyed["boxes"][0] == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=1e-5)
    assert keyed["boxes"][-1][0] == pytest.approx(0.1 + 0.4 * 49 / 50, abs=0.03)  # eased
    lefts = [box[0] for box in keyed["boxes"]]
    assert lefts == sorted(lefts) and lefts[-1] > lefts[0] + 0.3
    assert scene.frame_current == 3  # the editor's frame is put back
    movie.foley.focus.mode = "MASK"
    mask.layers[0].hide_render = True
    with pytest.raises(focus.FocusError, match="no points"):
        focus.request_region(scene, movie, 10, 60, 25.0)


def test_a_take_records_its_region_which_survives_reopen_and_regenerate_range_reuses(
        project, server, prefs, jobs, clip_dir):
    prefs.server_address = server.endpoint
    scene = setup_scene(FPS, WIDTH, HEIGHT)
    movie = add_movie(scene, _movie(clip_dir), frame_start=CLIP_START)
    movie.foley.caption = "a ball bounces"
    movie.foley.focus.mode = "MASK"
    movie.foley.focus.mask = _animated_mask(scene)
    assert generate(seed=1) == {"FINISHED"}
    jobs.wait_until_idle(timeout_s=120)
    job = jobs.manager().jobs[-1]
    assert job.state == "done", job.message
    sent = job.settings.focus_region
    assert len(sent["boxes"]) == CLIP_FRAMES and sent["boxes"][0] == pytest.approx(_expected_box(10), abs=1e-4)
    [strip] = foley_strips(scene)
    take = strip.foley.takes[0]
    assert json.loads(take.focus_region) == sent
    label = take.focus_label
    assert label == f"mask Ball: {CLIP_FRAMES} frames"

    name = strip.name
    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    bpy.ops.wm.open_mainfile(filepath=str(project))
    scene = bpy.context.scene
    strip = addon_module("compat").all_strips(scene.sequence_editor)[name]
    assert json.loads(strip.foley.takes[0].focus_region) == sent
    movie = addon_module("compat").all_strips(scene.sequence_editor)["Clip"]
    assert movie.foley.focus.mode == "MASK" and movie.foley.focus.mask.name == "Ball"
    movie.foley.focus.mode = "NONE"  # the strip's focus changed since: the take keeps its own

    scene.sequence_editor.active_strip = strip
    assert bpy.ops.sequencer.foley_regenerate_range("EXEC_DEFAULT", frame_start=20,
                                                    frame_end=35, seed=2) == {"FINISHED"}
    jobs.wait_until_idle(timeout_s=120)
    job = jobs.manager().jobs[-1]
    assert job.state == "done", job.message
    assert job.regen is not None and job.settings.focus_region == sent
    take2 = strip.foley.takes[1]
    assert json.loads(take2.focus_region) == sent and take2.focus_label == label


class _Server13(ServerProcess):
    """This code's server negotiating protocol 1.3: a server from before focus regions."""

    def start(self):
        import subprocess

        code = ("import sys; import foley_protocol.protocol as p; p.PROTOCOL_MINOR = 3; "
                "from v2a_server.commands.serve import main; sys.exit(main(sys.argv[1:]))")
        command = [str(server_python()), "-c", code, "--model", str(self.model_dir), "--bind",
                   self.endpoint, "--threads", "1"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=str(REPO))
        return self


def test_a_server_before_1_6_gets_no_request_with_a_region_and_the_editor_is_told(
        project, prefs, jobs, clip_dir, tiny_model, tmp_path):
    server = _Server13(tiny_model, tmp_path).start()
    try:
        server.wait_ready()
        prefs.server_address = server.endpoint
        scene = setup_scene(FPS, WIDTH, HEIGHT)
        movie = add_movie(scene, _movie(clip_dir), frame_start=CLIP_START)
        movie.foley.caption = "a ball bounces"
        movie.foley.focus.mode = "BOX"
        assert generate(seed=1) == {"FINISHED"}
        jobs.wait_until_idle(timeout_s=120)
        job = jobs.manager().jobs[-1]
        assert job.state == "failed" and "cannot follow a focus region" in job.message
        assert "clear the strip's focus" in job.message
        assert not foley_strips(scene), "never a silent whole-frame take"
        movie.foley.focus.mode = "NONE"  # the editor clears it: the same server serves it
        assert generate(seed=1) == {"FINISHED"}
        jobs.wait_until_idle(timeout_s=120)
        assert jobs.manager().jobs[-1].state == "done", jobs.manager().jobs[-1].message
        assert len(foley_strips(scene)) == 1
    finally:
        server.kill()


class _RecordingLayout:
    """Stands in for a UILayout (headless bpy cannot draw): records what a panel shows."""

    def __init__(self, shown):
        self.shown = shown

    def row(self, **_):
        return self

    column = row

    def prop(self, data, name, **_):
        self.shown.append(("prop", name))

    def operator(self, idname, **_):
        self.shown.append(("operator", idname))
        return self

    def label(self, text="", **_):
        self.shown.append(("label", text))


def test_the_panel_shows_the_focus_and_clears_it_in_one_click(project, clip_dir):
    focus = addon_module("focus")
    scene = setup_scene(FPS, WIDTH, HEIGHT)
    movie = add_movie(scene, _movie(clip_dir), frame_start=CLIP_START)
    shown = []
    focus.draw_focus(_RecordingLayout(shown), movie)
    assert shown == [("prop", "mode")]  # whole frame: nothing to clear
    movie.foley.focus.mode = "BOX"
    shown.clear()
    focus.draw_focus(_RecordingLayout(shown), movie)
    assert ("operator", "sequencer.foley_clear_focus") in shown
    assert shown.count(("prop", "foley_focus_box")) == 4  # left, top, width, height
    movie.foley.focus.mode = "MASK"
    shown.clear()
    focus.draw_focus(_RecordingLayout(shown), movie)
    assert ("prop", "mask") in shown and any("whole frame" in t for k, t in shown if k == "label")
    assert bpy.ops.sequencer.foley_clear_focus() == {"FINISHED"}
    assert movie.foley.focus.mode == "NONE"
    assert not bpy.ops.sequencer.foley_clear_focus.poll()
