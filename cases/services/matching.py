"""Is this remote task ours? The one rule, used by every pass and every page.

A label alone proves nothing: pueue does not keep labels unique, a restored database may
reuse one, and any job on the same HPC account can add a task with any label. So a task
belongs to a case only if it carries the case's label AND works in the folder of one of the
case's attempts, whose name holds a random token that only the database knows. For the
current attempt it must also have been created after the attempt began (allowing for clock
skew between the hosts). A stored task id is checked again on every read, because pueue
reuses ids after ``clean``: same label, same creation time.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings

from resources.jobqueue import PueueState, PueueTask

from ..models import HOLDS_GPU, Attempt, Case, CaseStatus
from .labels import case_id_from_label


def _same_dir(a: str, b: str) -> bool:
    return bool(a and b) and posixpath.normpath(a) == posixpath.normpath(b)


def is_attempt_task(task: PueueTask, case: Case) -> bool:
    """``task`` was added by the case's current attempt."""
    if case.submitting_at is None or not is_attempt_folder_task(task, case, case.remote_dir):
        return False
    return task.created_at >= case.submitting_at - timedelta(seconds=settings.MQIC_CLOCK_SKEW_SECONDS)


def is_attempt_folder_task(task: PueueTask, case: Case, remote_dir: str) -> bool:
    """``task`` was added by the attempt that works in ``remote_dir``: the case's label, that folder."""
    return task.label == case.label and _same_dir(task.path, remote_dir)


def attempt_dirs(case: Case) -> set[str]:
    """The folders of every attempt the case ever made (the current one included)."""
    dirs = set(Attempt.objects.filter(case=case).values_list("remote_dir", flat=True))
    return {posixpath.normpath(d) for d in (*dirs, case.remote_dir) if d}


def is_case_task(task: PueueTask, case: Case, dirs: set[str] | None = None) -> bool:
    """``task`` was added by one of the case's attempts (any of them)."""
    if task.label != case.label or not task.path:
        return False
    return posixpath.normpath(task.path) in (attempt_dirs(case) if dirs is None else dirs)


def live_tasks_of(state: PueueState, case: Case) -> list[PueueTask]:
    """The live tasks any of the case's attempts added (``is_case_task``): what to adopt instead of
    adding again, or what to stop before the case may end."""
    candidates = [t for t in state.find_by_label(case.label) if t.is_live]
    if not candidates:
        return []
    dirs = attempt_dirs(case)
    return [t for t in candidates if is_case_task(t, case, dirs)]


def is_stored_task(task: PueueTask, case: Case) -> bool:
    """The task under the case's stored id is still the one it stored (ids are reused after clean)."""
    if task.label != case.label:
        return False
    return case.pueue_task_created_at is None or task.created_at == case.pueue_task_created_at


@dataclass(frozen=True)
class Orphan:
    """A live task with this installation's label prefix that no case holds."""

    task: PueueTask
    case_id: int | None


def orphans(state: PueueState, prefix: str) -> list[Orphan]:
    """Live tasks of ours that no case holds: neither its stored task, nor a submission that
    is still waiting to learn its task id."""
    tasks = [t for t in state.tasks_with_label_prefix(prefix) if t.is_live]
    by_task = {t.id: case_id_from_label(t.label, prefix) for t in tasks}
    holders = {
        c["pk"]: c
        for c in Case.objects.filter(pk__in=set(by_task.values()), status__in=HOLDS_GPU).values(
            "pk", "status", "pueue_task_id"
        )
    }
    found = []
    for task in tasks:
        holder = holders.get(by_task[task.id])
        held = holder is not None and (
            holder["status"] == CaseStatus.SUBMITTING or holder["pueue_task_id"] == task.id
        )
        if not held:
            found.append(Orphan(task, by_task[task.id]))
    return found


def awaiting_its_id(task: PueueTask, gpu_group_id: int, prefix: str) -> bool:
    """A task of a case still ``submitting`` in this GPU group: ours, its id just not stored yet."""
    case_id = case_id_from_label(task.label, prefix)
    return (
        case_id is not None
        and Case.objects.filter(pk=case_id, status=CaseStatus.SUBMITTING, gpu_group_id=gpu_group_id).exists()
    )


def stored_tasks(host_id: int) -> dict[int, Case]:
    """The cases holding a GPU group of the host with a stored task id, by that id."""
    cases = Case.objects.filter(status__in=HOLDS_GPU, gpu_group__host_id=host_id, pueue_task_id__isnull=False)
    return {case.pueue_task_id: case for case in cases.only("label", "pueue_task_id", "pueue_task_created_at")}


BLOCKED_BY_RECONCILER = "remote: "
"""Starts the reason of a GPU group the reconciler blocked for what its pueue group holds."""


def foreign_tasks(state: PueueState, group, stored: dict[int, Case], prefix: str) -> list[int]:
    """The live tasks of ``group``'s pueue group that MQIC did not start: neither the stored task
    of a case (``stored_tasks``; checked as on every read, since ids are reused after ``clean``)
    nor the task of a submission still waiting to learn its id."""
    return [
        task.id
        for task in state.live_tasks_in_group(group.pueue_group)
        if not (task.id in stored and is_stored_task(task, stored[task.id]))
        and not awaiting_its_id(task, group.pk, prefix)
    ]
