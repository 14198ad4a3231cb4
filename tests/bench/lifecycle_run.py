"""``python -m tests.bench.lifecycle_run <cases> <out.json>``: scenario 9's child (see ``lifecycle``).

Runs on its own Django settings (PostgreSQL, the Redis broker), so it is a process of its own.
Writes ``{"figures": [...], "notes": [...]}`` to ``out.json``; exits non-zero if it could not
measure.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.support.sshd import SshServer

from . import env

DATABASE = os.environ.get("MQIC_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mqic_bench")
REDIS = os.environ.get("MQIC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
NODES = ("mqic", "mqic-b")
"""The first node keeps the site's name (``Q_CLUSTER['name']``): django-q2 runs the schedules
that name no cluster only on that one, so a site whose every node is renamed has no schedules."""
HOSTS = ("host-a", "host-b", "host-c")
GROUPS_PER_HOST = 8
SCRIPT = "echo ok > out.txt\n"
TIMEOUT = 3000


def main() -> int:
    cases, out = int(sys.argv[1]), Path(sys.argv[2])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))  # so that the cleanups run
    workdir = Path(tempfile.mkdtemp(prefix="mqic-bench-life-"))
    try:
        ensure_database(DATABASE)
        os.environ.update(MQIC_Q_BROKER="redis", MQIC_REDIS_URL=REDIS, MQIC_QUIET_SECONDS="1")
        env.setup_django(workdir, DATABASE)
        env.reset_database()
        empty_queues()
        figures, notes = measure(workdir, cases)
        out.write_text(json.dumps({"figures": figures, "notes": notes}, indent=2))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def ensure_database(url: str) -> None:
    """Make the benchmark's database if the server does not have it yet."""
    import psycopg
    from psycopg import sql

    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def empty_queues() -> None:
    """Nothing a crashed earlier run left in the two nodes' queues."""
    import redis

    broker = redis.Redis.from_url(REDIS)
    broker.ping()
    for node in NODES:
        broker.delete(f"django_q:{node}:q")


class VerboseSshServer(SshServer):
    """The bench's sshd logging at VERBOSE: one line per connection and per exec channel."""

    def _write_config(self) -> Path:
        config = super()._write_config()
        config.write_text(config.read_text() + "LogLevel VERBOSE\n")
        return config


def measure(workdir: Path, n: int) -> tuple[list[dict], list[str]]:
    from django.conf import settings
    from django.core.management import call_command

    from cases.models import Attempt, Case, CaseStatus, PassRun
    from resources.remote import ssh
    from tests.support.hpc import RealPueue, Sandbox, make_hpc_host
    from tests.support.system import running_system, wait_for

    from .folders import make_inbox

    kind = "real pueue" if env.real_pueue_available() else "sandbox"
    remotes = []
    with contextlib.ExitStack() as stack, VerboseSshServer() as sshd:
        for name in HOSTS:
            groups = tuple(f"{name}-gpu{g}" for g in range(GROUPS_PER_HOST))  # names are unique site-wide
            remote = RealPueue if kind == "real pueue" else Sandbox
            box = remote(groups=dict.fromkeys(groups, 1))
            stack.callback(box.cleanup)
            remotes.append(box)
            make_hpc_host(sshd, box, groups=groups, name=name)
        call_command("setup_schedules", stdout=io.StringIO())
        staging = make_inbox(workdir / "staging", n, script=SCRIPT)
        inbox = settings.MQIC_NEW_CASES_DIR
        inbox.mkdir(parents=True, exist_ok=True)
        logs = [workdir / "node-a", workdir / "node-b"]
        for folder in logs:
            folder.mkdir()
        before = sshd_counts(sshd)
        first = ("qcluster", "watch_cases", "tick")
        with (
            running_system(settings, log_dir=logs[0], commands=first, Q_CLUSTER_NAME=NODES[0]) as node_a,
            running_system(
                settings, log_dir=logs[1], commands=("qcluster", "tick"), Q_CLUSTER_NAME=NODES[1]
            ) as node_b,
        ):
            start = time.monotonic()
            for folder in sorted(staging.iterdir()):
                folder.rename(inbox / folder.name)
            done = Case.objects.filter(status=CaseStatus.COMPLETED)
            untidy = Attempt.objects.filter(cleaned_at__isnull=True)

            def finished() -> bool:
                if dead := [p.args[2:] for p, _out in (*node_a, *node_b) if p.poll() is not None]:
                    raise RuntimeError(f"a process of the system died: {dead}; see its log")
                return done.count() == n and not untidy.exists()

            wait_for(finished, TIMEOUT, f"{n} cases completed", 1.0)
            seconds = time.monotonic() - start
        after = sshd_counts(sshd)
        ssh.close_all()
        connections, channels = (after[i] - before[i] for i in range(2))
        adds = sum(len(box.adds()) for box in remotes)
        left = sum(len(box.status()["tasks"]) + len(list(box.base_dir.iterdir())) for box in remotes)
        spans = [
            (c.finished_at - c.created_at).total_seconds()
            for c in Case.objects.filter(status=CaseStatus.COMPLETED)
        ]
        passes = {k: PassRun.objects.filter(kind=k).count() for k in ("scan", "submit", "monitor", "reconcile")}
        done_on = Case.objects.filter(status=CaseStatus.COMPLETED)
        by_host = {name: done_on.filter(gpu_group__host__name=name).count() for name in HOSTS}

    if adds != n or left:
        raise RuntimeError(f"{adds} adds for {n} cases, {left} tasks or folders left on the hosts")
    figures = [
        figure(f"{n} cases, drop of the first -> last completed and cleaned up", seconds, "s"),
        figure("throughput", n / seconds * 60, "cases/min"),
        figure("remote round trips (exec channels, all processes) per case", channels / n, ""),
        figure("SSH connections opened per case", connections / n, ""),
        figure("each case: drop -> completed, median", statistics.median(spans), "s"),
        figure("each case: drop -> completed, worst", max(spans), "s"),
        *(figure(f"{kind} passes run", count, "count") for kind, count in passes.items()),
    ]
    notes = [
        f"On {kind}: {len(HOSTS)} hosts ({' / '.join(f'{h}: {c}' for h, c in by_host.items())} cases), "
        f"{GROUPS_PER_HOST} GPU groups each, jobs `{SCRIPT.strip()}`; {channels} exec channels and "
        f"{connections} connections in all (sshd's log); two qcluster nodes ({', '.join(NODES)}), 2 workers "
        "each, each with its own tick (every 0.5 s), the first also running the schedules; the watcher "
        "(feeding the first) with a 1 s quiet period; every add once, nothing left on the hosts."
    ]
    return figures, notes


def figure(name: str, value: float, unit: str) -> dict:
    return {"name": name, "value": value, "unit": unit, "target": None}


def sshd_counts(sshd) -> tuple[int, int]:
    """Connections accepted and exec channels started, as the sshd logged them so far."""
    text = sshd.log.read_text(errors="replace")
    return text.count("Accepted publickey"), text.count("Starting session: command")


if __name__ == "__main__":
    sys.exit(main())
