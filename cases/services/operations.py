"""What an operator does by hand to cases and orphan tasks, for the admin.

Each action checks that it applies, moves the case through ``transition`` with the user
(so the event names them) and returns an ``Outcome`` to show. One that does not apply
changes nothing and says so. The remote side always comes after the local move: a case
is cancelled first and its task killed afterwards, so no pass ever reads the kill as the
infrastructure's doing and runs the case again. Tasks are only ever killed by explicit
id (``pueue kill`` without ids kills a whole group).
"""

from __future__ import annotations

import posixpath

from django.db import transaction

from resources.connections import pueue_for, record_contact
from resources.models import GpuGroup, HpcHost
from resources.operations import Outcome, refused
from resources.remote.errors import RemoteError
from resources.remote.pueue import PueueClient
from resources.remote.pueue_state import PueueTask, TaskStatus
from resources.services import lock_group

from ..models import HOLDS_GPU, Case, CaseStatus
from .jobs import is_our_task, remote_dir
from .labels import label_prefix
from .lifecycle import move_and_release
from .passes import record_pass
from .reconciliation import find_orphans, reconcile_pass
from .transitions import record_event, transition

S = CaseStatus
RETRYABLE = frozenset({S.FAILED, S.CANCELLED, S.REJECTED})
CANCELLABLE = frozenset({S.SUBMITTED}) | HOLDS_GPU
ORPHAN_HINT = "it shows as an orphan on the host's remote state page, where it can be killed"


def does_not_apply(case: Case, action: str) -> Outcome:
    return refused(f"{case.name}: {action} does not apply to a {case.status} case; nothing changed")


def raced(case: Case) -> Outcome:
    case.refresh_from_db(fields=["status"])
    return refused(f"{case.name} changed meanwhile (now {case.status}); nothing changed")


def _by(user) -> str:
    return f"by {user.get_username()}"


def retry(case: Case, user) -> Outcome:
    """A finished-but-unsuccessful case goes back to ``submitted`` for another attempt.

    ``attempts`` is kept: a task of an earlier attempt that still lives is then adopted by
    the next submission instead of being started a second time.
    """
    case.refresh_from_db()
    old = case.status
    if old not in RETRYABLE:
        return does_not_apply(case, "retry")
    if not transition(
        case, old, S.SUBMITTED, reason=f"retried {_by(user)}", user=user, last_error="", task_missing_since=None
    ):
        return raced(case)
    return Outcome(True, f"{case.name}: back to submitted")


def cancel(case: Case, user) -> Outcome:
    """Cancel a waiting case; for one holding a GPU, cancel it and release the GPU, then kill its task."""
    case.refresh_from_db()
    old = case.status
    reason = f"cancelled {_by(user)}"
    if old == S.SUBMITTED:
        if not transition(case, old, S.CANCELLED, reason=reason, user=user):
            return raced(case)
        return Outcome(True, f"{case.name} cancelled")
    if old not in CANCELLABLE:
        return does_not_apply(case, "cancel")
    if old == S.RUNNING and case.pueue_task_id is None:
        return refused(
            f"{case.name} runs, but its pueue task id is unknown: not cancelled, since its task could not be "
            "killed by id. Reconcile, or find the task on the host's remote state page.",
            "error",
        )
    if not move_and_release(case, old, S.CANCELLED, reason=reason, user=user, lease_expires_at=None):
        return raced(case)
    return _stop_tasks_of(case, user, was_submitting=old == S.SUBMITTING)


def _stop_tasks_of(case: Case, user, *, was_submitting: bool) -> Outcome:
    """Kill the live tasks of a case just cancelled: those with its label working in its folder.

    A submission in flight may still add its task after this look; that task is then an
    orphan (its case no longer holds a GPU), which the remote state page shows.
    """
    host = case.gpu_group.host
    pueue = pueue_for(host)
    try:
        tasks = [
            t
            for t in pueue.status().find_by_label(case.label)
            if t.is_live and is_our_task(t, case, any_attempt=True)
        ]
        stopped = stop_tasks(pueue, tasks)
    except RemoteError as error:
        record_contact(host, error)
        why = f"cancel: could not kill the task on {host.name} ({error}); {ORPHAN_HINT}"
        record_event(case.pk, why, user=user)
        return Outcome(True, f"{case.name} cancelled, but {why}", "warning")
    record_contact(host)
    if not tasks:
        record_event(case.pk, f"cancel: {host.name} holds no live task of this case", user=user)
        late = f"; a task its submission adds later shows as an orphan on {host.name}" if was_submitting else ""
        return Outcome(True, f"{case.name} cancelled; no live task of it on {host.name}{late}")
    ids = [t.id for t in tasks]
    record_event(
        case.pk,
        f"cancel: pueue tasks {ids} stopped by id on {host.name}",
        detail=stopped | {"tasks": [t.snapshot() for t in tasks]},
        user=user,
    )
    return Outcome(True, f"{case.name} cancelled; pueue tasks {ids} on {host.name} stopped")


def stop_tasks(pueue: PueueClient, tasks: list[PueueTask]) -> dict[str, list[int]]:
    """Kill the running ones and remove the waiting ones (``kill`` only reaches running ones)."""
    killed = [t.id for t in tasks if t.status in (TaskStatus.RUNNING, TaskStatus.PAUSED)]
    removed = [t.id for t in tasks if t.is_live and t.id not in killed]
    if killed:
        pueue.kill(killed)
    if removed:
        pueue.remove(removed)
    return {"killed": killed, "removed": removed}


