"""Generate Foley inside real bpy against a real tiny-model server: placement, sync, takes."""

from __future__ import annotations

import math
import time
from fractions import Fraction

import pytest

pytest.importorskip("bpy")

import bpy  # noqa: E402

from tests.blender.bpy_helpers import (  # noqa: E402
    add_movie,
    addon_module,
    file_digest,
    foley_strips,
    generate,
    move,
    setup_scene,
    sound_file,
    trim,
    wav_info,
)
from tests.blender.clips import write_index_movie  # noqa: E402

RATES = [Fraction(24), Fraction(25), Fraction(30000, 1001)]
CLIP_FRAMES = 200
SEED = 7


def _movie(clip_dir, fps: Fraction, frames: int = CLIP_FRAMES):
    path = clip_dir / f"index-{float(fps):.3f}-{frames}.mp4"
    if not path.exists():
        write_index_movie(path, frames, fps)
    return path


def _expected_marker_frames(onsets_s, first, end, fps):
    frames = (math.floor(round(first + t * fps, 4) + 0.5) for t in onsets_s)  # halves up
    return sorted({f for f in frames if f < end})


@pytest.mark.parametrize("fps", RATES, ids=["24", "25", "29.97"])
def test_generate_places_a_synced_take(project, server, prefs, jobs, clip_dir, fps):
    compat = addon_module("compat")
    prefs.server_address = server.endpoint
    mix_rate = 44100 if fps == 25 else 48000  # the mix rate is the scene's, never assumed
    scene = setup_scene(fps, mix_rate=mix_rate)
    movie = add_movie(scene, _movie(clip_dir, fps), channel=2, frame_start=37)
    trim(movie, head=11, tail=17)
    first, end = compat.strip_range(movie)
    assert (first, end) == (48, 37 + CLIP_FRAMES - 17)
    movie.foley.caption = "a white square sliding, clicks"

    t0 = time.perf_counter()
    assert generate(seed=SEED) == {"FINISHED"}
    click_s = time.perf_counter() - t0
    assert click_s < 0.5, f"Generate blocked the UI for {click_s:.2f} s"
    assert not foley_strips(scene), "placed synchronously"

    jobs.wait_until_idle(timeout_s=180)
    job = jobs.manager().jobs[-1]
    assert job.state == "done", job.message

    [sound] = foley_strips(scene)
    s_first, s_end = compat.strip_range(sound)
    assert s_first == first
    assert abs((s_end - s_first) - (end - first)) <= 1
    assert sound.channel == 3  # the free channel right above the movie
    assert sound.name.startswith("Clip")
    if compat.has_sound_offset(sound):
        assert sound.sound_offset == 0.0  # audio t = 0 is an integer frame

    rate = float(fps)
    path = sound_file(sound)
    assert path.parent == project.parent / "foley" and path.name == "Clip_take001.wav"
    file_rate, samples = wav_info(path)
    assert file_rate == mix_rate
    assert samples == round((end - first) / rate * mix_rate)

    settings = sound.foley
    assert settings.source == "Clip" and len(settings.takes) == 1
    take = settings.takes[0]
    body = job.result_body
    assert (take.number, take.take_id, take.seed) == (1, "T1", str(SEED))
    assert take.caption == "a white square sliding, clicks"
    assert take.negative_caption == prefs.negative_caption
    assert (take.steps, take.sampler, take.model_id) == (2, "dpmpp", body["model_id"])
    assert (take.frame_start, take.frame_end) == (first, first + (end - first))
    assert take.sample_rate == mix_rate
    assert take.start_time_s == pytest.approx(first / rate)
    assert [o.time_s for o in take.onsets] == pytest.approx(body["onset_times_s"])

    markers = sorted(m.frame for m in scene.timeline_markers)
    assert all(m.name.startswith(take.marker_tag) for m in scene.timeline_markers)
    assert markers == _expected_marker_frames(body["onset_times_s"], first, end, rate)
    assert scene.foley.next_take_uid == 2


