"""Monitoring: one ``pueue status`` per host moves every running case forward.

A finished task's folder (outputs and the job log) is downloaded for failures too, then
the case ends and its GPU group is released in one transaction. A task that vanished
(``pueue clean``) is judged by the exit marker its job left; with neither task nor
marker for longer than the grace period, the case failed as lost.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from django.conf import settings
from django.db.models import Q, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from resources.contact import contact, for_each_host
from resources.jobqueue import FolderResult, JobQueue, PueueState, PueueTask, RemoteError, TaskResult
from resources.models import GpuGroup, HpcHost
from resources.remote import collector

from ..faults import crash_point
from ..models import Attempt, Case, CaseStatus
from . import hygiene
from .isolation import isolated, unexpected_error
from .jobs import (
    ATTEMPT_VARIABLE,
    EXIT_MARKER,
    JOB_LOG,
    exit_marker,
    folder_name,
    home_attempt,
    marker_code,
    results_dir,
    token_of,
    trace,
)
from .lifecycle import fail, move_and_release, retry_or_fail, still_running, stop_and_fail
from .logtail import tail_lines
from .matching import is_stored_task
from .transitions import record_event, record_note_once

S = CaseStatus
log = logging.getLogger("mqic.monitoring")
LOG_TAIL_LINES = 50
LOG_TAIL_MAX_BYTES = 256 << 10
SKIPPED_SHOWN = 100
MARKER_MAX_BYTES = 64
RESULTS_WAIT = "its results could not come home yet: "
KILLED_LIVES_ON = "the task was killed outside MQIC, but its processes may live on"
LOST_LIVES_ON = "its task vanished without an exit marker, but processes of it still run"
ALREADY_HOME = " (its results were already home: the database is older than the host's state, e.g. restored)"
EVIDENCE_GONE = "the evidence is gone (moved away?); not run again"
CLEANED_NOT_HOME = (
    "its attempt ended and was cleaned up on the host (the database is older: restored?), "
    f"but its results are not in the results folder: {EVIDENCE_GONE}"
)
# What a monitoring pass reads of a running case: loading only these keeps a pass over
# thousands of running cases cheap (most of them only get compared with their task). The last
# three cost to convert (two times, a JSON document): ``running_cases`` reads them as the
# database's text first, and has them converted only when that text is new to it.
PLAIN_FIELDS = ("name", "label", "gpu_group_id", "pueue_task_id")
AS_TEXT = ("pueue_task_created_at", "last_seen_task", "task_missing_since")
WATCHED_FIELDS = (*PLAIN_FIELDS, *AS_TEXT)
# ...and what it loads of the few whose task ended or vanished (as models: they move on).
MONITORED_FIELDS = (*WATCHED_FIELDS, "status", "lease_generation", "remote_dir")
FRESH_BY_ID = 500
"""Up to this many cases new to ``running_cases`` are read again by id; more, and all are."""


@dataclass
class MonitorReport:
    completed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    still_running: int = 0
    cleaned: int = 0
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
        if self.cleaned:
            parts.append(f"cleaned up {self.cleaned} remote folder(s)")
        parts += [f"host {name}: {error}" for name, error in self.host_errors.items()]
        return ", ".join(parts)


class Watched:
    """A running case as a monitor pass first reads it: the fields it compares (``WATCHED_FIELDS``)
    from one row, no model instance. Most running cases are only compared with their task, and ten
    thousand of these load several times faster than as models; the few that move on are loaded as
    models then (``as_cases``). ``last_read`` is what ``running_cases`` read of its row."""

    __slots__ = ("pk", *WATCHED_FIELDS, "gpu_group", "last_read")

    def __init__(self, row: tuple):
        """``row``: the pk and the ``WATCHED_FIELDS``, in that order (one assignment, not a loop:
        a pass builds one per running case)."""
        (
            self.pk,
            self.name,
            self.label,
            self.gpu_group_id,
            self.pueue_task_id,
            self.pueue_task_created_at,
            self.last_seen_task,
            self.task_missing_since,
        ) = row


def as_cases(watched: list[Watched]) -> dict[int, Case]:
    """The model instances of these cases (with their GPU group as already read), in one query."""
    loaded = Case.objects.only(*MONITORED_FIELDS).in_bulk([w.pk for w in watched])
    for w in watched:
        if w.pk in loaded:
            loaded[w.pk].gpu_group = w.gpu_group
    return loaded


class LastRead(NamedTuple):
    """What this process last read of a running case's ``AS_TEXT`` fields: the database's text and
    the values Django converted from it (the stored snapshot decoded: only ever compared, never
    changed), and a task found to have that very snapshot, once one was compared with it."""

    texts: tuple[str | None, ...]
    values: tuple[Any, ...]
    matched: PueueTask | None = None


_last_read: dict[int, LastRead] = {}
"""By case id, what this process's last pass read of the running cases. A quiet case's row and task
do not change from pass to pass: a pass then neither converts its times nor decodes its stored
snapshot again, nor builds its task's snapshot to compare (``note_live``), which were half of a
pass over ten thousand running cases. Whatever is reused was read from the very text read now."""


def running_cases() -> list[Watched]:
    """Every running case, as ``Watched``: one query, with the ``AS_TEXT`` fields as text; the cases
    whose text this process did not read before (new ones, changed ones) are read again, converted."""
    global _last_read
    before, after = _last_read, {}
    as_text = [Cast(f, TextField()) for f in AS_TEXT]
    read: list[Watched | None] = []
    fresh: dict[int, int] = {}
    for row in Case.objects.filter(status=S.RUNNING).values_list("pk", *PLAIN_FIELDS, *as_text):
        known = before.get(row[0])
        if known is not None and known.texts == row[-len(AS_TEXT) :]:
            case = Watched(row[: 1 + len(PLAIN_FIELDS)] + known.values)
            case.last_read = after[case.pk] = known
            read.append(case)
        else:
            fresh[row[0]] = len(read)
            read.append(None)
    if fresh:
        rows = Case.objects.filter(status=S.RUNNING)
        if len(fresh) <= FRESH_BY_ID:
            rows = rows.filter(pk__in=list(fresh))
        for row in rows.values_list("pk", *WATCHED_FIELDS, *as_text):
            if (index := fresh.get(row[0])) is not None:  # (a case running since the first query: next pass)
                case = read[index] = Watched(row[: -len(AS_TEXT)])
                texts, values = row[-len(AS_TEXT) :], row[1 + len(PLAIN_FIELDS) : -len(AS_TEXT)]
                case.last_read = after[case.pk] = LastRead(texts, values)
    _last_read = after
    return [case for case in read if case is not None]


def monitor_pass() -> MonitorReport:
    report = MonitorReport()
    with collector.paused():  # ten thousand rows and Watched: see resources.remote.collector
        running = running_cases()
    groups = GpuGroup.objects.select_related("host").in_bulk({c.gpu_group_id for c in running})
    hosts = {group.host_id: group.host for group in groups.values()}
    by_host_id: dict[int, list[Watched]] = {host_id: [] for host_id in hosts}
    for case in running:  # keyed by ids: hashing a model instance per case is ten times slower
        case.gpu_group = group = groups[case.gpu_group_id]
        by_host_id[group.host_id].append(case)
    by_host = {hosts[host_id]: cases for host_id, cases in by_host_id.items()}
    for host in hygiene.hosts_with_work():
        by_host.setdefault(host, [])
    for_each_host(by_host, lambda host, cases: monitor_host(host, cases, report))
    if report.freed_gpus or report.host_errors:
        log.info("monitoring pass: %s", report)
    return report


def monitor_host(host: HpcHost, cases: list[Watched], report: MonitorReport) -> None:
    """One ``pueue status`` for all of the host's running cases; each case then goes its own way."""
    with contact(host) as link:
        state = link.queue.state()

        def give_up(case: Watched, why: str) -> None:
            if (loaded := as_cases([case]).get(case.pk)) is not None:
                stop_and_fail(link.queue, state, loaded, why)

        vanished, killed, done = [], [], []
        with collector.paused():
            for case in cases:  # isolated, as a try (free) rather than ``with isolated`` (a call or three)
                try:
                    task = state.tasks.get(case.pueue_task_id)
                    if task is None or not is_stored_task(task, case):
                        vanished.append(case)
                    elif task.is_live:
                        note_live(case, task)
                        report.still_running += 1
                    elif task.result == TaskResult.KILLED:
                        killed.append((case, task))
                    else:
                        done.append((case, task, task.exit_code))
                except RemoteError:
                    raise
                except Exception as error:
                    unexpected_error(case, "monitoring", error, give_up)
        moving = as_cases([*vanished, *(c for c, _t in killed), *(c for c, _t, _e in done)])
        vanished = [moving[c.pk] for c in vanished if c.pk in moving]
        killed = [(moving[c.pk], t) for c, t in killed if c.pk in moving]
        done = [(moving[c.pk], t, e) for c, t, e in done if c.pk in moving]
        markers, traced = read_markers(link.queue, [*vanished, *(case for case, _task in killed)], vanished)
        done += judge_vanished(link.queue, vanished, markers, traced, report)
        # A job that wrote its exit code before pueue was killed under it did finish.
        done += [(case, task, markers[case.pk]) for case, task in killed if markers[case.pk] is not None]
        requeue_killed(link.queue, state, [(c, task) for c, task in killed if markers[c.pk] is None], report)
        finish(link.queue, host, done, report)
        report.cleaned += hygiene.tidy_host(link.queue, host, state)
    if link.failed:
        report.host_errors[host.name] = str(link.error)


