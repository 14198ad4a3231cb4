"""After the database was restored from a backup: it is behind the hosts and the results folder.

A backup knows a case as ``submitted``, ``submitting`` or ``running``; since it was taken the
case may have run, ended, come home and been cleaned up. What is found decides, in this order,
and nothing is run again on a guess:

1. a task of the case's label working in an attempt folder of the host is adopted; the passes
   follow it as any other;
2. results at home that came from one of the case's attempt folders (the download marks each
   folder it brings home with its origin): the case ends from them;
3. an attempt folder or the trace of a cleaned-up one (``resources.jobqueue.TRACES``) without
   results at home: the case ran, and its evidence is gone: it fails, saying so;
4. a host that cannot be asked: nothing changes ("could not ask" is never "not found").

Running and submitting cases know their attempt: the monitor and reconcile passes look at home
and for its trace before they call a task lost or try again. A ``submitted`` case knows none:
``after_restore`` marks every one (``Case.restore_check``), the submit pass leaves them alone,
and the reconcile pass asks every host for their labels (``check_host``) and settles them once
all hosts answered (``settle``).
"""

from __future__ import annotations

import posixpath
import threading
from collections import defaultdict

from django.utils import timezone

from resources.jobqueue import JobQueue, PueueState, PueueTask, Traces
from resources.models import GpuGroup, HpcHost

from ..models import Attempt, Case, CaseStatus
from .isolation import isolated
from .jobs import home_attempt, remote_dir, token_of
from .labels import label_for, label_prefix
from .lifecycle import adopt
from .matching import BLOCKED_BY_RECONCILER
from .monitoring import EVIDENCE_GONE, end_from_results
from .submission import claim_on
from .transitions import record_note_once, transition

S = CaseStatus
CHECKING = "waits until every host was asked for a run of it after the restored backup"
RAN_AFTER_BACKUP = "it ran after the restored backup was taken"


def mark_restored() -> int:
    """Every waiting case is checked against every host before it may be sent: the backup may
    predate its run. Labels are given now, as the first claim would have (the same ones)."""
    prefix = label_prefix()
    waiting = Case.objects.filter(status=S.SUBMITTED)
    for case in waiting.filter(label__isnull=True).only("pk"):
        Case.objects.filter(pk=case.pk, label__isnull=True).update(label=label_for(case.pk, prefix))
    return waiting.update(restore_check=True)


def checked_cases() -> list[Case]:
    return list(Case.objects.filter(status=S.SUBMITTED, restore_check=True).exclude(label__isnull=True))


class Findings:
    """What each host held of the checked cases, gathered by the hosts' threads of one pass."""

    def __init__(self, cases: list[Case]):
        self.cases = cases
        self.traces: dict[int, list[tuple[str, Traces]]] = defaultdict(list)
        self.tasks: dict[int, list[tuple[HpcHost, PueueTask]]] = defaultdict(list)
        self.unanswered: list[str] = []
        self._lock = threading.Lock()

    def note(self, host: HpcHost, traces: dict[str, Traces], tasks: dict[int, list[PueueTask]]) -> None:
        with self._lock:
            for case_id, found in tasks.items():
                self.tasks[case_id] += [(host, task) for task in found]
            for case in self.cases:
                found = traces.get(case.label)
                if found is not None and (found.folders or found.cleaned):
                    self.traces[case.pk].append((host.name, found))

    def not_asked(self, host: HpcHost) -> None:
        with self._lock:
            self.unanswered.append(host.name)


def check_host(queue: JobQueue, host: HpcHost, state: PueueState, findings: Findings, report) -> None:
    """Adopt each checked case's task found on ``host``; note what else the host holds of them."""
    if not findings.cases:
        return
    found = {}
    for case in findings.cases:
        tasks = [t for t in state.find_by_label(case.label) if in_attempt_folder(t, host, case.label)]
        if tasks:
            found[case.pk] = tasks
            with isolated(case, "adopting a run found after the database restore"):
                adopt_found(queue, host, case, tasks, report)
    findings.note(host, queue.traces(host.base_dir, [case.label for case in findings.cases]), found)


