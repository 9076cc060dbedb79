"""The server reads a client's movie file itself (frames encoding "source"): the frames it
returns are the ones named, at the size asked, and anything it cannot honour exactly is refused
with a reason, never guessed. Real files written with PyAV."""

from __future__ import annotations

import os
import time
from fractions import Fraction

import numpy as np
import pytest

from tests.blender.clips import decode_index, write_index_movie
from v2a_server.serving import source_frames
from v2a_server.serving.source_frames import SourceUnavailable, read_source_frames

FPS = Fraction(30000, 1001)


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    return write_index_movie(tmp_path_factory.mktemp("source") / "index-2997.mp4", 60, FPS)


def source_for(movie_path, indices, width=64, height=48, **overrides):
    stat = os.stat(movie_path)
    return {"path": str(movie_path), "size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "stream_index": 0, "source_fps": float(FPS), "frame_indices": list(indices),
            "width": width, "height": height, "scale": width / 320, **overrides}


@pytest.fixture(autouse=True)
def empty_cache():
    source_frames.clear_cache()
    yield
    source_frames.clear_cache()


def test_the_named_frames_in_the_named_order_and_size(movie):
    indices = [7, 8, 10, 10, 3, 59]  # any order, repeats allowed (a 25 fps model over 29.97)
    frames, cached = read_source_frames(source_for(movie, indices))
    assert frames.shape == (6, 48, 64, 3) and frames.dtype == np.uint8 and not cached
    assert [decode_index(f) for f in frames] == indices
    assert not frames.flags.writeable  # shared with the cache


def test_a_late_part_of_a_long_take_is_sought_not_decoded_from_the_start(tmp_path, monkeypatch):
    """An editor uses a few seconds from deep inside a long take: the reader seeks to the key
    frame before them (and still returns exactly the frames named)."""
    long_take = write_index_movie(tmp_path / "long.mp4", 400, FPS)
    decoded = []
    real_open = source_frames._frame_numbers

    def counting(stream, rate):
        numbers = real_open(stream, rate)
        real_number = numbers.number
        numbers.number = lambda frame: decoded.append(frame.pts) or real_number(frame)
        return numbers

    monkeypatch.setattr(source_frames, "_frame_numbers", counting)
    wanted = [333, 334, 336, 390, 333]
    frames, _ = read_source_frames(source_for(long_take, wanted))
    assert [decode_index(f) for f in frames] == wanted
    assert len(decoded) < 100  # from a key frame near 333, not from frame 0


def test_a_regeneration_reads_nothing(movie):
    first, cached = read_source_frames(source_for(movie, [1, 2, 3]))
    again, cached_again = read_source_frames(source_for(movie, [1, 2, 3]))
    assert not cached and cached_again and again is first
    other, cached_other = read_source_frames(source_for(movie, [1, 2, 4]))
    assert not cached_other and decode_index(other[2]) == 4


def test_a_part_of_frames_already_read_is_picked_not_read_again(movie):
    """Regenerate Range after a Generate of the whole strip: the range's frames are cached."""
    read_source_frames(source_for(movie, list(range(10, 40))))
    part, cached = read_source_frames(source_for(movie, [22, 23, 25, 22]))
    assert cached and [decode_index(f) for f in part] == [22, 23, 25, 22]
    assert not part.flags.writeable
    smaller, cached = read_source_frames(source_for(movie, [22, 23], width=32, height=24))
    assert not cached  # another size: read
    beyond, cached = read_source_frames(source_for(movie, [38, 41]))
    assert not cached and [decode_index(f) for f in beyond] == [38, 41]


@pytest.mark.parametrize("overrides, words", [
    ({"mtime_ns": 1}, "another"),
    ({"size_bytes": 1}, "another"),
    ({"source_fps": 25.0}, "frames/s"),
    ({"scale": 0.1}, "does not fill"),
    ({"width": 96, "scale": 0.3}, "does not fill"),  # 4:3 file into a wider frame
    ({"stream_index": 1}, "1 video stream"),
    ({"frame_indices": [0, 60]}, "has no frame 60"),
])
def test_what_cannot_be_honoured_is_refused_with_the_reason(movie, overrides, words):
    with pytest.raises(SourceUnavailable, match=words):
        read_source_frames(source_for(movie, [0, 1], **overrides))


def test_a_path_the_server_cannot_see_is_refused(movie, tmp_path):
    with pytest.raises(SourceUnavailable, match="cannot see"):
        read_source_frames(source_for(movie, [0], path=str(tmp_path / "gone.mp4")))
    with pytest.raises(SourceUnavailable, match="absolute"):
        read_source_frames(source_for(movie, [0], path="clips/index.mp4"))
    not_a_movie = tmp_path / "notes.mp4"
    not_a_movie.write_text("not a movie")
    with pytest.raises(SourceUnavailable, match="does not open"):
        read_source_frames(source_for(not_a_movie, [0]))


