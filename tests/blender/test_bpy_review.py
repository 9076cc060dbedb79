"""Marker-guided sync review in real bpy against a real tiny-model server: navigation, audition,
the review list (markers paired with the picture's contact events: in sync, late, early, no
visual cause; silent hits and their one-click marker; the fallback to motion events for a take
from an older server), the sync picture, marker editing, persistence, and Regenerate with
Markers."""

from __future__ import annotations

import math
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bpy")

import bpy  # noqa: E402

from tests.blender.bpy_helpers import (  # noqa: E402
    add_movie,
    addon_module,
    foley_strips,
    generate,
    setup_scene,
    sound_file,
)

FPS = Fraction(24)
MOVIE_START = 1  # timeline frame of the movie's first frame (audio t = 0 of the take)
JUMP_FRAMES = (24, 48)  # the square jumps into these movie frames: motion events at 1 s, 2 s
CLIP_FRAMES = 72


def write_jump_movie(path: Path, frames: int, fps: Fraction, jumps: tuple[int, ...]) -> Path:
    """A still textured square that jumps across the picture into each frame in ``jumps``."""
    import av

    rng = np.random.default_rng(5)
    texture = rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = 320, 240
        stream.pix_fmt = "yuv420p"
        stream.codec_context.bit_rate = 4_000_000
        x = 20
        for i in range(frames):
            if i in jumps:
                x = 220 if x == 20 else 20
            image = np.full((240, 320, 3), 40, np.uint8)
            image[90:150, x:x + 60] = texture
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def jump_movie(clip_dir) -> Path:
    path = clip_dir / "jumps-24.mp4"
    if not path.exists():
        write_jump_movie(path, CLIP_FRAMES, FPS, JUMP_FRAMES)
    return path


@pytest.fixture
def generated(project, server, prefs, jobs, jump_movie):
    """A project with one generated take of the jump movie: (scene, foley strip, take, job)."""
    prefs.server_address = server.endpoint
    scene = setup_scene(FPS)
    movie = add_movie(scene, jump_movie, channel=1, frame_start=MOVIE_START)
    movie.foley.caption = "a box slams down"
    assert generate(seed=11) == {"FINISHED"}
    jobs.wait_until_idle(timeout_s=180)
    job = jobs.manager().jobs[-1]
    assert job.state == "done", job.message
    [sound] = foley_strips(scene)
    scene.sequence_editor.active_strip = sound
    return scene, sound, sound.foley.takes[0], job


def frame_of(time_s: float) -> int:
    """Marker frame of a take time (take t = 0 is MOVIE_START; halves up, as placement)."""
    return math.floor(round(MOVIE_START + time_s * float(FPS), 4) + 0.5)


def take_marker_frames(scene, take) -> list[int]:
    return sorted({m.frame for m in scene.timeline_markers if m.name.startswith(take.marker_tag)})


def png_size(path: Path) -> tuple[int, int]:
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# ---- shortcuts ------------------------------------------------------------------------------


def default_keymap_data():
    """Blender's default keymap as data (the bpy module's default keyconfig is left empty)."""
    keymap_dir = os.path.join(bpy.utils.preset_paths("keyconfig")[0], "keymap_data")
    sys.path.insert(0, keymap_dir)
    try:
        import blender_default
    finally:
        sys.path.remove(keymap_dir)
    return blender_default.generate_keymaps(blender_default.Params())


