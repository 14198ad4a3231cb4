"""The moves that pair a status change with the GPU group it frees or keeps.

Each runs the case transition and the group release in one transaction: a case can
never be finished while its group still says ``assigned`` to it, nor the other way round.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from resources.jobqueue import JobQueue, PueueState, PueueTask, RemoteError, Sweep
from resources.services import release_group

from ..faults import crash_point
from ..models import Case, CaseStatus
from .jobs import ATTEMPT_VARIABLE, token_of
from .matching import live_tasks_of
from .transitions import record_event, record_note_once, transition

S = CaseStatus


def move_and_release(case: Case, old: str, new: str, *, reason: str, detail=None, user=None, **fields) -> bool:
    """Move the case and free its GPU group together; report whether this call won."""
    with transaction.atomic():
        if not transition(case, old, new, reason=reason, detail=detail, user=user, **fields):
            return False
        crash_point("before_release")
        if case.gpu_group_id and case.lease_generation is not None:
            release_group(case.gpu_group_id, holder_id=case.pk, generation=case.lease_generation)
    return True


def give_back(case: Case, reason: str, *, detail=None, **fields) -> bool:
    """Nothing of this attempt runs remotely: back to ``submitted``, GPU released."""
    return move_and_release(case, S.SUBMITTING, S.SUBMITTED, reason=reason, detail=detail, **fields)


def retry_or_fail(case: Case, old: str, reason: str, *, detail=None) -> bool:
    """Nothing runs remotely: another attempt while attempts remain, else ``failed``."""
    case.refresh_from_db(fields=["attempts"])
    if case.attempts < settings.MQIC_MAX_ATTEMPTS:
        return move_and_release(
            case,
            old,
            S.SUBMITTED,
            reason=f"{reason}; attempt {case.attempts} of {settings.MQIC_MAX_ATTEMPTS}",
            detail=detail,
        )
    why = f"{reason}; no attempts left"
    return move_and_release(case, old, S.FAILED, reason=why, detail=detail, last_error=why)


def fail(case: Case, why: str, *, detail=None) -> bool:
    """End the case as failed, from whatever status it is in, its GPU group released."""
    case.refresh_from_db(fields=["status"])
    return move_and_release(case, case.status, S.FAILED, reason=why, detail=detail, last_error=why)


STILL_RUNS = "given up, but processes of it are still running"


def stop_and_fail(queue: JobQueue, state: PueueState, case: Case, why: str) -> bool:
    """Give up on a case that may run on the host: end its work there first, then fail it.

    Every live task of the case's attempts is stopped by id and every process of its current
    attempt ended; only once none is left does the case fail and free its GPU group (a group is
    never handed on while an old process may still compute on it). A host that cannot be asked
    raises ``RemoteError``: the case stays as it is and the next pass tries again.
    """
    stopped = queue.stop(live_tasks_of(state, case))
    token = token_of(case.remote_dir) if case.remote_dir else ""
    sweep = queue.end_processes(ATTEMPT_VARIABLE, [token])[token] if token else None
    if sweep is not None and still_running(case, sweep, STILL_RUNS):
        return False
    ended = {"stopped": stopped, "processes_ended": sweep.found if sweep else 0}
    return fail(case, why, detail=ended)


def still_running(case: Case, sweep: Sweep, kind: str) -> bool:
    """Whether processes of the case's attempt may still run after ``sweep``; if so, say it once."""
    if sweep.gone:
        return False
    why = "its host cannot list processes" if not sweep.checked else f"{sweep.left} still running"
    record_note_once(case.pk, f"{kind} ({why}): keeping its GPU group until they are gone", kind=kind)
    return True


def adopt(queue: JobQueue, case: Case, tasks: list[PueueTask], *, reason: str) -> bool:
    """Make the oldest of ``tasks`` the case's task; stop the others (by explicit id)."""
    keep, *extra = sorted(tasks, key=lambda t: (t.created_at, t.id))
    detail = {"adopted": keep.snapshot(), "duplicates": [t.snapshot() for t in extra]}
    won = transition(
        case,
        S.SUBMITTING,
        S.RUNNING,
        reason=f"{reason}: adopted pueue task {keep.id}"
        + (f", killing duplicates {[t.id for t in extra]}" if extra else ""),
        detail=detail,
        pueue_task_id=keep.id,
        pueue_task_created_at=keep.created_at,
        last_seen_task=keep.snapshot(),
        lease_expires_at=None,
    )
    if won and extra:
        try:
            queue.stop(extra)
        except RemoteError as error:
            record_event(case.pk, f"could not stop duplicate tasks {[t.id for t in extra]}: {error}")
    return won
