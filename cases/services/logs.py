"""A running case's log, asked from pueue now (for its page)."""

from __future__ import annotations

from dataclasses import dataclass

from resources.contact import contact

from ..models import Case
from .matching import is_stored_task

LOG_TAIL_LINES = 50


@dataclass(frozen=True)
class LogTail:
    text: str = ""
    error: str = ""


def fetch_log_tail(case: Case, lines: int = LOG_TAIL_LINES) -> LogTail:
    """The tail of the case's task output, asked from pueue now.

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
        text = link.queue.log(case.pueue_task_id, lines=lines)
    if link.failed:
        return LogTail(error=f"{host.name} did not answer: {link.error}")
    return LogTail(text=text)
