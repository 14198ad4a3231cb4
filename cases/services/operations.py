"""What an operator does by hand to cases and orphan tasks, for the admin.

Each action checks that it applies, moves the case through ``transition`` with the user
(so the event names them) and returns an ``Outcome`` to show. One that does not apply
changes nothing and says so. The remote side always comes after the local move: a case
is cancelled first and its task killed afterwards, so no pass ever reads the kill as the
infrastructure's doing and runs the case again. Tasks are only ever killed by explicit
id (``pueue kill`` without ids kills a whole group).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction

from resources.contact import contact
from resources.jobqueue import JobQueue, PueueTask
from resources.models import GpuGroup, HpcHost
from resources.operations import Outcome, refused
from resources.services import lock_group

from ..models import HOLDS_GPU, Attempt, Case, CaseStatus, PassRun
from . import intake, passes
from .jobs import results_dir
from .labels import label_prefix
from .lifecycle import move_and_release
from .matching import is_case_task, live_tasks_of, orphans
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
    the next submission instead of being started a second time. A rejected case is re-checked
    (``recheck``): its folder was the problem, so it goes back only once the folder is valid.
    """
    case.refresh_from_db()
    old = case.status
    if old == S.REJECTED:
        return recheck(case, user)
    if old not in RETRYABLE:
        return does_not_apply(case, "retry")
    try:
        aside = set_aside_results(case)
    except OSError as error:
        return refused(f"{case.name}: its results could not be set aside ({error}); nothing changed", "error")
    if not transition(case, old, S.SUBMITTED, reason=f"retried {_by(user)}", user=user, **CURRENT_ATTEMPT_CLEARED):
        if aside:
            Case.objects.filter(pk=case.pk).update(result_path=aside)
        return raced(case)
    return Outcome(True, f"{case.name}: back to submitted")


CURRENT_ATTEMPT_CLEARED = {
    "last_error": "",
    "task_missing_since": None,
    "exit_code": None,
    "log_tail": "",
    "result_path": "",
    "pueue_task_id": None,
    "pueue_task_created_at": None,
    "last_seen_task": None,
    "remote_dir": "",
    "gpu_group": None,
    "upload_percent": None,
}
"""What a case shows of its current attempt: cleared when it is tried again (its attempts keep it)."""


def set_aside_results(case: Case) -> str:
    """Move the case's results folder to ``.attempts/<case id>-<token>`` of the results folder, the
    place of the attempt they came from, so the next attempt's results never replace them; return
    the new place ("" when there is nothing to move). A hidden folder: no case is ever named so."""
    current = results_dir(case)
    if not current.is_dir():
        return ""
    attempt = Attempt.objects.filter(case=case).order_by("-started_at", "-pk").first()
    token = attempt.token if attempt is not None else "unknown"
    aside = Path(settings.MQIC_RESULTS_DIR) / ".attempts" / f"{case.pk}-{token}"
    aside.parent.mkdir(mode=0o700, exist_ok=True)
    os.rename(current, aside)
    if attempt is not None:
        Attempt.objects.filter(pk=attempt.pk).update(result_path=str(aside))
    record_event(case.pk, f"the results of attempt {token} were set aside in {aside}")
    return str(aside)


def recheck(case: Case, user) -> Outcome:
    """A rejected case whose folder was fixed: checked again with intake's own rule, whose case it
    is included (in a per-user inbox: a case of a user created since is theirs now).

    Valid now, it goes back to ``submitted`` (it gets its label at its first claim); still invalid,
    it stays rejected and the new reason is written down.
    """
    case.refresh_from_db()
    if case.status != S.REJECTED:
        return does_not_apply(case, "re-check folder")
    verdict = intake.recheck(Path(case.source_path))
    if verdict.problem is not None:
        Case.objects.filter(pk=case.pk, status=S.REJECTED).update(last_error=verdict.problem)
        why = f"folder re-checked {_by(user)}: still not a valid case: {verdict.problem}"
        record_event(case.pk, why, user=user)
        return refused(f"{case.name} is still not a valid case: {verdict.problem}", "error")
    reason = f"folder re-checked {_by(user)}: a valid case now"
    found = {"wanted_host": verdict.wish.host, "wanted_group": verdict.wish.gpu_group, "owner": verdict.owner}
    if not transition(case, S.REJECTED, S.SUBMITTED, reason=reason, user=user, last_error="", **found):
        return raced(case)
    return Outcome(True, f"{case.name}: folder valid now, back to submitted")


def cancel(case: Case, user, *, why: str = "") -> Outcome:
    """Cancel a waiting case; for one holding a GPU, cancel it and release the GPU, then kill its task.
    Who cancelled it, and ``why`` when given, become its reason."""
    case.refresh_from_db()
    old = case.status
    reason = f"cancelled {_by(user)}" + (f": {why}" if why else "")
    if old == S.SUBMITTED:
        if not transition(case, old, S.CANCELLED, reason=reason, user=user, last_error=reason):
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
    if not move_and_release(
        case, old, S.CANCELLED, reason=reason, user=user, lease_expires_at=None, last_error=reason
    ):
        return raced(case)
    return _stop_tasks_of(case, user, was_submitting=old == S.SUBMITTING)


