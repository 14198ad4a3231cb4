"""Scenario 8: what 10,000 completed cases leave on the host, with hygiene and without.

Real pueue keeps every task until it is removed, each with the whole environment of the
client that added it, and ``pueue status`` sends them all on every monitor pass. MQIC's
hygiene removes a finished case's task and folder once its results are home, so the remote
state stays the size of what runs. Three monitor passes are timed against one real pueued,
each time with 64 cases running (one per GPU group, a ``sleep`` each):

* clean, 0 completed: the starting point;
* naive, hygiene off (``MQIC_REMOTE_RETENTION_SECONDS`` past the run): the 10,000 tasks of
  the 10,000 completed cases stay in pueue, Done;
* hygiene on: the same 10,000 cases after hygiene's own monitor passes removed their tasks
  and folders (``BATCH`` attempts a host a pass), so pueue holds the 64 again while the
  database holds 10,000 completed cases and their cleaned attempts.

The 10,000 are made directly, not run: their database rows by ``bulk_create`` (a completed
case and its ended attempt, results home), their tasks written into pueued's ``state.json``
before it starts, in the format it saves, each Done with the login environment a ``pueue add``
over this sshd captures. Scenario 7 shows the cleanup of cases that really ran. The target:
hygiene on within 1.2x of 0 completed.
"""

from __future__ import annotations

import json
import shlex
import time
from datetime import timedelta

from django.test import override_settings
from django.utils import timezone

from cases.models import Attempt, Case, CaseEvent, CaseStatus
from cases.services import hygiene, intake, monitoring, submission
from cases.services.jobs import job_command, remote_dir
from cases.services.labels import label_prefix
from resources.models import GpuGroup, HpcHost
from resources.remote import ssh
from sandbox.real_pueue import MARKER
from tests.support.hpc import REAL_PUEUE_MISSING, RealPueue, format_ns, make_hpc_host

from .env import Bench, real_pueue_available
from .folders import make_inbox
from .measure import median_seconds, stopwatch
from .remote_state import login_env
from .report import ScenarioResult

TITLE = "monitor pass after 10,000 completed cases: hygiene on vs 0 completed vs 10,000 uncleaned tasks"
S = CaseStatus
GROUPS = 64
REPEAT = 7
RUNNING_TIMEOUT = 60
MB = 1_000_000


def run(bench: Bench, result: ScenarioResult) -> None:
    if not real_pueue_available():
        raise RuntimeError(f"needs real pueue: {REAL_PUEUE_MISSING}")
    n = 2_000 if bench.quick else 10_000
    groups = {f"g{i:02d}": 1 for i in range(GROUPS)}
    box = RealPueue(groups=groups)
    try:
        host = make_hpc_host(bench.sshd, box, groups=tuple(groups), pueue_command=box.pueue)
        transport = ssh.get_transport(bench.sshd.target())
        envs = login_env(transport) | {MARKER: str(box.daemon.root)}
        completed_cases(host, n)
        with_done_tasks(box, host, envs)
        start_running(bench, box)
        status = shlex.join([box.pueue, "status", "--json"])

        with override_settings(MQIC_REMOTE_RETENTION_SECONDS=10**9):
            naive = steady_passes(box, GROUPS + n)
        naive_size = len(transport.run(status).stdout)

        with stopwatch() as took:
            passes = clean_up(box)
        clean_up_seconds = took[0]
        on = steady_passes(box, GROUPS)
        size = len(transport.run(status).stdout)

        CaseEvent.objects.filter(case__status=S.COMPLETED).delete()
        Case.objects.filter(status=S.COMPLETED).delete()
        zero = steady_passes(box, GROUPS)
    finally:
        box.cleanup()

    result.add(f"monitor pass, {GROUPS} running, 0 completed", zero, "s")
    result.add(f"monitor pass, {GROUPS} running, {n} completed and cleaned (hygiene on)", on, "s")
    result.add("hygiene on / 0 completed", on / zero, "x", ("<=", 1.2))
    result.add(f"naive: monitor pass, {GROUPS} running + {n} Done tasks left in pueue (hygiene off)", naive, "s")
    result.add("naive (hygiene off) / 0 completed", naive / zero, "x")
    result.add(f"`pueue status --json` with hygiene on ({GROUPS} tasks)", size / MB, "MB")
    result.add(f"`pueue status --json` with hygiene off ({GROUPS + n} tasks)", naive_size / MB, "MB")
    result.add(f"hygiene: monitor passes to clean up the {n} ({hygiene.BATCH} a pass)", passes, "count")
    result.add(f"hygiene: those passes, in all ({n} tasks removed, {n} folders deleted)", clean_up_seconds, "s")
    result.notes.append(
        f"Real pueue, {GROUPS} GPU groups with one running case each; medians of {REPEAT} monitor passes "
        "over a live connection, nothing changing between them (each pass: one `pueue status`, the "
        "decisions, hygiene's look for due attempts). The three states are measured one after "
        "another in this order: hygiene off, hygiene's clean-up, hygiene on, 0 completed."
    )


