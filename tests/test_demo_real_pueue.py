"""``make run``'s local HPC is real pueue when ``MQIC_REAL_PUEUE_BIN`` is set: ``python -m
sandbox.demo up`` starts a private real pueued behind the command the demo gives MQIC, and
``down`` stops it. Only the HPC is started (not the whole demo of tests/test_console_stop.py),
so this stays quick."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sandbox import demo, pueue_sandbox
from sandbox.real_pueue import RealDaemon, process_alive
from tests.support.hpc import real_pueue_bin
from tests.support.processes import REPO

pytestmark = pytest.mark.real_pueue


@pytest.fixture
def var(monkeypatch):
    """A demo ``var/`` of its own (short: the daemon's socket lives under it), stopped and removed after."""
    root = Path(tempfile.mkdtemp(prefix="mqic-drp-"))
    monkeypatch.setenv("MQIC_VAR_DIR", str(root / "var"))
    monkeypatch.setenv("MQIC_REAL_PUEUE_BIN", str(real_pueue_bin()))
    yield root / "var"
    subprocess.run([sys.executable, "-m", "sandbox.demo", "down"], cwd=REPO, capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


def run_demo(command: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sandbox.demo", command],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def pueue(command: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([command, "--color", "never", *args], capture_output=True, text=True, timeout=30)


def test_up_starts_real_pueued_behind_the_demo_command_and_down_stops_it(var):
    (host,) = demo.demo_hosts()
    command = demo.demo_env()["MQIC_PUEUE"]  # what MQIC is told to run on the demo's HPC
    daemon = RealDaemon(host.real)

    said = run_demo("up")

    assert f"local HPC hpc (real pueue from {real_pueue_bin()}) running" in said, said
    pid = daemon.pid()
    assert pid is not None and process_alive(pid)
    assert Path(f"/proc/{pid}/exe").resolve() == (real_pueue_bin() / "pueued").resolve(), "the real pueued runs"
    assert not pueue_sandbox.StateDir(str(host.state)).daemon_alive(), "no stand-in beside it"
    assert pueue(command, "--version").stdout.strip() == "pueue 4.0.4"
    # The command reaches that daemon (a stand-in client could not: it has no daemon of its own).
    listed = pueue(command, "group", "--json")
    assert listed.returncode == 0, listed.stderr
    assert set(demo.gpu_groups()) <= set(json.loads(listed.stdout)), "up made the GPU groups"

    said = run_demo("down")

    assert "local HPCs stopped" in said
    assert not process_alive(pid), "down stops the real pueued"
    assert not daemon.socket.exists(), "stopped gracefully: pueued removed its socket"
    stopped = pueue(command, "status", "--json")
    assert stopped.returncode == 1 and "Did you start it?" in stopped.stderr
