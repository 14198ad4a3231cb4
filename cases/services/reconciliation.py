"""Reconciliation: make the database agree with what the remote side knows.

It runs all the time, beside live workers, so it only touches a ``submitting`` case
whose lease has expired. Its rule: a decision needs an answer. Only a parsed
``pueue status`` counts as "the remote side holds no such task"; a host that did not
answer changes nothing. Every decision is written as an event with the remote evidence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from resources.connections import pueue_for, record_contact
from resources.models import GpuGroup, HpcHost
from resources.remote.errors import RemoteError
from resources.remote.pueue_state import GroupStatus, PueueState
from resources.services import release_group, set_blocked

from ..models import HOLDS_GPU, Case, CaseEvent, CaseStatus
from .jobs import is_our_task
from .labels import case_id_from_label, label_prefix
from .lifecycle import adopt, retry_or_fail
from .transitions import record_event

S = CaseStatus
log = logging.getLogger("mqic.reconciliation")
NO_ANSWER = "reconcile: the host did not answer"
BLOCKED_BY_RECONCILER = "remote: "


@dataclass
class ReconcileReport:
    adopted: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    released_groups: list[str] = field(default_factory=list)
    blocked_groups: list[str] = field(default_factory=list)
    paused_groups: list[str] = field(default_factory=list)
    orphans: list[dict] = field(default_factory=list)
    host_errors: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False

    def __str__(self):
        parts = [
            f"adopted {len(self.adopted)}",
            f"retried {len(self.retried)}",
            f"failed {len(self.failed)}",
            f"released GPU groups {self.released_groups or 0}",
            f"blocked GPU groups {self.blocked_groups or 0}",
            f"paused pueue groups {self.paused_groups or 0}",
            f"orphan tasks {[o['id'] for o in self.orphans] or 0}",
        ]
        parts += [f"host {name}: {error}" for name, error in self.host_errors.items()]
        return ("(dry run) " if self.dry_run else "") + ", ".join(parts)


def reconcile_pass(*, dry_run: bool = False) -> ReconcileReport:
    report = ReconcileReport(dry_run=dry_run)
    release_groups_of_finished_cases(report)
    for host in HpcHost.objects.filter(enabled=True):
        reconcile_host(host, report)
    if report.adopted or report.retried or report.failed or report.released_groups or report.host_errors:
        log.warning("reconciliation pass: %s", report)
    return report


def reconcile_host(host: HpcHost, report: ReconcileReport) -> None:
    stale = list(
        Case.objects.filter(
            status=S.SUBMITTING, gpu_group__host=host, lease_expires_at__lt=timezone.now()
        ).select_related("gpu_group")
    )
    pueue = pueue_for(host)
    try:
        state = pueue.status()
    except RemoteError as error:
        report.host_errors[host.name] = str(error)
        record_contact(host, error)
        for case in stale:
            warn_once(case, f"{NO_ANSWER} ({error}); nothing changed, will try again")
        return
    record_contact(host)
    for case in stale:
        settle_stale_submission(pueue, case, state, report)
    prefix = label_prefix()
    check_groups(host, state, report, prefix)
    report.orphans += find_orphans(state, prefix)


def settle_stale_submission(pueue, case: Case, state: PueueState, report: ReconcileReport) -> None:
    candidates = state.find_by_label(case.label)
    mine = [t for t in candidates if is_our_task(t, case)]
    evidence = {"tasks_with_label": [t.snapshot() for t in candidates], "remote_dir": case.remote_dir}
    if report.dry_run:
        (report.adopted if mine else report.retried).append(case.name)
    elif mine:
        if adopt(pueue, case, mine, reason="reconciled a submission whose id was never stored"):
            report.adopted.append(case.name)
    else:
        why = "reconciled: the host answered and holds no task of this attempt"
        if candidates:
            why += f" (tasks {[t.id for t in candidates]} carry the label but not this attempt's evidence)"
        if retry_or_fail(case, S.SUBMITTING, why, detail=evidence):
            case.refresh_from_db(fields=["status"])
            (report.failed if case.status == S.FAILED else report.retried).append(case.name)


def release_groups_of_finished_cases(report: ReconcileReport) -> None:
    """A group ``assigned`` to a case that no longer holds a GPU is freed (the lie undone)."""
    for group in GpuGroup.objects.filter(status=GpuGroup.Status.ASSIGNED):
        holder = (
            Case.objects.filter(pk=group.holder_id).values("status", "gpu_group_id", "lease_generation").first()
        )
        if (
            holder
            and holder["status"] in HOLDS_GPU
            and holder["gpu_group_id"] == group.pk
            and (holder["lease_generation"] == group.lease_generation)
        ):
            continue
        if report.dry_run or release_group(group.pk, holder_id=group.holder_id, generation=group.lease_generation):
            report.released_groups.append(group.name)
            if holder and not report.dry_run:
                record_event(
                    group.holder_id,
                    f"GPU group {group.name} released: still assigned to this case while {holder['status']}",
                )


def check_groups(host: HpcHost, state: PueueState, report: ReconcileReport, prefix: str) -> None:
    """Never offer a group whose pueue group runs work we did not start, or is paused."""
    ours = set(
        Case.objects.filter(status__in=HOLDS_GPU, gpu_group__host=host, pueue_task_id__isnull=False).values_list(
            "pueue_task_id", flat=True
        )
    )
    for group in host.gpu_groups.all():
        foreign = [t.id for t in state.live_tasks_in_group(group.pueue_group) if t.id not in ours]
        foreign = [i for i in foreign if not _is_submitting_here(state.tasks[i], group, prefix)]
        pueue_group = state.groups.get(group.pueue_group)
        paused = pueue_group is not None and pueue_group.status == GroupStatus.PAUSED
        if paused:
            report.paused_groups.append(group.pueue_group)
            if settings.MQIC_RESUME_PAUSED_GROUPS and not report.dry_run:
                pueue_for(host).start_group(group.pueue_group)
                paused = False
        reason = blocking_reason(group, foreign, paused)
        if reason and not group.blocked_reason:
            if report.dry_run or set_blocked(group.pk, reason):
                report.blocked_groups.append(group.name)
        elif not reason and group.blocked_reason.startswith(BLOCKED_BY_RECONCILER) and not report.dry_run:
            set_blocked(group.pk, "")


def blocking_reason(group: GpuGroup, foreign: list[int], paused: bool) -> str:
    if foreign:
        return (
            f"{BLOCKED_BY_RECONCILER}pueue group {group.pueue_group} runs tasks {foreign} that MQIC did not start"
        )
    if paused:
        return f"{BLOCKED_BY_RECONCILER}pueue group {group.pueue_group} is paused (resume it with pueue start -g)"
    return ""


def _is_submitting_here(task, group: GpuGroup, prefix: str) -> bool:
    """A task of a case still in ``submitting`` on this group is ours, just not stored yet."""
    case_id = case_id_from_label(task.label, prefix)
    return case_id is not None and Case.objects.filter(pk=case_id, status=S.SUBMITTING, gpu_group=group).exists()


def find_orphans(state: PueueState, prefix: str) -> list[dict]:
    """Live tasks with our label prefix that no case holds: not its running task, nor a
    submission still waiting to be matched."""
    tasks = [t for t in state.tasks_with_label_prefix(prefix) if t.is_live]
    by_case = {t.id: case_id_from_label(t.label, prefix) for t in tasks}
    cases = {
        c["pk"]: c
        for c in Case.objects.filter(pk__in=set(by_case.values()), status__in=HOLDS_GPU).values(
            "pk", "status", "pueue_task_id"
        )
    }
    orphans = []
    for task in tasks:
        case = cases.get(by_case[task.id])
        held = case is not None and (case["status"] == S.SUBMITTING or case["pueue_task_id"] == task.id)
        if not held:
            orphans.append(task.snapshot() | {"case_id": by_case[task.id]})
    return orphans


def warn_once(case: Case, reason: str) -> None:
    """One warning per outage, not one per pass."""
    last = (
        CaseEvent.objects.filter(case=case).order_by("-created_at", "-pk").values_list("reason", flat=True).first()
    )
    if not (last or "").startswith(NO_ANSWER):
        record_event(case.pk, reason)
