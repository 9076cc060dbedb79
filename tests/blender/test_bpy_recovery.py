"""Takes that outlive Blender (issue 14): a take that finished while the .blend was closed is
placed once when it is reopened; a job the server lost in a crash gets Retry, and Retry makes
the same audio (same seed)."""

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
    foley_strips,
    generate,
    setup_scene,
    strips,
)
from tests.blender.clips import write_index_movie  # noqa: E402

FPS = Fraction(25)
SLOW_STEPS = 60  # long enough to kill the server mid-job


@pytest.fixture(scope="module")
def movie_path(clip_dir):
    path = clip_dir / "recovery-25.mp4"
    if not path.exists():
        write_index_movie(path, 150, FPS)
    return path


def _pump_until(jobs, condition, timeout_s=90.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, [(j.number, j.state, j.message)
                                             for j in jobs.manager().jobs]
        jobs.poll_jobs()
        time.sleep(0.01)


def _close_blender(jobs) -> None:
    """As if Blender were closed: the file goes, and the connection with it."""
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    jobs.manager().connection.close()


def _takes(scene) -> list:
    return [take for strip in foley_strips(scene) for take in strip.foley.takes]


def _samples(path: str) -> np.ndarray:
    import soundfile

    data, _ = soundfile.read(bpy.path.abspath(path), dtype="float32")
    return data


def _spooling_server(own_server, prefs, tmp_path):
    """A server of this test's own, its spool in ``tmp_path``, and the add-on pointed at it."""
    server = own_server("--spool-dir", str(tmp_path / "spool"))
    server.wait_ready()
    prefs.server_address = server.endpoint
    return server


def test_reopen_places_a_finished_take_once_and_offers_retry_for_a_lost_one(
        project, own_server, prefs, jobs, movie_path, tmp_path):
    server = _spooling_server(own_server, prefs, tmp_path)
    scene = setup_scene(FPS)
    a = add_movie(scene, movie_path, channel=1, frame_start=1, name="A")
    a.foley.caption = "steps"
    b = add_movie(scene, movie_path, channel=3, frame_start=301, name="B")
    b.foley.caption = "door"

    # A is sent, the file saved and closed before A's take comes back.
    a.select, b.select = True, False
    assert generate() == {"FINISHED"}
    job_a = jobs.manager().jobs[-1]
    _pump_until(jobs, lambda: job_a.request_id is not None)
    bpy.ops.wm.save_mainfile()
    _close_blender(jobs)
    assert "opened again" in job_a.message
    _pump_until(jobs, lambda: any(job_a.request_id in line and ": done in " in line
                                  for line in server.log().splitlines()))

    # Reopened: A's take is fetched and placed, once; the editor is told.
    bpy.ops.wm.open_mainfile(filepath=str(project))
    scene = bpy.context.scene
    _pump_until(jobs, lambda: not jobs.manager().active_jobs())
    assert len(_takes(scene)) == 1
    assert "finished while Blender was closed" in jobs.manager().last_message[0]
    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.open_mainfile(filepath=str(project))  # again: nothing more to place
    for _ in range(50):
        jobs.poll_jobs()
        time.sleep(0.01)
    scene = bpy.context.scene
    assert len(_takes(scene)) == 1

    # B runs when the server is killed; the file was saved meanwhile.
    prefs.steps = SLOW_STEPS
    for strip in strips(scene):
        strip.select = strip.name == "B"
    assert generate() == {"FINISHED"}
    job_b = jobs.manager().jobs[-1]
    _pump_until(jobs, lambda: job_b.progress.get("stage") == "denoise")
    seed_b = job_b.settings.seed
    assert seed_b is not None  # chosen by the add-on, recorded with the job
    bpy.ops.wm.save_mainfile()
    _close_blender(jobs)
    server.proc.kill()  # the server crashes while Blender is closed
    server.proc.wait(10)
    server.start()
    server.wait_ready()

    # Reopened after the crash: B is unknown to the new server, so it gets Retry.
    bpy.ops.wm.open_mainfile(filepath=str(project))
    _pump_until(jobs, lambda: any(j.retryable for j in jobs.manager().jobs))
    lost = next(j for j in jobs.manager().jobs if j.retryable)
    assert lost.label == "B" and "Retry" in lost.message and lost.settings.seed == seed_b
    scene = bpy.context.scene
    assert len(_takes(scene)) == 1
    assert bpy.ops.sequencer.foley_retry(job=lost.number) == {"FINISHED"}
    _pump_until(jobs, lambda: not jobs.manager().active_jobs(), timeout_s=180)
    retried = jobs.manager().jobs[-1]
    assert retried.state == "done", retried.message
    assert retried.settings.seed == seed_b
    takes = _takes(scene)
    assert len(takes) == 2 and takes[-1].seed == str(seed_b)
    # the same settings and seed again: the same audio
    again = jobs.manager().recovery.retry(retried)
    _pump_until(jobs, lambda: again.state in ("done", "failed"), timeout_s=180)
    assert again.state == "done", again.message
    takes = _takes(scene)
    assert np.array_equal(_samples(takes[-1].filepath), _samples(takes[-2].filepath))


def test_a_job_lost_in_a_server_restart_is_sent_again_by_itself_once(
        project, own_server, prefs, jobs, movie_path, tmp_path):
    server = _spooling_server(own_server, prefs, tmp_path)
    prefs.steps = SLOW_STEPS
    scene = setup_scene(FPS)
    clip = add_movie(scene, movie_path, channel=1, frame_start=1, name="A")
    clip.foley.caption = "rain"
    clip.select = True
    assert generate() == {"FINISHED"}
    job = jobs.manager().jobs[-1]
    _pump_until(jobs, lambda: job.progress.get("stage") == "denoise")
    seed = job.settings.seed
    server.proc.kill()  # a crash, and the server is back at once
    server.proc.wait(10)
    server.start()
    _pump_until(jobs, lambda: job.state == "failed" and job.retryable, timeout_s=60)
    assert "Lost the Foley server" in job.message
    _pump_until(jobs, lambda: jobs.manager().jobs[-1] is not job, timeout_s=120)
    again = jobs.manager().jobs[-1]
    assert "sent again by itself" in job.message and again.auto_retried
    _pump_until(jobs, lambda: not again.active, timeout_s=180)
    assert again.state == "done", again.message
    takes = _takes(bpy.context.scene)
    assert len(takes) == 1 and takes[0].seed == str(seed)


def _regenerate_range(scene, first: int, last: int) -> set:
    """Regenerate Range over the preview range [first, last] of the active Foley take."""
    scene.use_preview_range = True
    scene.frame_preview_start, scene.frame_preview_end = first, last
    return bpy.ops.sequencer.foley_regenerate_range("EXEC_DEFAULT")


def _foley_strip(scene):
    [strip] = foley_strips(scene)
    scene.sequence_editor.active_strip = strip
    return strip


def test_a_regenerated_range_is_recovered_once_and_retried_with_the_same_audio(
        project, own_server, prefs, jobs, movie_path, tmp_path):
    server = _spooling_server(own_server, prefs, tmp_path)
    scene = setup_scene(FPS)
    clip = add_movie(scene, movie_path, channel=1, frame_start=1, name="A")
    clip.foley.caption = "steps"
    clip.select = True
    assert generate(seed=1) == {"FINISHED"}
    _pump_until(jobs, lambda: not jobs.manager().active_jobs())
    assert jobs.manager().jobs[-1].state == "done", jobs.manager().jobs[-1].message
    strip = _foley_strip(scene)

    # A range of take 1 is sent; the file is saved and closed before its take comes back.
    assert _regenerate_range(scene, 40, 59) == {"FINISHED"}
    job = jobs.manager().jobs[-1]
    _pump_until(jobs, lambda: job.request_id is not None)
    assert job.regen is not None and job.settings.seed is not None
    bpy.ops.wm.save_mainfile()
    _close_blender(jobs)
    _pump_until(jobs, lambda: any(job.request_id in line and ": done in " in line
                                  for line in server.log().splitlines()))

    # Reopened: the range's take is placed on the strip once, take 1 read again from its file.
    bpy.ops.wm.open_mainfile(filepath=str(project))
    scene = bpy.context.scene
    _pump_until(jobs, lambda: not jobs.manager().active_jobs())
    reopened = jobs.manager().jobs[-1]
    assert reopened.state == "done" and reopened.reopened, reopened.message
    assert reopened.regen.frames == (40, 60) and reopened.regen.audio is not None
    strip = _foley_strip(scene)
    take1, take2 = strip.foley.takes
    assert take2.based_on == take1.take_id and take2.seed == str(job.settings.seed)
    assert (take2.frame_start, take2.frame_end) == (take1.frame_start, take1.frame_end)
    assert "finished while Blender was closed" in jobs.manager().last_message[0]
    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.open_mainfile(filepath=str(project))  # again: nothing more to place
    for _ in range(50):
        jobs.poll_jobs()
        time.sleep(0.01)
    scene = bpy.context.scene
    assert len(_takes(scene)) == 2

    # A slow range (of take 2, now active) runs when the server crashes; the file was saved.
    strip = _foley_strip(scene)
    strip.foley.takes[strip.foley.active_take].steps = SLOW_STEPS
    assert _regenerate_range(scene, 80, 99) == {"FINISHED"}
    slow = jobs.manager().jobs[-1]
    _pump_until(jobs, lambda: slow.progress.get("stage") == "denoise")
    seed = slow.settings.seed
    bpy.ops.wm.save_mainfile()
    _close_blender(jobs)
    server.proc.kill()
    server.proc.wait(10)
    server.start()
    server.wait_ready()

    # Reopened after the crash: Retry sends the range again, with the same seed and source.
    bpy.ops.wm.open_mainfile(filepath=str(project))
    _pump_until(jobs, lambda: any(j.retryable for j in jobs.manager().jobs))
    lost = next(j for j in jobs.manager().jobs if j.retryable)
    assert lost.regen is not None and lost.regen.frames == (80, 100)
    assert "Retry" in lost.message and lost.settings.seed == seed
    scene = bpy.context.scene
    assert len(_takes(scene)) == 2
    assert bpy.ops.sequencer.foley_retry(job=lost.number) == {"FINISHED"}
    _pump_until(jobs, lambda: not jobs.manager().active_jobs(), timeout_s=180)
    retried = jobs.manager().jobs[-1]
    assert retried.state == "done", retried.message
    assert retried.settings.seed == seed and retried.regen.frames == (80, 100)
    takes = _takes(scene)
    assert len(takes) == 3 and takes[-1].seed == str(seed)
    assert takes[-1].based_on == takes[1].take_id
    again = jobs.manager().recovery.retry(retried)
    _pump_until(jobs, lambda: again.state in ("done", "failed"), timeout_s=180)
    assert again.state == "done", again.message
    takes = _takes(scene)
    assert len(takes) == 4
    assert np.array_equal(_samples(takes[-1].filepath), _samples(takes[-2].filepath))

    # The range's take lost its file: Retry says so, and nothing is placed.
    source = bpy.path.abspath(takes[1].filepath)
    os.rename(source, source + ".away")
    try:
        assert jobs.manager().recovery.retry(again) is None
    finally:
        os.rename(source + ".away", source)
    assert "cannot be placed or sent again" in again.message and "Cannot read take" in again.message
    assert not jobs.manager().active_jobs() and len(_takes(bpy.context.scene)) == 4

    # A range finished while closed whose take lost its file meanwhile: said, nothing placed.
    scene = bpy.context.scene
    strip = _foley_strip(scene)
    base = strip.foley.takes[strip.foley.active_take]
    base.steps = 2  # quick again
    source = bpy.path.abspath(base.filepath)
    assert _regenerate_range(scene, 20, 29) == {"FINISHED"}
    late = jobs.manager().jobs[-1]
    _pump_until(jobs, lambda: late.request_id is not None)
    bpy.ops.wm.save_mainfile()
    _close_blender(jobs)
    _pump_until(jobs, lambda: any(late.request_id in line and ": done in " in line
                                  for line in server.log().splitlines()))
    os.rename(source, source + ".away")
    try:
        bpy.ops.wm.open_mainfile(filepath=str(project))
        _pump_until(jobs, lambda: not jobs.manager().active_jobs())
        gone = jobs.manager().jobs[-1]
        assert gone.state == "failed" and gone.reopened
        assert "cannot be placed or sent again" in gone.message, gone.message
        assert len(_takes(bpy.context.scene)) == 4
        bpy.ops.wm.save_mainfile()
        bpy.ops.wm.open_mainfile(filepath=str(project))  # the record went with it
        assert not jobs.manager().active_jobs()
    finally:
        os.rename(source + ".away", source)
