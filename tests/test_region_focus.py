"""Focus regions: two-source synthetic clips, boxes per frame, and what the model is shown."""

from __future__ import annotations

import numpy as np
import pytest

from v2a_server.serving.focus_region import (
    FOCUS_METHODS,
    apply_focus,
    background_plate,
    region_boxes,
    region_masks,
    stable_crop_box,
)
from v2a_server.synth.render import render_frames
from v2a_server.synth.two_source import make_two_source_clip

DURATION_S = 4.0


@pytest.fixture(scope="module")
def pair():
    return make_two_source_clip(3, duration_s=DURATION_S)


def test_two_source_clip_has_two_apart_sources_with_own_contacts(pair):
    left, right = pair.left, pair.right
    assert left.box[0] + left.box[2] <= right.box[0], "left box must end before the right one starts"
    every = np.sort(pair.clip.event_times_s)
    np.testing.assert_allclose(np.sort(np.concatenate([left.contact_times_s, right.contact_times_s])), every)
    for side, other in (("left", pair.right), ("right", pair.left)):
        only = pair.only_contacts_s(side)
        assert len(only) >= 1
        assert np.all(np.min(np.abs(only[:, None] - other.contact_times_s[None]), axis=1) > 0.1)
    again = make_two_source_clip(3, duration_s=DURATION_S)
    np.testing.assert_array_equal(again.left.boxes, left.boxes)


def test_each_frame_box_holds_its_source_and_none_of_the_other(pair):
    clip = pair.clip
    _, labels = render_frames(clip.scene, clip.fps, clip.frames.shape[1], return_labels=True)
    for source, other in ((pair.left, pair.right), (pair.right, pair.left)):
        inside = region_masks(source.boxes, *labels.shape[1:])
        own = np.isin(labels, source.body_ids)
        assert own.any() and not (own & ~inside).any(), "a source pixel fell outside its box"
        assert not (np.isin(labels, other.body_ids) & inside).any(), "the other source is in the box"


def test_region_boxes_holds_one_box_and_interpolates_keys():
    np.testing.assert_allclose(region_boxes([[0.1, 0.2, 0.3, 0.4]], None, 3, 25.0), [[0.1, 0.2, 0.3, 0.4]] * 3)
    keyed = region_boxes([[0.0, 0.0, 0.2, 0.2], [0.4, 0.0, 0.2, 0.2]], [0.0, 0.4], 12, 25.0)
    assert keyed.shape == (12, 4)
    np.testing.assert_allclose(keyed[[0, 5, 10, 11], 0], [0.0, 0.2, 0.4, 0.4])  # held after the last key


@pytest.mark.parametrize("boxes, times, message", [
    ([], None, "empty"),
    ([[0.5, 0.5, 0.6, 0.1]], None, r"boxes\[0\]"),
    ([[0.1, 0.1, 0.1, 0.1], [0.2, 0.2, 0.1, 0.1]], None, "times_s"),
    ([[0.1, 0.1, 0.1, 0.1], [0.2, 0.2, 0.1, 0.1]], [0.5, 0.5], "ascending"),
    ([[0.1, 0.1, 0.1, 0.1]], [0.0, 1.0], "1 boxes but 2 times_s"),
])
def test_bad_regions_name_what_is_wrong(boxes, times, message):
    with pytest.raises(ValueError, match=message):
        region_boxes(boxes, times, 10, 25.0)


def test_focus_keeps_the_region_and_removes_the_other_sources_motion(pair):
    frames = pair.clip.frames
    boxes = pair.left.boxes
    inside = region_masks(boxes, *frames.shape[1:3])
    other_box = region_masks(pair.right.boxes, *frames.shape[1:3])
    for method in FOCUS_METHODS:
        shown = apply_focus(frames, boxes, method)
        if method == "crop":
            x, y, _, _ = stable_crop_box(boxes)
            r0, c0 = int(np.floor(y * frames.shape[1])), int(np.floor(x * frames.shape[2]))
            assert shown.shape[1] < frames.shape[1] and shown.shape[2] < frames.shape[2]
            np.testing.assert_array_equal(shown, frames[:, r0 : r0 + shown.shape[1], c0 : c0 + shown.shape[2]])
            assert inside[:, r0 : r0 + shown.shape[1], c0 : c0 + shown.shape[2]].sum() == inside.sum()
            continue
        assert shown.shape == frames.shape
        np.testing.assert_array_equal(shown[inside], frames[inside])
        if method != "blur":  # a blur keeps a smear of the other source's motion: the bench shows it
            outside_other = other_box & ~inside
            motion = np.abs(np.diff(shown.astype(np.int16), axis=0)).max(axis=-1)[outside_other[1:]]
            assert motion.max() <= (2 if method == "mean" else 0), method  # the mean moves a little
    plate = background_plate(frames)
    assert plate.shape == frames.shape[1:]


def test_unknown_method_and_box_count_are_named(pair):
    frames = pair.clip.frames
    with pytest.raises(ValueError, match="focus method"):
        apply_focus(frames, pair.left.boxes, "sharpen")
    with pytest.raises(ValueError, match="boxes for"):
        apply_focus(frames, pair.left.boxes[:3], "still")


def test_v2a_synth_two_source_writes_each_sources_contacts_and_boxes(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "two"
    done = subprocess.run([sys.executable, "-m", "v2a_server.cli", "synth", "--out", str(out), "--test", "1",
                           "--duration", "2.0", "--size", "64", "--seed", "4", "--two-source"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [row] = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    pair = make_two_source_clip(row["seed"], duration_s=2.0, size_px=64)
    for side, source in pair.sources().items():
        written = row["sources"][side]
        np.testing.assert_allclose(written["contacts_s"], source.contact_times_s, atol=1e-6)
        np.testing.assert_allclose(written["only_contacts_s"], pair.only_contacts_s(side), atol=1e-6)
        assert len(written["boxes"]) == row["num_frames"] == 50
    every = sorted(e["time_s"] for e in row["events"])
    assert sorted(row["sources"]["left"]["contacts_s"] + row["sources"]["right"]["contacts_s"]) == \
        pytest.approx(every, abs=1e-6)
