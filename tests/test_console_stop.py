"""``make run`` stops cleanly: the demo is started as ``make run`` starts it (``python -m
sandbox.demo run``, in a temporary var/), then stopped by Ctrl-C (SIGINT to its process group, as
a terminal sends it) or from elsewhere by ``make stop`` (``python -m sandbox.demo stop``); nothing
it started may be left: not a Procfile process, not a qcluster worker, not a local HPC daemon."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from sandbox import pueue_sandbox
from sandbox.demo import MARKER, STOP_GRACE
from tests.support.processes import REPO, processes_with
from tests.support.system import wait_for

STARTUP = 180
"""Seconds the demo may take to answer (a fresh database is migrated first): a guard, not a measure."""
QUICK_STOP = 12.0
"""Seconds a stop may take: "within a few seconds", generously. Below ``STOP_GRACE``, after which a
process that did not stop by itself is killed: a stop this quick needed no kill."""
assert QUICK_STOP < STOP_GRACE


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Demo:
    def __init__(self, root: Path, hosts: int):
        root.mkdir()
        self.var = root / "var"
        self.port = free_port()
        self.log = root / "demo.log"
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "MQIC_REAL_PUEUE_BIN"}}
        self.env = env | {
            "DJANGO_SETTINGS_MODULE": "mqic_site.settings",
            "MQIC_VAR_DIR": str(self.var),
            "MQIC_NEW_CASES_DIR": str(root / "new_cases"),
            "MQIC_RESULTS_DIR": str(root / "results"),
            "MQIC_PORT": str(self.port),
            "MQIC_DEMO_HOSTS": str(hosts),
            "PYTHONUNBUFFERED": "1",
        }
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sandbox.demo", "run"],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/admin/login/", timeout=2) as page:
                return page.status == 200
        except OSError:
            return False

    def wait_until_up(self) -> None:
        def up():
            assert self.process.poll() is None, self.output()
            return self.answers() and "[mqic] running" in self.output()

        wait_for(up, STARTUP, "the demo to answer and its qcluster to run")
        self.token = json.loads((self.var / "demo.json").read_text())["token"]

    def state_dirs(self) -> list[Path]:
        sandbox = self.var / "sandbox"
        return [sandbox / "state", *sorted(p / "state" for p in sandbox.glob("hpc*"))]

    def leftovers(self) -> list[str]:
        """Processes of this run still alive: those carrying its marker, and the HPC daemons."""
        left = []
        for proc in processes_with(f"{MARKER}={self.token}"):
            with contextlib.suppress(OSError):
                left.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        left += [f"daemon of {d}" for d in self.state_dirs() if pueue_sandbox.StateDir(str(d)).daemon_alive()]
        return left

    def kill(self) -> None:
        """After the test: whatever a failed stop left (never needed when the test passes)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        subprocess.run([sys.executable, "-m", "sandbox.demo", "stop"], cwd=REPO, env=self.env, capture_output=True)


@pytest.fixture
def start_demo():
    demos = []
    # A short folder: a unix socket's path (the daemons') has a small limit.
    root = Path(tempfile.mkdtemp(prefix="mqic-demo-"))

    def start(hosts: int = 1) -> Demo:
        demo = Demo(root / f"d{len(demos)}", hosts)
        demos.append(demo)
        demo.wait_until_up()
        return demo

    yield start
    for demo in demos:
        demo.kill()
    shutil.rmtree(root, ignore_errors=True)


def test_ctrl_c_stops_every_process_and_both_local_hpcs(start_demo):
    demo = start_demo(hosts=2)
    assert len(demo.state_dirs()) == 2 and all(
        pueue_sandbox.StateDir(str(d)).daemon_alive() for d in demo.state_dirs()
    )
    with sqlite3.connect(demo.var / "db.sqlite3") as db:
        hosts = db.execute("select name, base_dir from resources_hpchost order by name").fetchall()
    assert [name for name, _ in hosts] == ["hpc", "hpc2"]
    assert hosts[1][1] == str(demo.var / "sandbox" / "hpc2" / "cases")
    assert len(demo.leftovers()) > 4  # web, qcluster (and its workers), watcher, tick, two daemons

    started = time.monotonic()
    os.killpg(demo.process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert demo.process.wait(timeout=60) == 0, demo.output()
    took = time.monotonic() - started
    print(f"stopped by Ctrl-C in {took:.1f} s")
    assert took < QUICK_STOP, demo.output()
    out = demo.output()
    assert "qcluster stopped (rc=0)" in out, out  # stopped by itself, not killed
    assert "SIGKILL" not in out, out
    assert "local HPCs stopped" in out
    assert demo.leftovers() == []
    assert not (demo.var / "demo.json").exists()


def test_make_stop_from_another_terminal_does_the_same(start_demo):
    demo = start_demo()
    started = time.monotonic()
    stopped = subprocess.run(
        [sys.executable, "-m", "sandbox.demo", "stop"], cwd=REPO, env=demo.env, capture_output=True, text=True
    )
    assert stopped.returncode == 0 and "the demo is stopped" in stopped.stdout, stopped.stderr
    took = time.monotonic() - started
    print(f"stopped by `make stop` in {took:.1f} s")
    assert took < QUICK_STOP, demo.output()
    assert demo.process.wait(timeout=60) == 0
    assert "qcluster stopped (rc=0)" in demo.output()
    assert demo.leftovers() == []


def test_a_second_run_on_the_same_var_is_refused_while_one_runs(start_demo):
    demo = start_demo()
    again = subprocess.run(
        [sys.executable, "-m", "sandbox.demo", "run"], cwd=REPO, env=demo.env, capture_output=True, text=True
    )
    assert again.returncode == 1 and "already runs" in again.stderr
    assert demo.answers()
