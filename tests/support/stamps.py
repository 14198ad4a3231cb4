"""Evidence from the jobs themselves: each stamps, in a file of the test's, when it started and
ended and in which pueue group.

Why: the sandbox records every task start and end as it happens, but real pueue only shows the
tasks it still holds, and hygiene removes a finished case's task within a pass. What the jobs
write survives that, and is the same on both remotes: which processes really ran side by side.
"""

from __future__ import annotations

import shlex
from pathlib import Path


def stamped(script: str, log: Path) -> str:
    """``script`` (run in a subshell, its exit code kept) between a start and an end line in ``log``.

    Each line is one ``echo`` of a few bytes to a file opened for appending: lines of jobs
    running at once never mix.
    """
    target = shlex.quote(str(log))
    stamp = 'echo "{} $(date +%s%N) $PUEUE_GROUP" >> ' + target
    return f"{stamp.format('start')}\n(\n{script}\n)\nrc=$?\n{stamp.format('end')}\nexit $rc\n"


def events(log: Path) -> list[dict]:
    """The stamps as events in the shape ``overlaps_per_group`` reads (``event``, ``time_ns``, ``group``)."""
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        event, time_ns, group = line.split()
        found.append({"event": event, "time_ns": int(time_ns), "group": group})
    return found
