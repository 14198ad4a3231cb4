"""Submission: from ``submitted`` to a stored pueue task id, a host at a time.

A pass claims cases (GPU lock, a new attempt and ``submitting`` in one transaction), then per
host: looks up the labels of cases tried before (never add a case twice), checks each case's
folder on its own, uploads the good ones in one streamed tar, adds them all in one remote
round trip and stores the task ids.

Until ``pueue add`` is attempted, every failure is definite: nothing runs remotely, so the
case goes straight back to ``submitted`` and its GPU is released. A case whose folder went bad
since it was registered fails alone with the reason, and one damaged while it was being sent
costs that case an attempt; the rest of the batch goes on. Once an add may have happened, an
unknown outcome leaves the case in ``submitting`` for the reconciler, which decides from the
remote labels after the lease expires.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from resources.contact import contact, for_each_host
from resources.jobqueue import (
    AddResult,
    AddSpec,
    DaemonDown,
    FolderManifest,
    JobQueue,
    UnknownGroup,
    UnsafeFolder,
    while_waiting,
)
from resources.models import GpuGroup, HpcHost
from resources.operations import missing_group_reason
from resources.services import free_groups, set_blocked, take_group

from ..faults import crash_point
from ..models import Attempt, Case, CaseStatus
from . import queueing
from .intake import list_case
from .isolation import isolated
from .jobs import ATTEMPT_VARIABLE, folder_name, job_command, new_token, remote_dir, token_of
from .labels import label_for, label_prefix
from .lifecycle import adopt, fail, give_back, move_and_release, retry_or_fail
from .matching import live_tasks_of
from .progress import UploadProgress
from .tenancy import Tenancy, tenancy
from .transitions import record_event, transition

S = CaseStatus
log = logging.getLogger("mqic.submission")


@dataclass
class SubmitReport:
    started: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    host_errors: dict[str, str] = field(default_factory=dict)

    def __str__(self):
        parts = [f"started {len(self.started)}", f"adopted {len(self.adopted)}"]
        if self.returned:
            parts.append(f"put back {len(self.returned)}")
        if self.failed:
            parts.append(f"failed {len(self.failed)}")
        if self.unknown:
            parts.append(f"left for reconciliation {len(self.unknown)}")
        parts += [f"host {name}: {error}" for name, error in self.host_errors.items()]
        return ", ".join(parts)


def submit_pass(limit: int | None = None) -> SubmitReport:
    report = SubmitReport()
    by_host: dict[HpcHost, list[Case]] = defaultdict(list)
    for case in claim_cases(limit):
        by_host[case.gpu_group.host].append(case)
    for_each_host(by_host, lambda host, cases: submit_to_host(host, cases, report))
    if by_host:
        log.info("submission pass: %s", report)
    return report


PLACED_LOOKAHEAD = 100
"""How many waiting cases past the free groups a pass reads: cases whose group a claim of the same
pass took, or whose owner reached its quota in it, are passed over for the ones behind them."""


def claim_cases(limit: int | None = None) -> list[Case]:
    """Lock a free GPU group for each waiting case, in the queue's order, until groups run out.

    The free groups, the owners' standings and the first waiting cases that fit them are read
    once (``queueing``: fair share, quotas, placement and the hosts an owner may use); each claim
    is then its own compare-and-swap, so a group or a case a peer takes meanwhile is only passed
    over, and an owner a peer filled up to its quota is passed over for the rest of the pass.
    """
    pool = free_groups()
    wanted = min(len(pool), limit or len(pool))
    if not wanted:
        return []
    queue, waiting = queueing.next_cases(pool, wanted + PLACED_LOOKAHEAD)
    prefix, claimed, taken, full = label_prefix(), [], Counter(), set()
    for case in waiting:
        if len(claimed) == wanted or not pool:
            break
        if case.owner_id in full or queue.full(case.owner_id, taken[case.owner_id]):
            continue
        try:
            placed = claim_from(pool, case, prefix, queue.rules)
        except queueing.OverQuota:
            full.add(case.owner_id)  # a peer's claims filled it since the standings were read
            continue
        if placed:
            claimed.append(case)
            taken[case.owner_id] += 1
    return claimed


def claim(case_id: int, prefix: str | None = None) -> Case | None:
    """Claim this one case on the first free group that fits it, or ``None`` (none fits, or its
    owner holds its quota)."""
    case = Case.objects.get(pk=case_id)
    pool = free_groups()
    try:
        return case if claim_from(pool, case, prefix, tenancy(group.host for group in pool)) else None
    except queueing.OverQuota:
        return None


def claim_from(pool: list[GpuGroup], case: Case, prefix: str | None, rules: Tenancy) -> bool | None:
    """Claim ``case`` on the first group of ``pool`` that fits it (``queueing.fits``); a group taken
    (by this case or by a peer) leaves the pool. ``None``: no group of the pool was left for it;
    ``False``: a peer claimed the case; ``OverQuota``: its owner holds its quota."""
    for group in [group for group in pool if queueing.fits(group, case, rules)]:
        claimed = claim_on(group, case, prefix)
        if claimed is not False:
            pool.remove(group)
        if claimed is not None:
            return claimed
    return None


def claim_on(
    group: GpuGroup, case: Case, prefix: str | None, *, token: str | None = None, lifting: str = ""
) -> bool | None:
    """GPU lock, a new attempt and ``submitting`` together, or none of them, within the owner's
    quota. ``True``: claimed; ``None``: the group was taken meanwhile (try another); ``False``: the
    case was; ``OverQuota``: the owner's cases hold their quota. ``token``: the attempt's, when it
    is one found running on the host (``restore``): adopted whatever the quota, for it runs
    already; ``lifting``: the block it lifts (see ``take_group``)."""
    as_read = (group.status, group.holder_id, group.lease_generation, group.assigned_at)
    with transaction.atomic():
        if token is None:
            queueing.claim_within_quota(case.owner_id)  # raises OverQuota: nothing is written
        taken = take_group(group, case.pk, lifting=lifting)
        if not taken:
            return None if taken is False else False
        crash_point("after_gpu_lock")
        label = case.label or label_for(case.pk, prefix)
        token = token or new_token()
        folder = remote_dir(group.host, label, token)
        now = timezone.now()
        moved = transition(
            case,
            S.SUBMITTED,
            S.SUBMITTING,
            reason=f"GPU group {group.name} locked (lease {group.lease_generation})",
            detail={"gpu_group": group.name, "lease_generation": group.lease_generation, "remote_dir": folder},
            label=label,
            gpu_group=group,
            lease_generation=group.lease_generation,
            lease_expires_at=now + timedelta(seconds=settings.MQIC_SUBMIT_LEASE_SECONDS),
            remote_dir=folder,
            submitting_at=now,
            pueue_task_id=None,
            pueue_task_created_at=None,
            last_seen_task=None,
            task_missing_since=None,
            exit_code=None,
            upload_percent=None,
        )
        if moved:
            Case.objects.filter(pk=case.pk, last_error__startswith=WAITING).update(last_error="")
        if not moved:
            transaction.set_rollback(True)  # a peer took the case: our lock goes with it
            group.status, group.holder_id, group.lease_generation, group.assigned_at = as_read
            return False
        Attempt.objects.create(case=case, token=token, remote_dir=folder, gpu_group=group, started_at=now)
    crash_point("after_submitting")
    return True


def submit_to_host(host: HpcHost, cases: list[Case], report: SubmitReport) -> None:
    adding = False
    with contact(host) as link:
        cases = adopt_earlier_attempts(link.queue, cases, report)
        listed = checked(cases, report)
        cases = list(listed)
        cases = upload(link.queue, host, listed, report)
        crash_point("after_upload")
        adding = True
        add_cases(link.queue, cases, report)
    if not link.failed:
        return
    report.host_errors[host.name] = str(link.error)
    for case in cases:
        if adding:
            record_event(case.pk, f"pueue add outcome unknown, left for reconciliation: {link.error}")
            report.unknown.append(case.name)
        elif give_back(
            case, why := f"could not send to {host.name}, will retry: {link.error}", last_error=WAITING + why
        ):
            report.returned.append(case.name)  # no add was attempted: nothing of it runs remotely


def adopt_earlier_attempts(queue: JobQueue, cases: list[Case], report: SubmitReport) -> list[Case]:
    """A case tried before may still have a live task: adopt it instead of adding a second."""
    if not any(c.attempts for c in cases):
        return cases
    state = queue.state()
    fresh = []
    for case in cases:
        # An error here leaves the case ``submitting`` with no add tried: the reconciler settles it.
        with isolated(case, "looking for a live task of an earlier attempt"):
            live = live_tasks_of(state, case)
            if not live:
                fresh.append(case)
            elif adopt(queue, case, live, reason="found a live task of an earlier attempt"):
                report.adopted.append(case.name)
    return fresh


def checked(cases: list[Case], report: SubmitReport) -> dict[Case, FolderManifest]:
    """List each case's folder on its own: a bad one fails alone, the others go on.

    A folder that went bad since it was registered (a fifo added, a link swapped in, the
    folder gone) fails its case with the reason; an unexpected error puts the case back for
    the next pass (given up after a few in a row). What is listed here is what is sent.
    """
    listed = {}
    for case in cases:
        with isolated(case, "checking its folder before the upload", give_up=fail):
            try:
                listed[case] = list_case(Path(case.source_path))
            except UnsafeFolder as problem:
                why = f"the case folder is no longer a valid case: {problem}; fix it, then retry the case"
                if move_and_release(case, S.SUBMITTING, S.FAILED, reason=why, last_error=why):
                    report.failed.append(case.name)
    for case in cases:
        if case not in listed and give_back(case, "put back after an unexpected error; see the previous event"):
            report.returned.append(case.name)
    return listed


def upload(queue: JobQueue, host: HpcHost, listed: dict[Case, FolderManifest], report: SubmitReport) -> list[Case]:
    """Send every folder in one stream; a folder damaged on the way costs its case an attempt."""
    if not listed:
        return []
    progress = UploadProgress([(case.pk, manifest.size) for case, manifest in listed.items()])

    def on_progress(sent: int) -> None:
        crash_point("mid_upload")
        progress(sent)

    names = {folder_name(c.remote_dir): c for c in listed}
    folders = [(listed[c], name) for name, c in names.items()]
    with while_waiting(progress.write):
        damaged = queue.upload(folders, host.base_dir, progress=on_progress)
    progress.finish()
    for name, problem in damaged.items():
        case = names[name]
        with isolated(case, "putting back a folder damaged on the way", give_up=fail):
            Case.objects.filter(pk=case.pk).update(attempts=F("attempts") + 1)
            if retry_or_fail(case, S.SUBMITTING, f"the case folder changed while it was being sent: {problem}"):
                report.returned.append(case.name)
    return [c for name, c in names.items() if name not in damaged]


WAITING = "waiting: "
"""Starts a case's last error that says why it waits rather than what went wrong; its next
claim of a GPU group clears it."""
ADD_MARGIN_SECONDS = 5
"""How much longer than the command timeout a lease renewed for an add lasts."""


def add_cases(queue: JobQueue, cases: list[Case], report: SubmitReport) -> None:
    cases = held_for_add(cases)
    if not cases:
        return
    specs = [
        AddSpec(
            command=job_command(settings.MQIC_ENTRY_SCRIPT, case.gpu_group.devices),
            label=case.label,
            group=case.gpu_group.pueue_group,
            workdir=case.remote_dir,
            env={ATTEMPT_VARIABLE: token_of(case.remote_dir)},
        )
        for case in cases
    ]
    results = queue.add_many(specs)
    crash_point("after_pueue_add")
    for case, result in zip(cases, results, strict=True):
        # An error here leaves the case ``submitting``: the reconciler adopts its task by label.
        with isolated(case, "storing its pueue task id"):
            store_added(case, result, report)


def held_for_add(cases: list[Case]) -> list[Case]:
    """The cases whose submission lease this worker still holds, each renewed to outlast the add
    (its command timeout, and a margin) and charged an attempt; a fence, as a lock service gives.

    Once a lease has run out, the reconciler may ask the host, find no task and try the case
    again: a worker that was slowed down past its lease (a loaded node, a long upload) must then
    not add the task after all, or the case would run twice. A lease cannot be renewed once it
    has run out, so whoever adds does so inside a lease that outlasts the add itself.
    """
    now = timezone.now()
    seconds = max(settings.MQIC_SUBMIT_LEASE_SECONDS, settings.MQIC_SSH_COMMAND_TIMEOUT + ADD_MARGIN_SECONDS)
    held = []
    for case in cases:
        mine = Case.objects.filter(
            pk=case.pk, status=S.SUBMITTING, remote_dir=case.remote_dir, lease_expires_at__gt=now
        )
        if mine.update(lease_expires_at=now + timedelta(seconds=seconds), attempts=F("attempts") + 1):
            held.append(case)
        else:
            record_event(case.pk, "not added: its submission lease ran out first; the reconciler settles it")
    return held


def store_added(case: Case, result: AddResult, report: SubmitReport) -> None:
    """Record what ``pueue add`` said for one case."""
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
        # pueue refused before creating anything: a definite "no task", and no fault of the case's.
        # The group is blocked until its pueue group exists (the reconciler looks every tick).
        why = missing_group_reason(case.gpu_group.host, case.gpu_group.pueue_group)
        set_blocked(case.gpu_group_id, why)
        give_back(
            case, f"{WAITING}{why}; no attempt spent", attempts=F("attempts") - 1, last_error=f"{WAITING}{why}"
        )
        report.returned.append(case.name)
    else:
        # Anything else (a cut connection, a daemon that died mid-request) may hide a task.
        record_event(case.pk, f"pueue add outcome unknown, left for reconciliation: {result.error}")
        report.unknown.append(case.name)
