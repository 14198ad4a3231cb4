"""One case's trouble is that case's alone.

Every pass handles its cases one by one inside ``isolated``: an unexpected error while
handling one (a bad folder, a result that cannot be unpacked, a bug, even ``MemoryError``)
is written on that case (an event and its last error, which the admin and the dashboard
show) and the pass goes on with the next. A case that keeps failing the same way does not
fail forever: after ``MQIC_MAX_CASE_ERRORS`` errors in a row the pass's ``give_up`` ends it
(for instance as failed, its GPU group released), when the pass knows a safe way to.

A ``RemoteError`` is not the case's trouble but the host's: it passes through, to the host
contact that records it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar

from django.conf import settings
from django.db.models import F

from resources.jobqueue import RemoteError

from ..models import Case
from .transitions import record_event

log = logging.getLogger("mqic.isolation")
GiveUp = Callable[[Case, str], object]

# The errors isolated during the current pass, for its record (set by the pass runner).
case_errors: ContextVar[list[str] | None] = ContextVar("mqic_case_errors", default=None)


class isolated:
    """Run one case's ``step``; an unexpected error is recorded on the case, and swallowed.

    A class rather than a ``@contextmanager`` generator: a monitor pass enters one per running
    case, ten thousand of them, and a generator costs several times as much to enter and leave.
    """

    __slots__ = ("case", "give_up", "step")

    def __init__(self, case: Case, step: str, *, give_up: GiveUp | None = None):
        self.case, self.step, self.give_up = case, step, give_up

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _traceback) -> bool:
        if kind is None or not issubclass(kind, Exception) or issubclass(kind, RemoteError):
            return False
        unexpected_error(self.case, self.step, error, self.give_up)
        return True


def unexpected_error(case: Case, step: str, error: BaseException, give_up: GiveUp | None = None) -> None:
    """What ``isolated`` does with an unexpected error (not a ``RemoteError``), for a loop over ten
    thousand cases that cannot afford a context manager each: call it in the ``except`` block."""
    log.exception("%s: case %s (%s)", step, case.pk, case.name)
    record_case_error(case, step, error, give_up)


def record_case_error(case: Case, step: str, error: BaseException, give_up: GiveUp | None = None) -> None:
    why = f"{step}: {type(error).__name__}: {error}"[:2000]
    Case.objects.filter(pk=case.pk).update(error_count=F("error_count") + 1, last_error=why)
    count = Case.objects.filter(pk=case.pk).values_list("error_count", flat=True).first() or 0
    record_event(case.pk, f"unexpected error ({count} in a row): {why}", detail={"step": step})
    if (collected := case_errors.get()) is not None:
        collected.append(f"{case.name}: {why}")
    if give_up is not None and count >= settings.MQIC_MAX_CASE_ERRORS:
        give_up(case, f"gave up after {count} unexpected errors in a row; the last: {why}")