def test_shortcuts_are_registered_and_free_in_the_sequencer(addon):
    ops = addon_module("review_operators")
    keymap = bpy.context.window_manager.keyconfigs.addon.keymaps["Sequencer"]
    ours = {(i.idname, i.type, i.ctrl, i.shift, i.alt) for i in keymap.keymap_items
            if i.idname.startswith("sequencer.foley_")}
    assert ours == set(ops.KEYMAP_ITEMS)
    assert {i[0] for i in ours} == {"sequencer.foley_onset_next",
                                    "sequencer.foley_onset_previous",
                                    "sequencer.foley_onset_audition"}
    data = default_keymap_data()
    # Keymaps that handle events in the Sequencer: its own, and the global ones.
    active = [(name, content) for name, params, content in data
              if params.get("space_type") in ("SEQUENCE_EDITOR", "EMPTY")]
    names = {name for name, _ in active}
    assert {"Sequencer", "Frames", "Screen", "Window", "Markers"} <= names
    bound = {}
    for name, content in active:
        for idname, event, _props in content["items"]:
            key = (event.get("type"), bool(event.get("ctrl")), bool(event.get("shift")),
                   bool(event.get("alt")), bool(event.get("oskey")))
            bound.setdefault(key, []).append(f"{name}: {idname}")
    assert ("LEFT_ARROW", False, False, False, False) in bound  # the check sees real bindings
    for idname, key, ctrl, shift, alt in ops.KEYMAP_ITEMS:
        clash = bound.get((key, ctrl, shift, alt, False))
        assert clash is None, f"{idname} on {key} clashes with {clash}"


# ---- navigation and audition ----------------------------------------------------------------


def test_next_and_previous_step_through_the_take_markers_in_order(generated):
    scene, _sound, take, _job = generated
    review_ops = addon_module("review")
    # Two onsets of our own, so the walk has at least three stops whatever the model placed.
    for frame in (5, 40):
        review_ops.add_review_marker(scene, take, frame, (frame - MOVIE_START) / 24, 1.0,
                                     "ADDED")
    scene.timeline_markers.new("not foley", frame=30)  # other markers are not onsets
    frames = take_marker_frames(scene, take)
    assert len(frames) >= 2 and 30 not in frames

    scene.frame_set(0)
    visited = []
    while bpy.ops.sequencer.foley_onset_next() == {"FINISHED"}:
        visited.append(scene.frame_current)
        row = review_ops.row_for_frame(scene, take, scene.frame_current)
        assert take.review_markers[take.active_review_marker].marker_name == row.marker_name
    assert visited == frames
    assert scene.frame_current == frames[-1]  # at the end it stays

    back = []
    while bpy.ops.sequencer.foley_onset_previous() == {"FINISHED"}:
        back.append(scene.frame_current)
    assert back == frames[-2::-1]
    assert scene.frame_current == frames[0]


def test_audition_plays_the_window_then_restores_playback_state(project, addon):
    audition = addon_module("onset_audition")
    scene = setup_scene(FPS)
    scene.frame_set(50)
    scene.use_preview_range = True
    scene.frame_preview_start, scene.frame_preview_end = 10, 20
    before = (scene.frame_current, scene.use_preview_range, scene.frame_preview_start,
              scene.frame_preview_end)

    t0 = time.monotonic()
    assert bpy.ops.sequencer.foley_onset_audition() == {"FINISHED"}
    state = audition.active()
    assert state is not None
    # 0.5 s before and after at 24 fps: frames 38..62, playhead on the first.
    assert (scene.use_preview_range, scene.frame_preview_start,
            scene.frame_preview_end) == (True, 38, 62)
    assert scene.frame_current == 38
    screen = bpy.context.window_manager.windows[0].screen
    assert state.playing and screen.is_animation_playing

    while (interval := audition.poll()) is not None:
        assert time.monotonic() - t0 < 5.0, "the audition never ended"
        time.sleep(interval)
    waited = time.monotonic() - t0
    assert 1.0 <= waited < 2.0  # the window is 1 s (+ the timer's margin)
    assert audition.active() is None and not screen.is_animation_playing
    assert (scene.frame_current, scene.use_preview_range, scene.frame_preview_start,
            scene.frame_preview_end) == before

    # A custom window, without a preview range before.
    scene.use_preview_range = False
    assert bpy.ops.sequencer.foley_onset_audition(before_s=0.25, after_s=0.0) == {"FINISHED"}
    assert (scene.frame_preview_start, scene.frame_preview_end) == (44, 50)
    assert screen.is_animation_playing
    audition.stop()
    assert not screen.is_animation_playing
    assert not scene.use_preview_range and scene.frame_current == 50
    with pytest.raises(RuntimeError, match="window is empty"):
        bpy.ops.sequencer.foley_onset_audition(before_s=0.0, after_s=0.0)


