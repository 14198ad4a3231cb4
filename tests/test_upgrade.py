"""An upgrade with cases in flight (``make soak``): the previous release runs cases until some run
on the remote and some wait, stops, and the current code takes over the same database, results
folder and remote, migrates and goes on. Every case completes once, none is run again, no GPU
group lies.

The previous release is checked out from this repository's history (``PREVIOUS``, the commit of
release 0.1.0; each release names its predecessor here) into a worktree with a virtualenv of its
own, and driven by its own management commands, as an installation ran it. Both use one SQLite
file of their own (not the test database) and the session's sshd with a sandbox pueue.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cases import drop_case
from tests.support.hpc import GROUPS, Sandbox
from tests.support.processes import REPO

PREVIOUS = "46c3fec"
"""Release 0.1.0, the one before this code's (CHANGELOG.md)."""
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture
def previous(tmp_path_factory):
    """The previous release in a worktree, with its requirements in a virtualenv of its own."""
    where = tmp_path_factory.mktemp("previous") / "mqic"
    subprocess.run(["git", "worktree", "add", "--detach", str(where), PREVIOUS], cwd=REPO, check=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(where / ".venv")], check=True)
        pip = [str(where / ".venv/bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "-r", str(where / "requirements.txt")], check=True)
        yield where
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=REPO, check=False)


def statuses(database: Path) -> dict[str, str]:
    with sqlite3.connect(database) as db:
        return dict(db.execute("select name, status from cases_case"))


def test_an_upgrade_with_cases_running_and_waiting_runs_each_case_once(previous, sshd, tmp_path):
    box = Sandbox(groups=GROUPS)
    try:
        database, inbox, results = tmp_path / "mqic.sqlite3", tmp_path / "new_cases", tmp_path / "results"
        inbox.mkdir()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "MQIC_", "DATABASE_"))},
            "DJANGO_SETTINGS_MODULE": "mqic_site.settings",
            "DJANGO_SECRET_KEY": "upgrade-test-" + "k" * 50,
            "DATABASE_URL": f"sqlite:///{database}",
            "MQIC_NEW_CASES_DIR": str(inbox),
            "MQIC_RESULTS_DIR": str(results),
            "MQIC_HPC_HOST": "127.0.0.1",
            "MQIC_HPC_PORT": str(sshd.port),
            "MQIC_HPC_USER": "root",
            "MQIC_HPC_KEY": str(sshd.client_key),
            "MQIC_HPC_KNOWN_HOSTS": str(sshd.known_hosts),
            "MQIC_HPC_BASE_DIR": str(box.base_dir),
            "MQIC_PUEUE": box.pueue,
            "MQIC_SUBMIT_LEASE_SECONDS": "5",
        }
        gate = tmp_path / "gate"
        names = {f"long-{n}": f"while [ ! -e {gate} ]; do sleep 0.2; done; echo {n} > out.txt\n" for n in range(2)}
        names |= {f"short-{n}": f"echo {n} > out.txt\n" for n in range(4)}
        for name, script in names.items():
            drop_case(inbox, name, script)

        def old(*args):
            python = str(previous / ".venv/bin/python")
            return subprocess.run([python, "manage.py", *args], cwd=previous, env=env, check=True, text=True)

        old("migrate", "--verbosity", "0")
        old("configure_hpc")
        old("scan_cases")
        old("submit_cases")  # two GPU groups: the long cases run, the short ones wait
        before = statuses(database)
        assert sorted(before.values()) == [
            "running",
            "running",
            "submitted",
            "submitted",
            "submitted",
            "submitted",
        ]
        assert {n for n, s in before.items() if s == "running"} == {"long-0", "long-1"}

        def new(*args):
            return subprocess.run([sys.executable, *args], cwd=REPO, env=env, check=True, text=True)

        new("manage.py", "migrate", "--verbosity", "0")  # the upgrade: same database, results, remote
        new("manage.py", "configure_hpc", "--offline")
        gate.touch()
        new("-m", "tests.support.drive", "120")

        assert statuses(database) == dict.fromkeys(names, "completed")
        adds = [a["label"] for a in box.adds()]
        assert len(adds) == len(names) == len(set(adds)), "each case added once, none run again"
        for name in names:
            assert (results / name / "out.txt").exists()
        with sqlite3.connect(database) as db:
            held = db.execute("select count(*) from resources_gpugroup where status = 'assigned'").fetchone()[0]
            attempts = db.execute("select count(*) from cases_attempt").fetchone()[0]
        assert held == 0 and attempts == len(names)
        assert json.loads(json.dumps(box.status()["tasks"])) == {}, "the remote cleaned up"
    finally:
        box.cleanup()
