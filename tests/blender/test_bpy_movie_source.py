"""The movie fast path: a server on this machine reads a plain movie strip's frames from its
file. Its frames are the ones Blender renders (index clips prove which frame, at 24, 25 and
29.97 fps, with a non-zero start and trims); anything that changes the picture is rendered by
Blender instead; a server that sees another file, or reads none, gets rendered frames."""

from __future__ import annotations

import sys
import time
from fractions import Fraction

import numpy as np
import pytest

pytest.importorskip("bpy")
pytest.importorskip("av")

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
from tests.blender.clips import decode_index, square_x, write_index_movie  # noqa: E402
from tests.blender.conftest import REPO  # noqa: E402

MODEL_FPS = 25.0
SIDE = 48  # the default model's input size


def _server_reader():
    """The server's own reader (numpy + PyAV only), imported from the checkout."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from v2a_server.serving import source_frames

    return source_frames


def _movie(clip_dir, fps: Fraction, frames: int = 90):
    path = clip_dir / f"fast-{float(fps):.3f}.mp4"
    if not path.exists():
        write_index_movie(path, frames, fps)
    return path


def _frames(scene, strip, model_fps=MODEL_FPS):
    compat, sync = addon_module("compat"), addon_module("sync")
    first, end = compat.strip_range(strip)
    rate = sync.scene_rate(scene.render.fps, scene.render.fps_base)
    return sync.capture_frames(first, end, rate, model_fps)


@pytest.mark.parametrize("fps", [Fraction(24), Fraction(25), Fraction(30000, 1001)])
def test_the_file_frames_are_the_frames_blender_renders(project, clip_dir, fps):
    movie_source, capture = addon_module("movie_source"), addon_module("capture")
    scene = setup_scene(fps)
    movie = add_movie(scene, _movie(clip_dir, fps), channel=2, frame_start=17)
    trim(movie, head=9, tail=11)
    frames = _frames(scene, movie)
    request = movie_source.source_request(scene, movie, frames, SIDE)
    assert request is not None, movie_source.ineligible_reason(scene, movie, frames)

    read, _ = _server_reader().read_source_frames(request)
    rendered = capture.capture_blocking(scene, movie, MODEL_FPS, SIDE)

    assert read.shape == rendered.shape  # the size Blender renders at
    shown = [decode_index(im) for im in rendered]
    assert shown[0] == 9  # the first visible frame is source frame 9 (trimmed head)
    assert [decode_index(im) for im in read] == shown == request["frame_indices"]
    # The same picture: the moving square in the same place, the pixels close (both shrink by
    # picking single pixels, a fraction of a file pixel apart: they differ at edges only).
    assert np.allclose([square_x(im) for im in read], [square_x(im) for im in rendered],
                       atol=0.04)
    assert np.abs(read.astype(int) - rendered.astype(int)).mean() < 8


def test_the_late_part_of_a_long_take_is_the_part_blender_shows(project, clip_dir):
    """The server seeks into the file for a strip trimmed deep into a long take."""
    movie_source, capture = addon_module("movie_source"), addon_module("capture")
    path = clip_dir / "long-take-25.mp4"
    if not path.exists():
        write_index_movie(path, 420, Fraction(25))
    scene = setup_scene(Fraction(25))
    movie = add_movie(scene, path, channel=1, frame_start=-300)
    trim(movie, head=337, tail=20)
    frames = _frames(scene, movie)
    read, _ = _server_reader().read_source_frames(
        movie_source.source_request(scene, movie, frames, SIDE))
    rendered = capture.capture_blocking(scene, movie, MODEL_FPS, SIDE)
    shown = [decode_index(im) for im in rendered]
    assert shown[0] == 337 and shown[-1] == 399
    assert [decode_index(im) for im in read] == shown


def _reason(scene, movie):
    return addon_module("movie_source").ineligible_reason(scene, movie, _frames(scene, movie))


def test_anything_that_changes_the_picture_is_rendered_by_blender(project, clip_dir):
    compat = addon_module("compat")
    scene = setup_scene(Fraction(25))
    movie = add_movie(scene, _movie(clip_dir, Fraction(25)), channel=1, frame_start=1)
    assert _reason(scene, movie) is None
    first, end = compat.strip_range(movie)

    def check(change, undo, words):
        change()
        reason = _reason(scene, movie)
        assert reason is not None and words in reason, reason
        undo()
        assert _reason(scene, movie) is None

    t, c = movie.transform, movie.crop
    check(lambda: setattr(t, "offset_x", 5), lambda: setattr(t, "offset_x", 0), "transform")
    check(lambda: setattr(t, "rotation", 0.1), lambda: setattr(t, "rotation", 0), "transform")
    check(lambda: setattr(t, "scale_y", 1.2), lambda: setattr(t, "scale_y", 1), "transform")
    check(lambda: setattr(c, "min_x", 4), lambda: setattr(c, "min_x", 0), "crop")
    check(lambda: setattr(movie, "use_flip_x", True), lambda: setattr(movie, "use_flip_x", False),
          "flipped")
    check(lambda: setattr(movie, "blend_alpha", 0.5), lambda: setattr(movie, "blend_alpha", 1),
          "opacity")
    check(lambda: setattr(movie, "color_saturation", 0.5),
          lambda: setattr(movie, "color_saturation", 1), "saturation")
    view = scene.view_settings
    check(lambda: setattr(view, "view_transform", "AgX" if "AgX" in _choices(view) else "Filmic"),
          lambda: setattr(view, "view_transform", "Standard"), "view transform")
    check(lambda: setattr(view, "exposure", 0.5), lambda: setattr(view, "exposure", 0), "exposure")

    grade = compat.new_effect(strips(scene), "Grade", "ADJUSTMENT", 3, first, end - first)
    assert "'Grade'" in _reason(scene, movie)
    grade.frame_start = end + 10  # graded elsewhere on the timeline: not this picture
    assert _reason(scene, movie) is None
    strips(scene).remove(grade)

    cover = compat.new_effect(strips(scene), "Cover", "COLOR", 4, first, end - first)
    assert _reason(scene, movie) is None  # muted while capturing: not this strip's picture
    strips(scene).remove(cover)

    movie.keyframe_insert("blend_alpha", frame=1)
    assert "keyframes" in _reason(scene, movie)


def _choices(view):
    return [item.identifier for item in view.bl_rna.properties["view_transform"].enum_items]


def _job_for(scene, prefs, server, jobs, seed=1):
    prefs.server_address = server.endpoint
    assert generate(seed=seed) == {"FINISHED"}
    jobs.wait_until_idle(timeout_s=120)
    job = jobs.manager().jobs[-1]
    assert job.state == "done", job.message
    return job


def test_generate_on_a_plain_movie_renders_nothing(project, server, prefs, jobs, clip_dir):
    scene = setup_scene(Fraction(25))
    movie = add_movie(scene, _movie(clip_dir, Fraction(25)), channel=1, frame_start=12)
    trim(movie, head=4)
    movie.foley.caption = "taps"
    job = _job_for(scene, prefs, server, jobs)
    assert job.timings_s["frames_from_source"] == 1.0 and job.timings_s["capture_s"] == 0.0
    assert job.server_timings_s["source_read_s"] > 0
    [sound] = foley_strips(scene)
    assert addon_module("compat").strip_range(sound) == addon_module("compat").strip_range(movie)

    prefs.server_reads_movies = False  # the user wants Blender's own render
    job = _job_for(scene, prefs, server, jobs, seed=2)
    assert job.timings_s["frames_from_source"] == 0.0 and job.timings_s["capture_s"] > 0
    prefs.server_reads_movies = True

    movie.transform.offset_x = 3  # now Blender's picture differs from the file: rendered
    job = _job_for(scene, prefs, server, jobs, seed=3)
    assert job.timings_s["frames_from_source"] == 0.0 and job.timings_s["capture_s"] > 0


def test_a_server_that_sees_another_file_gets_rendered_frames(project, server, prefs, jobs,
                                                             clip_dir, monkeypatch):
    """The server refuses (its file differs from the one the add-on names); the job renders the
    frames itself and goes on, with nothing to show for the detour but a log line."""
    movie_source = addon_module("movie_source")
    real = movie_source.source_request

    def stale(*args):
        request = real(*args)
        return None if request is None else {**request, "mtime_ns": request["mtime_ns"] - 1}

    monkeypatch.setattr(movie_source, "source_request", stale)
    scene = setup_scene(Fraction(25))
    movie = add_movie(scene, _movie(clip_dir, Fraction(25)), channel=1, frame_start=1)
    movie.foley.caption = "taps"
    job = _job_for(scene, prefs, server, jobs)
    assert job.source_refused
    assert job.timings_s["frames_from_source"] == 0.0 and job.timings_s["capture_s"] > 0
    assert "source_unavailable" in server.log() or "another" in server.log()
    assert len(foley_strips(scene)) == 1


def test_a_server_that_reads_no_files_gets_rendered_frames(project, capturing_server, prefs,
                                                           jobs, clip_dir):
    scene = setup_scene(Fraction(25))
    movie = add_movie(scene, _movie(clip_dir, Fraction(25)), channel=1, frame_start=1)
    movie.foley.caption = "taps"
    job = _job_for(scene, prefs, capturing_server, jobs)
    assert not job.source_refused  # never asked: the server's hello said so
    assert job.timings_s["frames_from_source"] == 0.0 and job.timings_s["capture_s"] > 0
    assert bpy.data.filepath  # the saved project the take was written beside


def test_a_caption_starts_the_read_and_generate_finds_the_frames_ready(project, server, prefs,
                                                                       jobs, clip_dir):
    """Typing the caption is the editor's intent: the server reads the frames while the editor
    reaches for Generate, which then waits for nothing but the model."""
    prefs.server_address = server.endpoint
    scene = setup_scene(Fraction(25))
    movie = add_movie(scene, _movie(clip_dir, Fraction(25)), channel=1, frame_start=30)
    trim(movie, tail=7)
    manager = jobs.manager()
    movie.foley.caption = "knocks on a door"  # the property's update starts the read
    deadline = time.monotonic() + 60
    while manager.prepared.get(movie.name) in (None, "reading"):
        assert time.monotonic() < deadline, manager.prepared
        jobs.poll_jobs()
        time.sleep(0.01)
    assert manager.prepared[movie.name] == "ready"
    route = lambda: manager.frames_route(scene, movie, prefs)  # noqa: E731 (the panel's line)
    assert route() == "Frames: read, ready on the server"
    job = _job_for(scene, prefs, server, jobs)
    assert job.timings_s["frames_from_source"] == 1.0
    assert job.server_timings_s["source_cached"] == 1.0  # read ahead: nothing left to read

    trim(movie, head=2)  # other frames now: not the ones read ahead
    assert route() == "Frames: read from the file by the server"
    movie.transform.rotation = 0.2
    assert route() == "Frames: rendered by Blender (a transform)"
    movie.transform.rotation = 0

    prefs.server_reads_movies = False  # the preference off: no reading ahead either
    manager.prepared.clear()
    movie.foley.caption = "knocks on a window"
    for _ in range(20):
        jobs.poll_jobs()
    assert manager.prepared == {}
    assert route() == "Frames: rendered by Blender (preference)"


def _coarse(images, block=6):
    """Block means: what is left once the two resamplers' pixel-level differences are gone."""
    t, h, w, c = images.shape
    h, w = h // block * block, w // block * block
    return images[:, :h, :w].reshape(t, h // block, block, w // block, block, c).mean(axis=(2, 4))


REAL_CLIPS = REPO.parent / "shared" / "data" / "vggsound"


def _lagged_correlation(a, b, lag):
    if lag > 0:
        a, b = a[lag:], b[:-lag]
    elif lag < 0:
        a, b = a[:lag], b[-lag:]
    return float(np.corrcoef(a, b)[0, 1])


@pytest.mark.parametrize("name", ["0_ixmalQrig_000100", "1XBz00U_pv0_000180",
                                  "6pwhiA535q0_000166", "WguzItBThxY_000230",
                                  "Ypt4OeuoDYo_000128"])
@pytest.mark.parametrize("head", [7, 70])  # 70: the server seeks into the file
def test_real_footage_read_from_the_file_moves_when_blenders_frames_move(project, name, head):
    """Camera footage (H.264 with B-frames; 30 fps; portrait; an odd size): the frames the
    server reads change at the same moments as the frames Blender shows, not a frame before or
    after. (Pixel by pixel the two differ: both shrink by picking single pixels, but not the same
    ones, which on detailed footage outweighs the small motion between frames; the timing of
    the motion is what must agree.)"""
    import av

    path = REAL_CLIPS / f"{name}.mp4"
    if not path.exists():
        pytest.skip(f"shared clip {path} is absent (../shared/data/vggsound is not beside "
                    "this checkout)")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps, width, height = Fraction(stream.average_rate), stream.width, stream.height
    movie_source, capture = addon_module("movie_source"), addon_module("capture")
    scene = setup_scene(fps.limit_denominator(1001), width, height)
    movie = add_movie(scene, path, channel=1, frame_start=5)
    trim(movie, head=head, tail=3)
    frames = _frames(scene, movie)
    request = movie_source.source_request(scene, movie, frames, SIDE)
    assert request is not None, movie_source.ineligible_reason(scene, movie, frames)
    assert request["frame_indices"][0] == head
    read, _ = _server_reader().read_source_frames(request)
    rendered = capture.capture_blocking(scene, movie, MODEL_FPS, SIDE)
    assert read.shape == rendered.shape
    motion = [np.abs(np.diff(_coarse(x.astype(float)), axis=0)).mean(axis=(1, 2, 3))
              for x in (read, rendered)]
    correlation = {lag: _lagged_correlation(*motion, lag) for lag in (-2, -1, 0, 1, 2)}
    assert correlation[0] > 0.8 and correlation[0] == max(correlation.values()), correlation