# ---- review list, flags, sync picture -------------------------------------------------------


def test_review_list_matches_the_returned_onsets_and_offsets(generated):
    """A take from a server before contact events: offsets to the nearest motion event."""
    scene, _sound, take, job = generated
    review_ops = addon_module("review")
    body = {**job.result_body, **(job.review_body or {})}  # 1.4: review data after it
    assert take.has_contacts  # this server sent them: forget them, as an old server's take
    take.has_contacts = False
    take.contacts.clear()
    motion = body["motion"]["times_s"]
    # The server's motion events of the frames it received: the jumps at 1 s and 2 s.
    assert motion == pytest.approx([1.0, 2.0])
    assert [e.time_s for e in take.motion_events] == pytest.approx(motion)
    assert [o.time_s for o in take.audio_onsets] == pytest.approx(
        body["audio_onsets"][0]["times_s"], abs=1e-6)

    # The model's markers: one row per marker frame, the first onset's exact time.
    rows = review_ops.review_rows(scene, take)
    by_frame = {}
    for t, p in zip(body["onset_times_s"], body["onset_probabilities"]):
        frame = frame_of(t)
        if frame < take.frame_end:
            first_t, best = by_frame.get(frame, (t, 0.0))
            by_frame[frame] = (first_t, max(best, p))
    assert [r.frame for r in rows] == sorted(by_frame)
    for row in rows:
        t, p = by_frame[row.frame]
        assert row.time_s == pytest.approx(t, abs=1e-5)
        assert row.probability == pytest.approx(p, abs=1e-6)
        assert row.state == "UNREVIEWED"

    # Markers where we know the answer: on the event, one frame late, 3 frames late / early.
    known = {25: 0.0, 26: 1 / 24, 28: 3 / 24, 46: -3 / 24}  # events at frames 25 and 49
    for frame in known:
        scene.frame_set(frame)
        assert bpy.ops.sequencer.foley_marker_add() == {"FINISHED"}
    rows = review_ops.review_rows(scene, take)
    for row in rows:
        expected = min((row.time_s - e for e in motion), key=abs)
        assert row.offset_s == pytest.approx(expected, abs=1e-5)
        assert row.offset_frames == pytest.approx(expected * 24, abs=1e-4)
        assert row.flagged == (abs(expected * 24) > 1 + 1e-6)
        assert row.verdict == ""
    assert review_ops.silent_hits(scene, take) == []
    added = {r.frame: r for r in rows if r.state == "ADDED"}
    assert {f: round(r.offset_s, 4) for f, r in added.items()} == {
        f: round(o, 4) for f, o in known.items()}
    assert {f for f, r in added.items() if r.flagged} == {28, 46}

    visible, order = review_ops.filter_and_order(scene, take, needs_attention=True)
    shown = {take.review_markers[i].marker_name for i, v in enumerate(visible) if v}
    assert shown == {r.marker_name for r in rows if r.flagged}
    visible, order = review_ops.filter_and_order(scene, take, needs_attention=False)
    assert all(visible)
    listed = sorted(range(len(order)), key=lambda i: order[i])
    assert [take.review_markers[i].marker_name for i in listed] == [r.marker_name for r in rows]


def use_contacts(take, contacts):
    """Give ``take`` these contact events ((seconds, strength) pairs) instead of the server's."""
    take.contacts.clear()
    for time_s, strength in contacts:
        contact = take.contacts.add()
        contact.time_s, contact.strength = time_s, strength
    take.has_contacts = True


