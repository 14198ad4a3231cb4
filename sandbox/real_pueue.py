"""A private real pueued, for the tests and the demo only: its own config, state and socket.

Why: the stand-in (``pueue_sandbox.py``) is only worth its tests if it behaves like pueue, and
the only proof is to run the same checks against real pueue. This drives real pueue's binaries
(a folder holding ``pueue`` and ``pueued``, e.g. a static build from pueue's release page) the
way docs/pueue-formats.md describes, without ever touching a user's own pueue: everything
lives under one folder, and every client call goes through a wrapper that passes ``-c``.

Layout of ``root`` (keep it short: the unix socket path must fit in ~100 bytes):
    pueue.yml     the config: state in data/, socket and pid file in run/ (absolute paths)
    data/         pueued's state.json, task_logs/, shared_secret, certs/
    run/          pueue.socket and pueue.pid (both left behind when pueued is SIGKILLed)
    pueued.log    the detached daemon's stdout and stderr (a file: it inherits them)
    adds/         evidence: one file per successful ``add`` through the wrapper, named by the
                  time in ns; NUL-separated: add's stdout, the caller's $PWD, then its argv
    faults/       the stand-in's fault hooks, honoured by the wrapper: ``hang_before_add``
                  (hang before running pueue) and ``hang_after_add`` (add, then hang silently)

The wrapper (``bin/pueue`` unless told otherwise) execs the real client with ``-c pueue.yml``
and exports ``MQIC_REAL_PUEUE_ROOT=<root>``; pueue copies the caller's environment into every
task, so that variable is how ``kill_tasks`` finds tasks a SIGKILLed daemon left running, and
how the tests find clients stuck in a fault hook.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

MARKER = "MQIC_REAL_PUEUE_ROOT"
MAX_SOCKET_PATH = 100
READY_TIMEOUT = 60.0
"""How long a starting pueued may take to answer: generous, since a loaded 2-core machine is slow to start it."""
HANG_SECONDS = 3600

CONFIG = """\
# A private pueued (sandbox/real_pueue.py): tests and the demo only.
shared:
  pueue_directory: {data}
  runtime_directory: {run}
  use_unix_socket: true
  unix_socket_path: {socket}
"""

WRAPPER = """\
#!/bin/sh
# Real pueue with the private daemon of {root} (written by sandbox/real_pueue.py; tests and the
# demo only). Like the stand-in's wrapper it records each add and honours the fault hooks.
{marker}={root}
export {marker}
root={root}
pueue={client}
config={config}
sub='' skip=''
for word do
    if [ -n "$skip" ]; then skip=''; continue; fi
    case $word in
        -c|--config|-p|--profile|--color) skip=1 ;;
        -*) ;;
        *) sub=$word; break ;;
    esac
