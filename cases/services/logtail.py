"""The end of a job log, read from its end: a job decides how big its log gets.

Reading the whole file to keep 50 lines cost as much memory as the log is long (a 200 MB
log took hundreds of MB); this reads backwards in bounded blocks and never more than
``max_bytes``, whatever the file holds.
"""

from __future__ import annotations

import os
from pathlib import Path

BLOCK = 64 << 10


def tail_lines(path: Path, lines: int, max_bytes: int) -> str:
    """The last ``lines`` lines of ``path``, from at most its last ``max_bytes`` bytes.

    Decoded as UTF-8 with errors replaced. A line longer than what was read comes back
    cut at its start rather than not at all.
    """
    blocks: list[bytes] = []
    newlines = 0
    with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb") as log:  # never through a link
        end = start = log.seek(0, os.SEEK_END)
        while start > 0 and end - start < max_bytes and newlines <= lines:
            size = min(BLOCK, start, max_bytes - (end - start))
            start -= size
            log.seek(start)
            block = log.read(size)
            blocks.append(block)
            newlines += block.count(b"\n")
    text = b"".join(reversed(blocks)).decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""
