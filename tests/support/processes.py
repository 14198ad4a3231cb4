"""Starting real Django processes (workers, qcluster, commands) against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from django.db import connection

REPO = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """A DATABASE_URL for the database this test run is using (the test database)."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(s['NAME']).resolve()}"
    auth = quote(s["USER"] or "", safe="")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"], safe="")
    host = s["HOST"] or "localhost"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{s['NAME']}"


def django_env(**overrides: str) -> dict[str, str]:
    """The environment for a child process that shares this test's database and settings."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        DJANGO_SETTINGS_MODULE="mqic_site.settings",
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def manage(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """Start ``manage.py`` with ``args`` as a child process."""
    return subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), *args], cwd=REPO, env=env or django_env(), **kwargs
    )


def processes_with(entry: str) -> list[Path]:
    """The ``/proc`` folders of the processes whose environment holds ``entry`` (``NAME=value``):
    how the tests find what a run or an attempt left behind (children inherit the marker)."""
    needle, found = entry.encode(), []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and needle in (proc / "environ").read_bytes().split(b"\0"):
                found.append(proc)
        except OSError:
            continue
    return found


BUSY = "echo $$ > job.pid; while true; do date +%s%N > heartbeat; sleep 0.2; done\n"
"""A job that writes its pid, then keeps writing into its folder: one that outlives its pueue task."""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
