"""Outages of what MQIC itself stands on: the results disk or the host's disk filling up, and
PostgreSQL restarting under the running processes.

Nothing half-written is taken for whole (no case ends with partial results, no partial folder is
run), a case says why it waits, and all goes on by itself once the space or the service is back.
The full disks are tmpfs mounts of the test's own, the PostgreSQL server a cluster of its own on
a port of its own; each is removed by the test (root only).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest

from cases.models import Case, CaseStatus
from cases.services import intake, monitoring, submission
from tests.support.cases import drop_case
from tests.support.processes import django_env, manage
from tests.support.sshd import free_port
from tests.support.system import running_system, wait_for

S = CaseStatus
MB = 1 << 20


@pytest.fixture
def small_disk(tmp_path, mqic_dirs):
    """The results folder on a 1 MB tmpfs; ``grow()`` gives it room."""
    folder = tmp_path / "results"
    folder.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(folder)], check=True)
    mqic_dirs.MQIC_RESULTS_DIR = folder

    class Disk:
        path = folder

        @staticmethod
        def grow():
            subprocess.run(["mount", "-o", "remount,size=64m", str(folder)], check=True)

    yield Disk
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_results_disk_makes_the_case_wait_then_it_completes_whole(hpc, sandbox, small_disk, mqic_dirs):
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "big", "head -c 3145728 /dev/urandom > big.bin; echo done\n")
    intake.scan()
    submission.submit_pass()
    case = Case.objects.get(name="big")
    remote = Path(case.remote_dir)
    wait_for(lambda: (remote / ".mqic_exit_code").exists(), 30, "the job to end")

    for _ in range(2):
        report = monitoring.monitor_pass()
        assert (report.completed, report.failed) == ([], [])
    case.refresh_from_db()
    assert case.status == S.RUNNING, "not ended on what could not come home"
    notes = case.events.filter(reason__startswith=monitoring.RESULTS_WAIT)
    assert notes.count() == 1 and "No space left on device" in notes.get().reason, "said once, with why"
    assert (remote / "big.bin").stat().st_size == 3 * MB, "the job's folder stays on the host"
    assert not (small_disk.path / "big").exists(), "nothing half-written is left as results"

    small_disk.grow()
    assert monitoring.monitor_pass().completed == ["big"]
    case.refresh_from_db()
    assert (Path(case.result_path) / "big.bin").stat().st_size == 3 * MB


def test_a_full_remote_disk_during_the_upload_runs_nothing_and_the_case_waits(hpc, sandbox, mqic_dirs):
    """The host's disk fills while the case folder goes up: the partial folder is never run, the
    case waits with the reason, and it runs once the host has room."""
    base = sandbox.base_dir
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(base)], check=True)
    try:
        drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "heavy", "echo ran > out.txt\n", files={"in.bin": b"\1" * 3 * MB})
        intake.scan()
        report = submission.submit_pass()
        case = Case.objects.get(name="heavy")
        assert (report.started, case.status, case.attempts) == ([], S.SUBMITTED, 0)
        assert case.last_error.startswith("waiting: could not send") and "No space left" in case.last_error
        assert sandbox.adds() == [], "no task for a folder that did not arrive whole"
        subprocess.run(["mount", "-o", "remount,size=64m", str(base)], check=True)
        assert submission.submit_pass().started == ["heavy"]
        wait_for(
            lambda: monitoring.monitor_pass().completed == ["heavy"], 60, "the case to complete", interval=0.3
        )
        case.refresh_from_db()
        assert (Path(case.result_path) / "out.txt").read_text() == "ran\n" and case.last_error == ""
    finally:
        subprocess.run(["umount", "-l", str(base)], check=False)


class Postgres:
    """A PostgreSQL server of the test's own (initdb in a temporary folder, its own port), so that
    restarting it disturbs nothing else on the machine."""

    def __init__(self):
        self.bin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        self.folder = Path(tempfile.mkdtemp(prefix="mqic-pg-"))
        shutil.chown(self.folder, "postgres", "postgres")
        self.port = free_port()
        self.options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self.as_postgres(["initdb", "-D", str(self.folder / "data"), "-U", "postgres", "-A", "trust"])
        self.pg_ctl("start")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/mqic"
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c",
                        "create database mqic"], check=True, capture_output=True)  # fmt: skip

    def as_postgres(self, argv):
        runuser = shutil.which("runuser", path="/usr/sbin:/sbin") or "runuser"
        argv = [runuser, "-u", "postgres", "--", str(self.bin / argv[0]), *argv[1:]]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)

    def pg_ctl(self, verb: str) -> None:
        log = self.folder / "log"
        self.as_postgres(["pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "-l", str(log),
                          "-o", self.options, verb])  # fmt: skip

    def close(self):
        with contextlib.suppress(subprocess.CalledProcessError):
            self.pg_ctl("stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def cases_by_status(url: str) -> dict[str, str]:
    with psycopg.connect(url.replace("postgres://", "postgresql://")) as db:
        return dict(db.execute("select name, status from cases_case").fetchall())


def test_postgresql_restarting_mid_run_loses_nothing_and_every_process_carries_on(sshd, sandbox, tmp_path):
    """PostgreSQL restarted while the qcluster, the watcher and tick work on cases (their
    connections drop): every case completes once, and no process of MQIC's stays broken."""
    pg = Postgres()
    inbox, results = tmp_path / "new_cases", tmp_path / "results"
    inbox.mkdir()
    env = django_env(
        DATABASE_URL=pg.url,
        MQIC_NEW_CASES_DIR=str(inbox),
        MQIC_RESULTS_DIR=str(results),
        MQIC_HPC_CONFIG="",
        MQIC_HPC_HOST="127.0.0.1",
        MQIC_HPC_PORT=str(sshd.port),
        MQIC_HPC_USER="root",
        MQIC_HPC_KEY=str(sshd.client_key),
        MQIC_HPC_KNOWN_HOSTS=str(sshd.known_hosts),
        MQIC_HPC_BASE_DIR=str(sandbox.base_dir),
        MQIC_PUEUE=sandbox.pueue,
        MQIC_QUIET_SECONDS="2",
        MQIC_Q_WORKERS="2",
    )
    processes = []
    try:
        setups = (
            ["migrate", "--verbosity", "0"],
            ["createcachetable"],
            ["configure_hpc", "--offline"],
            ["setup_schedules"],
        )
        for setup in setups:
            manage(*setup, env=env, stdout=subprocess.DEVNULL).wait(timeout=300)
        for command in (["qcluster"], ["watch_cases"], ["tick", "--every", "0.5"]):
            out = open(tmp_path / f"{command[0]}.log", "ab")  # noqa: SIM115 - closed at the end
            processes.append((manage(*command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True), out))  # fmt: skip
        names = [f"case{n}" for n in range(6)]
        for name in names:
            drop_case(inbox, name, "sleep 1; echo ok > out.txt\n")
        wait_for(lambda: "running" in cases_by_status(pg.url).values(), 120, "a case to run")
        pg.pg_ctl("restart")
        wait_for(
            lambda: cases_by_status(pg.url) == dict.fromkeys(names, "completed"), 300, "every case to complete"
        )
        assert [p.poll() for p, _out in processes] == [None, None, None], "every process carried on"
        labels = [a["label"] for a in sandbox.adds()]
        assert len(labels) == len(set(labels)) == len(names), "each case added once"
    finally:
        for process, out in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            out.close()
        pg.close()