def completed_cases(host: HpcHost, n: int) -> None:
    """``n`` completed cases, one ended attempt each with its task id and results home, not cleaned yet."""
    groups = list(GpuGroup.objects.filter(host=host).order_by("pk"))
    prefix, ended = label_prefix(), timezone.now() - timedelta(hours=1)
    cases = Case.objects.bulk_create(
        [
            Case(
                pk=pk,
                name=f"done-{pk:05d}",
                source_path=f"/inbox/done-{pk:05d}",
                status=S.COMPLETED,
                label=f"{prefix}{pk}",
                gpu_group=groups[pk % len(groups)],
                lease_generation=1,
                remote_dir=remote_dir(host, f"{prefix}{pk}", f"{pk:016x}"),
                pueue_task_id=pk - 1,
                exit_code=0,
                submitting_at=ended - timedelta(minutes=10),
                running_at=ended - timedelta(minutes=10),
                finished_at=ended,
                attempts=1,
            )
            for pk in range(1, n + 1)
        ],
        batch_size=1000,
    )
    Attempt.objects.bulk_create(
        [
            Attempt(
                case=case,
                token=f"{case.pk:016x}",
                remote_dir=case.remote_dir,
                gpu_group=case.gpu_group,
                started_at=case.submitting_at,
                task_id=case.pueue_task_id,
                ended_at=ended,
                outcome="job finished with exit code 0",
                results_at=ended,
            )
            for case in cases
        ],
        batch_size=1000,
    )


def with_done_tasks(box: RealPueue, host: HpcHost, envs: dict[str, str]) -> None:
    """Write the completed cases' tasks into pueued's state, Done, and start it again on it."""
    box.stop()
    state_file = box.daemon.data / "state.json"
    state = json.loads(state_file.read_text())
    base = time.time_ns() - 3600 * 10**9
    for case in Case.objects.filter(status=S.COMPLETED).select_related("gpu_group").order_by("pk"):
        at = [format_ns(base + case.pk * 1_000_000 + step * 1000) for step in range(3)]
        group = case.gpu_group.pueue_group
        command = job_command("run.sh", case.gpu_group.devices)
        state["tasks"][str(case.pueue_task_id)] = {
            "id": case.pueue_task_id,
            "created_at": at[0],
            "original_command": command,
            "command": command,
            "path": case.remote_dir,
            "envs": envs | {"PUEUE_GROUP": group, "PUEUE_WORKER_ID": "0"},
            "group": group,
            "dependencies": [],
            "priority": 0,
            "label": case.label,
            "status": {"Done": {"enqueued_at": at[0], "start": at[1], "end": at[2], "result": "Success"}},
        }
    state_file.write_text(json.dumps(state))
    box.start()
    if len(box.status()["tasks"]) != Case.objects.filter(status=S.COMPLETED).count():
        raise RuntimeError("pueued did not load the prepared state")


def start_running(bench: Bench, box: RealPueue) -> None:
    """One running case per GPU group, submitted by MQIC's pass; returns once pueue runs them all."""
    intake.scan(make_inbox(bench.dir("s8-inbox"), GROUPS, script="sleep 3600\n"))
    report = submission.submit_pass()
    if Case.objects.filter(status=S.RUNNING).count() != GROUPS:
        raise RuntimeError(f"expected {GROUPS} cases running, the submission pass says: {report}")
    deadline = time.monotonic() + RUNNING_TIMEOUT
    while running_tasks(box) < GROUPS:
        if time.monotonic() > deadline:
            raise RuntimeError(f"pueue did not start the {GROUPS} tasks within {RUNNING_TIMEOUT} s")
        time.sleep(0.2)


def running_tasks(box: RealPueue) -> int:
    return sum("Running" in task["status"] for task in box.status()["tasks"].values())


def steady_passes(box: RealPueue, tasks: int) -> float:
    """Median monitor pass over a live connection, after one untimed, in a state that does not change."""

    def one_pass() -> None:
        report = monitoring.monitor_pass()
        if report.still_running != GROUPS or report.host_errors or report.cleaned or report.freed_gpus:
            raise RuntimeError(f"expected a quiet pass over {GROUPS} running cases, it says: {report}")

    one_pass()
    if len(box.status()["tasks"]) != tasks:
        raise RuntimeError(f"expected {tasks} tasks in pueue")
    return median_seconds(one_pass, REPEAT)


def clean_up(box: RealPueue) -> int:
    """Monitor passes with hygiene on (retention 0) until no attempt awaits its cleanup."""
    passes = 0
    while Attempt.objects.filter(cleaned_at__isnull=True, ended_at__isnull=False).exists():
        report = monitoring.monitor_pass()
        passes += 1
        if report.host_errors or not report.cleaned:
            raise RuntimeError(f"hygiene made no progress: {report}")
    return passes
