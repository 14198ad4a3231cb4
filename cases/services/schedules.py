"""The django-q2 schedules and the fast path beside them.

django-q2's scheduler has a one-minute resolution (and looks every 30 s), so the
schedules are the safety net; ``enqueue_due_passes`` (run by the ``tick`` command every
few seconds) enqueues a pass as soon as there is work for it.
"""

from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import Schedule
from django_q.tasks import async_task

from resources.models import GpuGroup

from ..models import Case, CaseStatus

PASSES = {
    "mqic scan": "cases.tasks.scan",
    "mqic submit": "cases.tasks.submit",
    "mqic monitor": "cases.tasks.monitor",
    "mqic reconcile": "cases.tasks.reconcile",
}


def setup_schedules() -> list[Schedule]:
    return [
        Schedule.objects.update_or_create(
            name=name, defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": 1, "repeats": -1}
        )[0]
        for name, func in PASSES.items()
    ]


def enqueue_due_passes() -> list[str]:
    """Enqueue the passes that have work now, unless the queue still holds earlier ones."""
    if get_broker().queue_size():
        return []
    due = []
    if Case.objects.filter(status=CaseStatus.RUNNING).exists():
        due.append("cases.tasks.monitor")
    waiting = Case.objects.filter(status=CaseStatus.SUBMITTED).exists()
    if waiting and GpuGroup.objects.filter(status=GpuGroup.Status.AVAILABLE, blocked_reason="").exists():
        due.append("cases.tasks.submit")
    if Case.objects.filter(status=CaseStatus.SUBMITTING, lease_expires_at__lt=timezone.now()).exists():
        due.append("cases.tasks.reconcile")
    for func in due:
        async_task(func)
    return due
