"""Scenario 6: from a folder dropped into the inbox (with READY) to its remote task running.

The processes of the Procfile run for real (qcluster, the watcher, tick; not the web server)
against the bench database, the bench sshd and a sandbox pueue with two GPU groups. A
folder is made beside the inbox and renamed into it, as a careful user does; the clock
stops at the task's start as the sandbox daemon records it (``events.jsonl``, same machine
clock). The next folder is dropped once the case has completed, so a GPU group is always
free and the figure is the pipeline's own latency, not time spent waiting for a GPU. The
first drop, right after the processes start, also pays the qcluster's start-up and each
worker's first SSH connection; it is shown apart.
"""

from __future__ import annotations

import io
import os
import statistics
import time

from django.conf import settings
from django.core.management import call_command

from cases.models import Case, CaseStatus
from tests.support.hpc import make_hpc_host
from tests.support.system import running_system, wait_for

from .env import Bench, bench_sandbox
from .folders import make_case
from .report import ScenarioResult

TITLE = "latency from a folder dropped (with READY) to its remote task running"
TIMEOUT = 60


def run(bench: Bench, result: ScenarioResult) -> None:
    drops = 3 if bench.quick else 7
    inbox, staging = settings.MQIC_NEW_CASES_DIR, bench.dir("s6-staging")
    inbox.mkdir(parents=True, exist_ok=True)
    with bench_sandbox({"gpu_a": 1, "gpu_b": 1}) as (box, pueue):
        make_hpc_host(bench.sshd, box, groups=("gpu_a", "gpu_b"), pueue_command=pueue)
        call_command("setup_schedules", stdout=io.StringIO())
        with running_system(settings, log_dir=bench.dir("s6-logs")):
            first = drop_and_wait(box, staging, inbox, "first")
            latencies = [drop_and_wait(box, staging, inbox, f"drop-{n}") for n in range(drops)]

    to_task = [task for task, _db in latencies]
    result.add(f"drop -> remote task running, median of {drops}", statistics.median(to_task), "s", ("<=", 5))
    result.add(f"drop -> remote task running, worst of {drops}", max(to_task), "s")
    result.add(
        "drop -> case running in the database (task id stored), median",
        statistics.median(db for _t, db in latencies),
        "s",
    )
    result.add("context: first drop, processes just started", first[0], "s")
    result.notes.append(
        "qcluster with 2 workers (ORM broker, poll 0.5 s), watch_cases (inotify), tick every 0.5 s "
        "(the submission is enqueued by the watcher itself, so the tick is not on this path)."
    )


def drop_and_wait(box, staging, inbox, name: str) -> tuple[float, float]:
    """Drop one case; seconds until its remote task started, and until the database said running."""
    make_case(staging, name)
    dropped = time.time_ns()
    os.rename(staging / name, inbox / name)
    wait_for(
        lambda: Case.objects.filter(name=name, label__isnull=False).exists(), TIMEOUT, f"{name} registered", 0.05
    )
    case = Case.objects.get(name=name)
    wait_for(lambda: task_start(box, case.label) is not None, TIMEOUT, f"{name}'s task to start", 0.05)
    started = task_start(box, case.label)
    wait_for(
        lambda: Case.objects.filter(pk=case.pk, status=CaseStatus.COMPLETED).exists(), TIMEOUT, f"{name} done"
    )
    running_at = Case.objects.get(pk=case.pk).running_at.timestamp() * 1e9
    return (started - dropped) / 1e9, (running_at - dropped) / 1e9


def task_start(box, label: str) -> int | None:
    """When the sandbox daemon started the task labelled ``label`` (ns), if it has."""
    starts = [e["time_ns"] for e in box.events() if e["event"] == "start" and e["label"] == label]
    return starts[0] if starts else None
