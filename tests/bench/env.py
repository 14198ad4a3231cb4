"""The benchmark's world: Django on a throw-away SQLite file, a real sshd on loopback, pueue
daemons (the sandbox stand-in, and real pueue from ``MQIC_REAL_PUEUE_BIN``), and the OpenSSH
client commands of the naive path.

Importing this module does not touch Django; ``setup_django`` must run before any module that
imports models (the scenarios), since the database is chosen through the environment.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sandbox import pueue_sandbox
from tests.support.sshd import LOOPBACK, SshServer

REPO = Path(__file__).resolve().parents[2]


def setup_django(workdir: Path, database_url: str = "") -> None:
    """Point Django at ``database_url``, by default a new SQLite file in ``workdir`` (the environment
    decides the database and the inbox, so child processes started later inherit the same) and
    migrate it, with the shared cache's table as an installation has it."""
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "mqic_site.settings"
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    os.environ["MQIC_NEW_CASES_DIR"] = str(workdir / "new_cases")
    os.environ["MQIC_RESULTS_DIR"] = str(workdir / "results")
    os.environ.setdefault("MQIC_LOG_LEVEL", "WARNING")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)  # the dashboard reads the qcluster's heartbeat there


def reset_database() -> None:
    """Every scenario starts from empty tables, so none pays for the rows of another."""
    from django.core.management import call_command

    call_command("flush", interactive=False, verbosity=0)


@dataclass
class Bench:
    quick: bool
    workdir: Path
    sshd: SshServer

    def dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- the OpenSSH client, for the naive path and the reference tools ------------------

    def _options(self) -> list[str]:
        """No user config, only the bench key, the bench known_hosts and no prompts."""
        return [
            "-F", "/dev/null",
            "-i", str(self.sshd.client_key),
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={self.sshd.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    def ssh(self, command: str) -> list[str]:
        """``ssh`` running ``command`` on the bench sshd: a new connection each time."""
        return ["ssh", *self._options(), "-p", str(self.sshd.port), f"{self.sshd.username}@{LOOPBACK}", command]

    def scp(self, *sources: Path | str, dest: str) -> list[str]:
        """``scp -r`` of local ``sources`` to ``dest`` on the bench sshd: a new connection each time."""
        remote = f"{self.sshd.username}@{LOOPBACK}:{dest}"
        return ["scp", *self._options(), "-q", "-r", "-P", str(self.sshd.port), *map(str, sources), remote]

    def scp_back(self, source: str, dest: Path) -> list[str]:
        """``scp -r`` of the remote folder ``source`` to the local ``dest`` (made, or filled if it exists)."""
        remote = f"{self.sshd.username}@{LOOPBACK}:{source}"
        return ["scp", *self._options(), "-q", "-r", "-P", str(self.sshd.port), remote, str(dest)]


@contextlib.contextmanager
def bench_sandbox(groups: dict[str, int], *, paused: bool = False) -> Iterator[tuple[object, str]]:
    """A sandbox pueue daemon with these groups (name: parallel limit); yields it and the
    ``pueue`` command to give MQIC. Groups are made through the daemon's socket: one CLI
    start per group would cost seconds for the 200 groups of scenario 1."""
    from tests.support.hpc import Sandbox

    box = Sandbox()
    try:
        state = pueue_sandbox.StateDir(box.state_dir)
        for name, parallel in groups.items():
            request = {"cmd": "group", "group_cmd": "add", "name": name, "parallel": parallel, "json": False}
            _check(pueue_sandbox.send_request(state, request))
            if paused:
                _check(pueue_sandbox.send_request(state, {"cmd": "pause", "group": name, "wait": True}))
        yield box, box.pueue
    finally:
        box.cleanup()


@contextlib.contextmanager
def bench_real_pueue(groups: dict[str, int], *, paused: bool = False) -> Iterator[tuple[object, str]]:
    """A private real pueued (``tests.support.hpc.RealPueue``) with these groups; yields it and the
    ``pueue`` command to give MQIC (its wrapper, which records every add)."""
    from tests.support.hpc import RealPueue

    box = RealPueue()
    try:
        for name, parallel in groups.items():
            box.cli("group", "add", name, "-p", str(parallel))
            if paused:
                box.cli("pause", "-g", name)
        yield box, box.pueue
    finally:
        box.cleanup()


REMOTES = {"sandbox": bench_sandbox, "real": bench_real_pueue}
"""The two remotes a scenario can run against, by the name its figures carry."""


def real_pueue_available() -> bool:
    from tests.support.hpc import RealPueueMissing, real_pueue_bin

    try:
        real_pueue_bin()
    except RealPueueMissing:
        return False
    return True


def _check(response: dict) -> None:
    if not response["ok"]:
        raise RuntimeError(f"sandbox pueue refused: {response['text']}")
