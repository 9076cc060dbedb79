"""Failures leave the project exactly as it was before the click, with a clear message:
unsaved file, server down, wrong CURVE key, cancel (while capturing and while generating),
a full server queue, and a server killed mid-job."""

from __future__ import annotations

import re
import subprocess
import time
from fractions import Fraction

import pytest

pytest.importorskip("bpy")

import bpy  # noqa: E402
import zmq  # noqa: E402

from tests.blender.bpy_helpers import (  # noqa: E402
    add_movie,
    foley_strips,
    generate,
    project_state,
    setup_scene,
)
from tests.blender.clips import write_index_movie  # noqa: E402
from tests.blender.conftest import REPO, free_port, server_python  # noqa: E402

FPS = Fraction(25)
SLOW_STEPS = 400  # ~0.2 s per step with the tiny model on 2 cores: a job that lasts


@pytest.fixture(scope="module")
def movie_path(clip_dir):
    path = clip_dir / "failures-25.mp4"
    if not path.exists():
        write_index_movie(path, 150, FPS)
    return path


def _scene_with_movie(movie_path, caption="taps"):
    scene = setup_scene(FPS)
    movie = add_movie(scene, movie_path, channel=1, frame_start=21)
    movie.foley.caption = caption
    return scene, movie


def _pump_until(jobs, condition, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, [(j.state, j.message) for j in jobs.manager().jobs]
        jobs.poll_jobs()
        time.sleep(0.01)


def _last(jobs):
    return jobs.manager().jobs[-1]


def test_unsaved_file_is_asked_to_save_first(addon, prefs, jobs, movie_path):
    jobs.manager().cancel(reason="next test")
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    assert bpy.data.filepath == ""
    scene, _ = _scene_with_movie(movie_path)
    before = project_state(scene, REPO / "foley")
    count = len(jobs.manager().jobs)
    with pytest.raises(RuntimeError, match=r"Save the \.blend file first"):
        generate()
    assert len(jobs.manager().jobs) == count  # no job was queued
    assert project_state(scene, REPO / "foley") == before


def test_server_down(project, prefs, jobs, movie_path):
    prefs.server_address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    scene, _ = _scene_with_movie(movie_path)
    before = project_state(scene, project.parent / "foley")
    t0 = time.monotonic()
    assert generate() == {"FINISHED"}
    jobs.wait_until_idle(timeout_s=30)
    job = _last(jobs)
    assert job.state == "failed"
    assert "No answer from the Foley server" in job.message and "v2a-server" in job.message
    assert "nothing was changed" in job.message
    assert jobs.manager().last_message == (f"{job.label}: {job.message}", "ERROR")
    assert time.monotonic() - t0 < prefs.connect_timeout_s + 5
    assert project_state(scene, project.parent / "foley") == before
    assert not (project.parent / "foley").exists()


def test_cancel_while_capturing(project, capturing_server, prefs, jobs, movie_path,
                                monkeypatch):
    # One frame per tick (the floor of the budget): on a fast machine the whole small capture
    # would otherwise fit in one tick and the job would never be seen capturing. The server
    # reads no client files, so the add-on renders the movie itself.
    monkeypatch.setattr(jobs, "TICK_BUDGET_S", 0.0)
    prefs.server_address = capturing_server.endpoint
    scene, _ = _scene_with_movie(movie_path)
    before = project_state(scene, project.parent / "foley")
    assert generate() == {"FINISHED"}
    _pump_until(jobs, lambda: _last(jobs).state == "capturing" and _last(jobs).capture.done > 0)
    assert not _last(jobs).capture.finished
    assert bpy.ops.sequencer.foley_cancel() == {"FINISHED"}
    assert _last(jobs).state == "cancelled" and "nothing was changed" in _last(jobs).message
    for _ in range(20):
        jobs.poll_jobs()
    assert project_state(scene, project.parent / "foley") == before


def test_cancel_while_generating(project, server, prefs, jobs, movie_path):
    prefs.server_address = server.endpoint
    prefs.steps = SLOW_STEPS
    scene, _ = _scene_with_movie(movie_path)
    before = project_state(scene, project.parent / "foley")
    assert generate() == {"FINISHED"}
    _pump_until(jobs, lambda: _last(jobs).progress.get("stage") == "denoise")
    job = _last(jobs)
    assert bpy.ops.sequencer.foley_cancel(job=job.number) == {"FINISHED"}
    assert job.state == "cancelled"
    _pump_until(jobs, lambda: "cancel" in server.log().split("job #")[-1], timeout_s=20)
    deadline = time.monotonic() + 3  # late replies must not place anything
    while time.monotonic() < deadline:
        jobs.poll_jobs()
        time.sleep(0.02)
    assert project_state(scene, project.parent / "foley") == before
    assert "cancel" in server.log()


def test_wrong_server_key(project, own_server, prefs, jobs, movie_path, tmp_path):
    keys = tmp_path / "keys"
    subprocess.run([str(server_python()), "-m", "v2a_server.cli", "keys", "--out", str(keys)],
                   check=True, cwd=str(REPO), capture_output=True)
    server = own_server("--curve-secret-key", str(keys / "server.key_secret"))
    server.wait_ready()
    wrong_public, _ = zmq.curve_keypair()
    prefs.server_address = server.endpoint
    prefs.server_public_key = wrong_public.decode()
    scene, _ = _scene_with_movie(movie_path)
    before = project_state(scene, project.parent / "foley")
    assert generate() == {"FINISHED"}
    jobs.wait_until_idle(timeout_s=30)
    job = _last(jobs)
    assert job.state == "failed" and "server public key" in job.message, job.message
    assert project_state(scene, project.parent / "foley") == before

    certificate = (keys / "server.key").read_text()
    prefs.server_public_key = re.search(r'public-key = "(.{40})"', certificate).group(1)
    assert generate() == {"FINISHED"}
    jobs.wait_until_idle(timeout_s=60)
    assert _last(jobs).state == "done", _last(jobs).message
    assert len(foley_strips(scene)) == 1


def test_full_queue_and_killed_server(project, own_server, prefs, jobs, movie_path):
    """Three strips make three jobs; the server queues one and refuses the third (busy);
    then it is killed mid-job: every job fails, nothing is placed or written."""
    server = own_server("--max-queue", "1")
    server.wait_ready()
    prefs.server_address = server.endpoint
    prefs.steps = SLOW_STEPS
    scene = setup_scene(FPS)
    for i, name in enumerate(("A", "B", "C")):
        strip = add_movie(scene, movie_path, channel=1 + 2 * i, frame_start=1 + 200 * i, name=name)
        strip.select = True
    before = project_state(scene, project.parent / "foley")
    assert generate() == {"FINISHED"}
    a, b, c = jobs.manager().jobs[-3:]
    assert [j.label for j in (a, b, c)] == ["A", "B", "C"]
    _pump_until(jobs, lambda: c.state == "failed" and a.progress.get("stage") == "denoise")
    assert "busy" in c.message and b.state == "queued"
    server.proc.kill()
    jobs.wait_until_idle(timeout_s=30)
    for job in (a, b):
        assert job.state == "failed"
        assert "Lost the Foley server" in job.message and "nothing was changed" in job.message
    assert project_state(scene, project.parent / "foley") == before
