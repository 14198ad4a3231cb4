"""Monitoring: one ``pueue status`` per host moves every running case forward.

A finished task's folder (outputs and the job log) is downloaded for failures too, then
the case ends and its GPU group is released in one transaction. A task that vanished
(``pueue clean``) is judged by the exit marker its job left; with neither task nor
marker for longer than the grace period, the case failed as lost.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from resources.connections import pueue_for, record_contact
from resources.models import GpuGroup, HpcHost
from resources.remote.errors import RemoteError
from resources.remote.pueue_state import PueueTask, TaskResult

from ..faults import crash_point
from ..models import Case, CaseStatus
from .jobs import EXIT_MARKER, JOB_LOG, read_exit_markers
from .lifecycle import move_and_release, retry_or_fail
from .transitions import record_event

S = CaseStatus
log = logging.getLogger("mqic.monitoring")
LOG_TAIL_LINES = 50
# What a monitoring pass reads of a running case: loading only these keeps a pass over
# thousands of running cases cheap (most of them only get compared with their task).
MONITORED_FIELDS = (
    "name",
    "status",
    "label",
    "gpu_group_id",
    "lease_generation",
    "remote_dir",
    "pueue_task_id",
    "pueue_task_created_at",
    "last_seen_task",
    "task_missing_since",
)


@dataclass
class MonitorReport:
    completed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    still_running: int = 0
    host_errors: dict[str, str] = field(default_factory=dict)

    @property
    def freed_gpus(self) -> bool:
        return bool(self.completed or self.failed or self.requeued)

    def __str__(self):
        parts = [
            f"completed {len(self.completed)}",
            f"failed {len(self.failed)}",
            f"requeued {len(self.requeued)}",
            f"still running {self.still_running}",
        ]
        parts += [f"host {name}: {error}" for name, error in self.host_errors.items()]
        return ", ".join(parts)


def monitor_pass() -> MonitorReport:
    report = MonitorReport()
    by_host: dict[HpcHost, list[Case]] = defaultdict(list)
    running = list(Case.objects.filter(status=S.RUNNING).only(*MONITORED_FIELDS))
    groups = GpuGroup.objects.select_related("host").in_bulk({c.gpu_group_id for c in running})
    for case in running:
        case.gpu_group = groups[case.gpu_group_id]
        by_host[case.gpu_group.host].append(case)
    for host, cases in by_host.items():
        try:
            monitor_host(host, cases, report)
        except RemoteError as error:
            report.host_errors[host.name] = str(error)
            record_contact(host, error)
    if report.freed_gpus or report.host_errors:
        log.info("monitoring pass: %s", report)
    return report


def monitor_host(host: HpcHost, cases: list[Case], report: MonitorReport) -> None:
    pueue = pueue_for(host)
    state = pueue.status()
    record_contact(host)
    vanished = []
    for case in cases:
        task = state.tasks.get(case.pueue_task_id)
        if task is None or not is_same_task(task, case):
            vanished.append(case)
        elif task.is_live:
            note_live(case, task)
            report.still_running += 1
        elif task.result == TaskResult.KILLED:
            requeue_killed(case, task, report)
        else:
            finish(pueue.transport, case, task, task.exit_code, report)
    if vanished:
        judge_vanished(pueue.transport, vanished, report)


def is_same_task(task: PueueTask, case: Case) -> bool:
    """pueue reuses ids after ``clean``: the id must still carry our label and creation time."""
    if task.label != case.label:
        return False
    return case.pueue_task_created_at is None or task.created_at == case.pueue_task_created_at


def note_live(case: Case, task: PueueTask) -> None:
    """Keep the last seen snapshot (written only when it changed, so quiet passes write nothing)."""
    snapshot = task.snapshot()
    if case.last_seen_task != snapshot or case.pueue_task_created_at is None or case.task_missing_since:
        Case.objects.filter(pk=case.pk, status=S.RUNNING, pueue_task_id=task.id).update(
            last_seen_task=snapshot, pueue_task_created_at=task.created_at, task_missing_since=None
        )


def requeue_killed(case: Case, task: PueueTask, report: MonitorReport) -> None:
    """We never kill a running case's task ourselves (cancel moves the case first), so a
    ``Killed`` task is the infrastructure's doing, e.g. a pueued restart: run it again."""
    if retry_or_fail(
        case, S.RUNNING, f"pueue task {task.id} was killed outside MQIC", detail={"task": task.snapshot()}
    ):
        report.requeued.append(case.name)


