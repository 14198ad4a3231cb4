"""The moves that pair a status change with the GPU group it frees or keeps.

Each runs the case transition and the group release in one transaction: a case can
never be finished while its group still says ``assigned`` to it, nor the other way round.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from resources.jobqueue import JobQueue, PueueTask, RemoteError
from resources.services import release_group

from ..faults import crash_point
from ..models import Case, CaseStatus
from .transitions import record_event, transition

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
