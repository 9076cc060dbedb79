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
