"""Reconciliation: make the database agree with what the remote side knows.

It runs all the time, beside live workers, so it only touches a ``submitting`` case
whose lease has expired. Its rule: a decision needs an answer. Only a parsed
``pueue status`` counts as "the remote side holds no such task"; a host that did not
answer changes nothing. Every decision is written as an event with the remote evidence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial

from django.conf import settings
from django.utils import timezone

from resources.contact import contact, for_each_host
from resources.jobqueue import GroupStatus, JobQueue, PueueState
from resources.models import GpuGroup, HpcHost
from resources.operations import note_pueue_groups
from resources.services import release_group, set_blocked

from ..models import HOLDS_GPU, Case, CaseStatus
from . import restore
from .isolation import isolated
from .jobs import folder_name, home_attempt, trace
from .labels import label_prefix
from .lifecycle import adopt, move_and_release, retry_or_fail, stop_and_fail
from .matching import BLOCKED_BY_RECONCILER, foreign_tasks, is_attempt_task, orphans, stored_tasks
from .monitoring import ALREADY_HOME, CLEANED_NOT_HOME, end_from_results
from .transitions import record_event, record_note_once

S = CaseStatus
log = logging.getLogger("mqic.reconciliation")
NO_ANSWER = "reconcile: the host did not answer"


@dataclass
class ReconcileReport:
    adopted: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
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
            *([f"completed {len(self.completed)}"] if self.completed else []),
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
    findings = restore.Findings([] if dry_run else restore.checked_cases())
    for_each_host(
        dict.fromkeys(HpcHost.objects.filter(enabled=True)), lambda host, _: reconcile_host(host, report, findings)
    )
    if findings.cases:
        restore.settle(findings, report)
    if (
        report.adopted
        or report.completed
        or report.retried
        or report.failed
        or report.released_groups
        or report.host_errors
    ):
        log.warning("reconciliation pass: %s", report)
    return report


def reconcile_host(host: HpcHost, report: ReconcileReport, findings: restore.Findings | None = None) -> None:
    stale = list(
        Case.objects.filter(
            status=S.SUBMITTING, gpu_group__host=host, lease_expires_at__lt=timezone.now()
        ).select_related("gpu_group")
    )
    with contact(host) as link:
        state = link.queue.state()
        give_up = partial(stop_and_fail, link.queue, state)
        traced = cleaned_up(link.queue, [c for c in stale if not attempt_tasks(c, state)])
        for case in stale:
            with isolated(case, "reconciling its submission", give_up=give_up):
                settle_stale_submission(link.queue, case, state, report, traced)
        if findings is not None:
            restore.check_host(link.queue, host, state, findings, report)
        prefix = label_prefix()
        check_groups(link.queue, host, state, report, prefix)
        report.orphans += [o.task.snapshot() | {"case_id": o.case_id} for o in orphans(state, prefix)]
    if link.failed:
        report.host_errors[host.name] = str(link.error)
        if findings is not None:
            findings.not_asked(host)
        for case in stale if not link.answered else ():
            record_note_once(
                case.pk, f"{NO_ANSWER} ({link.error}); nothing changed, will try again", kind=NO_ANSWER
            )


def attempt_tasks(case: Case, state: PueueState):
    return [t for t in state.find_by_label(case.label) if is_attempt_task(t, case)]


def cleaned_up(queue: JobQueue, cases: list[Case]) -> set[int]:
    """Which of these cases' current attempts the host cleaned up (left its trace), in one round trip."""
    if not cases:
        return set()
    found = queue.read_small_files([trace(case.remote_dir) for case in cases])
    return {case.pk for case in cases if found[trace(case.remote_dir)] is not None}


def settle_stale_submission(
    queue: JobQueue, case: Case, state: PueueState, report: ReconcileReport, traced: set[int]
) -> None:
    """Adopt the attempt's task; else end the case from its results if they are home, or fail it if
    the host cleaned the attempt up (the database is behind: restored); else try again."""
    candidates = state.find_by_label(case.label)
    mine = attempt_tasks(case, state)
    evidence = {"tasks_with_label": [t.snapshot() for t in candidates], "remote_dir": case.remote_dir}
    if report.dry_run:
        (report.adopted if mine else report.retried).append(case.name)
    elif mine:
        if adopt(queue, case, mine, reason="reconciled a submission whose id was never stored"):
            report.adopted.append(case.name)
    elif home_attempt(case) == folder_name(case.remote_dir):
        end_from_results(case, S.SUBMITTING, None, None, report, how=ALREADY_HOME, detail=evidence)
    elif case.pk in traced:
        if move_and_release(
            case, S.SUBMITTING, S.FAILED, reason=CLEANED_NOT_HOME, detail=evidence, last_error=CLEANED_NOT_HOME
        ):
            report.failed.append(case.name)
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


def check_groups(queue: JobQueue, host: HpcHost, state: PueueState, report: ReconcileReport, prefix: str) -> None:
    """Never offer a group whose pueue group runs work we did not start, is paused or is missing
    (``note_pueue_groups``: unblocked here too, once it exists)."""
    if not report.dry_run:
        blocked, _unblocked = note_pueue_groups(host, frozenset(state.groups))
        report.blocked_groups += blocked
    stored = stored_tasks(host.pk)
    for group in host.gpu_groups.all():
        foreign = foreign_tasks(state, group, stored, prefix)
        pueue_group = state.groups.get(group.pueue_group)
        paused = pueue_group is not None and pueue_group.status == GroupStatus.PAUSED
        if paused:
            report.paused_groups.append(group.pueue_group)
            if settings.MQIC_RESUME_PAUSED_GROUPS and not report.dry_run:
                queue.start_group(group.pueue_group)
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