def note_live(case: Watched, task: PueueTask) -> None:
    """Keep the last seen snapshot (written only when it changed, so quiet passes write nothing).

    Asked of every live task every pass: a task that an earlier pass found equal to the same
    stored snapshot is compared with that task field by field, without building its snapshot.
    """
    known = case.last_read
    if known.matched is not None and task.same_snapshot(known.matched):
        unchanged = True
    else:
        snapshot = task.snapshot()
        unchanged = case.last_seen_task == snapshot
        if unchanged:  # kept: the task, and its equal snapshot (it shares the task's strings)
            created_at, _stored, missing_since = known.values
            _last_read[case.pk] = LastRead(known.texts, (created_at, snapshot, missing_since), task)
    if not unchanged or case.pueue_task_created_at is None or case.task_missing_since:
        Case.objects.filter(pk=case.pk, status=S.RUNNING, pueue_task_id=task.id).update(
            last_seen_task=task.snapshot(), pueue_task_created_at=task.created_at, task_missing_since=None
        )


def requeue_killed(
    queue: JobQueue, state: PueueState, killed: list[tuple[Case, PueueTask]], report: MonitorReport
) -> None:
    """Run again the cases whose task was killed outside MQIC, once their old processes are gone.

    We never kill a running case's task ourselves (cancel moves the case first), so ``Killed`` is
    the infrastructure's doing, e.g. a pueued restart. Then pueue no longer owns the processes,
    which may still run on the GPU and write into the attempt's folder. So first every process of
    the attempt is ended (found by the marker in its environment); until none is left the case
    keeps its GPU group, so that no other case is sent where the old one may still compute.
    """
    if not killed:
        return
    sweeps = queue.end_processes(ATTEMPT_VARIABLE, [token_of(case.remote_dir) for case, _task in killed])
    for case, task in killed:
        with isolated(case, "ending the processes of a killed task", give_up=partial(stop_and_fail, queue, state)):
            sweep = sweeps[token_of(case.remote_dir)]
            if still_running(case, sweep, KILLED_LIVES_ON):
                continue
            ended = (
                f"ended {sweep.found} leftover process(es) of it"
                if sweep.found
                else "none of its processes was left"
            )
            reason = f"pueue task {task.id} was killed outside MQIC; {ended}"
            if retry_or_fail(
                case, S.RUNNING, reason, detail={"task": task.snapshot(), "processes_ended": sweep.found}
            ):
                report.requeued.append(case.name)


