"""The remote HPC of the tests: a pueue daemon reached over the real sshd.

Two kinds, with one surface (``root``, ``base_dir``, ``pueue``, ``socket``, ``secret``, ``start``,
``stop``, ``crash``, ``restart``, ``cli``, ``status``, ``adds``, ``events``, ``set_fault``, ``cleanup``):

* ``Sandbox``: the Python stand-in (``sandbox/pueue_sandbox.py``), always available;
* ``RealPueue``: a private real pueued (``sandbox/real_pueue.py``) from the binaries in the folder
  named by ``MQIC_REAL_PUEUE_BIN``. Tests that use it carry the marker ``real_pueue``; without the
  variable they are skipped with ``REAL_PUEUE_MISSING``, or fail when ``CI`` is set (the
  ``pytest_runtest_setup`` hook below).

The ``remote`` fixture runs a test on both (``never_started_remote`` too, configured but never
started). Fixtures here also build the database rows (``HpcHost`` and its ``GpuGroup``s) that
point MQIC at a remote.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from resources.models import GpuGroup, HpcHost
from sandbox import pueue_sandbox
from sandbox.real_pueue import MARKER, RealDaemon

REAL_PUEUE_BIN = "MQIC_REAL_PUEUE_BIN"
REAL_PUEUE_MISSING = (
    "real pueue not available: set MQIC_REAL_PUEUE_BIN to a folder holding pueue and pueued "
    "(static Linux builds are on pueue's GitHub release page)"
)
GROUPS = {"gpu_a": 1, "gpu_b": 1}


class RealPueueMissing(Exception):
    """``MQIC_REAL_PUEUE_BIN`` is not set: the real-pueue tier cannot run here."""


def real_pueue_bin() -> Path:
    """The folder of real ``pueue`` and ``pueued``; a folder without them is a setup error."""
    folder = os.environ.get(REAL_PUEUE_BIN)
    if not folder:
        raise RealPueueMissing(REAL_PUEUE_MISSING)
    path = Path(folder)
    missing = [name for name in ("pueue", "pueued") if not os.access(path / name, os.X_OK)]
    if missing:
        raise RuntimeError(f"{REAL_PUEUE_BIN}={folder} holds no executable {' or '.join(missing)}")
    return path


class Sandbox:
    """The stand-in: state dir, daemon, ``pueue`` wrapper, and the folder playing the base dir."""

    kind = "sandbox"

    def __init__(self, version: str = "4.0.4", groups: dict[str, int] | None = None, *, started: bool = True):
        """``started=False``: configured, but no daemon ever ran (so no groups either)."""
        # Short path: the daemon's unix socket path must stay under ~100 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="mqic-hpc-"))
        self.state_dir, self.base_dir = self.root / "state", self.root / "cases"
        self.base_dir.mkdir()
        self.version = version
        self.pueue = str(pueue_sandbox.install(self.root / "bin", self.state_dir, version))
        self.client_marker = f"PUEUE_SANDBOX_DIR={self.state_dir}".encode()
        if not started:
            pueue_sandbox.configure(self.state_dir)
            return
        self.start()
        for name, parallel in (groups or {}).items():
            self.cli("group", "add", name, "-p", str(parallel))

    @property
    def socket(self) -> Path:
        return self.state_dir / "pueue.socket"

    @property
    def secret(self) -> Path:
        return self.state_dir / "shared_secret"

    def start(self) -> None:
        pueue_sandbox.start_daemon(self.state_dir, self.version)

    def stop(self) -> None:
        pueue_sandbox.stop_daemon(self.state_dir)

    def crash(self) -> None:
        """SIGKILL the daemon alone: its tasks keep running, the socket file stays."""
        pueue_sandbox.crash_daemon(self.state_dir)

    def restart(self) -> None:
        """Kill the daemon hard and start it again: running tasks become Killed, like pueued."""
        self.crash()
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
        set_fault(self.state_dir / "faults", name, armed)

    def cleanup(self) -> None:
        self.stop()
        kill_processes_in(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


class RealPueue:
    """Real pueue: a private pueued with its own config, state and socket, and a ``pueue`` wrapper.

    Differences from ``Sandbox``, all from what real pueue keeps:

    * ``adds()`` comes from the wrapper, which records each add that exited 0 (see
      ``sandbox/real_pueue.py``); ``time`` is when the client returned, not the task's
      ``created_at`` (the sandbox's daemon writes both at once), and ``path`` is the ``-w`` given,
      resolved, or the caller's directory. An add that never reaches the wrapper is not recorded.
    * ``events()`` is read from ``status --json`` (the ``start``/``end`` of each task, the worker
      id from the task's ``PUEUE_WORKER_ID``), not written as things happen: tasks that ``clean``
      or ``remove`` dropped are missing, and so is a FailedToSpawn task's worker id (``None``).
      A task killed by a restart ends at the restart, although its process may run on.
    * Tasks capture the wrapper's ``MQIC_REAL_PUEUE_ROOT`` in their ``envs``; it is how ``stop``
      and ``cleanup`` find the tasks a crashed daemon left running.
    * pueued starts queued tasks on its own tick (about every 300 ms here), not at once.
    """

    kind = "real"

    def __init__(
        self,
        groups: dict[str, int] | None = None,
        *,
        started: bool = True,
        user: str | None = None,
        base_name: str = "cases",
    ):
        """``started=False``: config and wrapper written, pueued never started (so no groups either).
        ``user``: everything belongs to that account and pueued runs as it (``ShellAccount``)."""
        self.root = Path(tempfile.mkdtemp(prefix="mqic-rp-"))
        self.base_dir = self.root / base_name
        self.base_dir.mkdir()
        self.bin_dir = real_pueue_bin()
        self.daemon = RealDaemon(self.root / "pueue", user=user)
        self.pueue = str(self.daemon.install(self.bin_dir))
        if user:
            subprocess.run(["chown", "-R", f"{user}:", str(self.root)], check=True)
        self.client_marker = f"{MARKER}={self.daemon.root}".encode()
        if not started:
            return
        self.start()
        for name, parallel in (groups or {}).items():
            self.cli("group", "add", name, "-p", str(parallel))

    @property
    def socket(self) -> Path:
        return self.daemon.socket

    @property
    def secret(self) -> Path:
        return self.daemon.data / "shared_secret"

    def start(self) -> None:
        self.daemon.start(self.bin_dir)

    def stop(self) -> None:
        """SIGTERM, a graceful stop (pueued kills its running tasks), then end orphans of earlier crashes."""
        self.daemon.stop()

    def crash(self) -> None:
        """SIGKILL pueued alone: its tasks keep running, the socket and pid file stay."""
        self.daemon.crash()

    def restart(self) -> None:
        """Kill pueued hard and start it again with the same config: running tasks become Killed."""
        self.crash()
        self.start()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.daemon.cli(*args, check=check)

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout)

    def adds(self) -> list[dict]:
        return [_recorded_add(path) for path in sorted(self.daemon.adds.iterdir(), key=_ns_of)]

    def events(self) -> list[dict]:
        events = []
        for task in self.status()["tasks"].values():
            ((state, times),) = task["status"].items()
            worker = task["envs"].get("PUEUE_WORKER_ID")
            common = {key: task[key] for key in ("id", "created_at", "label", "group")}
            common["worker_id"] = int(worker) if worker is not None else None
            if "start" in times:
                events.append({"time": times["start"], "time_ns": rfc3339_ns(times["start"]), "event": "start"})
                events[-1].update(common)
            if state == "Done":
                end = {"time": times["end"], "time_ns": rfc3339_ns(times["end"]), "event": "end"}
                events.append({**end, **common, "result": times["result"]})
        return sorted(events, key=lambda event: (event["time_ns"], event["event"] == "start"))

    def set_fault(self, name: str, armed: bool = True) -> None:
        set_fault(self.daemon.faults, name, armed)

    def cleanup(self) -> None:
        kill_hung_clients(self)
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def set_fault(faults: Path, name: str, armed: bool) -> None:
    faults.mkdir(exist_ok=True)
    (faults / name).touch() if armed else (faults / name).unlink(missing_ok=True)


def _ns_of(record: Path) -> int:
    return int(record.name.split(".")[0])


def _recorded_add(record: Path) -> dict:
    """One add the real-pueue wrapper recorded, with the keys of the sandbox's ``adds.jsonl``."""
    stdout, pwd, *argv = record.read_bytes().decode().split("\0")[:-1]
    request = pueue_sandbox.parse_add(argv[argv.index("add") + 1 :])
    path = request["working_directory"]
    first = stdout.splitlines()[0]  # "3" with -p, else "New task added (id 3)."
    return {
        "time": format_ns(_ns_of(record)),
        "id": int(first) if first.isdigit() else int(re.fullmatch(r"New task added \(id (\d+)\)\.", first)[1]),
        "label": request["label"],
        "group": request["group"],
        "path": os.path.realpath(os.path.join(pwd, path)) if path else pwd,
        "command": request["command"],
    }


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time as pueue writes it (up to 9 fraction digits)."""
    base, fraction, offset = _RFC3339.fullmatch(text).groups()
    seconds = datetime.datetime.fromisoformat(base + offset.replace("Z", "+00:00")).timestamp()
    return int(seconds) * 10**9 + int((fraction or "0").ljust(9, "0"))


def format_ns(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC).isoformat().replace("+00:00", "Z")


def task_pid(pid_file: Path, timeout: float = 30) -> int:
    """The pid a task wrote with ``echo $$ > pid`` (waiting for it: the task may only just have started)."""
    deadline = time.monotonic() + timeout
    while not (pid_file.exists() and pid_file.read_text().endswith("\n")):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no pid in {pid_file} after {timeout}s")
        time.sleep(0.01)
    return int(pid_file.read_text())


def overlaps_per_group(events: list[dict]) -> dict[str, int]:
    """The most tasks that ever ran at once in each pueue group, from the start/end evidence."""
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    for event in sorted(events, key=lambda e: (e["time_ns"], e["event"] == "start")):
        delta = 1 if event["event"] == "start" else -1
        running[event["group"]] = running.get(event["group"], 0) + delta
        most[event["group"]] = max(most.get(event["group"], 0), running[event["group"]])
    return most


def make_hpc_host(sshd, sandbox: Sandbox | RealPueue, *, groups=("gpu_a", "gpu_b"), **fields) -> HpcHost:
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


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """A ``real_pueue`` test without the binaries is not run, with the reason in the summary; on CI
    (``CI`` set) it fails instead, so a missing binary can never pass for a green run."""
    if item.get_closest_marker("real_pueue") is None:
        return
    try:
        real_pueue_bin()
    except RealPueueMissing as missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} (CI is set: this tier must run)", pytrace=False)
        pytest.skip(str(missing))


@pytest.fixture
def sandbox():
    box = Sandbox(groups=GROUPS)
    yield box
    box.cleanup()


@pytest.fixture(params=["sandbox", pytest.param("real", marks=pytest.mark.real_pueue)])
def remote(request):
    """The test once on the stand-in and once on real pueue (groups gpu_a and gpu_b, parallel 1)."""
    box = Sandbox(groups=GROUPS) if request.param == "sandbox" else RealPueue(groups=GROUPS)
    yield box
    box.cleanup()


@pytest.fixture(params=["sandbox", pytest.param("real", marks=pytest.mark.real_pueue)])
def never_started_remote(request):
    """Like ``remote``, but its daemon was never started: pueue is configured, nothing more."""
    box = Sandbox(started=False) if request.param == "sandbox" else RealPueue(started=False)
    yield box
    box.cleanup()


@pytest.fixture
def hpc(sshd, sandbox, db):
    """The database pointed at the sandbox over sshd: host ``sshd`` with GPU groups gpu_a, gpu_b."""
    return make_hpc_host(sshd, sandbox)


def kill_processes_in(root: Path) -> None:
    """End what still runs in a folder of ``root``: the tasks a crashed stand-in daemon left (its
    restarted daemon calls them Killed, so its stop no longer ends them; the stand-in marks its
    tasks no other way). Left alone, one whose folder is deleted would wait for ``go`` forever."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(proc / "cwd"))
            if cwd.is_relative_to(root):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def kill_hung_clients(remote: Sandbox | RealPueue) -> None:
    """End ``pueue`` clients left hanging by a fault hook (they would sleep for an hour): processes
    with the remote's client marker in their environment that are no task (tasks carry a worker id)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            if remote.client_marker in environ and not any(e.startswith(b"PUEUE_WORKER_ID=") for e in environ):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