@pytest.mark.django_db
def test_tick_carries_on_when_the_database_is_away_for_a_while(monkeypatch):
    """A query of tick's fails while the database restarts: tick says so and looks again, rather
    than ending (under honcho, one process ending stops them all)."""
    from django.core.management import call_command
    from django.db import OperationalError

    from cases.management.commands import tick

    answers = [OperationalError("server closed the connection unexpectedly"), ["monitor"], ["submit"]]

    def enqueue_due():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    class Enough(Exception):
        pass

    def sleep(_seconds):
        if not answers:
            raise Enough

    monkeypatch.setattr(tick.passes, "enqueue_due", enqueue_due)
    monkeypatch.setattr(tick.time, "sleep", sleep)
    out = StringIO()
    with pytest.raises(Enough):
        call_command("tick", stdout=out)
    assert out.getvalue().splitlines() == ["enqueued monitor", "enqueued submit"]


@pytest.mark.timeout(900)  # a whole system, with its own waits of 120 s and 300 s for a loaded machine
@pytest.mark.django_db(transaction=True)
def test_redis_restarting_with_passes_queued_loses_no_case(hpc, sandbox, mqic_dirs, tmp_path):
    """The broker (a Redis of the test's own, without persistence) restarts while passes wait in
    its queue, which is then empty: tick enqueues again what has work, and every case completes."""
    port = free_port()
    server = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    redis_process = subprocess.Popen(server, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        ping = ["redis-cli", "-p", str(port), "ping"]
        wait_for(lambda: subprocess.run(ping, capture_output=True).returncode == 0, 10, "redis")
        mqic_dirs.MQIC_QUIET_SECONDS = 2
        names = [f"case{n}" for n in range(6)]
        with running_system(mqic_dirs, log_dir=tmp_path, MQIC_Q_BROKER="redis", MQIC_REDIS_URL=url):
            for name in names:
                drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, name, "sleep 1; echo ok > out.txt\n")
            wait_for(lambda: Case.objects.filter(status=S.RUNNING).exists(), 120, "a case to run")
            redis_process.kill()
            redis_process.wait()
            redis_process = subprocess.Popen(server, stdout=subprocess.DEVNULL)
            completed = Case.objects.filter(name__in=names, status=S.COMPLETED)
            wait_for(lambda: completed.count() == len(names), 300, "every case to complete")
        labels = [a["label"] for a in sandbox.adds()]
        assert len(labels) == len(set(labels)) == len(names), "each case added once"
    finally:
        redis_process.kill()
        redis_process.wait()


@pytest.mark.django_db
def test_the_watcher_carries_on_when_the_database_is_away_for_a_while(monkeypatch, tmp_path):
    """The watcher died here when PostgreSQL restarted under it ("the database system is shutting
    down"), and with it every process honcho runs beside it."""
    from django.db import OperationalError

    from cases.services import watcher

    stop = threading.Event()
    scans = []

    def run(kind, **options):
        scans.append(kind)
        if len(scans) == 1:
            raise OperationalError("the database system is shutting down")
        stop.set()
        return SimpleNamespace(report=SimpleNamespace(registered=[], rejected=[]), summary="")

    monkeypatch.setattr(watcher.passes, "run", run)
    watcher.watch(tmp_path, polling=True, say=lambda text: None, stop=stop)
    assert scans == ["scan", "scan"], "it scanned again after the database came back"