def finish(queue: JobQueue, host: HpcHost, done: list[Ended], report: MonitorReport) -> None:
    """Bring home the results of every case that ended on the host in ONE tar stream, then end
    each case and free its GPU group.

    Only one worker finishes a case: it takes the case's lease first (another monitor pass
    running beside this one skips the case), and a crashed finisher's lease runs out. Each
    case then goes its own way: its folder came home, or was refused (past the caps, a link
    where the folder should be, gone from the host: the case fails, saying so), or the stream
    never reached it (its lease is given back and the next pass tries again).
    """
    mine = [ended for ended in done if take_finishing_lease(ended[0])]
    if not mine:
        return
    names = {folder_name(ended[0].remote_dir): ended for ended in mine}
    try:
        fetched = queue.download(
            host.base_dir,
            {name: results_dir(case) for name, (case, _t, _c) in names.items()},
            {name: str(case.pk) for name, (case, _t, _c) in names.items()},
            progress=lambda _got: crash_point("mid_download"),
        )
    except BaseException:
        give_back_leases([case for case, _t, _c in mine])
        raise
    for name, (case, task, exit_code) in names.items():
        with isolated(case, "bringing its results home", give_up=fail):
            try:
                conclude(case, task, exit_code, fetched[name], report)
            except BaseException:
                give_back_leases([case])  # the next pass tries again at once
                raise