def test_review_list_pairs_markers_with_contacts_states_and_silent_hits(generated):
    scene, _sound, take, job = generated
    review_ops = addon_module("review")
    body = {**job.result_body, **(job.review_body or {})}  # 1.4: review data after it
    assert take.has_contacts
    assert [c.time_s for c in take.contacts] == pytest.approx(body["contacts"]["times_s"])
    assert [c.strength for c in take.contacts] == pytest.approx(body["contacts"]["strengths"])

    while take.review_markers:  # the model's markers out: ours, where the answer is known
        review_ops.remove_review_marker(scene, take, 0)
    use_contacts(take, [(1.0, 0.9), (2.0, 1.0), (2.5, 0.8), (0.25, 0.2)])
    sync_frame, late_frame, lonely_frame = frame_of(1.0), frame_of(2.0) + 4, frame_of(0.5)
    for frame in (sync_frame, late_frame, lonely_frame):
        scene.frame_set(frame)
        assert bpy.ops.sequencer.foley_marker_add() == {"FINISHED"}
    rows = {r.frame: r for r in review_ops.review_rows(scene, take)}
    assert {f: r.verdict for f, r in rows.items()} == {
        sync_frame: "in_sync", late_frame: "late", lonely_frame: "no_visual_cause"}
    assert rows[late_frame].offset_s == pytest.approx(4 / 24, abs=1e-5)
    assert rows[late_frame].offset_frames == pytest.approx(4.0, abs=1e-4)
    assert rows[lonely_frame].offset_s is None
    assert {f for f, r in rows.items() if r.flagged} == {late_frame, lonely_frame}
    # the strong contact at 2.5 s has no marker: a silent hit; the weak one at 0.25 s is not
    [hit] = review_ops.silent_hits(scene, take)
    assert (hit.index, hit.frame, hit.time_s) == (2, frame_of(2.5), pytest.approx(2.5))

    # "needs attention": late and no-visual-cause rows only (silent hits have their own list)
    visible, _order = review_ops.filter_and_order(scene, take, needs_attention=True)
    shown = {take.review_markers[i].frame for i, v in enumerate(visible) if v}
    assert shown == {late_frame, lonely_frame}
    ui = addon_module("review_ui")
    assert ui.verdict_text(rows[late_frame]) == "late +167 ms · +4.0 f"
    assert ui.verdict_text(rows[lonely_frame]) == "no visual cause"

    # the one-click marker at the silent hit: in sync, and no silent hit is left
    assert bpy.ops.sequencer.foley_silent_hit_marker(index=2) == {"FINISHED"}
    rows = {r.frame: r for r in review_ops.review_rows(scene, take)}
    assert rows[frame_of(2.5)].verdict == "in_sync" and rows[frame_of(2.5)].state == "ADDED"
    assert review_ops.silent_hits(scene, take) == []
    with pytest.raises(RuntimeError, match="not a silent hit"):
        bpy.ops.sequencer.foley_silent_hit_marker(index=3)  # too weak
    # moving the late marker onto its contact makes it in sync
    take.active_review_marker = rows[late_frame].index
    assert bpy.ops.sequencer.foley_marker_nudge(frames=-4) == {"FINISHED"}
    assert review_ops.review_row(scene, take, rows[late_frame].index).verdict == "in_sync"


def test_sync_picture_is_written_beside_the_audio_and_opens_as_an_image(generated):
    scene, sound, take, job = generated
    server = (job.review_body or job.result_body)["sync_pictures"]  # 1.4: in the review
    path = Path(bpy.path.abspath(take.sync_picture))
    audio = sound_file(sound)
    assert path.parent == audio.parent and path.name == f"{audio.stem}_sync.png"
    assert png_size(path) == (server["width_px"], server["height_px"]) == (1280, 720)
    assert bpy.ops.sequencer.foley_sync_picture_show() == {"FINISHED"}
    image = next(i for i in bpy.data.images if bpy.path.abspath(i.filepath) == str(path))
    assert tuple(image.size) == (1280, 720)

    path.unlink()
    with pytest.raises(RuntimeError, match="has no sync picture"):
        bpy.ops.sequencer.foley_sync_picture_show()


