"""Onset markers of a take on the timeline: their names, adding and removing them.

A take's markers are named ``<marker_tag><k>`` (k = 1, 2, ... in frame order) where the tag is
the marker prefix and the take id. This module imports nothing else from the add-on, so that
placement, takes and review can all use it.
"""

from __future__ import annotations

MAX_NAME_CHARS = 63  # Blender names (strips, markers) hold 63 bytes
MAX_TAG_CHARS = 40  # leaves room in a marker name for the marker's number


def clip_name(name: str, limit: int = MAX_NAME_CHARS) -> str:
    """``name`` cut to what a Blender name holds (bytes, never half a character)."""
    data = name.encode("utf-8")[:limit]
    return data.decode("utf-8", errors="ignore")


def take_marker_tag(marker_prefix: str, take_id: str) -> str:
    """The start of every marker name of take ``take_id``."""
    return clip_name(f"{marker_prefix}{take_id}.", MAX_TAG_CHARS)


def marker_name(marker_tag: str, number: int) -> str:
    """The name of a take's marker ``number`` (1-based)."""
    return clip_name(f"{marker_tag}{number}")


def add_markers(scene, marker_tag: str, frames) -> list:
    """Markers ``<tag>1``, ``<tag>2``, ... at ``frames`` (sorted), unselected."""
    made = []
    for k, frame in enumerate(sorted(frames), start=1):
        marker = scene.timeline_markers.new(marker_name(marker_tag, k), frame=frame)
        marker.select = False
        made.append(marker)
    return made


def remove_take_markers(scene, marker_tag: str) -> int:
    """Remove the timeline markers of one take (names starting with ``marker_tag``)."""
    markers = [m for m in scene.timeline_markers if m.name.startswith(marker_tag)]
    for marker in markers:
        scene.timeline_markers.remove(marker)
    return len(markers)