Ended = tuple[Case, PueueTask | None, int | None]
"""A case whose task ended: the task if pueue still shows it, and the exit code it knows of."""


def give_back_leases(cases: list[Case]) -> None:
    Case.objects.filter(pk__in=[c.pk for c in cases], status=S.RUNNING).update(lease_expires_at=None)


def conclude(case: Case, task: PueueTask | None, exit_code: int | None, fetched: FolderResult, report) -> None:
    """End one case from what came home of its folder."""
    if not fetched.reached or fetched.local:
        give_back_leases([case])  # nothing definite: the next pass tries again
        if fetched.error:  # this machine's trouble (a full results disk): said once, on the case
            why = f"{RESULTS_WAIT}{fetched.error}; the job's folder stays on the host, tried again each pass"
            record_note_once(case.pk, why, kind=RESULTS_WAIT)
        return
    if fetched.skipped:
        record_event(
            case.pk,
            f"results: {len(fetched.skipped)} link(s) or special file(s) were not created",
            detail={"skipped": [list(item) for item in fetched.skipped[:SKIPPED_SHOWN]]},
        )
    detail = {"task": task.snapshot() if task else None, "exit_code": exit_code}
    fields = {"lease_expires_at": None}
    if task is not None:
        fields.update(last_seen_task=task.snapshot(), pueue_task_created_at=task.created_at)
    if fetched.error is not None:
        why = f"its results were refused: {fetched.error}"
        if move_and_release(case, S.RUNNING, S.FAILED, reason=why, detail=detail, last_error=why, **fields):
            report.failed.append(case.name)
            if not fetched.missing:
                keep_current_folder(case, why)
        return
    end_from_results(case, S.RUNNING, task, exit_code, report, detail=detail, **fields)


def end_from_results(
    case: Case,
    old: str,
    task: PueueTask | None,
    exit_code: int | None,
    report,
    *,
    how: str = "",
    detail=None,
    **fields,
) -> bool:
    """End the case from its results at home: the exit code its job wrote there (else the one pueue
    knew), its log's tail; ``completed`` only on exit code 0. ``how`` says where the results came
    from when it was not this pass's download."""
    results = results_dir(case)
    Attempt.objects.filter(case=case, remote_dir=case.remote_dir).update(results_at=timezone.now())
    marker = read_local_marker(results)
    exit_code = marker if marker is not None else exit_code
    detail = {**(detail or {}), "exit_code": exit_code}
    fields.update(exit_code=exit_code, result_path=str(results), log_tail=log_tail(results))
    if exit_code == 0:
        why = f"job finished with exit code 0{how}"
        won = move_and_release(case, old, S.COMPLETED, reason=why, detail=detail, **fields)
    else:
        why = f"job failed with exit code {exit_code}" if exit_code is not None else "job failed: no exit code"
        if task is not None:
            why = why if exit_code is not None else f"job failed: {task.result.value}"
            if task.spawn_error:
                why += f" ({task.spawn_error})"
        why += how
        won = move_and_release(case, old, S.FAILED, reason=why, detail=detail, last_error=why, **fields)
    if won:
        (report.completed if exit_code == 0 else report.failed).append(case.name)
    return won


