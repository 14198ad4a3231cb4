"""Scenario 3: monitoring and reconciling against a remote pueue holding 10,000 tasks.

The state is synthetic but in pueue 4.x's exact format: every task is rendered by the sandbox
pueue's own ``render_task`` (the renderer its ``status --json`` answers with), each carrying
the whole login environment a ``pueue add`` over this sshd captures, as the real pueue does.
Filling the sandbox instead would take 10,000 adds (minutes of CLI start-ups) and 10,000
tasks it would try to run. A stand-in ``pueue`` on the remote side answers ``status --json``
with the prepared file, through the real sshd.

Two databases are measured against it. The worst case for the decisions: 10,000 running
cases, one per task (spread over 64 GPU groups, one running and the rest queued behind it),
so that monitoring matches every task to a case and reconciliation checks every task for
orphans. The realistic one: one running case per GPU group, the other tasks done (finished
cases whose tasks were not cleaned yet). Both passes see a steady state: every snapshot is as
last seen, so a quiet pass writes nothing but the host's health line. "Parse + decide" is the
pass run against the prepared text (no SSH); the full monitor pass over SSH is given beside.
"""

from __future__ import annotations

import contextlib
import gc
import resource
import shlex
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import timedelta
from unittest import mock

from cases.models import Case, CaseStatus
from cases.services import monitoring, reconciliation
from cases.services.jobs import job_command, remote_dir
from cases.services.labels import label_prefix
from resources import contact
from resources.models import GpuGroup, HpcHost
from resources.remote import ssh
from resources.remote.pueue import PueueClient
from resources.remote.pueue_state import PueueState, parse_status
from sandbox import pueue_sandbox

from .env import Bench
from .measure import counting_queries, median_seconds
from .report import ScenarioResult

TITLE = "monitor + reconcile against 10,000 remote tasks: one status call, parse + decide"
GROUPS = 64
REPEAT = 3
S = CaseStatus
MB = 1_000_000

STAND_IN = """#!/bin/sh
# Stand-in remote pueue for the benchmark: answers `status --json` with a prepared state.
case "$*" in "status --json"|"--color never status --json") exec cat {state} ;; esac
echo "stand-in pueue: only 'status --json' is served" >&2
exit 2
"""


def run(bench: Bench, result: ScenarioResult) -> None:
    n = 2_000 if bench.quick else 10_000
    remote = bench.dir("s3-remote")
    transport = ssh.get_transport(bench.sshd.target())
    host = HpcHost.objects.create(
        name="s3",
        hostname="127.0.0.1",
        port=bench.sshd.port,
        username=bench.sshd.username,
        key_path=str(bench.sshd.client_key),
        known_hosts_path=str(bench.sshd.known_hosts),
        base_dir=str(remote / "cases"),
        pueue_command=str(remote / "pueue"),
    )
    groups = [
        GpuGroup.objects.create(host=host, name=f"gpu{g:02d}", pueue_group=f"gpu{g:02d}") for g in range(GROUPS)
    ]
    status_file = remote / "status.json"
    (remote / "pueue").write_text(STAND_IN.format(state=shlex.quote(str(status_file))))
    (remote / "pueue").chmod(0o755)
    tasks = TaskMaker(host, groups, login_env(transport))

    worst = tasks.status_json(n, live=n)
    status_file.write_text(worst)
    running_cases(parse_status(worst), groups)
    status_command = shlex.join([host.pueue_command, "status", "--json"])
    result.add(f"status --json of {n} tasks: size", len(worst) / MB, "MB")
    result.add(
        "fetch over SSH (one exec channel)", median_seconds(lambda: transport.run(status_command), REPEAT), "s"
    )
    result.add("parse alone", median_seconds(lambda: parse_status(worst), REPEAT), "s")
    quiet_passes(result, f"{n} running", worst, n)
    load = median_seconds(monitoring.running_cases, REPEAT)
    result.add(f"{n} running: the monitor's loading of the running cases alone", load, "s")
    models = median_seconds(
        lambda: list(Case.objects.filter(status=S.RUNNING).select_related("gpu_group__host")), REPEAT
    )
    result.add(f"{n} running: loading them as model instances instead", models, "s")
    full = median_seconds(lambda: check_steady(monitoring.monitor_pass(), n), REPEAT)
    result.add(f"{n} running: monitor_pass over SSH (fetch + parse + decide)", full, "s")
    for run_pass in (monitoring.monitor_pass, reconciliation.reconcile_pass):
        ssh.reset_stats()
        run_pass()
        trips = ssh.stats().channels_opened
        result.add(f"{n} running: remote round trips of one {run_pass.__name__}", trips, "count", ("<=", 1))

    history = tasks.status_json(n, live=GROUPS)
    status_file.write_text(history)
    Case.objects.filter(pueue_task_id__gte=GROUPS).update(status=S.COMPLETED)
    quiet_passes(result, f"{GROUPS} running + {n - GROUPS} done", history, GROUPS)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000
    result.add("context: this process's peak RSS so far (ru_maxrss)", rss, "MB")
    result.notes.append(
        f"Worst case: {n} running cases over {GROUPS} GPU groups, one live task each. Realistic: "
        f"one running case per GPU group, the other {n - GROUPS} tasks done (finished cases, not "
        f"yet cleaned). Medians of {REPEAT}; peak memory by tracemalloc over one pass."
    )


