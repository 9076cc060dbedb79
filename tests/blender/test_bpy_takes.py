"""Takes in real bpy against a real tiny-model server: Regenerate Range, switch, audition,
delete, and takes surviving save + reopen."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bpy")

import bpy  # noqa: E402

from tests.blender.bpy_helpers import (  # noqa: E402
    add_movie,
    addon_module,
    file_digest,
    foley_strips,
    generate,
    setup_scene,
    sound_file,
)
from tests.blender.clips import write_index_movie  # noqa: E402

FPS = Fraction(25)
CLIP_FRAMES = 100  # 4 s
CLIP_START = 10
MARGIN_S = 0.2  # the server's blended margin on each side of a regenerated range


def _movie(clip_dir) -> Path:
    path = clip_dir / f"takes-index-25-{CLIP_FRAMES}.mp4"
    if not path.exists():
        write_index_movie(path, CLIP_FRAMES, FPS)
    return path


def _read(path: Path) -> tuple[np.ndarray, int]:
    import soundfile

    audio, rate = soundfile.read(str(path), dtype="float32")
    return audio, rate


def _markers(scene) -> list[tuple[str, int]]:
    return sorted((m.name, m.frame) for m in scene.timeline_markers)


def _regenerate(**kwargs) -> set:
    return bpy.ops.sequencer.foley_regenerate_range("EXEC_DEFAULT", **kwargs)


def _first_take(scene, jobs, clip_dir, seed=1):
    """A movie (frames 10..109) and its Foley strip with take 1 (made active)."""
    movie = add_movie(scene, _movie(clip_dir), channel=1, frame_start=CLIP_START)
    movie.foley.caption = "knocks on wood"
    assert generate(seed=seed) == {"FINISHED"}
    jobs.wait_until_idle(timeout_s=120)
    assert jobs.manager().jobs[-1].state == "done", jobs.manager().jobs[-1].message
    [strip] = foley_strips(scene)
    scene.sequence_editor.active_strip = strip
    take = strip.foley.takes[0]
    if not len(take.onsets):
        # A random-weight model may detect no onsets; give take 1 some so the marker checks
        # have something to check (inside and outside the ranges used below).
        for t in (0.4, 1.0, 1.5, 1.7, 2.6, 3.4):
            onset = take.onsets.add()
            onset.time_s, onset.probability = t, 0.9
        addon_module("takes").switch_take(scene, strip, 0)
    return movie, strip


def _wait_done(jobs):
    jobs.wait_until_idle(timeout_s=120)
    job = jobs.manager().jobs[-1]
    assert job.state == "done", job.message
    return job


def test_regenerate_range_adds_a_take_and_switching_back_restores_take_one(
        project, server, prefs, jobs, clip_dir):
    prefs.server_address = server.endpoint
    scene = setup_scene(FPS)
    _, strip = _first_take(scene, jobs, clip_dir)
    take1 = strip.foley.takes[0]
    take1_path = sound_file(strip)
    take1_digest = file_digest(take1_path)
    take1_markers = _markers(scene)
    assert take1_markers and all(n.startswith(take1.marker_tag) for n, _ in take1_markers)

    lo, hi = 55, 70  # the range: frames [55, 70) = 1.8-2.4 s of the take
    inside_before = [m for m in scene.timeline_markers if lo <= m.frame < hi]
    outside_before = [m for m in scene.timeline_markers if not lo <= m.frame < hi]
    assert inside_before and outside_before
    # The editor nudged markers by hand: one outside the range (kept where it is now), one
    # inside (replaced by the new take's onsets like the rest of the range).
    outside_before[0].frame += 2 if outside_before[0].frame + 2 < lo else -2
    inside_before[0].frame = lo + 1 if inside_before[0].frame != lo + 1 else lo + 2
    moved_inside = inside_before[0].frame
    outside_frames = sorted(m.frame for m in outside_before)
    take1_as_left = _markers(scene)  # with the editor's two nudges
    assert take1_as_left != take1_markers

    scene.use_preview_range = True
    scene.frame_preview_start, scene.frame_preview_end = lo, hi - 1  # inclusive end
    assert _regenerate(seed=3) == {"FINISHED"}
    assert len(strip.foley.takes) == 1, "placed before the server answered"
    job = _wait_done(jobs)
    assert job.regen.frames == (lo, hi)
    assert job.regen.range_s == pytest.approx((1.8, 2.4))

    # A new take file; the old one untouched; the strip plays the new one.
    settings = strip.foley
    assert len(settings.takes) == 2 and settings.active_take == 1
    take1, take2 = settings.takes
    assert take2.number == 2 and take2.based_on == take1.take_id
    assert (take2.range_start_s, take2.range_end_s) == pytest.approx((1.8, 2.4))
    assert take2.seed == "3" and take2.caption == take1.caption
    assert (take2.frame_start, take2.frame_end) == (take1.frame_start, take1.frame_end)
    take2_path = sound_file(strip)
    assert take2_path.name == "Clip_take002.wav" and take2_path != take1_path
    assert file_digest(take1_path) == take1_digest

    # The audio: the old take's own samples outside the range and its margins, new inside.
    old, rate = _read(take1_path)
    new, new_rate = _read(take2_path)
    assert new_rate == rate and new.shape == old.shape
    start, end = (int(s * rate) for s in (1.8 - MARGIN_S, 2.4 + MARGIN_S))
    np.testing.assert_array_equal(new[:start], old[:start])
    np.testing.assert_array_equal(new[end + 1:], old[end + 1:])
    inside = slice(int(1.85 * rate), int(2.35 * rate))
    assert np.abs(new[inside] - old[inside]).max() > 0.05 * np.abs(old).max()

    # Markers: outside the range unchanged (where they are now), inside = the new onsets.
    body = job.result_body
    marker_frames = [f for _, f in _markers(scene)]
    assert all(n.startswith(take2.marker_tag) for n, _ in _markers(scene))
    assert sorted(f for f in marker_frames if not lo <= f < hi) == outside_frames
    sync = addon_module("sync")
    inside_new = [f for f in sync.onset_marker_frames(body["onset_times_s"], CLIP_START, 25.0)
                  if lo <= f < hi]
    assert sorted(f for f in marker_frames if lo <= f < hi) == inside_new
    assert moved_inside not in inside_new and moved_inside not in marker_frames

    # Switching back to take 1 restores its audio and its markers as the editor left them
    # (nudges included), and forth again.
    assert bpy.ops.sequencer.foley_switch_take(index=0) == {"FINISHED"}
    assert sound_file(strip) == take1_path and settings.active_take == 0
    assert _markers(scene) == take1_as_left
    assert bpy.ops.sequencer.foley_switch_take(index=1) == {"FINISHED"}
    assert sound_file(strip) == take2_path
    assert sorted(f for _, f in _markers(scene)) == marker_frames
    assert file_digest(take1_path) == take1_digest


def test_range_rules_preview_then_selected_markers_then_playhead(project, server, prefs, jobs,
                                                                 clip_dir):
    prefs.server_address = server.endpoint
    scene = setup_scene(FPS)
    _, strip = _first_take(scene, jobs, clip_dir)
    markers = sorted(scene.timeline_markers, key=lambda m: m.frame)
    assert len(markers) >= 2

    def requested():
        frames = jobs.manager().jobs[-1].regen.frames
        jobs.manager().cancel(reason="range checked")
        return frames

    scene.frame_current = 60
    markers[0].select = markers[-1].select = True
    scene.use_preview_range = True
    scene.frame_preview_start, scene.frame_preview_end = 20, 29
    assert _regenerate() == {"FINISHED"}
    assert requested() == (20, 30)  # the preview range wins
    scene.use_preview_range = False
    assert _regenerate() == {"FINISHED"}
    assert requested() == (markers[0].frame, markers[-1].frame)  # then selected markers
    for m in scene.timeline_markers:
        m.select = False
    assert _regenerate() == {"FINISHED"}
    assert requested() == (35, 85)  # then the playhead ± 1 s (25 frames each side)
    scene.frame_current = 5  # ± 1 s clipped to the take's start (frame 10)
    assert _regenerate() == {"FINISHED"}
    assert requested() == (10, 30)
    scene.frame_current = 200
    with pytest.raises(RuntimeError, match="does not overlap the take"):
        _regenerate()
    with pytest.raises(RuntimeError, match="covers the whole take"):
        _regenerate(frame_start=0, frame_end=500)
    # A take file that is no longer audio: a clear error naming the file, nothing sent.
    path = sound_file(strip)
    saved = path.read_bytes()
    path.write_bytes(b"not a wav")
    try:
        with pytest.raises(RuntimeError, match=f"Cannot read take 1's file .*{path.name}"):
            _regenerate(frame_start=30, frame_end=40)
    finally:
        path.write_bytes(saved)
    assert len(strip.foley.takes) == 1 and not jobs.manager().active_jobs()


def test_variations_become_takes_and_delete_asks_nothing_of_other_files(
        project, server, prefs, jobs, clip_dir):
    prefs.server_address = server.endpoint
    prefs.range_variations = 2
    scene = setup_scene(FPS)
    _, strip = _first_take(scene, jobs, clip_dir)
    take1_path = sound_file(strip)
    take1_digest = file_digest(take1_path)
    neighbour = take1_path.parent / "my_own_recording.wav"
    neighbour.write_bytes(b"the editor's file")

    assert _regenerate(frame_start=50, frame_end=70, seed=11) == {"FINISHED"}
    _wait_done(jobs)
    settings = strip.foley
    assert [t.number for t in settings.takes] == [1, 2, 3]
    assert [t.variation for t in settings.takes[1:]] == [0, 1]
    assert settings.active_take == 1  # the first variation plays
    paths = [Path(bpy.path.abspath(t.filepath)) for t in settings.takes]
    assert len(set(paths)) == 3 and all(p.is_file() for p in paths)
    assert file_digest(paths[1]) != file_digest(paths[2])  # distinct variations

    # Audition: plays a take's file, stoppable; a missing file is an error.
    assert bpy.ops.sequencer.foley_audition_take(index=2) == {"FINISHED"}
    assert bpy.ops.sequencer.foley_stop_audition() == {"FINISHED"}

    # Delete the active take: the strip falls back to the newest other take (3).
    tags = {t.take_id: t.marker_tag for t in settings.takes}
    deleted_id = settings.takes[1].take_id
    assert bpy.ops.sequencer.foley_delete_take(index=1) == {"FINISHED"}
    assert not paths[1].exists()
    assert [t.number for t in settings.takes] == [1, 3]
    assert settings.active_take == 1 and sound_file(strip) == paths[2]
    assert not any(m.name.startswith(tags[deleted_id]) for m in scene.timeline_markers)
    assert file_digest(take1_path) == take1_digest
    assert neighbour.read_bytes() == b"the editor's file"

    # Deleting a take that is not active leaves what plays alone.
    assert bpy.ops.sequencer.foley_delete_take(index=0) == {"FINISHED"}
    assert not take1_path.exists() and sound_file(strip) == paths[2]
    with pytest.raises(RuntimeError, match="only take"):
        bpy.ops.sequencer.foley_delete_take(index=0)
    assert paths[2].is_file()

    paths[2].unlink()  # gone behind Blender's back
    with pytest.raises(RuntimeError, match="missing"):
        bpy.ops.sequencer.foley_audition_take(index=0)
    assert neighbour.read_bytes() == b"the editor's file"


def test_takes_survive_save_and_reopen(project, server, prefs, jobs, clip_dir):
    prefs.server_address = server.endpoint
    scene = setup_scene(FPS)
    _, strip = _first_take(scene, jobs, clip_dir)
    assert _regenerate(frame_start=30, frame_end=45, seed=5) == {"FINISHED"}
    _wait_done(jobs)
    fields = ("take_id", "number", "filepath", "caption", "seed", "created", "range_start_s",
              "range_end_s", "based_on", "marker_tag", "frame_start", "frame_end")

    def state(strip, scene):
        return ([tuple(getattr(t, f) for f in fields) + (tuple(o.time_s for o in t.onsets),)
                 for t in strip.foley.takes], strip.foley.active_take,
                strip.sound.filepath, _markers(scene))

    before = state(strip, scene)
    name = strip.name
    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    assert not bpy.data.scenes[0].timeline_markers
    bpy.ops.wm.open_mainfile(filepath=str(project))
    scene = bpy.context.scene
    compat = addon_module("compat")
    strip = compat.all_strips(scene.sequence_editor)[name]
    assert state(strip, scene) == before
    assert len(strip.foley.takes) == 2 and strip.foley.takes[1].range_end_s > 0
    assert strip.sound.filepath.startswith("//foley/")  # relative to the .blend
    # ... and still usable: switch to take 1 after reopening.
    scene.sequence_editor.active_strip = strip
    assert bpy.ops.sequencer.foley_switch_take(index=0) == {"FINISHED"}
    assert sound_file(strip).name == "Clip_take001.wav"


def test_take_operators_registered_and_range_variations_default_to_four(addon):
    from tests.blender.conftest import ADDON_MODULE

    for name in ("foley_regenerate_range", "foley_switch_take", "foley_audition_take",
                 "foley_stop_audition", "foley_delete_take"):
        assert hasattr(bpy.ops.sequencer, name), name
    assert bpy.ops.sequencer.foley_regenerate_range.get_rna_type().name == "Regenerate Range"
    rna = bpy.context.preferences.addons[ADDON_MODULE].preferences.bl_rna.properties
    assert rna["range_variations"].default == 4 and rna["variations"].default == 1
    take = addon_module("properties").FoleyTake.bl_rna.properties.keys()
    assert {"range_start_s", "range_end_s", "based_on"} <= set(take)


def test_range_take_is_one_undo_step_and_its_file_stays(project, server, prefs, jobs, clip_dir):
    prefs.server_address = server.endpoint
    scene = setup_scene(FPS)
    _, strip = _first_take(scene, jobs, clip_dir)
    name = strip.name
    take1_markers = _markers(scene)
    bpy.ops.ed.undo_push(message="before Regenerate Range")
    assert _regenerate(frame_start=30, frame_end=50, seed=2) == {"FINISHED"}
    _wait_done(jobs)
    take2_path = sound_file(strip)
    assert take2_path.name == "Clip_take002.wav"

    bpy.ops.ed.undo()
    scene = bpy.context.scene
    strip = addon_module("compat").all_strips(scene.sequence_editor)[name]
    assert len(strip.foley.takes) == 1 and strip.foley.active_take == 0
    assert sound_file(strip).name == "Clip_take001.wav"
    assert _markers(scene) == take1_markers
    assert take2_path.is_file()  # a generated take stays on disk until the user deletes it
    bpy.ops.ed.redo()
    scene = bpy.context.scene
    strip = addon_module("compat").all_strips(scene.sequence_editor)[name]
    assert len(strip.foley.takes) == 2 and sound_file(strip) == take2_path