def take_finishing_lease(case: Case) -> bool:
    now = timezone.now()
    free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    until = now + timedelta(seconds=settings.MQIC_SUBMIT_LEASE_SECONDS)
    return bool(Case.objects.filter(free, pk=case.pk, status=S.RUNNING).update(lease_expires_at=until))


def read_markers(queue: JobQueue, cases: list[Case], traced: list[Case]) -> tuple[dict[int, int | None], set[int]]:
    """The exit code each case's job left in its attempt's folder (``None``: none), and which of
    ``traced`` left the trace of a cleaned-up attempt (``jobs.trace``), in one round trip."""
    if not cases:
        return {}, set()
    found = queue.read_small_files(
        [exit_marker(c.remote_dir) for c in cases] + [trace(c.remote_dir) for c in traced]
    )
    markers = {case.pk: marker_code(found[exit_marker(case.remote_dir)]) for case in cases}
    return markers, {case.pk for case in traced if found[trace(case.remote_dir)] is not None}


def judge_vanished(
    queue: JobQueue, cases: list[Case], markers: dict[int, int | None], traced: set[int], report: MonitorReport
) -> list[Ended]:
    """Cases whose task is gone: finished if their job left an exit marker; ended from their
    results if these are already home (the database is behind: restored from a backup); failed if
    the host cleaned the attempt up but its results are not home; else lost after a grace."""
    now = timezone.now()
    grace = timedelta(seconds=settings.MQIC_LOST_GRACE_SECONDS)
    finished, lost = [], []
    for case in cases:
        code = markers[case.pk]
        if code is not None:
            finished.append((case, None, code))
        elif home_attempt(case) == folder_name(case.remote_dir):
            with isolated(case, "ending it from its results at home"):
                end_from_results(case, S.RUNNING, None, None, report, how=ALREADY_HOME)
        elif case.pk in traced:
            with isolated(case, "failing a case whose evidence is gone"):
                if move_and_release(
                    case, S.RUNNING, S.FAILED, reason=CLEANED_NOT_HOME, last_error=CLEANED_NOT_HOME
                ):
                    report.failed.append(case.name)
        elif case.task_missing_since is None:
            Case.objects.filter(pk=case.pk, status=S.RUNNING).update(task_missing_since=now)
            record_event(case.pk, f"pueue task {case.pueue_task_id} is gone and left no exit marker; waiting")
        elif now - case.task_missing_since >= grace:
            lost.append(case)
    fail_lost(queue, lost, report)
    return finished


def fail_lost(queue: JobQueue, lost: list[Case], report: MonitorReport) -> None:
    """Fail the cases whose task vanished without a trace, once no process of theirs is left.

    pueue forgot the task, but not necessarily its processes (a task removed while it ran lives
    on): they are ended first, and a case keeps its GPU group while any of them may still run.
    """
    sweeps = queue.end_processes(ATTEMPT_VARIABLE, [token_of(case.remote_dir) for case in lost])
    for case in lost:
        with isolated(case, "failing a lost case"):
            sweep = sweeps[token_of(case.remote_dir)]
            if still_running(case, sweep, LOST_LIVES_ON):
                continue
            why = f"lost: pueue task {case.pueue_task_id} vanished without an exit marker"
            evidence = {
                "task_missing_since": case.task_missing_since.isoformat(),
                "last_seen_task": case.last_seen_task,
                "processes_ended": sweep.found,
            }
            if move_and_release(case, S.RUNNING, S.FAILED, reason=why, detail=evidence, last_error=why):
                report.failed.append(case.name)
                keep_current_folder(case, why)


def keep_current_folder(case: Case, why: str) -> None:
    """What the attempt's folder holds did not come home: it stays on the host for an operator."""
    for attempt in Attempt.objects.filter(case=case, remote_dir=case.remote_dir):
        hygiene.keep(attempt, why)


def read_local_marker(results: Path) -> int | None:
    """The exit code the job wrapper wrote; the job could have made the file anything at all."""
    try:
        with open(os.open(results / EXIT_MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb") as marker:
            return marker_code(marker.read(MARKER_MAX_BYTES).decode("ascii", errors="replace"))
    except OSError:
        return None


def log_tail(results: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return tail_lines(results / JOB_LOG, lines, LOG_TAIL_MAX_BYTES)
    except OSError:
        return ""
