"""The demo of ``make run``: its local HPCs, and the processes of the Procfile, started and stopped together.

``python -m sandbox.demo run`` (what ``make run`` runs) starts the local HPC(s), prepares the
installation (``manage.py bootstrap_demo``), then runs the Procfile's processes through honcho's
manager until Ctrl-C, ``make stop`` (``python -m sandbox.demo stop``) or the end of any of them;
then it stops every process it started and the HPC daemons, which run in sessions of their own
and so never see the terminal's Ctrl-C. ``up`` and ``down`` start and stop the HPCs alone.

Each local HPC is a pueue daemon with one group per GPU group (``MQIC_GPU_GROUPS``): the stand-in
(``pueue_sandbox``), or, when ``MQIC_REAL_PUEUE_BIN`` names a folder holding real ``pueue`` and
``pueued``, a private real pueued. ``MQIC_DEMO_HOSTS=2`` (or more) runs more than one: the first
is ``hpc``, as in the one-host default (state in ``var/sandbox/state``, command
``var/sandbox/bin/pueue``), and each further host ``hpcN`` has its state, command and remote
base folder under ``var/sandbox/hpcN/``; all are declared in a generated ``var/demo-hosts.toml``
(``MQIC_HPC_CONFIG``). MQIC itself never imports this package: it reaches each daemon only
through the ``pueue`` command installed for it, exactly as it reaches pueue on a login node.

Everything lives under ``MQIC_VAR_DIR`` (default ``var/``), so a test can run a whole demo in a
temporary folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import pueue_sandbox
from .real_pueue import RealDaemon

ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE = 15.0
"""Seconds a process has to stop after SIGTERM before it is killed (qcluster needs about 4)."""


def var_dir() -> Path:
    return Path(os.environ.get("MQIC_VAR_DIR", ROOT / "var")).resolve()


def gpu_groups() -> list[str]:
    return [g.strip() for g in os.environ.get("MQIC_GPU_GROUPS", "gpu_a,gpu_b").split(",") if g.strip()]


def host_count() -> int:
    return max(1, int(os.environ.get("MQIC_DEMO_HOSTS", "1") or "1"))


@dataclass(frozen=True)
class DemoHost:
    """One local HPC: where its daemon keeps its state, its ``pueue`` command and its case folders."""

    name: str
    home: Path

    @property
    def first(self) -> bool:
        return self.name == "hpc"

    @property
    def state(self) -> Path:
        return self.home / "state"

    @property
    def real(self) -> Path:
        return self.home / "real"

    @property
    def wrapper(self) -> Path:
        return self.home / "bin" / "pueue"

    @property
    def base_dir(self) -> Path:
        return var_dir() / "hpc" / "cases" if self.first else self.home / "cases"


def demo_hosts() -> list[DemoHost]:
    sandbox = var_dir() / "sandbox"
    extra = [DemoHost(f"hpc{n}", sandbox / f"hpc{n}") for n in range(2, host_count() + 1)]
    return [DemoHost("hpc", sandbox), *extra]


def all_demo_hosts() -> list[DemoHost]:
    """Every host a demo may have started here, also with fewer hosts asked for now (for ``down``)."""
    sandbox = var_dir() / "sandbox"
    extra = sorted(p.parent.parent for p in sandbox.glob("hpc*/bin/pueue")) if sandbox.is_dir() else []
    return [DemoHost("hpc", sandbox)] + [DemoHost(p.name, p) for p in extra]


def start_host(host: DemoHost) -> str:
    real_bin = os.environ.get("MQIC_REAL_PUEUE_BIN")
    if real_bin:
        pueue_sandbox.stop_daemon(host.state)
        daemon = RealDaemon(host.real, wrapper=host.wrapper)
        pueue = daemon.install(real_bin)
        if not daemon.alive():
            daemon.start(real_bin)
        what, state = f"real pueue from {real_bin}", host.real
    else:
        stop_real(host)
        pueue = pueue_sandbox.install(host.wrapper.parent, host.state)
        if not pueue_sandbox.StateDir(str(host.state)).daemon_alive():
            pueue_sandbox.start_daemon(host.state)
        what, state = "pueue stand-in", host.state
    host.base_dir.mkdir(parents=True, exist_ok=True)
    listed = subprocess.run([str(pueue), "group", "--json"], capture_output=True, text=True, check=True)
    existing = json.loads(listed.stdout)
    for group in gpu_groups():
        if group not in existing:
            subprocess.run([str(pueue), "group", "add", group, "-p", "1"], capture_output=True, check=True)
    return f"local HPC {host.name} ({what}) running, state in {state}"


def stop_host(host: DemoHost) -> None:
    stop_real(host)
    pueue_sandbox.stop_daemon(host.state)


def stop_real(host: DemoHost) -> None:
    """Stop the host's real pueued, if one was ever set up there."""
    if host.real.exists():
        RealDaemon(host.real, wrapper=host.wrapper).stop()


def hosts_file(hosts: list[DemoHost]) -> Path:
    """The TOML that declares several demo hosts (see ``resources/config.py``)."""
    groups = ", ".join(json.dumps(g) for g in gpu_groups())
    tables = [
        f'[hosts.{h.name}]\ntransport = "local"\nbase_dir = {json.dumps(str(h.base_dir))}\n'
        f"pueue = {json.dumps(str(h.wrapper))}\ngpu_groups = [{groups}]\n"
        for h in hosts
    ]
    path = var_dir() / "demo-hosts.toml"
    note = "# Written by `python -m sandbox.demo` for MQIC_DEMO_HOSTS; written again at each start.\n\n"
    path.write_text(note + "\n".join(tables))
    return path