def _stop_tasks_of(case: Case, user, *, was_submitting: bool) -> Outcome:
    """Stop the live tasks of a case just cancelled: those of any of its attempts.

    A submission in flight may still add its task after this look; that task is then an
    orphan (its case no longer holds a GPU), which the remote state page shows.
    """
    host = case.gpu_group.host
    tasks, stopped = [], {}
    with contact(host, force=True) as link:
        tasks = live_tasks_of(link.queue.state(), case)
        stopped = link.queue.stop(tasks)
    if link.failed:
        why = f"cancel: could not kill the task on {host.name} ({link.error}); {ORPHAN_HINT}"
        record_event(case.pk, why, user=user)
        return Outcome(True, f"{case.name} cancelled, but {why}", "warning")
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


def mark_failed(case: Case, user, *, why: str = "") -> Outcome:
    """End a stuck case as failed and release its GPU group. Its task, if any, is not touched."""
    case.refresh_from_db()
    old = case.status
    if old not in HOLDS_GPU:
        return does_not_apply(case, "mark failed")
    said = why
    why = f"marked failed {_by(user)}" + (f": {said}" if said else "")
    if not move_and_release(case, old, S.FAILED, reason=why, user=user, last_error=why, lease_expires_at=None):
        return raced(case)
    return Outcome(True, f"{case.name} failed and its GPU group released; if its task still runs, {ORPHAN_HINT}")


def reconcile_now(user) -> tuple[PassRun, Outcome]:
    """Run the reconciliation pass now, as ``user``: its decisions are events naming them.

    The pass's record comes back with the outcome: it is what "Recent actions" links to.
    """
    run = passes.run("reconcile", user=user)
    level = "success" if run.outcome == run.Outcome.OK else "warning"
    return run, Outcome(True, f"reconciled ({_by(user)}): {run.summary}", level)


# -- orphans: live tasks with our label prefix that no case holds -----------------------------


def kill_orphan(host: HpcHost, task_id: int, created_at: str, user) -> Outcome:
    """Stop an orphan task, if it is still the orphan the operator saw (same id and creation time)."""
    with contact(host, force=True) as link:
        found = _find_orphan(link.queue, host, task_id, created_at)
        if isinstance(found, Outcome):
            return found
        task, case_id = found
        link.queue.stop([task])
    if link.failed:
        return refused(f"orphan task {task_id} on {host.name} not stopped: {link.error}", "error")
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
    ``running``, each move an event naming the user. The task must work in the folder of
    one of the case's attempts (the one rule of ``matching``).
    """
    seen = look_at_orphan(host, task_id, created_at)
    if isinstance(seen, Outcome):
        return seen
    task, case = seen.task, seen.case
    if case is None:
        return refused(f"task {task_id} names a case this database does not have: kill it instead")
    if case.status in HOLDS_GPU or case.status == S.COMPLETED:
        return refused(f"task {task_id}: case {case.name} is {case.status}; kill the task instead")
    if not seen.in_attempt_folder:
        return refused(
            f"task {task_id} works in {task.path}, which is no attempt folder of {case.name}: kill it instead",
            "error",
        )
    group = GpuGroup.objects.filter(host=host, pueue_group=task.group).first()
    if group is None or group.status == GpuGroup.Status.DISABLED:
        return refused(f"task {task_id}: pueue group {task.group} is no enabled GPU group of {host.name}")
    if not _adopt(case, task, group, user):
        return refused(
            f"task {task_id} not adopted: GPU group {group.name} is taken, or {case.name} changed meanwhile"
        )
    return Outcome(True, f"{case.name} now runs as pueue task {task_id} on {host.name}")


def _adopt(case: Case, task: PueueTask, group: GpuGroup, user) -> bool:
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
            remote_dir=task.path,
            submitting_at=task.created_at,
        )
        # The task's attempt is the case's current one again.
        won = won and bool(
            Attempt.objects.filter(case=case, remote_dir=task.path).update(ended_at=None, outcome="")
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


@dataclass(frozen=True)
class OrphanView:
    """An orphan as its confirmation page shows it: the task, and the case its label names."""

    task: PueueTask
    case: Case | None
    in_attempt_folder: bool
    """Whether the task works in the folder of one of that case's attempts (adoption needs it)."""


def look_at_orphan(host: HpcHost, task_id: int, created_at: str) -> OrphanView | Outcome:
    """The orphan as pueue shows it now (command, folder, group), for the operator to judge."""
    with contact(host, force=True) as link:
        found = _find_orphan(link.queue, host, task_id, created_at)
    if link.failed:
        return refused(f"{host.name} did not answer ({link.error}); nothing changed", "error")
    if isinstance(found, Outcome):
        return found
    task, case_id = found
    case = Case.objects.filter(pk=case_id).first()
    return OrphanView(task, case, case is not None and is_case_task(task, case))


def _find_orphan(
    queue: JobQueue, host: HpcHost, task_id: int, created_at: str
) -> tuple[PueueTask, int | None] | Outcome:
    state = queue.state()
    task = state.tasks.get(task_id)
    found = {o.task.id: o for o in orphans(state, label_prefix())}
    if task is None or task.created_at.isoformat() != created_at or task_id not in found:
        return refused(f"task {task_id} on {host.name} is no longer the orphan shown; nothing changed")
    return task, found[task_id].case_id