def mark_failed(case: Case, user) -> Outcome:
    """End a stuck case as failed and release its GPU group. Its task, if any, is not touched."""
    case.refresh_from_db()
    old = case.status
    if old not in HOLDS_GPU:
        return does_not_apply(case, "mark failed")
    why = f"marked failed {_by(user)}"
    if not move_and_release(case, old, S.FAILED, reason=why, user=user, last_error=why, lease_expires_at=None):
        return raced(case)
    return Outcome(True, f"{case.name} failed and its GPU group released; if its task still runs, {ORPHAN_HINT}")


def reconcile_now(user) -> Outcome:
    """Run the reconciliation pass now; its decisions are events of the reconciler, with evidence."""
    report = reconcile_pass()
    summary = record_pass("reconcile", report)
    return Outcome(True, f"reconciled ({_by(user)}): {summary}", "warning" if report.host_errors else "success")


# -- orphans: live tasks with our label prefix that no case holds -----------------------------


def kill_orphan(host: HpcHost, task_id: int, created_at: str, user) -> Outcome:
    """Stop an orphan task, if it is still the orphan the operator saw (same id and creation time)."""
    found = _find_orphan(host, task_id, created_at)
    if isinstance(found, Outcome):
        return found
    pueue, task, case_id = found
    try:
        stop_tasks(pueue, [task])
    except RemoteError as error:
        record_contact(host, error)
        return refused(f"orphan task {task_id} on {host.name} not stopped: {error}", "error")
    if Case.objects.filter(pk=case_id).exists():
        record_event(
            case_id,
            f"orphan pueue task {task_id} on {host.name} stopped {_by(user)}",
            detail={"task": task.snapshot()},
            user=user,
        )
    return Outcome(True, f"orphan task {task_id} ({task.label}) on {host.name} stopped")


def adopt_orphan(host: HpcHost, task_id: int, created_at: str, user) -> Outcome:
    """Make an orphan the running task of the case its label names.

    For a case that holds no GPU (e.g. cancelled while its add was in flight): it takes
    the task's GPU group, if free, and goes through ``submitted`` and ``submitting`` to
    ``running``, each move an event naming the user. The task must work in the case's folder.
    """
    found = _find_orphan(host, task_id, created_at)
    if isinstance(found, Outcome):
        return found
    _, task, case_id = found
    case = Case.objects.filter(pk=case_id).first()
    if case is None:
        return refused(f"task {task_id} names case {case_id}, which this database does not have: kill it instead")
    if case.status in HOLDS_GPU or case.status == S.COMPLETED:
        return refused(f"task {task_id}: case {case.name} is {case.status}; kill the task instead")
    folder = remote_dir(host, case.label)
    if posixpath.normpath(task.path) != posixpath.normpath(folder):
        return refused(
            f"task {task_id} works in {task.path}, not in the folder of {case.name} ({folder})", "error"
        )
    group = GpuGroup.objects.filter(host=host, pueue_group=task.group).first()
    if group is None or group.status == GpuGroup.Status.DISABLED:
        return refused(f"task {task_id}: pueue group {task.group} is no enabled GPU group of {host.name}")
    if not _adopt(case, task, group, folder, user):
        return refused(
            f"task {task_id} not adopted: GPU group {group.name} is taken, or {case.name} changed meanwhile"
        )
    return Outcome(True, f"{case.name} now runs as pueue task {task_id} on {host.name}")


def _adopt(case: Case, task: PueueTask, group: GpuGroup, folder: str, user) -> bool:
    why = f"orphan pueue task {task.id} adopted {_by(user)}"
    with transaction.atomic():
        locked = lock_group(group.pk, holder_id=case.pk)
        won = locked is not None and (
            case.status == S.SUBMITTED or transition(case, case.status, S.SUBMITTED, reason=why, user=user)
        )
        won = won and transition(
            case,
            S.SUBMITTED,
            S.SUBMITTING,
            reason=f"{why}: GPU group {group.name} locked (lease {locked.lease_generation})",
            user=user,
            gpu_group=locked,
            lease_generation=locked.lease_generation,
            remote_dir=folder,
            submitting_at=task.created_at,
        )
        won = won and transition(
            case,
            S.SUBMITTING,
            S.RUNNING,
            reason=why,
            detail={"adopted": task.snapshot()},
            user=user,
            pueue_task_id=task.id,
            pueue_task_created_at=task.created_at,
            last_seen_task=task.snapshot(),
            lease_expires_at=None,
        )
        if not won:
            transaction.set_rollback(True)
    return won


def _find_orphan(
    host: HpcHost, task_id: int, created_at: str
) -> tuple[PueueClient, PueueTask, int | None] | Outcome:
    pueue = pueue_for(host)
    try:
        state = pueue.status()
    except RemoteError as error:
        record_contact(host, error)
        return refused(f"{host.name} did not answer ({error}); nothing changed", "error")
    record_contact(host)
    task = state.tasks.get(task_id)
    orphans = {o["id"]: o for o in find_orphans(state, label_prefix())}
    if task is None or task.created_at.isoformat() != created_at or task_id not in orphans:
        return refused(f"task {task_id} on {host.name} is no longer the orphan shown; nothing changed")
    return pueue, task, orphans[task_id]["case_id"]
