"""Running MQIC's own processes (qcluster, watcher, tick) against the test database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import django_env, manage


@contextmanager
def running_system(settings, *, log_dir: Path, commands=("qcluster", "watch_cases", "tick"), **env):
    """Start the given management commands as real processes; stop them (and their children) after."""
    child_env = django_env(
        MQIC_NEW_CASES_DIR=str(settings.MQIC_NEW_CASES_DIR),
        MQIC_RESULTS_DIR=str(settings.MQIC_RESULTS_DIR),
        MQIC_QUIET_SECONDS=str(settings.MQIC_QUIET_SECONDS),
        MQIC_SUBMIT_LEASE_SECONDS=str(settings.MQIC_SUBMIT_LEASE_SECONDS),
        MQIC_LOST_GRACE_SECONDS=str(settings.MQIC_LOST_GRACE_SECONDS),
        MQIC_Q_WORKERS="2",
        **env,
    )
    processes = []
    try:
        for command in commands:
            args = [command, "--every", "0.5"] if command == "tick" else [command]
            out = open(log_dir / f"{command}.log", "ab")  # noqa: SIM115 - closed with the process
            processes.append(
                (manage(*args, env=child_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True), out)
            )
        yield processes
    finally:
        for process, _out in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process, out in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            out.close()


def wait_for(predicate, timeout: float, message="condition", interval=0.25):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
