"""The one shim for Blender API drift between 4.2 LTS, 4.5 LTS, 5.0 and 5.2.

4.4 renamed ``Sequence`` to ``Strip`` and added ``strips`` / ``strips_all`` (5.0 removed the old
``sequences*`` names and the ``selected_sequences`` context key); 4.3 added
``SoundStrip.sound_offset``; 5.0 added ``context.sequencer_scene`` and requires
``image_settings.media_type`` before ``file_format``; 5.2 renamed the handle properties
(``left_handle`` / ``right_handle`` / ``content_start``) and deprecated ``frame_final_*``.
"""

from __future__ import annotations

import bpy

STRIP_TYPE = getattr(bpy.types, "Strip", None) or bpy.types.Sequence

# Strips whose picture the editor sees and the model can listen to.
VISUAL_TYPES = frozenset({"MOVIE", "IMAGE", "SCENE", "META", "MOVIECLIP"})
# Kept visible while capturing a strip: they change the look of everything below them.
GRADING_TYPES = frozenset({"ADJUSTMENT"})

# Path properties that may hold "//" (relative to the .blend); 4.5+ warns without this option.
BLEND_RELATIVE_PATH = ({"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0)
                       else set())


def vse_scene(context) -> bpy.types.Scene | None:
    """The scene whose sequencer the user edits (5.0+: may differ from ``context.scene``)."""
    return getattr(context, "sequencer_scene", None) or context.scene


def strips(sequence_editor):
    """Top-level strips of a sequence editor (``strips``, 4.2: ``sequences``)."""
    found = getattr(sequence_editor, "strips", None)
    return found if found is not None else sequence_editor.sequences


def all_strips(sequence_editor):
    """Every strip, meta children included (``strips_all``, 4.2: ``sequences_all``)."""
    found = getattr(sequence_editor, "strips_all", None)
    return found if found is not None else sequence_editor.sequences_all


def selected_strips(context, sequence_editor) -> list:
    """Selected strips at the level the user is editing (top level or inside a meta)."""
    for key in ("selected_strips", "selected_sequences"):
        found = getattr(context, key, None)
        if found is not None:
            return list(found)
    if sequence_editor.meta_stack:
        return [s for s in strips(sequence_editor.meta_stack[-1]) if s.select]
    return [s for s in strips(sequence_editor) if s.select]


def strip_range(strip) -> tuple[int, int]:
    """``(first visible frame, end frame exclusive)`` of a strip."""
    if hasattr(strip, "left_handle"):  # 5.2+
        return int(strip.left_handle), int(strip.right_handle)
    return int(strip.frame_final_start), int(strip.frame_final_end)


def set_strip_end(strip, end: int) -> None:
    """Move a strip's right handle to ``end`` (exclusive)."""
    if hasattr(strip, "right_handle"):
        strip.right_handle = end
    else:
        strip.frame_final_end = end


def content_start(strip) -> float:
    """Timeline frame where the strip's source frame 0 sits (``frame_start``)."""
    if hasattr(strip, "content_start"):
        return float(strip.content_start)
    return float(strip.frame_start)


def has_sound_offset(strip) -> bool:
    """``SoundStrip.sound_offset`` exists (Blender 4.3+)."""
    return hasattr(strip, "sound_offset")


def channel_muted(sequence_editor, channel: int) -> bool:
    """The VSE channel is muted (channels exist since 3.3; index 0 is unused)."""
    channels = getattr(sequence_editor, "channels", None)
    if channels is None or channel >= len(channels):
        return False
    return bool(channels[channel].mute)


def set_image_format(image_settings, file_format: str) -> None:
    """Set a still-image output format (5.0+: ``media_type`` first)."""
    if hasattr(image_settings, "media_type"):
        image_settings.media_type = "IMAGE"
    image_settings.file_format = file_format


def set_video_format(image_settings) -> None:
    """Set FFmpeg video output (5.0+: ``media_type = 'VIDEO'`` first)."""
    if hasattr(image_settings, "media_type"):
        image_settings.media_type = "VIDEO"
    image_settings.file_format = "FFMPEG"


def image_format_state(image_settings) -> dict:
    """The output-format fields ``set_image_format`` changes, to restore them."""
    state = {"file_format": image_settings.file_format,
             "color_mode": image_settings.color_mode,
             "color_depth": image_settings.color_depth}
    if hasattr(image_settings, "media_type"):
        state["media_type"] = image_settings.media_type
    return state


def restore_image_format(image_settings, state: dict) -> None:
    if "media_type" in state:
        image_settings.media_type = state["media_type"]
    image_settings.file_format = state["file_format"]
    for key in ("color_mode", "color_depth"):
        try:
            setattr(image_settings, key, state[key])
        except (TypeError, ValueError):  # not offered by the restored format
            pass


def new_effect(strips_collection, name: str, effect_type: str, channel: int, frame_start: int,
               length: int, **kwargs):
    """``strips.new_effect`` with its length (5.0: ``length``; before: ``frame_end``)."""
    params = strips_collection.bl_rna.functions["new_effect"].parameters
    if "length" in params:
        kwargs["length"] = length
    else:
        kwargs["frame_end"] = frame_start + length
    return strips_collection.new_effect(name=name, type=effect_type, channel=channel,
                                        frame_start=frame_start, **kwargs)


def tag_redraw_sequencer() -> None:
    """Redraw every Sequencer area (a timer has no area of its own)."""
    wm = bpy.context.window_manager
    if wm is None:
        return
    for window in wm.windows:
        screen = window.screen
        if screen is None:
            continue
        for area in screen.areas:
            if area.type == "SEQUENCE_EDITOR":
                area.tag_redraw()