def test_a_changed_file_is_read_again_not_served_from_the_cache(movie, tmp_path):
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(movie.read_bytes())
    read_source_frames(source_for(copy, [5]))
    write_index_movie(copy, 30, FPS)  # the editor re-exported the clip: another file
    with pytest.raises(SourceUnavailable, match="another"):
        read_source_frames(source_for(copy, [5], mtime_ns=source_for(movie, [5])["mtime_ns"]))
    frames, cached = read_source_frames(source_for(copy, [5]))
    assert not cached and decode_index(frames[0]) == 5


def test_a_read_under_way_is_waited_for_not_repeated(movie, monkeypatch):
    """A Generate clicked while the frames asked for by ``prepare`` are still being read."""
    import threading

    calls, release = [], threading.Event()
    real = source_frames._decode

    def slow_decode(*args):
        calls.append(args[0])
        release.wait(10)
        return real(*args)

    monkeypatch.setattr(source_frames, "_decode", slow_decode)
    results = []
    readers = [threading.Thread(target=lambda: results.append(
        read_source_frames(source_for(movie, [2, 4])))) for _ in range(3)]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.001)
    release.set()
    for reader in readers:
        reader.join(10)
    assert len(calls) == 1 and len(results) == 3
    assert sorted(cached for _, cached in results) == [False, True, True]
    assert all(frames is results[0][0] for frames, _ in results)


def test_a_failed_read_leaves_nothing_under_way(movie, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(movie.read_bytes()[:2000])  # a truncated copy
    with pytest.raises(SourceUnavailable):
        read_source_frames(source_for(broken, [30]))
    assert not source_frames._reading  # nothing left "under way"


# ---- issue 14: a named path must not wedge, stall or probe the server --------------------


def in_thread(call, timeout_s: float):
    """``call()``'s outcome, or AssertionError when it has not returned in ``timeout_s`` (a
    blocked read must fail the test, not hang it)."""
    import threading

    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except Exception as exc:  # noqa: BLE001 - handed to the test, raised there
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"still blocked after {timeout_s} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_a_fifo_without_a_writer_is_refused_at_once(tmp_path):
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    with pytest.raises(SourceUnavailable, match="not a regular file"):
        in_thread(lambda: read_source_frames(source_for(fifo, [0])), timeout_s=5.0)
    with pytest.raises(SourceUnavailable, match="not a regular file"):
        in_thread(lambda: read_source_frames(source_for("/dev/zero", [0])), timeout_s=5.0)


def test_the_client_is_told_only_to_render_and_the_log_gets_the_reason(movie):
    with pytest.raises(SourceUnavailable) as info:
        read_source_frames(source_for(movie, [0], size_bytes=1))
    assert "bytes" in str(info.value)  # the reason, for the server's log
    told = info.value.client_text
    assert "render the frames" in told
    assert str(os.stat(movie).st_size) not in told and "mtime" not in told


def test_media_roots_confine_the_files_a_client_may_name(movie, tmp_path):
    try:
        source_frames.set_media_roots([str(tmp_path)])
        with pytest.raises(SourceUnavailable, match="outside the media roots"):
            read_source_frames(source_for(movie, [0]))
        inside = tmp_path / "inside.mp4"
        inside.write_bytes(movie.read_bytes())
        frames, _ = read_source_frames(source_for(inside, [0]))
        assert decode_index(frames[0]) == 0
        escape = tmp_path / "escape.mp4"
        escape.symlink_to(movie)  # a link out of the root is outside it
        with pytest.raises(SourceUnavailable, match="outside the media roots"):
            read_source_frames(source_for(escape, [0]))
    finally:
        source_frames.set_media_roots([])


@pytest.fixture()
def held_reads(monkeypatch):
    """Reads of the paths in the returned set wait (a stalled disk) until the event is set."""
    import threading

    held, release = set(), threading.Event()
    real = source_frames._decode

    def stalled_decode(path, *args):
        if path in held:
            release.wait(30)
        return real(path, *args)

    monkeypatch.setattr(source_frames, "_decode", stalled_decode)
    yield held, release
    release.set()


def test_a_stalled_read_holds_no_other_file(movie, tmp_path, held_reads):
    held, release = held_reads
    stalled = tmp_path / "stalled.mp4"
    stalled.write_bytes(movie.read_bytes())
    held.add(str(stalled))
    waiting = source_frames.read_soon(source_for(stalled, [1]))
    frames, _ = in_thread(lambda: source_frames.read_soon(source_for(movie, [3])).result(10),
                          timeout_s=10.0)
    assert decode_index(frames[0]) == 3 and not waiting.done()
    release.set()
    assert decode_index(waiting.result(10)[0][0]) == 1


def test_a_cancelled_job_stops_waiting_for_a_stalled_read(movie, held_reads):
    import threading

    held, _ = held_reads
    held.add(str(movie))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(source_frames.ReadCancelled):
        in_thread(lambda: read_source_frames(source_for(movie, [2]), cancel=cancel),
                  timeout_s=5.0)


def test_a_read_past_its_deadline_is_refused(movie, held_reads):
    held, _ = held_reads
    held.add(str(movie))
    refused = source_frames.read_soon(source_for(movie, [4]), deadline_s=0.2)
    with pytest.raises(SourceUnavailable, match="took longer than"):
        refused.result(5)
