"""Named crash points for the crash-safety tests; a no-op unless the environment asks.

``MQIC_CRASH_AT=after_pueue_add`` (or several points, comma-separated) makes the process
SIGKILL itself the first time it passes that point; with ``MQIC_CRASH_ONCE=<file>`` it dies
only if the file does not exist yet (and creates it), so the restarted system runs on past the
point; when ``MQIC_CRASH_ONCE`` names a folder, each point dies once (a file per point).
Production never sets these variables, and the check is a dictionary lookup.
"""

import os
import signal
from pathlib import Path

POINTS = (
    "after_gpu_lock",
    "after_submitting",
    "mid_upload",
    "after_upload",
    "after_pueue_add",
    "after_task_stored",
    "mid_download",
    "before_release",
    "before_cleanup",
    "mid_collect",
    "after_cleanup",
)


def crash_point(name: str) -> None:
    if name not in os.environ.get("MQIC_CRASH_AT", "").split(","):
        return
    once = os.environ.get("MQIC_CRASH_ONCE")
    if once:
        marker = Path(once) / name if Path(once).is_dir() else Path(once)
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)
