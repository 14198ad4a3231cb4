"""Scenario 7: finishing 200 cases of one host in one monitor pass, against the naive path.

MQIC: one ``monitor_pass`` from a cold start: one ``pueue status``, one tar stream bringing home
every finished case's folder, each case ended and its GPU group freed, then hygiene removing
the 200 tasks and deleting the 200 remote folders in one more round trip. Naive, per case: a
new ``scp -r`` of its folder back, the same database move (``move_and_release``), and a new
``ssh ... 'pueue remove ID && rm -rf DIR'``; one ``ssh pueue status --json`` ahead of them all
(the naive monitor must also learn which tasks are done).

Both start from the same remote state: 200 cases submitted by MQIC's own pass and run to the
end (each job writes 100 KB of output beside its 3 x 20 KB of inputs), checked done in
``pueue status`` before the clock starts. Against real pueue when ``MQIC_REAL_PUEUE_BIN`` is
set, else the sandbox.
"""

from __future__ import annotations

import shlex
import subprocess
import time

from django.utils import timezone

from cases.models import Attempt, Case, CaseStatus
from cases.services import intake, monitoring, submission
from cases.services.jobs import results_dir
from cases.services.lifecycle import move_and_release
from resources.remote import ssh
from tests.support.hpc import make_hpc_host

from .env import REMOTES, Bench, real_pueue_available
from .folders import make_inbox
from .measure import stopwatch
from .report import ScenarioResult

TITLE = "finish 200 cases of one host: one monitor pass (one tar stream + hygiene) vs naive scp -r back"
S = CaseStatus
CASE = {"files": 3, "size": 20_000, "script": "head -c 100000 /dev/urandom > out.bin; echo ok > out.txt\n"}
DONE_TIMEOUT = 300


def run(bench: Bench, result: ScenarioResult) -> None:
    n = 30 if bench.quick else 200
    kind = "real" if real_pueue_available() else "sandbox"
    groups = {f"g{i:03d}": 1 for i in range(n)}
    with REMOTES[kind](groups) as (box, pueue):
        make_hpc_host(bench.sshd, box, groups=tuple(groups), pueue_command=pueue)
        run_to_the_end(bench, box, n, "mqic")
        ssh.close_all()
        ssh.reset_stats()
        with stopwatch() as took:
            report = monitoring.monitor_pass()
        stats = ssh.stats()
        if len(report.completed) != n or report.cleaned != n:
            raise RuntimeError(f"expected {n} cases completed and cleaned up in one pass, it says: {report}")
        tasks_left, folders_left = len(box.status()["tasks"]), len(list(box.base_dir.iterdir()))
        mqic_seconds = took[0]

        run_to_the_end(bench, box, n, "naive")
        naive_seconds, naive_trips = naive_finish(bench, pueue, n)

    on = "real pueue" if kind == "real" else "sandbox"
    result.add(f"{on}: MQIC monitor_pass finishing {n} cases (cold connection)", mqic_seconds, "s")
    result.add(f"{on}: naive scp -r back + ssh pueue remove/rm per case", naive_seconds, "s")
    result.add("naive / MQIC", naive_seconds / mqic_seconds, "x")
    result.add("MQIC: SSH connections opened in the pass", stats.connections_opened, "count", ("<=", 1))
    result.add(
        "MQIC: remote round trips (exec channels) in the pass, hygiene included",
        stats.channels_opened,
        "count",
        ("<=", 3),
    )
    result.add("naive: SSH connections (each one round trip)", naive_trips, "count")
    result.add(
        "MQIC: pueue tasks / remote folders left after the pass", tasks_left + folders_left, "count", ("==", 0)
    )
    result.notes.append(
        f"On {on}: {n} GPU groups, one case each; each case folder holds 3 x 20 KB of inputs, "
        "the run.sh and the job's 100 KB of output, the job log and exit marker. MQIC's pass: "
        f"status, one tar stream for all {n} folders, the {n} database moves, then hygiene's one "
        f"round trip for `pueue remove` of {n} ids and `rm -rf` of {n} folders."
    )


def run_to_the_end(bench: Bench, box, n: int, name: str) -> None:
    """``n`` new cases submitted by MQIC's pass and run by pueue until every task is done."""
    intake.scan(make_inbox(bench.dir(f"s7-{name}"), n, **CASE))
    report = submission.submit_pass()
    if Case.objects.filter(status=S.RUNNING).count() != n:
        raise RuntimeError(f"expected {n} cases running, the submission pass says: {report}")
    deadline = time.monotonic() + DONE_TIMEOUT
    while not all_done(box, n):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {n} tasks did not all finish within {DONE_TIMEOUT} s")
        time.sleep(0.2)


def all_done(box, n: int) -> bool:
    tasks = box.status()["tasks"].values()
    done = [t for t in tasks if not isinstance(t["status"], str) and "Done" in t["status"]]
    return len(done) == n == len(tasks)


def naive_finish(bench: Bench, pueue: str, n: int) -> tuple[float, int]:
    """The seed's way: one status, then per case a new ``scp -r`` back and a new ``ssh`` to clean up."""
    running = list(Case.objects.filter(status=S.RUNNING).order_by("pk"))
    with stopwatch() as took:
        status = subprocess.run(
            bench.ssh(shlex.join([pueue, "status", "--json"])), check=True, capture_output=True
        )
        if not status.stdout:
            raise RuntimeError("naive path: empty pueue status")
        for case in running:
            subprocess.run(bench.scp_back(case.remote_dir, results_dir(case)), check=True)
            move_and_release(
                case, S.RUNNING, S.COMPLETED, reason="naive path", exit_code=0, result_path=str(results_dir(case))
            )
            remove = shlex.join([pueue, "remove", str(case.pueue_task_id)])
            remove += f" && rm -rf -- {shlex.quote(case.remote_dir)}"
            subprocess.run(bench.ssh(remove), check=True, capture_output=True)
            Attempt.objects.filter(case=case).update(cleaned_at=timezone.now())
    if Case.objects.filter(status=S.COMPLETED).count() != 2 * n:
        raise RuntimeError("naive path: not every case completed")
    return took[0], 1 + 2 * n