# ---- editing, persistence, regeneration -----------------------------------------------------


def test_marker_edits_and_review_state_survive_save_and_reopen(generated, tmp_path):
    scene, sound, take, _job = generated
    review_ops = addon_module("review")
    use_contacts(take, [(1.0, 0.9), (2.0, 1.0), (2.5, 0.8)])  # verdicts of every kind
    for frame in (25, 49, 60):
        scene.frame_set(frame)
        assert bpy.ops.sequencer.foley_marker_add() == {"FINISHED"}
    rows = {r.frame: r for r in review_ops.review_rows(scene, take) if r.state == "ADDED"}
    index = {f: r.index for f, r in rows.items()}

    take.active_review_marker = index[25]
    assert bpy.ops.sequencer.foley_marker_accept() == {"FINISHED"}
    assert take.review_markers[index[25]].state == "ADDED"  # an added one stays "added"
    take.active_review_marker = index[49]
    assert bpy.ops.sequencer.foley_marker_nudge(frames=-2) == {"FINISHED"}
    nudged = take.review_markers[index[49]]
    assert nudged.frame == 47 and nudged.time_s == pytest.approx(46 / 24, abs=1e-5)
    rejected_name = take.review_markers[index[60]].marker_name
    take.active_review_marker = index[60]
    assert bpy.ops.sequencer.foley_marker_reject() == {"FINISHED"}
    assert rejected_name not in scene.timeline_markers
    assert all(i.marker_name != rejected_name for i in take.review_markers)
    model_items = [i for i in take.review_markers if i.state == "UNREVIEWED"]
    if model_items:  # accept the model's first marker
        take.active_review_marker = list(take.review_markers).index(model_items[0])
        assert bpy.ops.sequencer.foley_marker_accept() == {"FINISHED"}
        assert model_items[0].state == "ACCEPTED"
    scene.foley.review_needs_attention = True
    scene.frame_set(take.frame_end + 10)
    with pytest.raises(RuntimeError, match="outside take"):
        bpy.ops.sequencer.foley_marker_add()

    def state(scene):
        [strip] = foley_strips(scene)
        t = strip.foley.takes[0]
        return {
            "rows": [(r.marker_name, r.frame, round(r.time_s, 5), round(r.probability, 5),
                      r.state, r.verdict, r.flagged) for r in review_ops.review_rows(scene, t)],
            "markers": sorted((m.name, m.frame) for m in scene.timeline_markers),
            "motion": [round(e.time_s, 5) for e in t.motion_events],
            "contacts": (t.has_contacts, [(round(c.time_s, 5), round(c.strength, 5))
                                          for c in t.contacts]),
            "silent_hits": [(h.frame, round(h.time_s, 5))
                            for h in review_ops.silent_hits(scene, t)],
            "onsets": [round(e.time_s, 5) for e in t.audio_onsets],
            "picture": bpy.path.abspath(t.sync_picture),
            "active": t.active_review_marker,
            "filter": scene.foley.review_needs_attention,
        }

    saved = state(scene)
    assert len(saved["rows"]) >= 2 and saved["motion"]
    assert {row[5] for row in saved["rows"]} <= {"in_sync", "late", "early", "no_visual_cause"}
    assert saved["contacts"][0] and len(saved["contacts"][1]) == 3
    bpy.ops.wm.save_mainfile()
    path = bpy.data.filepath
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    bpy.ops.wm.open_mainfile(filepath=path)
    scene = bpy.context.scene
    assert state(scene) == saved
    assert Path(saved["picture"]).is_file()


def wav_samples(path: Path) -> tuple[np.ndarray, int]:
    import soundfile

    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=False)
    return audio, rate


