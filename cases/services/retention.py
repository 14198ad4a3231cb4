"""What may go after a while, so that a year at a thousand cases a day stays quick to read.

Pass records (``PassRun``) older than ``MQIC_KEEP_PASS_RUNS_DAYS``, and the notes of cases that
ended longer than ``MQIC_KEEP_CASE_NOTES_DAYS`` ago: events that changed no status (observations,
warnings, progress). A case's summary stays whole: its row, its attempts (exit code, log's last
lines, where its results are) and every status change of its timeline, with who and why. Rows go
in batches, each its own short transaction, so the passes that run meanwhile never wait long.

GPU accounting (``GpuUsage``, owners x hosts x months) is never pruned: ``mqic_gpu_seconds_total``
is a counter, which must never go down, and the ledger holds the GPU time of attempts whose case
is deleted. Whatever goes here later (attempts, whole cases) leaves it whole.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..models import CaseEvent, CaseStatus, PassRun

BATCH = 5_000
ENDED = (CaseStatus.COMPLETED, CaseStatus.FAILED, CaseStatus.CANCELLED, CaseStatus.REJECTED)


def prune(now=None) -> dict[str, int]:
    """Delete what the retention settings let go; returns how many rows of each kind went."""
    now = now or timezone.now()
    runs = PassRun.objects.filter(started_at__lt=now - timedelta(days=settings.MQIC_KEEP_PASS_RUNS_DAYS))
    notes = CaseEvent.objects.filter(
        to_status="",
        case__status__in=ENDED,
        case__finished_at__lt=now - timedelta(days=settings.MQIC_KEEP_CASE_NOTES_DAYS),
    )
    return {"pass records": delete_in_batches(runs), "notes of ended cases": delete_in_batches(notes)}


def delete_in_batches(rows) -> int:
    """Delete ``rows`` (a queryset) ``BATCH`` at a time; returns how many went."""
    gone = 0
    while ids := list(rows.values_list("pk", flat=True)[:BATCH]):
        with transaction.atomic():
            gone += rows.model.objects.filter(pk__in=ids).delete()[0]
    return gone
