"""Takes of a Foley strip: switch which one plays, audition one's file, delete one's file.

A Foley strip plays its active take; only that take's onset markers are on the timeline.
Switching stores where the editor left the active take's markers (moved, deleted, reviewed),
removes them and adds the new take's, so every take shows its own markers and going back
restores them as they were left.
"""

from __future__ import annotations

import os

import bpy

from . import compat, markers, media, review, sync


class TakeError(RuntimeError):
    """The take cannot be used; nothing was changed."""


def take_path(take) -> str:
    """Absolute path of a take's file."""
    return os.path.normpath(bpy.path.abspath(take.filepath))


def find_take(settings, take_id: str) -> int:
    """Index of the take with ``take_id`` in ``settings.takes`` (-1: none)."""
    return next((i for i, t in enumerate(settings.takes) if t.take_id == take_id), -1)


def marker_frames(take, scene_fps: float) -> list[int]:
    """Timeline frames of a take's onset markers."""
    return sync.onset_marker_frames((o.time_s for o in take.onsets), take.frame_start,
                                    scene_fps, take.frame_end)


def stash_markers(scene, take) -> None:
    """Before ``take``'s markers leave the timeline, keep in its review records where the
    editor left them (moved markers keep their new frame and time; deleted ones are dropped),
    so switching back shows the take as it was left."""
    on_timeline = review.take_markers(scene, take)
    for index in reversed(range(len(take.review_markers))):
        item = take.review_markers[index]
        marker = on_timeline.get(item.marker_name)
        if marker is None:
            take.review_markers.remove(index)
        elif marker.frame != item.frame:
            item.time_s = review.marker_time_s(scene, take, item, marker)
            item.frame = marker.frame


def restore_markers(scene, take, scene_fps: float) -> list[int]:
    """Put ``take``'s markers on the timeline: from its review records, or (a take without
    any) from its stored onsets. Returns their frames, sorted."""
    if not len(take.review_markers):
        return [m.frame for m in markers.add_markers(scene, take.marker_tag,
                                                     marker_frames(take, scene_fps))]
    for item in take.review_markers:
        marker = scene.timeline_markers.new(item.marker_name, frame=item.frame)
        marker.select = False
        item.marker_name = marker.name
    return sorted(item.frame for item in take.review_markers)


def read_take_audio(take):
    """A take's samples (mono float32) and rate, read from its file (the inpaint source).

    Raises:
        TakeError: the file is missing or not a WAV this add-on reads (named in the message).
    """
    path = take_path(take)
    try:
        with open(path, "rb") as fh:
            return media.read_wav(fh.read())
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise TakeError(f"Cannot read take {take.number}'s file {path}: {why}") from None


def load_sound(take):
    """The sound datablock of a take's file (loaded once; relative paths kept relative)."""
    path = take_path(take)
    if not os.path.isfile(path):
        raise TakeError(f"The file of take {take.number} is missing: {path}")
    sound = bpy.data.sounds.load(path, check_existing=True)
    if take.filepath.startswith("//") and sound.filepath != take.filepath:
        sound.filepath = take.filepath
    return sound


def set_strip_sound(strip, sound) -> None:
    """Make ``strip`` play ``sound``; the sound it played is removed once nothing uses it."""
    old = strip.sound
    if old == sound:
        return
    strip.sound = sound
    if old is not None and old.users == 0:
        bpy.data.sounds.remove(old)


def switch_take(scene, strip, index: int) -> None:
    """Make take ``index`` the one ``strip`` plays, with its markers on the timeline.

    Raises:
        TakeError: no such take, or its file is missing (nothing was changed).
    """
    settings = strip.foley
    if not 0 <= index < len(settings.takes):
        raise TakeError(f"{strip.name!r} has no take at position {index + 1}")
    take = settings.takes[index]
    sound = load_sound(take)
    fps = sync.scene_rate(scene.render.fps, scene.render.fps_base)
    if 0 <= settings.active_take < len(settings.takes):
        previous = settings.takes[settings.active_take]
        stash_markers(scene, previous)
        markers.remove_take_markers(scene, previous.marker_tag)
    markers.remove_take_markers(scene, take.marker_tag)  # never twice
    set_strip_sound(strip, sound)
    restore_markers(scene, take, fps)
    settings.active_take = index
    settings.take_index = index


def file_in_use_elsewhere(scene, path: str, strip, index: int) -> bool:
    """Another take (of any Foley strip) or another sound datablock uses ``path``."""
    for other in compat.all_strips(scene.sequence_editor):
        for i, take in enumerate(other.foley.takes):
            if (other, i) != (strip, index) and take_path(take) == path:
                return True
    own = strip.sound
    return any(s != own and s.users > 0 and os.path.normpath(bpy.path.abspath(s.filepath)) == path
               for s in bpy.data.sounds)


def delete_take(scene, strip, index: int) -> str:
    """Delete take ``index``'s file and its record; returns the path deleted ("" if none).

    The strip keeps at least one take. Deleting the active take first switches the strip to
    the newest other take. The file is only deleted when nothing else uses it.

    Raises:
        TakeError: the only take, or no such take.
    """
    settings = strip.foley
    if not 0 <= index < len(settings.takes):
        raise TakeError(f"{strip.name!r} has no take at position {index + 1}")
    if len(settings.takes) == 1:
        raise TakeError(f"Take {settings.takes[index].number} is the only take of "
                        f"{strip.name!r}: delete the strip instead")
    if settings.active_take == index:
        others = [i for i in range(len(settings.takes)) if i != index]
        switch_take(scene, strip, max(others, key=lambda i: settings.takes[i].number))
    take = settings.takes[index]
    path = take_path(take)
    markers.remove_take_markers(scene, take.marker_tag)
    deleted = ""
    if os.path.isfile(path) and not file_in_use_elsewhere(scene, path, strip, index):
        for sound in list(bpy.data.sounds):
            if sound.users == 0 and os.path.normpath(bpy.path.abspath(sound.filepath)) == path:
                bpy.data.sounds.remove(sound)
        os.unlink(path)
        deleted = path
    active_id = settings.takes[settings.active_take].take_id
    settings.takes.remove(index)
    settings.active_take = find_take(settings, active_id)
    settings.take_index = min(settings.take_index, len(settings.takes) - 1)
    return deleted


# ---- take audition: play a take's file without touching the timeline -----------------------
# (not the onset audition of sync review, which plays a window of the timeline: onset_audition)

_take_audition = {"handle": None, "path": ""}


def audition_take(take):
    """Play a take's file on the audio device (stops an audition already playing)."""
    import aud

    path = take_path(take)
    if not os.path.isfile(path):
        raise TakeError(f"The file of take {take.number} is missing: {path}")
    stop_take_audition()
    _take_audition["handle"] = aud.Device().play(aud.Sound(path))
    _take_audition["path"] = path
    return _take_audition["handle"]


def take_audition_playing() -> str:
    """Path of the file being auditioned ("" when none)."""
    handle = _take_audition["handle"]
    if handle is not None and not handle.status:  # played to the end (or no audio device)
        _take_audition["handle"] = None
    return _take_audition["path"] if _take_audition["handle"] is not None else ""


def stop_take_audition() -> bool:
    """Stop the take audition; True if one was playing."""
    handle, _take_audition["handle"], _take_audition["path"] = _take_audition["handle"], None, ""
    if handle is None:
        return False
    handle.stop()
    return True