def test_second_generate_makes_take_two_beside_take_one(project, server, prefs, jobs, clip_dir):
    compat = addon_module("compat")
    prefs.server_address = server.endpoint
    scene = setup_scene(Fraction(25))
    movie = add_movie(scene, _movie(clip_dir, Fraction(25), 100), channel=1, frame_start=10)
    movie.foley.caption = "knocks"
    foley_dir = project.parent / "foley"
    foley_dir.mkdir()
    squatter = foley_dir / "Clip_take002.wav"  # someone else's file where take 2 would go
    squatter.write_bytes(b"not ours")

    assert generate(seed=1) == {"FINISHED"}
    jobs.wait_until_idle(timeout_s=120)
    [take1] = foley_strips(scene)
    take1_path = sound_file(take1)
    take1_digest = file_digest(take1_path)

    assert generate(seed=2) == {"FINISHED"}
    jobs.wait_until_idle(timeout_s=120)
    assert jobs.manager().jobs[-1].state == "done", jobs.manager().jobs[-1].message
    first_strip, second_strip = foley_strips(scene)
    assert first_strip == take1
    assert (first_strip.channel, second_strip.channel) == (2, 3)
    assert compat.strip_range(first_strip) == compat.strip_range(second_strip)
    assert [first_strip.foley.takes[0].number, second_strip.foley.takes[0].number] == [1, 3]
    assert sound_file(second_strip).name == "Clip_take003.wav"
    assert file_digest(take1_path) == take1_digest
    assert squatter.read_bytes() == b"not ours"
    tags = [s.foley.takes[0].marker_tag for s in (first_strip, second_strip)]
    assert tags[0] != tags[1]
    for marker in scene.timeline_markers:
        assert any(marker.name.startswith(tag) for tag in tags)


def test_job_survives_editing_and_playback_and_follows_a_moved_strip(project, server, prefs,
                                                                     jobs, clip_dir):
    compat = addon_module("compat")
    prefs.server_address = server.endpoint
    prefs.steps = 60  # long enough to edit while the server works
    scene = setup_scene(Fraction(25))
    movie = add_movie(scene, _movie(clip_dir, Fraction(25), 100), channel=1, frame_start=10)
    trim(movie, head=5)
    assert generate(seed=3) == {"FINISHED"}
    job = jobs.manager().jobs[-1]
    deadline = time.monotonic() + 60
    while job.state != "running":
        assert time.monotonic() < deadline and job.active, (job.state, job.message)
        jobs.poll_jobs()
        time.sleep(0.01)
    # The editor keeps working: plays, scrubs, adds a strip, moves the clip as a whole.
    for frame in range(1, 60, 3):
        scene.frame_set(frame)
        jobs.poll_jobs()
    title = compat.new_effect(compat.strips(scene.sequence_editor), "Title", "COLOR", 5, 1, 30)
    move(movie, 40)
    movie.select = False
    title.select = True
    scene.sequence_editor.active_strip = title
    jobs.wait_until_idle(timeout_s=120)
    assert job.state == "done", job.message
    [sound] = foley_strips(scene)
    assert compat.strip_range(sound) == compat.strip_range(movie) == (55, 150)
    assert sound.foley.takes[0].frame_start == 55


def test_a_trimmed_source_keeps_the_captured_range(project, server, prefs, jobs, clip_dir):
    compat = addon_module("compat")
    prefs.server_address = server.endpoint
    scene = setup_scene(Fraction(24))
    movie = add_movie(scene, _movie(clip_dir, Fraction(24), 100), channel=1, frame_start=1)
    assert generate() == {"FINISHED"}
    trim(movie, head=20)  # the picture under the captured range changed: don't guess
    jobs.wait_until_idle(timeout_s=60)
    job = jobs.manager().jobs[-1]
    assert job.state == "done" and "trimmed or retimed" in job.message
    assert jobs.manager().last_message[1] == "WARNING"
    [sound] = foley_strips(scene)
    assert compat.strip_range(sound) == (1, 101)


def test_placement_is_one_undo_step(project, server, prefs, jobs, clip_dir):
    prefs.server_address = server.endpoint
    scene = setup_scene(Fraction(25))
    add_movie(scene, _movie(clip_dir, Fraction(25), 100), channel=1, frame_start=1)
    bpy.ops.ed.undo_push(message="before Generate")
    assert generate(seed=5) == {"FINISHED"}
    jobs.wait_until_idle(timeout_s=60)
    scene = bpy.context.scene
    assert len(foley_strips(scene)) == 1 and len(scene.timeline_markers) > 0
    bpy.ops.ed.undo()
    scene = bpy.context.scene
    assert foley_strips(scene) == [] and len(scene.timeline_markers) == 0
    assert scene.foley.next_take_uid == 1
    bpy.ops.ed.redo()
    scene = bpy.context.scene
    assert len(foley_strips(scene)) == 1 and len(scene.timeline_markers) > 0
