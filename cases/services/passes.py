"""Remembering when each pass last ran and what it did, for the admin overview."""

from django.utils import timezone

from ..models import PassRecord


def record_pass(kind: str, report) -> str:
    summary = str(report)
    PassRecord.objects.update_or_create(
        kind=kind,
        defaults={
            "finished_at": timezone.now(),
            "summary": summary,
            "ok": not getattr(report, "host_errors", None),
        },
    )
    return summary
