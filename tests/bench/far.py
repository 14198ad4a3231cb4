"""Scenario 10: far away. A submit pass of 50 cases and then a monitor pass that brings their
results home and cleans up, at 0, 50 and 100 ms of round-trip time between MQIC and the host,
against the naive path's same work (per case: ``scp -r`` up and ``ssh pueue add``; then ``ssh
pueue status``, ``scp -r`` back and ``ssh`` to remove the task and folder), in seconds and in
round trips.

The round-trip time comes from ``tests/support/delay_link.py`` (a process of its own between the
client and the bench sshd: every byte arrives half a round trip later in each direction, a new
connection pays one more for TCP's handshake; it queues rather than throttles). Where round trips
go: a new SSH connection costs about five (TCP, version exchange, key exchange, authentication),
each exec channel about two (open, then the exec request) plus the command. MQIC's submit pass
opens one connection and two channels (the upload stream, the batch of adds); its monitor pass
one connection and three (``pueue status``, one download stream, one clean-up). The naive path
opens two connections per case to submit and three per case to finish.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from cases.models import Case, CaseStatus
from cases.services import intake, monitoring, submission
from cases.services.jobs import job_command
from cases.services.transitions import transition
from resources.models import GpuGroup
from resources.remote import ssh
from tests.support.hpc import make_hpc_host

from .env import Bench, bench_sandbox, reset_database
from .folders import make_inbox
from .measure import stopwatch
from .report import ScenarioResult

TITLE = "far away: submit 50 cases and bring them home at 0, 50 and 100 ms RTT, MQIC vs naive ssh/scp"
S = CaseStatus
RTTS = (0, 50, 100)
CASE = {"files": 3, "size": 20_000}
TARGET = 25
"""naive / MQIC at 100 ms, for the submit pass and for the monitor pass."""


def run(bench: Bench, result: ScenarioResult) -> None:
    n = 10 if bench.quick else 50
    for rtt in RTTS:
        reset_database()
        groups = {f"g{i:03d}": 1 for i in range(n)}
        with bench_sandbox(groups) as (box, pueue), delay_link(bench.sshd.port, rtt) as port:
            host = make_hpc_host(
                bench.sshd,
                box,
                groups=tuple(groups),
                pueue_command=pueue,
                port=port,
                known_hosts_path="",
                host_key=bench.sshd.host_key,
            )
            naive = Naive(bench, port)
            mqic = mqic_passes(bench, box, n, rtt)
            release_everything()
            slow = naive.passes(bench, box, host.pueue_command, n, rtt)
        for what, (seconds, connections, channels) in mqic.items():
            naive_seconds = slow[what]
            result.add(f"{rtt} ms: MQIC {what} pass, {n} cases", seconds, "s")
            result.add(f"{rtt} ms: naive {what}, {n} cases", naive_seconds, "s")
            target = (">=", TARGET) if rtt == 100 else None
            result.add(f"{rtt} ms: naive / MQIC, {what}", naive_seconds / seconds, "x", target)
            result.add(f"{rtt} ms: MQIC {what}: connections + exec channels", connections + channels, "count")
        result.add(f"{rtt} ms: naive: SSH connections (5 per case)", 5 * n, "count")
    result.notes.append(
        "The round-trip time is a delaying relay process on loopback (this kernel has no netem); "
        "MQIC's connection and channel counts are paramiko's, the naive path's one OpenSSH "
        "connection per scp or ssh. MQIC's counts do not grow with the number of cases."
    )


def mqic_passes(bench: Bench, box, n: int, rtt: int) -> dict[str, tuple[float, int, int]]:
    intake.scan(make_inbox(bench.dir(f"s10-{rtt}-mqic"), n, **CASE))
    found = {}
    ssh.close_all()
    ssh.reset_stats()
    with stopwatch() as took:
        report = submission.submit_pass()
    if len(report.started) != n:
        raise RuntimeError(f"MQIC's submit pass at {rtt} ms started {len(report.started)} of {n}: {report}")
    stats = ssh.stats()
    found["submit"] = (took[0], stats.connections_opened, stats.channels_opened)
    wait_done(box, n)
    ssh.reset_stats()
    with stopwatch() as took:
        report = monitoring.monitor_pass()
    if len(report.completed) != n or report.cleaned != n:
        raise RuntimeError(f"MQIC's monitor pass at {rtt} ms: {report}")
    stats = ssh.stats()
    found["monitor"] = (took[0], stats.connections_opened, stats.channels_opened)
    return found


def wait_done(box, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        tasks = box.status()["tasks"].values()
        if sum(isinstance(t["status"], dict) and "Done" in t["status"] for t in tasks) >= n:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the bench's tasks did not end in time")
        time.sleep(0.2)


def release_everything() -> None:
    GpuGroup.objects.update(status=GpuGroup.Status.AVAILABLE, holder_id=None, assigned_at=None)


class Naive:
    """The seed's way through the same link: OpenSSH's ``ssh`` and ``scp``, a connection each."""

    def __init__(self, bench: Bench, port: int):
        self.port = port
        self.known = bench.dir("s10-known") / f"known_hosts-{port}"
        self.known.write_text(f"[127.0.0.1]:{port} {bench.sshd.host_key}\n")
        self.options = [
            "-F", "/dev/null", "-i", str(bench.sshd.client_key), "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={self.known}",
            "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
        ]  # fmt: skip
        self.user = bench.sshd.username

    def ssh(self, command: str) -> str:
        argv = ["ssh", *self.options, "-p", str(self.port), f"{self.user}@127.0.0.1", command]
        return subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    def scp(self, source: str, dest: str) -> None:
        subprocess.run(["scp", *self.options, "-q", "-r", "-P", str(self.port), source, dest], check=True)

    def passes(self, bench: Bench, box, pueue: str, n: int, rtt: int) -> dict[str, float]:
        intake.scan(make_inbox(bench.dir(f"s10-{rtt}-naive"), n, **CASE))
        waiting = Case.objects.filter(status=S.SUBMITTED).order_by("pk").values_list("pk", flat=True)
        found = {}
        with stopwatch() as took:
            for case_id in list(waiting):
                case = submission.claim(case_id)
                self.scp(case.source_path, f"{self.user}@127.0.0.1:{case.remote_dir}")
                group = case.gpu_group
                add = [pueue, "add", "-l", case.label, "-g", group.pueue_group, "-w", case.remote_dir, "-p", "--"]
                add.append(job_command(settings.MQIC_ENTRY_SCRIPT, group.devices))
                task_id = int(self.ssh(shlex.join(add)).split()[-1])
                transition(case, S.SUBMITTING, S.RUNNING, reason="naive path", pueue_task_id=task_id)
        found["submit"] = took[0]
        wait_done(box, n)  # MQIC cleaned its own tasks up
        results = bench.dir(f"s10-{rtt}-naive-results")
        with stopwatch() as took:
            for case in Case.objects.filter(status=S.RUNNING).select_related("gpu_group"):
                state = json.loads(self.ssh(shlex.join([pueue, "status", "--json"])))
                if "Done" not in state["tasks"][str(case.pueue_task_id)]["status"]:
                    raise RuntimeError(f"naive monitor: task {case.pueue_task_id} not done")
                self.scp(f"{self.user}@127.0.0.1:{case.remote_dir}", str(results / case.name))
                folder = shlex.quote(case.remote_dir)
                self.ssh(f"{shlex.join([pueue, 'remove', str(case.pueue_task_id)])} && rm -rf -- {folder}")
                transition(case, S.RUNNING, S.COMPLETED, reason="naive path")
        found["monitor"] = took[0]
        return found


@contextlib.contextmanager
def delay_link(upstream_port: int, rtt_ms: int) -> Iterator[int]:
    """The port of a ``delay_link`` process to the bench sshd with this round-trip time."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.delay_link", str(upstream_port), str(rtt_ms)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield int(process.stdout.readline())
    finally:
        process.kill()
        process.wait()
