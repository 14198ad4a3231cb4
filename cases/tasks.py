"""django-q2 entry points: one line each around a service pass.

Every pass is safe to run twice at once (all state changes are compare-and-swap), so a
schedule fired twice, or a pass enqueued by the watcher beside a scheduled one, is harmless.
The returned text is what django-q2 shows as the task's result.
"""

from django_q.tasks import async_task

from .services import intake, monitoring, reconciliation, submission
from .services.passes import record_pass


def scan() -> str:
    report = intake.scan()
    if report.registered:
        async_task("cases.tasks.submit")
    return record_pass("scan", report)


def submit() -> str:
    return record_pass("submit", submission.submit_pass())


def monitor() -> str:
    report = monitoring.monitor_pass()
    if report.freed_gpus:
        async_task("cases.tasks.submit")
    return record_pass("monitor", report)


def reconcile() -> str:
    return record_pass("reconcile", reconciliation.reconcile_pass())
