"""What the model knows, where the editor looks: the panel names the model's scope, and a
near-silent take is placed but reported as such (job line, WARNING report, the Takes list)."""

from __future__ import annotations

import shutil
import time
from fractions import Fraction
from pathlib import Path

import pytest

pytest.importorskip("bpy")

from tests.blender.bpy_helpers import (  # noqa: E402
    add_movie,
    addon_module,
    foley_strips,
    generate,
    setup_scene,
    sound_file,
)
from tests.blender.clips import write_index_movie  # noqa: E402
from tests.blender.conftest import REPO, ServerProcess  # noqa: E402

DEFAULT_CARD = REPO / "v2a_server" / "default_model" / "model_card.json"
ADVICE = ("the model heard nothing it knows in this picture (it knows synthetic impacts only): "
          "install the full model (`v2a model pull sta-v2a`)")


@pytest.fixture
def carded_server(tiny_model, tmp_path):
    """The tiny model (its random weights make near-silent audio) with the embedded default
    model's card, as the editor of the default model meets it."""
    folder = tmp_path / "carded-tiny"
    shutil.copytree(tiny_model, folder)
    shutil.copy(DEFAULT_CARD, folder / "model_card.json")
    proc = ServerProcess(folder, tmp_path).start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.kill()


def test_the_panel_names_the_scope_and_a_near_silent_take_is_reported(
        project, carded_server, prefs, jobs, clip_dir):
    messages = addon_module("messages")
    prefs.server_address = carded_server.endpoint
    scene = setup_scene(Fraction(25))
    movie_path = Path(clip_dir) / "index-scope-25.mp4"
    if not movie_path.exists():
        write_index_movie(movie_path, 50, Fraction(25))
    movie = add_movie(scene, movie_path, channel=2)
    movie.foley.caption = "a white square sliding"
    assert generate(seed=3) == {"FINISHED"}
    jobs.wait_until_idle(timeout_s=180)
    job = jobs.manager().jobs[-1]
    assert job.state == "done", job.message

    # the server panel's model line, from the status the job loop keeps fresh
    connection = jobs.manager().connection
    deadline = time.monotonic() + 10.0
    while connection.server_status is None:
        assert time.monotonic() < deadline, "no server status"
        jobs.poll_jobs()
        time.sleep(0.05)
    assert connection.server_info["model_scope"] == "synthetic impacts only"
    assert messages.model_line(connection.server_status) == \
        "Model: carded-tiny · synthetic impacts only"

    # the take is placed (nothing is lost) ...
    [sound] = foley_strips(scene)
    assert sound_file(sound).is_file()
    # ... and the editor is told, in the job's line and a WARNING report
    assert job.warned and ADVICE in job.message and "near-silent" in job.message
    assert jobs.manager().last_message == (f"{job.label}: {job.message}", "WARNING")
    # ... and on the take in the Takes list
    (take,) = sound.foley.takes
    assert take.near_silent and take.loudest_dbfs < -50
    assert ADVICE in take.server_warnings
    assert messages.near_silent_take(take.loudest_dbfs).startswith("Near-silent take (loudest ")


def test_the_model_line_without_a_scope_is_the_name_alone(addon):
    messages = addon_module("messages")
    assert messages.model_line({"model_id": "tiny", "model_scope": None}) == "Model: tiny"
    assert messages.model_line({"model_id": "tiny"}) == "Model: tiny"  # a 1.1 server
    assert messages.model_line({}) == "Model: …"
