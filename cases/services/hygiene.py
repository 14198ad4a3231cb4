"""Remote hygiene: nothing of a finished case stays on its host.

Once a case has ended (completed, failed or cancelled) and what its job left is home, the pueue
tasks of its attempts are removed and their folders deleted (never a folder whose content could
not come home, refused or lost: that one is kept, and the case page says so), ``MQIC_REMOTE_RETENTION_SECONDS``
after it ended (0: at once). A cancelled case's last folder is brought home first: what the job
left is the operator's. Everything is batched per host per monitor pass: one download for the
cancelled cases, one round trip for all removals.

Safe to crash anywhere: a worker claims each attempt (``cleanup_started_at``, a lease) before it
calls the host, so the decision is on record first; a claim whose worker died is taken again
once its lease ran out, and doing it again is harmless. Only a finished task that is still the
attempt's own (label and folder: ids are reused) is removed; an attempt whose task still lives
(a kill on its way) waits for a later pass; and the
reconciler looks for lost tasks of running cases only, so a removed task is never taken for lost.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from resources.jobqueue import JobQueue, PueueState, PueueTask
from resources.models import HpcHost

from ..faults import crash_point
from ..models import Attempt, Case, CaseStatus
from .isolation import isolated
from .jobs import folder_name, results_dir
from .matching import is_attempt_folder_task
from .transitions import record_event

S = CaseStatus
log = logging.getLogger("mqic.hygiene")
ENDED = (S.COMPLETED, S.FAILED, S.CANCELLED)
BATCH = 500
"""Attempts cleaned up per host per pass at most: a long backlog goes in steps."""


def due(host: HpcHost):
    """Attempts of ended cases on ``host`` that are not cleaned up yet and whose time has come."""
    return all_due().filter(gpu_group__host=host)


def all_due():
    """Attempts of ended cases on any host that are not cleaned up yet and whose time has come."""
    now = timezone.now()
    retention = timedelta(seconds=settings.MQIC_REMOTE_RETENTION_SECONDS)
    unclaimed = Q(cleanup_started_at__isnull=True) | Q(cleanup_started_at__lt=now - lease())
    return Attempt.objects.filter(
        unclaimed,
        cleaned_at__isnull=True,
        kept="",
        ended_at__isnull=False,
        case__status__in=ENDED,
        case__finished_at__lte=now - retention,
    )


def hosts_with_work() -> list[HpcHost]:
    """Hosts a monitor pass must visit for hygiene even when no case of theirs runs."""
    return [host for host in HpcHost.objects.filter(enabled=True) if due(host).exists()]


def lease() -> timedelta:
    return timedelta(seconds=settings.MQIC_SUBMIT_LEASE_SECONDS)


def claim(host: HpcHost) -> list[Attempt]:
    """Take this pass's share of the host's due attempts: each is claimed on its own (CAS)."""
    now = timezone.now()
    claimed = []
    for attempt in due(host).select_related("case")[:BATCH]:
        unclaimed = Q(cleanup_started_at__isnull=True) | Q(cleanup_started_at__lt=now - lease())
        if Attempt.objects.filter(unclaimed, pk=attempt.pk, cleaned_at__isnull=True).update(
            cleanup_started_at=now
        ):
            claimed.append(attempt)
    return claimed


def tidy_host(queue: JobQueue, host: HpcHost, state: PueueState) -> int:
    """Bring home what cancelled cases left, then remove the tasks and folders of ended cases."""
    claimed = claim(host)
    if not claimed:
        return 0
    crash_point("before_cleanup")
    owned = {a.pk: own_task(a, state) for a in claimed}
    live = [a for a in claimed if owned[a.pk] is not None and owned[a.pk].is_live]
    Attempt.objects.filter(pk__in=[a.pk for a in live]).update(cleanup_started_at=None)  # not yet: next pass
    collect(queue, host, [a for a in claimed if a not in live and needs_results(a)])
    ready = [a for a in claimed if a not in live and not needs_results(a) and not a.kept]
    tasks = [a.task_id for a in ready if owned[a.pk] is not None]
    folders = [folder_name(a.remote_dir) for a in ready]
    queue.tidy(tasks, host.base_dir, folders, keep_traces_days=settings.MQIC_KEEP_REMOTE_TRACES_DAYS)
    crash_point("after_cleanup")
    now = timezone.now()
    for attempt in ready:
        with isolated(attempt.case, "noting its remote cleanup"):
            Attempt.objects.filter(pk=attempt.pk).update(cleaned_at=now)
            removed = attempt.task_id if attempt.task_id in tasks else None
            gone = f"pueue task {removed} removed and " if removed is not None else ""
            record_event(
                attempt.case_id,
                f"remote cleanup: {gone}folder {attempt.remote_dir} deleted on {host.name}",
                detail={"attempt": attempt.token, "task_removed": removed, "folder_deleted": attempt.remote_dir},
            )
    return len(ready)


def needs_results(attempt: Attempt) -> bool:
    """A cancelled case's last attempt: what its job left is brought home before it is deleted."""
    case = attempt.case
    return case.status == S.CANCELLED and attempt.results_at is None and attempt.remote_dir == case.remote_dir


def own_task(attempt: Attempt, state: PueueState) -> PueueTask | None:
    """The attempt's task if pueue still shows it: the id it stored, still carrying the attempt's
    label and folder (``matching``), for pueue reuses ids after ``clean``."""
    task = state.tasks.get(attempt.task_id) if attempt.task_id is not None else None
    return task if task is not None and is_attempt_folder_task(task, attempt.case, attempt.remote_dir) else None


def collect(queue: JobQueue, host: HpcHost, attempts: list[Attempt]) -> None:
    """Download the folders of cancelled cases, in one stream; each is then ready for cleanup.
    A worker that dies mid-stream leaves its claims to run out: the next one downloads again."""
    if not attempts:
        return
    names = {folder_name(a.remote_dir): a for a in attempts}
    fetched = queue.download(
        host.base_dir,
        {n: results_dir(a.case) for n, a in names.items()},
        {n: str(a.case_id) for n, a in names.items()},
        progress=lambda _got: crash_point("mid_collect"),
    )
    now = timezone.now()
    for name, attempt in names.items():
        result = fetched[name]
        if not result.reached or result.local:  # nothing definite, or this machine is full: try again
            Attempt.objects.filter(pk=attempt.pk).update(cleanup_started_at=None)
            continue
        if result.ok:
            Case.objects.filter(pk=attempt.case_id).update(result_path=str(results_dir(attempt.case)))
            record_event(attempt.case_id, f"what the cancelled job left came home ({result.files} files)")
        elif not result.missing:
            keep(attempt, f"what the cancelled job left could not be brought home: {result.error}")
            continue
        Attempt.objects.filter(pk=attempt.pk).update(results_at=now)
        attempt.results_at = now


def keep(attempt: Attempt, why: str) -> None:
    """Leave the attempt's folder on the host for good: what is in it did not come home."""
    Attempt.objects.filter(pk=attempt.pk).update(kept=why[:2000])
    attempt.kept = why
    record_event(attempt.case_id, f"{why}; its folder {attempt.remote_dir} is kept on the host")
