"""The one place where a case's status changes."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.expressions import Combinable
from django.utils import timezone

from ..models import TRANSITIONS, Case, CaseEvent, CaseStatus

SYSTEM = "system"

# The timestamp set on entering a status, so every phase is recorded without callers repeating it.
_PHASE_STAMP = {
    CaseStatus.SUBMITTING: "submitting_at",
    CaseStatus.RUNNING: "running_at",
    CaseStatus.COMPLETED: "finished_at",
    CaseStatus.FAILED: "finished_at",
    CaseStatus.CANCELLED: "finished_at",
    CaseStatus.REJECTED: "finished_at",
}


class IllegalTransition(ValueError):
    """A move that ``TRANSITIONS`` does not allow: a programming error, never a race."""


def check_allowed(old: str | None, new: str) -> None:
    if new not in TRANSITIONS.get(old, frozenset()):
        raise IllegalTransition(f"a case cannot go from {old or 'nothing'} to {new}")


def transition(
    case: Case | int,
    old: str,
    new: str,
    *,
    reason: str,
    detail: dict[str, Any] | None = None,
    user=None,
    **fields: Any,
) -> bool:
    """Move a case from ``old`` to ``new`` if it is still ``old``; return whether this call won.

    ``fields`` are written in the same UPDATE. The event row is written in the same
    transaction, so a move without its reason can never be seen.
    """
    check_allowed(old, new)
    case_id = case if isinstance(case, int) else case.pk
    now = timezone.now()
    if stamp := _PHASE_STAMP.get(new):
        fields.setdefault(stamp, now)
    with transaction.atomic():
        won = Case.objects.filter(pk=case_id, status=old).update(status=new, updated_at=now, **fields)
        if won:
            record_event(case_id, reason, old=old, new=new, detail=detail, user=user)
    if won and isinstance(case, Case):
        case.status = new
        for name, value in fields.items():
            if not isinstance(value, Combinable):
                setattr(case, name, value)
    return bool(won)


def record_event(
    case_id: int,
    reason: str,
    *,
    old: str = "",
    new: str = "",
    detail: dict[str, Any] | None = None,
    user=None,
) -> CaseEvent:
    """Write an event; without a status change it is a note (a warning, an observation)."""
    return CaseEvent.objects.create(
        case_id=case_id,
        from_status=old or "",
        to_status=new or "",
        reason=reason,
        detail=detail or {},
        actor=user.get_username() if user is not None else SYSTEM,
        user=user,
    )
