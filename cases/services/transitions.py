"""The one place where a case's status changes, and who is said to have changed it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.db import transaction
from django.db.models import Subquery
from django.db.models.expressions import Combinable
from django.utils import timezone

from ..models import HOLDS_GPU, TRANSITIONS, Attempt, Case, CaseEvent, CaseStatus
from .accounting import end_attempts

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

# Moves that prove a case's handling works again (a move back to ``submitted`` does not).
_PROGRESS = frozenset({CaseStatus.RUNNING, CaseStatus.COMPLETED})

# Who the events written now are by: a pass's name ("monitor") or an operator, set by the pass
# runner and by operator actions for everything they cause, however deep in the services.
_actor: ContextVar[tuple[str, Any]] = ContextVar("mqic_actor", default=(SYSTEM, None))


@contextmanager
def acting_as(name: str, user=None) -> Iterator[None]:
    """Events written inside the block name ``user`` (when given) or ``name`` as their actor."""
    token = _actor.set((user.get_username() if user is not None else name, user))
    try:
        yield
    finally:
        _actor.reset(token)


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

    ``fields`` are written in the same UPDATE. The event row, and the end of the attempt the
    move leaves, are written in the same transaction, so a move without its reason can never
    be seen.
    """
    check_allowed(old, new)
    case_id = case if isinstance(case, int) else case.pk
    now = timezone.now()
    if stamp := _PHASE_STAMP.get(new):
        fields.setdefault(stamp, now)
    if new in _PROGRESS or user is not None:
        fields.setdefault("error_count", 0)  # a step forward, or a human's decision, starts a new count
    with transaction.atomic():
        won = Case.objects.filter(pk=case_id, status=old).update(status=new, updated_at=now, **fields)
        if won:
            record_event(case_id, reason, old=old, new=new, detail=detail, user=user)
            _note_attempt(case_id, old, new, reason, fields, now)
    if won and isinstance(case, Case):
        case.status = new
        for name, value in fields.items():
            if not isinstance(value, Combinable):
                setattr(case, name, value)
    return bool(won)


def _note_attempt(case_id: int, old: str, new: str, reason: str, fields: dict, now) -> None:
    """Keep the current attempt's row in step: its task once known, its end (and GPU time) once left."""
    current = Attempt.objects.filter(case_id=case_id, ended_at__isnull=True)
    if new == CaseStatus.RUNNING and fields.get("pueue_task_id") is not None:
        current.update(task_id=fields["pueue_task_id"], task_created_at=fields.get("pueue_task_created_at"))
    elif old in HOLDS_GPU and new not in HOLDS_GPU:
        case = Case.objects.filter(pk=case_id)
        ended = {name: fields[name] for name in ("exit_code", "log_tail", "result_path") if name in fields}
        end_attempts(
            case_id,
            now,
            **ended,
            outcome=f"{new}: {reason}"[:2000],
            last_seen_task=Subquery(case.values("last_seen_task")[:1]),
            task_id=Subquery(case.values("pueue_task_id")[:1]),
            task_created_at=Subquery(case.values("pueue_task_created_at")[:1]),
        )


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
    actor, acting_user = (user.get_username(), user) if user is not None else _actor.get()
    return CaseEvent.objects.create(
        case_id=case_id,
        from_status=old or "",
        to_status=new or "",
        reason=reason,
        detail=detail or {},
        actor=actor,
        user=acting_user,
    )


def record_note_once(case_id: int, reason: str, *, kind: str) -> None:
    """A note that repeats every pass while a condition lasts is written once: not again while the
    case's last event is still a note of the same ``kind`` (a prefix of its reason)."""
    last = (
        CaseEvent.objects.filter(case_id=case_id).order_by("-created_at", "-pk").values_list("reason", flat=True)
    )
    if not (last.first() or "").startswith(kind):
        record_event(case_id, reason)
