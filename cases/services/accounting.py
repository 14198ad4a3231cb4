"""GPU time: what an attempt used of its GPU group, recorded once, when it ends, and the ledger of
GPU seconds per owner, host and month that ``/metrics`` and the GPU accounting page read.

**Run time** is from the claim of the GPU group (``Attempt.started_at``) to the attempt's end: the
group is the case's alone all that while (the upload, the job, bringing its results home), and no
other case can have it. That is what the GPU is withheld from everyone else, so that is what a
share or a quota must count, as a batch system charges an allocation rather than the part of it a
job kept busy. pueue's own start and end of the task would leave the upload and the download out,
are missing for a task that never started, was killed or vanished, and come from the host's clock.

**GPU seconds** are the run time in whole seconds (integers add up exactly, so the counter made
from them never wobbles down) times the group's ``device_count``. An attempt without a GPU group
held none: 0.

Every attempt ends in ``transitions`` (its case leaves the statuses that hold a GPU), which calls
``end_attempts`` in the transaction of the move: completed, failed, lost, cancelled, marked failed,
given back or retried, all alike. The ledger (``GpuUsage``) takes each attempt's seconds in that
same transaction, under the case's owner, the group's host and the month the attempt ended in (the
site's time zone). An attempt adopted again after its end (an orphan task, ``operations``) keeps
what it had; its next end adds only what came since.
"""

from __future__ import annotations

from datetime import date, datetime

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from ..models import Attempt, GpuUsage


def end_attempts(case_id: int, now: datetime, **fields) -> None:
    """End the case's current attempt(s) at ``now`` with ``fields``, recording the GPU time of each.

    Each row is ended by a conditional update (only while it is still open), and only the call that
    ended it charges the ledger: never twice for one end.
    """
    current = Attempt.objects.filter(case_id=case_id, ended_at__isnull=True)
    for attempt in current.select_related("gpu_group", "case").only(
        "started_at", "gpu_seconds", "gpu_group__devices", "gpu_group__host_id", "case__owner_id"
    ):
        total = max(gpu_seconds(attempt, now), attempt.gpu_seconds or 0)
        if current.filter(pk=attempt.pk).update(ended_at=now, gpu_seconds=total, **fields):
            charge(attempt, total - (attempt.gpu_seconds or 0), now)


def gpu_seconds(attempt: Attempt, end: datetime) -> int:
    """Run time (claim to ``end``) in whole seconds, times the devices of the attempt's group."""
    if attempt.gpu_group is None:
        return 0
    return max(0, round((end - attempt.started_at).total_seconds())) * attempt.gpu_group.device_count


def month_of(moment: datetime) -> date:
    """The first day of ``moment``'s month in the site's time zone (``TIME_ZONE``)."""
    return timezone.localtime(moment, timezone.get_default_timezone()).date().replace(day=1)


def charge(attempt: Attempt, seconds: int, now: datetime) -> None:
    """Add ``seconds`` to the ledger row of the attempt's owner, host and month (made if missing)."""
    if seconds <= 0:
        return
    key = {"owner_id": attempt.case.owner_id, "host_id": attempt.gpu_group.host_id, "month": month_of(now)}
    row = GpuUsage.objects.filter(**key)
    if row.update(gpu_seconds=F("gpu_seconds") + seconds):
        return
    try:
        with transaction.atomic():
            GpuUsage.objects.create(**key, gpu_seconds=seconds)
    except IntegrityError:  # a peer made the row meanwhile: add to it
        row.update(gpu_seconds=F("gpu_seconds") + seconds)
