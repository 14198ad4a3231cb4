"""Scenario 1: submitting 200 small cases, MQIC's pass against the naive path of the seed.

Both paths do the same database work through MQIC's own code (``claim``: GPU lock and
``submitting``; ``transition``: the task id stored, ``running``), against the same sshd and
the same pueue; only the remote side differs. MQIC: one ``submit_pass`` (one connection, one
tar stream for every case, one batch of ``pueue add``). Naive, per case: a new ``scp -r`` and
a new ``ssh ... pueue add`` with the OpenSSH binaries.

Measured twice in one run, from empty tables each time: against the sandbox stand-in, and
against real pueue (``MQIC_REAL_PUEUE_BIN``; without it the scenario says it could not be
measured). All 200 cases are claimed in one pass because the host has 200 GPU groups, one
pueue group each. The pueue groups are paused, so no task starts during the measurement: on
this 2-core machine 200 tasks starting would take CPU from both paths (on a cluster they run
elsewhere).
"""

from __future__ import annotations

import contextlib
import functools
import shlex
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from unittest import mock

from django.conf import settings

from cases.models import Case, CaseStatus
from cases.services import intake, submission
from cases.services.jobs import job_command
from cases.services.transitions import transition
from resources.jobqueue import JobQueue
from resources.models import GpuGroup
from resources.remote import ssh
from resources.remote.pueue import ADD_LANES
from tests.support.hpc import REAL_PUEUE_MISSING, make_hpc_host

from .env import REMOTES, Bench, real_pueue_available, reset_database
from .folders import make_inbox
from .measure import median_seconds, stopwatch
from .report import ScenarioResult

TITLE = "submit 200 small cases: MQIC pass vs naive scp + ssh per case (sandbox and real pueue)"
S = CaseStatus
CASE = {"files": 3, "size": 20_000}
ADD_ALONE = ["add", "-g", "g000", "-p", "--", "true"]  # a paused group: the task never starts
TARGET = {"sandbox": 25, "real": 50}
"""naive / MQIC: the issue's bound on each remote (the stand-in's Python start-up costs MQIC more)."""
SHOWN = {"sandbox": "sandbox", "real": "real pueue"}


def run(bench: Bench, result: ScenarioResult) -> None:
    n = 30 if bench.quick else 200
    measure(bench, result, "sandbox", n)
    if not real_pueue_available():
        raise RuntimeError(f"the real-pueue half was not measured: {REAL_PUEUE_MISSING}")
    reset_database()
    measure(bench, result, "real", n)


def measure(bench: Bench, result: ScenarioResult, kind: str, n: int) -> None:
    groups = {f"g{i:03d}": 1 for i in range(n)}
    with REMOTES[kind](groups, paused=True) as (box, pueue):
        host = make_hpc_host(bench.sshd, box, groups=tuple(groups), pueue_command=pueue)
        mqic_seconds, stats, phases = mqic_pass(bench, n, kind)
        add_span = span_seconds([add["time"] for add in box.adds()])
        release_everything()
        naive_seconds = naive_path(bench, host.pueue_command, n, kind)
        one_add = median_seconds(lambda: subprocess.run([pueue, *ADD_ALONE], check=True, capture_output=True), 9)
        channel, connection = calibrate(bench)

    on = SHOWN[kind]
    result.add(f"{on}: MQIC submit_pass, {n} cases", mqic_seconds, "s")
    result.add(f"{on}: naive scp -r + ssh pueue add, {n} cases", naive_seconds, "s")
    result.add(f"{on}: naive / MQIC", naive_seconds / mqic_seconds, "x", (">=", TARGET[kind]))
    result.add(
        f"{on}: MQIC SSH connections opened in the pass (one worker)", stats.connections_opened, "count", ("<=", 1)
    )
    result.add(
        f"{on}: MQIC remote round trips (exec channels) in the pass", stats.channels_opened, "count", ("<=", 3)
    )
    result.add(f"{on}: naive SSH connections (each one round trip)", 2 * n, "count")
    result.add(
        f"{on}: `pueue add` alone, through its wrapper (what the naive path pays per case)", one_add * 1000, "ms"
    )
    for phase, seconds in phases.items():
        result.add(f"{on}: MQIC's pass: {phase}", seconds, "s")
    result.add(f"{on}: MQIC's {n} adds, first to last ({ADD_LANES} lanes side by side)", add_span, "s")
    result.add(f"{on}: share of MQIC's pass spent in the adds", add_span / mqic_seconds * 100, "%")
    without = (naive_seconds - n * one_add) / (mqic_seconds - add_span)
    result.add(f"{on}: naive / MQIC, the adds taken from both sides (derived)", without, "x")
    result.add(f"{on}: context: exec channel `true` on a live connection", channel * 1000, "ms")
    result.add(f"{on}: context: new OpenSSH connection `ssh true`", connection * 1000, "ms")
    result.notes.append(
        f"{on}: {n} GPU groups (paused pueue groups), cases of 3 x 20 KB. Both paths run one "
        f"`pueue add` per case ({one_add * 1000:.0f} ms alone through the test wrapper, which records "
        "each add as evidence); MQIC runs its adds in lanes side by side in one round trip, the naive "
        "path one per connection. The derived ratio takes the adds out of both."
    )


