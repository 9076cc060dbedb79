"""Where generated audio goes, and writing it without ever replacing a file (bpy-free)."""

from __future__ import annotations

import os
import re
from typing import Callable

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM_CHARS = 48


class OutputFolderError(ValueError):
    """The output folder cannot be used; the message tells the user what to do."""


def resolve_output_dir(setting: str, blend_filepath: str, blender_tempdir: str = "") -> str:
    """The absolute folder for generated audio.

    Args:
        setting: the preference, e.g. ``//foley/`` (next to the .blend) or an absolute path.
        blend_filepath: ``bpy.data.filepath`` ("" while the file was never saved).
        blender_tempdir: ``bpy.app.tempdir``, deleted when Blender exits.
    Raises:
        OutputFolderError: unsaved file with a ``//`` folder, a CWD-relative folder, or a
            folder inside Blender's temporary directory.
    """
    setting = (setting or "").strip()
    if not setting:
        raise OutputFolderError("Set an output folder for Foley audio in the add-on preferences")
    if setting.startswith("//"):
        if not blend_filepath:
            raise OutputFolderError(
                f"Save the .blend file first: Foley audio is written next to it ({setting})")
        folder = os.path.join(os.path.dirname(os.path.abspath(blend_filepath)), setting[2:])
    else:
        folder = os.path.expanduser(setting)
        if not os.path.isabs(folder):
            raise OutputFolderError(
                f"The Foley output folder {setting!r} must be absolute or start with // "
                "(relative to the .blend file)")
    folder = os.path.normpath(folder)
    if blender_tempdir:
        temp = os.path.normpath(os.path.abspath(blender_tempdir))
        if folder == temp or folder.startswith(temp + os.sep):
            raise OutputFolderError(
                f"The Foley output folder {folder} is inside Blender's temporary folder, which "
                "is deleted on exit; choose another folder")
    return folder


def safe_stem(name: str) -> str:
    """A file-name-safe version of a strip name ("Clip 01.mp4" -> "Clip_01.mp4")."""
    stem = _UNSAFE.sub("_", name).strip("._-")[:MAX_STEM_CHARS]
    return stem or "strip"


def take_filename(strip_name: str, take_number: int) -> str:
    """``<strip>_take<NNN>.wav``."""
    return f"{safe_stem(strip_name)}_take{take_number:03d}.wav"


def write_new_file(folder: str, name_for: Callable[[int], str], number: int,
                   data: bytes, max_tries: int = 10000) -> tuple[str, int]:
    """Write ``data`` to ``folder/name_for(n)`` for the first ``n >= number`` not taken.

    Never replaces a file: the data goes to a private temporary file first, which is then
    hard-linked to the final name (the link fails if the name exists, atomically); where links
    are not supported the final name is created exclusively. A failure leaves no file behind.

    Returns:
        (absolute path written, the ``n`` used).
    """
    os.makedirs(folder, exist_ok=True)
    temp = os.path.join(folder, f".foley-{os.getpid()}-{id(data):x}.part")
    with open(temp, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        for n in range(number, number + max_tries):
            path = os.path.join(folder, name_for(n))
            try:
                os.link(temp, path)
                return path, n
            except FileExistsError:
                continue
            except OSError:  # no hard links here (FAT, some network shares)
                if _write_exclusive(path, data):
                    return path, n
        raise OSError(f"no free file name in {folder} after {max_tries} tries")
    finally:
        os.unlink(temp)


def _write_exclusive(path: str, data: bytes) -> bool:
    """Create ``path`` (must not exist) holding ``data``; False if it exists."""
    try:
        fh = open(path, "xb")
    except FileExistsError:
        return False
    try:
        with fh:
            fh.write(data)
    except BaseException:
        os.unlink(path)
        raise
    return True