def quiet_passes(result: ScenarioResult, what: str, text: str, running: int) -> None:
    """Monitor and reconcile against ``text`` (parse + decide, no SSH), in a steady state. The
    monitor's worst case (every task's case running) has issue 24's bound, 0.3 s; the rest 0.5 s."""
    with replaying(text):
        check_steady(monitoring.monitor_pass(), running)
        check_quiet(reconciliation.reconcile_pass())
        monitor = median_seconds(monitoring.monitor_pass, REPEAT)
        reconcile = median_seconds(reconciliation.reconcile_pass, REPEAT)
        writes = writes_of(monitoring.monitor_pass) + writes_of(reconciliation.reconcile_pass)
        peak = max(peak_memory(monitoring.monitor_pass), peak_memory(reconciliation.reconcile_pass))
    with replaying(text, parsed_ahead=REPEAT):
        gc.collect()  # the answers parsed ahead are no garbage of the passes timed
        decide = median_seconds(monitoring.monitor_pass, REPEAT)
    result.add(f"{what}: monitor, parse + decide", monitor, "s", ("<=", 0.3 if running > GROUPS else 0.5))
    result.add(f"{what}: monitor, decide alone (its status parsed ahead)", decide, "s")
    result.add(f"{what}: reconcile, parse + decide", reconcile, "s", ("<=", 0.5))
    result.add(f"{what}: database writes, one quiet pass of each", writes, "count")
    result.add(f"{what}: peak Python memory of a pass", peak / MB, "MB")


def login_env(transport) -> dict[str, str]:
    """The environment a ``pueue add`` over this sshd captures into every task."""
    output = transport.run("env -0").check("env -0").stdout
    return dict(item.split("=", 1) for item in output.split("\0") if "=" in item)


class TaskMaker:
    """``pueue status --json`` (4.0.4) for tasks 0..n-1 of this installation's cases 1..n."""

    def __init__(self, host: HpcHost, groups: list[GpuGroup], envs: dict[str, str]):
        self.host, self.groups, self.envs = host, groups, envs
        self.prefix, self.start_ns = label_prefix(), time.time_ns() - 3600 * 10**9

    def status_json(self, n: int, *, live: int) -> str:
        """The first task of each group running, the rest up to ``live`` queued, the others done."""
        tasks = {
            str(task_id): pueue_sandbox.render_task(self.task(task_id, live), "4.0.4") for task_id in range(n)
        }
        groups = {"default": {"status": "Running", "parallel_tasks": 1}}
        groups |= {g.pueue_group: {"status": "Running", "parallel_tasks": 1} for g in self.groups}
        return pueue_sandbox.compact_json({"tasks": tasks, "groups": groups})

    def task(self, task_id: int, live: int) -> dict:
        group, label = self.groups[task_id % len(self.groups)].pueue_group, f"{self.prefix}{task_id + 1}"
        created = pueue_sandbox.rfc3339(self.start_ns + task_id * 1_000_123)
        status = "Running" if task_id < len(self.groups) else "Queued" if task_id < live else "Done"
        return {
            "id": task_id,
            "created_at": created,
            "enqueued_at": created,
            "start": None if status == "Queued" else created,
            "end": created if status == "Done" else None,
            "result": "Success" if status == "Done" else None,
            "status": status,
            "command": job_command("run.sh", str(task_id % 8)),
            "path": remote_dir(self.host, label, f"t{task_id}"),
            "envs": self.envs | {"PUEUE_GROUP": group, "PUEUE_WORKER_ID": "0"},
            "group": group,
            "label": label,
        }


def running_cases(state: PueueState, groups: list[GpuGroup]) -> None:
    """One running case per task, each holding the snapshot the task shows now (a steady state)."""
    by_group = {g.pueue_group: g for g in groups}
    Case.objects.bulk_create(
        [
            Case(
                pk=task.id + 1,
                name=f"case-{task.id:05d}",
                source_path=f"/inbox/case-{task.id:05d}",
                status=CaseStatus.RUNNING,
                label=task.label,
                gpu_group=by_group[task.group],
                lease_generation=1,
                remote_dir=task.path,
                pueue_task_id=task.id,
                pueue_task_created_at=task.created_at,
                last_seen_task=task.snapshot(),
                submitting_at=task.created_at - timedelta(seconds=1),
                attempts=1,
            )
            for task in state.tasks.values()
        ],
        batch_size=1000,
    )


@contextlib.contextmanager
def replaying(text: str, *, parsed_ahead: int = 0) -> Iterator[None]:
    """The passes get a client whose ``status()`` parses ``text``: parse + decide, no SSH. With
    ``parsed_ahead``, the first that many answers are parsed before, one for each call: decide alone."""
    ahead = [parse_status(text) for _ in range(parsed_ahead)]

    class Replay(PueueClient):
        def status(self, group: str | None = None) -> PueueState:
            return ahead.pop() if ahead else parse_status(text)

    class NoConnection:
        def close(self) -> None:
            """The contact hangs up at its end: there is nothing to close."""

    def replay_for(host: HpcHost) -> PueueClient:
        return Replay(transport=NoConnection(), command=host.pueue_command)

    with mock.patch.object(contact, "pueue_for", replay_for):
        yield


def check_steady(report: monitoring.MonitorReport, n: int) -> None:
    if report.still_running != n or report.host_errors:
        raise RuntimeError(f"expected {n} cases still running, the monitor pass says: {report}")


def check_quiet(report: reconciliation.ReconcileReport) -> None:
    if report.orphans or report.blocked_groups or report.host_errors or report.retried or report.adopted:
        raise RuntimeError(f"expected a reconcile pass with nothing to do, it says: {report}")


def writes_of(action: Callable[[], object]) -> int:
    with counting_queries() as counts:
        action()
    return counts["writes"]


def peak_memory(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