def mqic_pass(bench: Bench, n: int, kind: str) -> tuple[float, ssh.SshStats, dict[str, float]]:
    """One ``submit_pass`` from a cold start: the connection is opened inside the pass. Also
    where its time went: the claims, the upload round trip, the add round trip, the rest."""
    intake.scan(make_inbox(bench.dir(f"s1-{kind}-mqic"), n, **CASE))
    ssh.close_all()
    ssh.reset_stats()
    spent: dict[str, float] = {}
    with (
        timing(submission, "claim_cases", spent, f"{n} claims (GPU lock, attempt, submitting)"),
        timing(JobQueue, "upload", spent, "the upload round trip (one tar stream), with..."),
        timing(ssh.SshTransport, "_connect", spent, "... opening the connection in it"),
        timing(JobQueue, "add_many", spent, "the add round trip (one batch)"),
        stopwatch() as took,
    ):
        report = submission.submit_pass()
    stats = ssh.stats()
    check_all_stored(n, f"MQIC pass: {report}")
    rest = took[0] - sum(seconds for label, seconds in spent.items() if not label.startswith("..."))
    spent["the rest (storing the task ids, the pass's own queries)"] = rest
    return took[0], stats, spent


@contextlib.contextmanager
def timing(owner: object, name: str, spent: dict[str, float], label: str) -> Iterator[None]:
    """Add the wall time of every call of ``owner.name`` to ``spent[label]``."""
    original = getattr(owner, name)
    spent[label] = 0.0

    @functools.wraps(original)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - start

    with mock.patch.object(owner, name, timed):
        yield


def release_everything() -> None:
    """Bench housekeeping between the paths: the first batch is done, every GPU group free."""
    Case.objects.filter(status=S.RUNNING).update(status=S.COMPLETED)
    GpuGroup.objects.update(status=GpuGroup.Status.AVAILABLE, holder_id=None, assigned_at=None)


def naive_path(bench: Bench, pueue: str, n: int, kind: str) -> float:
    """The seed's way, case after case: claim, ``scp -r``, ``ssh pueue add``, store the id."""
    intake.scan(make_inbox(bench.dir(f"s1-{kind}-naive"), n, **CASE))
    waiting = Case.objects.filter(status=S.SUBMITTED).order_by("created_at", "pk").values_list("pk", flat=True)
    with stopwatch() as took:
        for case_id in list(waiting):
            case = submission.claim(case_id)
            subprocess.run(bench.scp(case.source_path, dest=case.remote_dir), check=True)
            group = case.gpu_group
            add = [pueue, "add", "-l", case.label, "-g", group.pueue_group, "-w", case.remote_dir, "-p", "--"]
            add.append(job_command(settings.MQIC_ENTRY_SCRIPT, group.devices))
            added = subprocess.run(bench.ssh(shlex.join(add)), check=True, capture_output=True, text=True)
            task_id = int(added.stdout.split()[-1])
            transition(case, S.SUBMITTING, S.RUNNING, reason="naive path", pueue_task_id=task_id)
    check_all_stored(n, "naive path")
    return took[0]


def check_all_stored(n: int, what: str) -> None:
    stored = Case.objects.filter(status=S.RUNNING, pueue_task_id__isnull=False).count()
    if stored != n:
        raise RuntimeError(f"{what}: {stored} of {n} cases got a stored task id")


def span_seconds(times: list[str]) -> float:
    """From the first add to the last, by the remote's own records of when it took each add."""
    return (datetime.fromisoformat(times[-1]) - datetime.fromisoformat(times[0])).total_seconds()


def calibrate(bench: Bench) -> tuple[float, float]:
    """What one more exec channel and one new OpenSSH connection cost on this machine now."""
    transport = ssh.get_transport(bench.sshd.target())
    transport.run("true")
    channel = median_seconds(lambda: transport.run("true"), 5)
    connection = median_seconds(lambda: subprocess.run(bench.ssh("true"), check=True), 5)
    return channel, connection
