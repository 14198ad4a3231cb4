"""The one pass runner: what each pass is, who ran it, what it did, and what runs after it.

Every entry point runs a pass through ``run``: the django-q2 tasks and schedules, the watcher,
``tick``, the management commands and the admin's buttons. ``run`` names the actor of every
decision the pass makes (the pass itself, or the operator who pressed the button), collects
the errors its cases had (each isolated on its case, see ``isolation``), writes a ``PassRun``
with the outcome (a failure too: the dashboard reads them), and enqueues the follow-up passes.
What runs after what is decided here only, in ``KINDS``: a pass's report states what it did
(cases registered, GPU groups freed) and its kind's ``then`` says whether that calls for a submission.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import Schedule
from django_q.tasks import async_task

from resources.operations import missing_groups
from resources.services import assignable_groups

from ..models import Case, CaseStatus, PassRun
from . import hygiene, intake, monitoring, reconciliation, submission
from .isolation import case_errors
from .transitions import acting_as

log = logging.getLogger("mqic.passes")


@dataclass(frozen=True)
class PassKind:
    run: Callable[..., object]
    actor: str
    """The name the pass's decisions carry when no operator ran it."""
    then: Callable[[object], bool] = lambda report: False
    """Whether what the pass did (its report) calls for a submission pass: only a submission
    follows another pass, once a case waits or a GPU group became free."""


KINDS: dict[str, PassKind] = {
    "scan": PassKind(intake.scan, "scanner", then=lambda report: bool(report.registered)),
    "submit": PassKind(submission.submit_pass, "submitter"),
    "monitor": PassKind(monitoring.monitor_pass, "monitor", then=lambda report: report.freed_gpus),
    "reconcile": PassKind(
        reconciliation.reconcile_pass,
        "reconciler",
        then=lambda report: bool(report.retried or report.released_groups) and not report.dry_run,
    ),
}


def run(kind: str, *, user=None, trigger: str = "", follow_ups: bool = True, **options) -> PassRun:
    """Run one pass of ``kind`` now, in this process; return its record (``.report`` is the pass's report).

    ``user`` (an operator) or the pass's own name is the actor of its decisions; ``trigger`` says
    what started it when no user did ("schedule", "watcher", "follow-up", a command's name).
    ``follow_ups=False`` is for a caller that runs every pass itself in a loop.
    """
    spec = KINDS[kind]
    actor = user.get_username() if user is not None else (f"{spec.actor} ({trigger})" if trigger else spec.actor)
    started, errors = timezone.now(), []
    token = case_errors.set(errors)
    try:
        with acting_as(spec.actor, user):
            report = spec.run(**options)
    except Exception as error:
        _record(
            kind,
            actor,
            started,
            PassRun.Outcome.FAILED,
            f"failed: {type(error).__name__}: {error}",
            error="".join(traceback.format_exception(error))[-4000:],
        )
        raise
    finally:
        case_errors.reset(token)
    summary = str(report)
    if errors:
        summary += f"; errors on {len(errors)} case(s): " + "; ".join(errors[:3])
    partial = errors or getattr(report, "host_errors", None) or getattr(report, "errors", None)
    outcome = PassRun.Outcome.PARTIAL if partial else PassRun.Outcome.OK
    record = _record(kind, actor, started, outcome, summary, save=not options.get("dry_run"))
    record.report = report  # for callers that print more than the summary
    if follow_ups and spec.then(report):
        enqueue("submit")
    return record


def _record(kind, actor, started, outcome, summary, *, error="", save=True) -> PassRun:
    record = PassRun(
        kind=kind,
        actor=actor[:150],
        started_at=started,
        finished_at=timezone.now(),
        outcome=outcome,
        summary=summary[:4000],
        error=error,
    )
    if save:
        record.save()
        if record.pk % 200 == 0:  # now and then, forget old history
            keep = timedelta(days=settings.MQIC_KEEP_PASS_RUNS_DAYS)
            PassRun.objects.filter(started_at__lt=started - keep).delete()
    return record


@contextmanager
def database_may_be_away(what: str) -> Iterator[None]:
    """For the long-running loops (tick, the watcher): a database that restarts or is away for a
    while ends one round of the loop, not the process (under honcho one process ending stops them
    all); the connection it broke is dropped, and the next round makes a new one."""
    try:
        yield
    except DatabaseError as error:
        log.warning("%s: the database did not answer (%s); trying again", what, error)
    finally:
        close_old_connections()


def enqueue(kind: str) -> None:
    """Have the cluster run a pass of ``kind`` soon (the task function of ``cases.tasks``)."""
    async_task(f"cases.tasks.{kind}", task_name=f"mqic {kind}", trigger="follow-up")


def due() -> list[str]:
    """The passes that have work now (what ``tick`` enqueues between the one-minute schedules)."""
    kinds = []
    if Case.objects.filter(status=CaseStatus.RUNNING).exists() or hygiene.all_due().exists():
        kinds.append("monitor")
    waiting = Case.objects.filter(status=CaseStatus.SUBMITTED).exists()
    if waiting and assignable_groups().exists():
        kinds.append("submit")
    stale = Case.objects.filter(status=CaseStatus.SUBMITTING, lease_expires_at__lt=timezone.now()).exists()
    if stale or (waiting and missing_groups().exists()):  # the reconciler unblocks a group created since
        kinds.append("reconcile")
    return kinds


def enqueue_due() -> list[str]:
    """Enqueue the passes that have work now, unless the queue still holds earlier ones."""
    if get_broker().queue_size():
        return []
    kinds = due()
    for kind in kinds:
        async_task(f"cases.tasks.{kind}", task_name=f"mqic {kind}", trigger="tick")
    return kinds


def setup_schedules() -> list[Schedule]:
    """Every pass once a minute, as the safety net under ``tick`` and the follow-ups (idempotent).

    django-q2's scheduler has a one-minute resolution (and looks every 30 s), so the schedules
    only catch what the fast paths missed.
    """
    return [
        Schedule.objects.update_or_create(
            name=f"mqic {kind}",
            defaults={
                "func": f"cases.tasks.{kind}",
                "schedule_type": Schedule.MINUTES,
                "minutes": 1,
                "repeats": -1,
            },
        )[0]
        for kind in KINDS
    ]
