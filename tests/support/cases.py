"""Case folders as a user would drop them."""

from __future__ import annotations

from pathlib import Path


def drop_case(
    inbox: Path,
    name: str,
    script: str | None = "echo ok > out.txt\n",
    *,
    files: dict[str, bytes] | None = None,
    ready: bool = True,
) -> Path:
    """Write a case folder: its entry script (``None``: none), data files and the READY marker."""
    folder = inbox / name
    folder.mkdir(parents=True)
    if script is not None:
        (folder / "run.sh").write_text(script)
    for file_name, content in (files or {"input.dat": b"x" * 100}).items():
        (folder / file_name).write_bytes(content)
    if ready:
        (folder / "READY").touch()
    return folder