def test_regenerate_with_markers_sends_the_edited_markers_as_hints(generated, jobs):
    scene, sound, take, _job = generated
    review_ops = addon_module("review")
    while take.review_markers:  # start from a clean slate: reject every model marker
        review_ops.remove_review_marker(scene, take, 0)
    for frame in (13, 25, 49):
        scene.frame_set(frame)
        assert bpy.ops.sequencer.foley_marker_add() == {"FINISHED"}
    take.active_review_marker = 0
    assert bpy.ops.sequencer.foley_marker_nudge(frames=1) == {"FINISHED"}  # 13 -> 14
    expected = [13 / 24, 24 / 24, 48 / 24]

    folder = sound_file(sound).parent
    squatter = folder / "Clip_take002_sync.png"  # someone's file where take 2's picture would go
    squatter.write_bytes(b"not ours")

    assert bpy.ops.sequencer.foley_regenerate_markers() == {"FINISHED"}
    job = jobs.manager().jobs[-1]
    assert job.settings.onset_hints_s == pytest.approx(expected, abs=1e-5)
    assert job.settings.seed == int(take.seed)
    assert job.regen is not None and job.regen.whole_take  # nothing of the old take is sent
    jobs.wait_until_idle(timeout_s=180)
    assert job.state == "done", job.message
    # A new take of the same Foley strip (takes list), which the strip now plays.
    assert foley_strips(scene) == [sound]
    record = sound.foley
    assert len(record.takes) == 2 and record.active_take == 1
    take, new = record.takes[0], record.takes[1]
    assert new.hinted and not take.hinted
    assert (new.number, new.seed, new.caption) == (2, take.seed, take.caption)
    assert (new.frame_start, new.frame_end) == (take.frame_start, take.frame_end)
    assert new.based_on == take.take_id
    picture = Path(bpy.path.abspath(new.sync_picture))
    assert picture == folder / "Clip_take002_sync.001.png" and png_size(picture) == (1280, 720)
    assert squatter.read_bytes() == b"not ours"
    # The new take's markers are its own onsets; the first take's edited markers come back,
    # as the editor left them, when the strip switches back to it.
    assert all(m.name.startswith(new.marker_tag) for m in scene.timeline_markers
               if m.name.startswith("Foley "))
    addon_module("takes").switch_take(scene, sound, 0)
    assert [round(r.time_s, 5) for r in review_ops.review_rows(scene, take)] == \
        pytest.approx(expected, abs=1e-5)


def test_regenerate_preview_range_keeps_the_take_outside_it(generated, jobs):
    scene, sound, take, _job = generated
    scene.use_preview_range = True
    scene.frame_preview_start, scene.frame_preview_end = 25, 48  # take time 1.0 .. 2.0 s
    assert bpy.ops.sequencer.foley_regenerate_markers(use_preview_range=True) == {"FINISHED"}
    job = jobs.manager().jobs[-1]
    assert job.regen.range_s == pytest.approx((1.0, 2.0)) and not job.regen.whole_take
    old_path = sound_file(sound)
    old, rate = wav_samples(old_path)
    assert job.regen.sample_rate == rate
    assert np.array_equal(job.regen.audio, old)
    jobs.wait_until_idle(timeout_s=180)
    assert job.state == "done", job.message
    assert foley_strips(scene) == [sound] and len(sound.foley.takes) == 2
    new, _ = wav_samples(sound_file(sound))  # the strip now plays the new take
    assert sound_file(sound) != old_path and np.array_equal(wav_samples(old_path)[0], old)
    assert new.shape == old.shape
    # Outside the range (and the model's crossfade margin) the take's audio is kept.
    keep = np.r_[0:int(0.7 * rate), int(2.3 * rate):len(old)]
    inside = slice(int(1.2 * rate), int(1.8 * rate))
    kept = np.corrcoef(old[keep], new[keep])[0, 1]
    assert kept > 0.95, kept
    assert np.corrcoef(old[inside], new[inside])[0, 1] < kept

    scene.use_preview_range = False
    with pytest.raises(RuntimeError, match="preview range"):
        bpy.ops.sequencer.foley_regenerate_markers(use_preview_range=True)