def in_attempt_folder(task: PueueTask, host: HpcHost, label: str) -> bool:
    """The task works in ``<base dir>/<label>.<token>``: an attempt of this case on this host."""
    folder = posixpath.normpath(task.path or "/")
    return posixpath.dirname(folder) == posixpath.normpath(host.base_dir) and posixpath.basename(
        folder
    ).startswith(f"{label}.")


def adopt_found(queue: JobQueue, host: HpcHost, case: Case, tasks: list[PueueTask], report) -> None:
    """Claim the GPU group the found task runs in, with the attempt's own token, then adopt it."""
    keep = min(tasks, key=lambda t: (t.created_at, t.id))
    group = GpuGroup.objects.filter(host=host, pueue_group=keep.group).first()
    claimed = (
        claim_on(group, case, None, token=token_of(keep.path), lifting=BLOCKED_BY_RECONCILER)
        if group is not None
        else None
    )
    if not claimed:
        return  # its group is another's as the backup has it: ``settle`` says so; tried each pass
    Case.objects.filter(pk=case.pk).update(restore_check=False)
    mine = [t for t in tasks if posixpath.normpath(t.path) == posixpath.normpath(case.remote_dir)]
    if adopt(queue, case, mine, reason="found on the host after the database restore"):
        report.adopted.append(case.name)


def settle(findings: Findings, report) -> None:
    """Once every host answered: a case's results at home end it; a trace without them fails it;
    nothing anywhere lets it go as the backup had it."""
    for case in Case.objects.filter(pk__in=[c.pk for c in findings.cases], status=S.SUBMITTED, restore_check=True):
        with isolated(case, "settling a case after the database restore"):
            settle_one(case, findings, report)


def settle_one(case: Case, findings: Findings, report) -> None:
    home = home_attempt(case)
    found = findings.traces.get(case.pk, [])
    if home is not None:
        end_from_home(case, home, findings, report)
    elif findings.tasks.get(case.pk):
        where = ", ".join(f"task {t.id} on {h.name}" for h, t in findings.tasks[case.pk])
        record_note_once(case.pk, f"{CHECKING}: {where} is adopted once its GPU group is free", kind=CHECKING)
    elif findings.unanswered:
        record_note_once(case.pk, f"{CHECKING}: no answer from {', '.join(findings.unanswered)}", kind=CHECKING)
    elif found:
        where = "; ".join(f"{name}: {', '.join(sorted(t.folders | t.cleaned))}" for name, t in found)
        why = f"{RAN_AFTER_BACKUP} ({where}), but its results are not in the results folder: {EVIDENCE_GONE}"
        if transition(case, S.SUBMITTED, S.FAILED, reason=why, last_error=why, restore_check=False):
            report.failed.append(case.name)
    else:
        Case.objects.filter(pk=case.pk, restore_check=True).update(restore_check=False)


def end_from_home(case: Case, folder: str, findings: Findings, report) -> None:
    """The case ran after the backup and its results came home: record that attempt, then end the
    case from them. Where its task or folder is still on a host, the attempt is that host's, so
    that hygiene removes them once the retention is over."""
    task_host, task = next(
        ((h, t) for h, t in findings.tasks.get(case.pk, []) if t.path.endswith(folder)), (None, None)
    )
    kept_on = next((name for name, t in findings.traces.get(case.pk, []) if folder in t.folders), None)
    host = task_host or HpcHost.objects.filter(name=kept_on).first()
    groups = GpuGroup.objects.filter(host=host)
    group = (groups.filter(pueue_group=task.group).first() if task else None) or groups.first()
    now = timezone.now()
    where = remote_dir(host, case.label, token_of(folder)) if host is not None else folder
    Attempt.objects.get_or_create(
        token=token_of(folder),
        defaults={
            "case": case,
            "remote_dir": where,
            "gpu_group": group,
            "started_at": now,
            "ended_at": now,
            "task_id": task.id if task else None,
            "task_created_at": task.created_at if task else None,
            "cleaned_at": None if host is not None else now,
        },
    )
    case.remote_dir = where
    end_from_results(
        case,
        S.SUBMITTED,
        None,
        None,
        report,
        how=f" ({RAN_AFTER_BACKUP}; its results were home)",
        remote_dir=where,
        restore_check=False,
    )
