"""A running case's log, read on the host now (for its page and the followed log)."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from resources.contact import contact

from ..models import Case
from .jobs import JOB_LOG
from .matching import is_stored_task

LOG_TAIL_LINES = 50
TAIL_MAX_BYTES = 1 << 20
"""What one look at a log reads at most, however much the job printed: the end of its job log."""


@dataclass(frozen=True)
class LogTail:
    text: str = ""
    error: str = ""


def fetch_log_tail(case: Case, lines: int = LOG_TAIL_LINES) -> LogTail:
    """The last ``lines`` lines of the case's output: the end of the job log its attempt folder
    holds (stdout and stderr, as pueue's log), at most ``TAIL_MAX_BYTES`` read on the host.

    pueue reuses ids after ``clean``, so the id is first checked to still be this case's
    task (``matching.is_stored_task``) in the task's own group.
    """
    if case.pueue_task_id is None or case.gpu_group is None:
        return LogTail(error="this case has no pueue task yet")
    host = case.gpu_group.host
    with contact(host, force=True) as link:
        task = link.queue.state(group=case.gpu_group.pueue_group).tasks.get(case.pueue_task_id)
        if task is None or not is_stored_task(task, case):
            return LogTail(error=f"pueue on {host.name} no longer has task {case.pueue_task_id} of this case")
        text = link.queue.tail(posixpath.join(case.remote_dir, JOB_LOG), TAIL_MAX_BYTES)
    if link.failed:
        return LogTail(error=f"{host.name} did not answer: {link.error}")
    return LogTail(text="\n".join((text or "").splitlines()[-lines:]))
