"""A folder's files as a test compares them."""

from __future__ import annotations

from pathlib import Path

from resources.remote.download import ORIGIN


def read_tree(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` -> its bytes; the origin mark MQIC writes on what it brings home
    (``ORIGIN``, at the top) is MQIC's, not the job's, and left out."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() != ORIGIN
    }
