"""The review off the critical path in real bpy against a real tiny-model server (protocol 1.4,
issue 15): the take is placed on its result, before its review data arrives; the review fills
the take's motion events, audio onsets and sync picture after; Show Sync Picture has the server
redraw the picture after a marker edit (and only then)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("bpy")

import bpy  # noqa: E402

from tests.blender.bpy_helpers import add_movie, foley_strips, generate, setup_scene  # noqa: E402
from tests.blender.test_bpy_review import (  # noqa: E402,F401  (fixtures)
    FPS,
    MOVIE_START,
    generated,
    jump_movie,
    png_size,
)


def test_the_take_is_placed_before_its_review_arrives_and_filled_after(project, server, prefs,
                                                                        jobs, jump_movie):
    prefs.server_address = server.endpoint
    scene = setup_scene(FPS)
    movie = add_movie(scene, jump_movie, channel=1, frame_start=MOVIE_START)
    movie.foley.caption = "a box slams down"
    assert generate(seed=12) == {"FINISHED"}
    manager = jobs.manager()
    deadline = time.monotonic() + 180
    while not manager.jobs or manager.jobs[-1].state != "done":  # pumped tick by tick
        assert time.monotonic() < deadline, manager.jobs[-1].message if manager.jobs else ""
        jobs.poll_jobs()
        time.sleep(0.005)
    job = manager.jobs[-1]
    [sound] = foley_strips(scene)
    take = sound.foley.takes[0]
    # placed on the result: audio, strip, markers, the request remembered; no review data yet
    assert job.result_body["review_follows"] is True and job.review_due
    assert len(take.review_markers) == len(job.result_body["onset_times_s"]) > 0 or \
        not job.result_body["onset_times_s"]
    assert take.request_id == job.request_id
    assert len(take.motion_events) == 0 and take.sync_picture == ""
    jobs.wait_until_idle(timeout_s=60)  # the review arrives
    assert not job.review_due and not job.review_missing
    assert [e.time_s for e in take.motion_events] == pytest.approx([1.0, 2.0], abs=1 / 24)
    assert len(take.audio_onsets) == len(job.review_body["audio_onsets"][0]["times_s"])
    picture = Path(bpy.path.abspath(take.sync_picture))
    assert png_size(picture) == (1280, 720)
    assert job.timings_s["review_after_result_s"] > 0


def test_show_sync_picture_redraws_after_a_marker_edit_and_only_then(generated, jobs):
    scene, sound, take, job = generated
    review_follow = jobs.review_follow
    first = Path(bpy.path.abspath(take.sync_picture))
    original = first.read_bytes()
    manager = jobs.manager()

    assert bpy.ops.sequencer.foley_sync_picture_show() == {"FINISHED"}
    assert not manager.review.redraws  # the markers are those drawn: nothing to redraw
    assert not review_follow.needs_redraw(scene, take)

    marker = scene.timeline_markers[take.review_markers[0].marker_name]
    marker.frame += 3  # the editor moves a marker three frames late
    assert review_follow.needs_redraw(scene, take)
    assert bpy.ops.sequencer.foley_sync_picture_show() == {"FINISHED"}
    assert len(manager.review.redraws) == 1
    jobs.wait_until_idle(timeout_s=60)
    redrawn = Path(bpy.path.abspath(take.sync_picture))
    assert redrawn != first and redrawn.parent == first.parent
    assert redrawn.name == f"{first.stem}.001.png"
    assert png_size(redrawn) == png_size(first) and redrawn.read_bytes() != original
    assert first.read_bytes() == original  # never written over
    assert not review_follow.needs_redraw(scene, take)
    assert bpy.ops.sequencer.foley_sync_picture_show() == {"FINISHED"}
    assert not manager.review.redraws  # shown as drawn
