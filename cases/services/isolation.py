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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


@contextmanager
def isolated(case: Case, step: str, *, give_up: GiveUp | None = None) -> Iterator[None]:
    """Run one case's ``step``; an unexpected error is recorded on the case, and swallowed."""
    try:
        yield
    except RemoteError:
        raise
    except Exception as error:
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
