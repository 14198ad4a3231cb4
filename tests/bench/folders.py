"""Case folders on disk, as users drop them into the inbox."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

DEFAULT_SCRIPT = "true\n"


def make_case(
    parent: Path, name: str, *, files: int = 0, size: int = 0, script: str = DEFAULT_SCRIPT, ready: bool = True
) -> Path:
    """A valid case folder: the entry script, ``files`` inputs of ``size`` bytes, and the READY marker."""
    folder = Path(parent, name)
    folder.mkdir(parents=True)
    (folder / settings.MQIC_ENTRY_SCRIPT).write_text(script)
    payload = os.urandom(size)
    for n in range(files):
        (folder / f"input{n:04d}.dat").write_bytes(payload)
    if ready:
        (folder / settings.MQIC_READY_MARKER).touch()
    return folder


def make_inbox(inbox: Path, count: int, **case) -> Path:
    """``count`` case folders named ``case-00000``... under ``inbox``."""
    inbox.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        make_case(inbox, f"case-{n:05d}", **case)
    return inbox


def make_big_file(path: Path, size: int) -> Path:
    """``size`` bytes of incompressible data, written in 1 MB blocks (a random block repeated)."""
    block = os.urandom(1 << 20)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        for _ in range(size // len(block)):
            out.write(block)
        out.write(block[: size % len(block)])
    return path
