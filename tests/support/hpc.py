"""The remote HPC of the tests: the sandbox pueue daemon, reached over the real sshd.

``Sandbox`` is one pueue "installation" (state dir, daemon, ``pueue`` wrapper) plus the
folder that plays the remote base directory. Fixtures here build it and the database rows
(``HpcHost`` and its ``GpuGroup``s) that point MQIC at it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from resources.models import GpuGroup, HpcHost
from resources.sandbox import pueue_sandbox


class Sandbox:
    def __init__(self, version: str = "4.0.4", groups: dict[str, int] | None = None):
        # Short path: the daemon's unix socket path must stay under ~100 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="mqic-hpc-"))
        self.state_dir, self.base_dir = self.root / "state", self.root / "cases"
        self.base_dir.mkdir()
        self.version = version
        self.pueue = str(pueue_sandbox.install(self.root / "bin", self.state_dir, version))
        self.start()
        for name, parallel in (groups or {}).items():
            self.cli("group", "add", name, "-p", str(parallel))

    def start(self) -> None:
        pueue_sandbox.start_daemon(self.state_dir, self.version)

    def stop(self) -> None:
        pueue_sandbox.stop_daemon(self.state_dir)

    def restart(self) -> None:
        """Kill the daemon hard and start it again: running tasks become Killed, like pueued."""
        pueue_sandbox.crash_daemon(self.state_dir)
        self.start()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([self.pueue, *args], capture_output=True, text=True, check=check, timeout=30)

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout)

    def adds(self) -> list[dict]:
        return self._jsonl("adds.jsonl")

    def events(self) -> list[dict]:
        return self._jsonl("events.jsonl")

    def _jsonl(self, name: str) -> list[dict]:
        path = self.state_dir / name
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def set_fault(self, name: str, armed: bool = True) -> None:
        faults = self.state_dir / "faults"
        faults.mkdir(exist_ok=True)
        (faults / name).touch() if armed else (faults / name).unlink(missing_ok=True)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def overlaps_per_group(events: list[dict]) -> dict[str, int]:
    """The most tasks that ever ran at once in each pueue group, from the start/end evidence."""
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    for event in sorted(events, key=lambda e: (e["time_ns"], e["event"] == "start")):
        delta = 1 if event["event"] == "start" else -1
        running[event["group"]] = running.get(event["group"], 0) + delta
        most[event["group"]] = max(most.get(event["group"], 0), running[event["group"]])
    return most


def make_hpc_host(sshd, sandbox: Sandbox, *, groups=("gpu_a", "gpu_b"), **fields) -> HpcHost:
    """An ``HpcHost`` reaching ``sandbox`` through the real sshd, with one GPU group per pueue group."""
    defaults = {
        "name": "sshd",
        "hostname": "127.0.0.1",
        "port": sshd.port,
        "username": "root",
        "key_path": str(sshd.client_key),
        "known_hosts_path": str(sshd.known_hosts),
        "base_dir": str(sandbox.base_dir),
        "pueue_command": sandbox.pueue,
    }
    host = HpcHost.objects.create(**(defaults | fields))
    for n, name in enumerate(groups):
        GpuGroup.objects.create(host=host, name=name, pueue_group=name, devices=str(n))
    return host


@pytest.fixture
def sandbox():
    box = Sandbox(groups={"gpu_a": 1, "gpu_b": 1})
    yield box
    box.cleanup()


@pytest.fixture
def hpc(sshd, sandbox, db):
    """The database pointed at the sandbox over sshd: host ``sshd`` with GPU groups gpu_a, gpu_b."""
    return make_hpc_host(sshd, sandbox)


def kill_hung_clients(sandbox: Sandbox) -> None:
    """End ``pueue`` CLI processes left hanging by a fault hook (they would sleep for an hour)."""
    marker = f"PUEUE_SANDBOX_DIR={sandbox.state_dir}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0") and b" add" in (
                proc / "cmdline"
            ).read_bytes().replace(b"\0", b" "):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
