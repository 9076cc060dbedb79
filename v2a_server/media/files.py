"""Checking an input file before decoding it, so the error names the file and its role."""

from __future__ import annotations

import os
from pathlib import Path


def existing_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path; FileNotFoundError ("{what} file not found: ...") if it is not a file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    return path