def finish(transport, case: Case, task: PueueTask | None, exit_code: int | None, report: MonitorReport) -> None:
    """Bring the results home, then end the case and free its GPU group.

    Only one worker finishes a case: it takes the case's lease first (another monitor pass
    running beside this one skips the case), and a crashed finisher's lease runs out.
    """
    if not take_finishing_lease(case):
        return
    results = Path(settings.MQIC_RESULTS_DIR) / case.name
    try:
        transport.download_dir(case.remote_dir, results, progress=lambda _got: crash_point("mid_download"))
    except RemoteError:
        Case.objects.filter(pk=case.pk, status=S.RUNNING).update(lease_expires_at=None)  # next pass retries
        raise
    marker = read_local_marker(results)
    exit_code = marker if marker is not None else exit_code
    ok = exit_code == 0
    detail = {"task": task.snapshot() if task else None, "exit_code": exit_code}
    fields = {
        "exit_code": exit_code,
        "result_path": str(results),
        "log_tail": log_tail(results),
        "lease_expires_at": None,
    }
    if task is not None:
        fields.update(last_seen_task=task.snapshot(), pueue_task_created_at=task.created_at)
    if ok:
        won = move_and_release(
            case, S.RUNNING, S.COMPLETED, reason="job finished with exit code 0", detail=detail, **fields
        )
    else:
        why = (
            f"job failed with exit code {exit_code}"
            if exit_code is not None
            else f"job failed: {task.result.value}"
        )
        if task is not None and task.spawn_error:
            why += f" ({task.spawn_error})"
        won = move_and_release(case, S.RUNNING, S.FAILED, reason=why, detail=detail, last_error=why, **fields)
    if won:
        (report.completed if ok else report.failed).append(case.name)


def take_finishing_lease(case: Case) -> bool:
    now = timezone.now()
    free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    until = now + timedelta(seconds=settings.MQIC_SUBMIT_LEASE_SECONDS)
    return bool(Case.objects.filter(free, pk=case.pk, status=S.RUNNING).update(lease_expires_at=until))


def judge_vanished(transport, cases: list[Case], report: MonitorReport) -> None:
    markers = read_exit_markers(transport, cases)
    now = timezone.now()
    grace = timedelta(seconds=settings.MQIC_LOST_GRACE_SECONDS)
    for case in cases:
        if markers[case.pk] is not None:
            finish(transport, case, None, markers[case.pk], report)
        elif case.task_missing_since is None:
            Case.objects.filter(pk=case.pk, status=S.RUNNING).update(task_missing_since=now)
            record_event(case.pk, f"pueue task {case.pueue_task_id} is gone and left no exit marker; waiting")
        elif now - case.task_missing_since >= grace:
            why = f"lost: pueue task {case.pueue_task_id} vanished without an exit marker"
            evidence = {
                "task_missing_since": case.task_missing_since.isoformat(),
                "last_seen_task": case.last_seen_task,
            }
            if move_and_release(case, S.RUNNING, S.FAILED, reason=why, detail=evidence, last_error=why):
                report.failed.append(case.name)


def read_local_marker(results: Path) -> int | None:
    try:
        return int((results / EXIT_MARKER).read_text().strip())
    except (OSError, ValueError):
        return None


def log_tail(results: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = (results / JOB_LOG).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