def up() -> str:
    return "\n".join(start_host(host) for host in demo_hosts())


def down() -> str:
    for host in all_demo_hosts():
        stop_host(host)
    return "local HPCs stopped"


# -- run and stop: the whole demo ------------------------------------------------------------


def demo_env() -> dict[str, str]:
    """The environment of ``bootstrap_demo`` and the Procfile's processes: the demo's defaults under
    ``MQIC_VAR_DIR`` (a variable already set wins), and this Python's folder first on ``PATH``."""
    var, hosts = var_dir(), demo_hosts()
    env = dict(os.environ)
    env.setdefault("MQIC_VAR_DIR", str(var))
    env.setdefault("DJANGO_SECRET_KEY_FILE", str(var / "secret_key"))
    env.setdefault("MQIC_HPC_TRANSPORT", "local")
    env.setdefault("MQIC_ALLOW_LOCAL_TRANSPORT", "true")
    env.setdefault("MQIC_PUEUE", str(hosts[0].wrapper))
    env.setdefault("MQIC_HPC_BASE_DIR", str(hosts[0].base_dir))
    if len(hosts) > 1:
        env["MQIC_HPC_CONFIG"] = str(hosts_file(hosts))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def secret_key() -> None:
    """The demo's secret key, made once (only when no key is given otherwise)."""
    path = var_dir() / "secret_key"
    if not os.environ.get("DJANGO_SECRET_KEY") and not path.exists():
        path.write_text(secrets.token_urlsafe(50) + "\n")
        path.chmod(0o600)


def pid_file() -> Path:
    return var_dir() / "demo.json"


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, ended but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def run(procfile: Path = ROOT / "Procfile") -> int:
    """Start everything, run until a signal or a process ends, then stop everything."""
    from honcho import manager as honcho
    from honcho.environ import parse_procfile

    os.umask(0o077)
    var_dir().mkdir(mode=0o700, parents=True, exist_ok=True)
    if (running := _running()) is not None:
        print(f"the demo already runs (pid {running}); stop it with `make stop`", file=sys.stderr)
        return 1
    secret_key()
    signal.signal(signal.SIGTERM, _interrupt)  # until honcho's own handler: clean up on `make stop` too
    token = secrets.token_hex(8)
    env = demo_env() | {MARKER: token}
    pid_file().write_text(json.dumps({"pid": os.getpid(), "token": token}))
    try:
        print(up(), flush=True)
        subprocess.run([sys.executable, "manage.py", "bootstrap_demo"], cwd=ROOT, env=env, check=True)
        processes = parse_procfile(procfile.read_text()).processes
        # honcho signals a whole process group; qcluster must get its SIGTERM alone (its workers
        # hang when they get one too) and takes a few seconds: signal the leaders, wait longer.
        honcho.KILL_WAIT = STOP_GRACE
        manager = honcho.Manager()
        manager._procmgr = LeaderOnly()
        for name, command in processes.items():
            manager.add_process(name, command, env=env, cwd=str(ROOT))
        manager.loop()
        # Stopped by Ctrl-C or `make stop` is a clean end; a process that died is not.
        return 0 if manager.returncode in STOPPED else manager.returncode or 0
    except KeyboardInterrupt:
        return 0
    finally:
        _end_leftovers(token)
        print(down(), flush=True)
        pid_file().unlink(missing_ok=True)


MARKER = "MQIC_DEMO_RUN"
"""Every process the demo starts carries this variable, with a token of the run: what is left of
a run (a worker its leader left behind, a supervisor killed outright) is found by it."""
STOPPED = {128 + signal.SIGINT, 128 + signal.SIGTERM}


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class LeaderOnly:
    """honcho's process manager, but SIGTERM goes to a process alone, not to its whole group."""

    def terminate(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)

    def kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def processes_of(token: str) -> list[int]:
    """The processes whose environment carries this run's token (read from /proc)."""
    needle = f"{MARKER}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def _end_leftovers(token: str) -> None:
    for pid in processes_of(token):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _running() -> int | None:
    try:
        pid = json.loads(pid_file().read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None
    return pid if alive(pid) else None


def stop() -> str:
    """From another terminal: what Ctrl-C does (the running demo stops itself), then make sure."""
    running = _running()
    if running is not None:
        os.kill(running, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE + 15
        while alive(running) and time.monotonic() < deadline:
            time.sleep(0.1)
    with contextlib.suppress(OSError, ValueError, KeyError):
        _end_leftovers(json.loads(pid_file().read_text())["token"])
    pid_file().unlink(missing_ok=True)
    down()
    return "the demo is stopped" if running is not None else "no demo was running; local HPCs stopped"


def main(argv: list[str]) -> int:
    commands = {"up": up, "down": down, "stop": stop}
    if argv == ["run"]:
        return run()
    if len(argv) != 1 or argv[0] not in commands:
        print("usage: python -m sandbox.demo run|stop|up|down", file=sys.stderr)
        return 2
    print(commands[argv[0]]())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