done
[ "$sub" = add ] || exec "$pueue" -c "$config" "$@"
[ -e "$root/faults/hang_before_add" ] && exec sleep {hang}
out=$("$pueue" -c "$config" "$@")
code=$?
[ "$code" = 0 ] && printf '%s\\0' "$out" "$PWD" "$@" >"$root/adds/$(date +%s%N).$$"
[ -e "$root/faults/hang_after_add" ] && exec sleep {hang}
[ -n "$out" ] && printf '%s\\n' "$out"
exit "$code"
"""


class RealDaemon:
    """One private pueued under ``root``. Only ``install`` and ``start`` need the binaries' folder:
    stopping and crashing go by the pid file, so a daemon can be stopped without knowing them."""

    def __init__(self, root: str | os.PathLike[str], wrapper: Path | None = None, *, user: str | None = None):
        """``user``: run pueued and every client call as this account (``runuser``, so as root only),
        as a site runs pueued as the HPC account; ``root`` must then be that account's."""
        self.user = user
        self.root = Path(root).resolve()
        self.config = self.root / "pueue.yml"
        self.data = self.root / "data"
        self.run_dir = self.root / "run"
        self.socket = self.run_dir / "pueue.socket"
        self.pid_file = self.run_dir / "pueue.pid"
        self.log = self.root / "pueued.log"
        self.adds = self.root / "adds"
        self.faults = self.root / "faults"
        self.wrapper = wrapper or self.root / "bin" / "pueue"
        if len(str(self.socket).encode()) > MAX_SOCKET_PATH:
            raise ValueError(f"{self.root} is too long a path for a unix socket under it")

    def install(self, bin_dir: str | os.PathLike[str]) -> Path:
        """Write the config and the wrapper (again: both only name fixed paths); return the wrapper."""
        for folder in (self.data, self.run_dir, self.adds, self.faults, self.wrapper.parent):
            folder.mkdir(parents=True, exist_ok=True)
        paths = {"data": self.data, "run": self.run_dir, "socket": self.socket}
        # A JSON string is a YAML double-quoted scalar: any path stays one value.
        self.config.write_text(CONFIG.format(**{key: json.dumps(str(path)) for key, path in paths.items()}))
        self.wrapper.write_text(
            WRAPPER.format(
                marker=MARKER,
                root=shlex.quote(str(self.root)),
                client=shlex.quote(str(Path(bin_dir).resolve() / "pueue")),
                config=shlex.quote(str(self.config)),
                hang=HANG_SECONDS,
            )
        )
        self.wrapper.chmod(0o755)
        return self.wrapper

    def client_env(self) -> dict[str, str]:
        """A small environment: pueue copies its caller's into every task's ``envs``."""
        return {"HOME": str(self.root), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}

    def cli(self, *args: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run the wrapper (so adds leave evidence) with a small environment."""
        return subprocess.run(
            self._as_user([str(self.wrapper), *args]),
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            env=self.client_env(),
            cwd=self.root,
        )

    def start(self, bin_dir: str | os.PathLike[str]) -> None:
        """Start pueued detached (also over a stale socket, as after a SIGKILL); return once it answers."""
        with open(self.log, "ab") as log:
            # `pueued -d` spawns the real daemon, which inherits these streams, and exits.
            subprocess.run(
                self._as_user([str(Path(bin_dir).resolve() / "pueued"), "-c", str(self.config), "-d"]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.client_env(),
                cwd=self.root,
                check=True,
                timeout=READY_TIMEOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while self.cli("status", "--json").returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"pueued did not answer within {READY_TIMEOUT}s; see {self.log}")
            time.sleep(0.02)

    def _as_user(self, argv: list[str]) -> list[str]:
        runuser = shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin") or "runuser"
        return [runuser, "-u", self.user, "--", *argv] if self.user else argv

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        """Whether the pid file names a live process (a zombie is dead), as pueued itself checks."""
        pid = self.pid()
        return pid is not None and process_alive(pid)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful: SIGTERM, which pueued handles like ``pueue shutdown`` (it kills its tasks and
        removes the socket), SIGKILL if it lingers; then end any task a crashed daemon left behind."""
        pid = self.pid()
        if pid is not None and process_alive(pid):
            os.kill(pid, signal.SIGTERM)
            if not _wait_dead(pid, timeout):
                os.kill(pid, signal.SIGKILL)
                _wait_dead(pid, timeout)
        self.kill_tasks()

    def crash(self, timeout: float = 10.0) -> None:
        """SIGKILL pueued alone: its tasks keep running; socket and pid file stay behind."""
        pid = self.pid()
        if pid is not None and process_alive(pid):
            os.kill(pid, signal.SIGKILL)
            _wait_dead(pid, timeout)

    def kill_tasks(self) -> None:
        """SIGKILL the process group of every task of this daemon still running (orphans of a crash)."""
        for pid in self._marked_tasks():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)

    def _marked_tasks(self) -> list[int]:
        """Processes carrying our marker that are tasks (pueue gives each a PUEUE_WORKER_ID)."""
        marker = f"{MARKER}={self.root}".encode()
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                environ = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ and any(entry.startswith(b"PUEUE_WORKER_ID=") for entry in environ):
                found.append(int(proc.name))
        return found


def process_alive(pid: int) -> bool:
    """Linux: a pid is alive unless gone or a zombie (an orphan nobody reaps stays one)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
