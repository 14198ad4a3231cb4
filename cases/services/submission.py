"""Submission: from ``submitted`` to a stored pueue task id, a host at a time.

A pass claims cases (GPU lock and ``submitting`` in one transaction), then per host:
looks up the labels of cases tried before (never add a case twice), uploads every case
in one streamed tar, adds them all in one remote round trip and stores the task ids.

Until ``pueue add`` is attempted, every failure is definite: nothing runs remotely, so
the case goes straight back to ``submitted`` and its GPU is released. Once an add may
have happened, an unknown outcome leaves the case in ``submitting`` for the
reconciler, which decides from the remote labels after the lease expires.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from resources.connections import pueue_for, record_contact
from resources.models import GpuGroup, HpcHost
from resources.operations import missing_group_reason
from resources.remote.errors import OutcomeUnknown, RemoteError
from resources.remote.pueue import AddSpec, DaemonDown, UnknownGroup
from resources.services import lock_free_group, set_blocked

from ..faults import crash_point
from ..models import Case, CaseStatus
from .jobs import is_our_task, job_command, remote_dir
from .lifecycle import adopt, give_back, retry_or_fail
from .progress import UploadProgress
from .transitions import record_event, transition

S = CaseStatus
log = logging.getLogger("mqic.submission")


@dataclass
class SubmitReport:
    started: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    host_errors: dict[str, str] = field(default_factory=dict)

    def __str__(self):
        parts = [f"started {len(self.started)}", f"adopted {len(self.adopted)}"]
        if self.returned:
            parts.append(f"put back {len(self.returned)}")
        if self.unknown:
            parts.append(f"left for reconciliation {len(self.unknown)}")
        parts += [f"host {name}: {error}" for name, error in self.host_errors.items()]
        return ", ".join(parts)


def submit_pass(limit: int | None = None) -> SubmitReport:
    report = SubmitReport()
    by_host: dict[HpcHost, list[Case]] = defaultdict(list)
    for case in claim_cases(limit):
        by_host[case.gpu_group.host].append(case)
    for host, cases in by_host.items():
        submit_to_host(host, cases, report)
    if by_host:
        log.info("submission pass: %s", report)
    return report


def claim_cases(limit: int | None = None) -> list[Case]:
    """Lock a free GPU group for each waiting case, oldest first, until groups run out."""
    free = GpuGroup.objects.filter(status=GpuGroup.Status.AVAILABLE, blocked_reason="", host__enabled=True).count()
    waiting = Case.objects.filter(status=S.SUBMITTED).order_by("created_at", "pk").values_list("pk", flat=True)
    claimed = (claim(case_id) for case_id in list(waiting[: min(free, limit or free)]))
    return [case for case in claimed if case is not None]


def claim(case_id: int) -> Case | None:
    """GPU lock and ``submitting`` together, or neither."""
    with transaction.atomic():
        group = lock_free_group(holder_id=case_id)
        if group is None:
            return None
        crash_point("after_gpu_lock")
        case = Case.objects.get(pk=case_id)
        moved = transition(
            case,
            S.SUBMITTED,
            S.SUBMITTING,
            reason=f"GPU group {group.name} locked (lease {group.lease_generation})",
            detail={"gpu_group": group.name, "lease_generation": group.lease_generation},
            gpu_group=group,
            lease_generation=group.lease_generation,
            lease_expires_at=timezone.now() + timedelta(seconds=settings.MQIC_SUBMIT_LEASE_SECONDS),
            remote_dir=remote_dir(group.host, case.label),
            submitting_at=timezone.now(),
            pueue_task_id=None,
            pueue_task_created_at=None,
            exit_code=None,
            upload_percent=None,
        )
        if not moved:
            transaction.set_rollback(True)  # a peer took the case: our lock goes with it
            return None
    crash_point("after_submitting")
    return case


def submit_to_host(host: HpcHost, cases: list[Case], report: SubmitReport) -> None:
    pueue = pueue_for(host)
    try:
        cases = adopt_earlier_attempts(pueue, cases, report)
        progress = UploadProgress(cases)

        def on_progress(sent: int) -> None:
            crash_point("mid_upload")
            progress(sent)

        pueue.transport.upload_tree(
            [(Path(c.source_path), c.label) for c in cases], host.base_dir, progress=on_progress
        )
    except RemoteError as error:
        # No add was attempted in this pass: nothing of these cases runs remotely.
        for case in cases:
            give_back(case, f"upload to {host.name} failed, will retry: {error}")
            report.returned.append(case.name)
        report.host_errors[host.name] = str(error)
        record_contact(host, error)
        return
    crash_point("after_upload")
    add_cases(host, pueue, cases, report)


def adopt_earlier_attempts(pueue, cases: list[Case], report: SubmitReport) -> list[Case]:
    """A case tried before may still have a live task: adopt it instead of adding a second."""
    if not any(c.attempts for c in cases):
        return cases
    state = pueue.status()
    fresh = []
    for case in cases:
        live = [t for t in state.find_by_label(case.label) if t.is_live and is_our_task(t, case, any_attempt=True)]
        if not live:
            fresh.append(case)
        elif adopt(pueue, case, live, reason="found a live task of an earlier attempt"):
            report.adopted.append(case.name)
    return fresh


def add_cases(host: HpcHost, pueue, cases: list[Case], report: SubmitReport) -> None:
    if not cases:
        return
    Case.objects.filter(pk__in=[c.pk for c in cases], status=S.SUBMITTING).update(attempts=F("attempts") + 1)
    specs = [
        AddSpec(
            command=job_command(settings.MQIC_ENTRY_SCRIPT, case.gpu_group.devices),
            label=case.label,
            group=case.gpu_group.pueue_group,
            workdir=case.remote_dir,
        )
        for case in cases
    ]
    try:
        results = pueue.add_many(specs)
    except OutcomeUnknown as error:
        for case in cases:
            record_event(case.pk, f"pueue add outcome unknown, left for reconciliation: {error}")
            report.unknown.append(case.name)
        report.host_errors[host.name] = str(error)
        record_contact(host, error)
        return
    record_contact(host)
    crash_point("after_pueue_add")
    for case, result in zip(cases, results, strict=True):
        if result.task_id is not None:
            stored = transition(
                case,
                S.SUBMITTING,
                S.RUNNING,
                reason=f"pueue task {result.task_id} added in group {case.gpu_group.pueue_group}",
                detail={"task_id": result.task_id},
                pueue_task_id=result.task_id,
                lease_expires_at=None,
            )
            crash_point("after_task_stored")
            (report.started if stored else report.unknown).append(case.name)
        elif isinstance(result.error, DaemonDown):
            # pueued is down: nothing was created, and it is no fault of the case's.
            give_back(case, f"pueue add refused, will retry: {result.error}", attempts=F("attempts") - 1)
            report.returned.append(case.name)
        elif isinstance(result.error, UnknownGroup):
            # pueue refused before creating anything: a definite "no task".
            set_blocked(case.gpu_group_id, missing_group_reason(host, case.gpu_group.pueue_group))
            retry_or_fail(case, S.SUBMITTING, f"pueue add failed: {result.error}")
            report.returned.append(case.name)
        else:
            # Anything else (a cut connection, a daemon that died mid-request) may hide a task.
            record_event(case.pk, f"pueue add outcome unknown, left for reconciliation: {result.error}")
            report.unknown.append(case.name)
