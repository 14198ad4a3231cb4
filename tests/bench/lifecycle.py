"""Scenario 9: 1,000 cases from drop to completed through the running system.

The deployment of a busy site, for real: PostgreSQL, the Redis broker, two qcluster nodes with
distinct cluster names, so each takes tasks from its own queue (each fed by its own ``tick``;
the first keeps the site's name and runs the schedules, and the watcher feeds it), the watcher,
three hosts, each a real pueued (the sandbox without ``MQIC_REAL_PUEUE_BIN``) with 8 GPU
groups, behind one real sshd. 1,000 folders are renamed into the inbox at once; the clock runs
from the first drop to the last case completed and its remote cleanup done. Round trips are
counted where they land, in the sshd's own log (``LogLevel VERBOSE``: one line per connection
and one per exec channel), so every process is counted.

PostgreSQL is needed while the rest of the benchmark runs on SQLite, so this scenario runs in
a child process (``python -m tests.bench.lifecycle_run``) with its own settings; it writes its
figures as JSON, read back here. The database is ``MQIC_BENCH_DATABASE_URL`` (default: the
local server's ``mqic_bench``, made if missing, emptied before the run) and the broker
``MQIC_BENCH_REDIS_URL`` (default: Redis on 127.0.0.1, database 7).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.processes import REPO

from .env import Bench
from .report import ScenarioResult

TITLE = "1,000 cases drop -> completed through the running system (PostgreSQL, Redis, 2 nodes, 3 hosts)"
TIMEOUT = 3600


def run(bench: Bench, result: ScenarioResult) -> None:
    cases = 100 if bench.quick else 1000
    out = bench.dir("s9") / "figures.json"
    child = subprocess.run(
        [sys.executable, "-m", "tests.bench.lifecycle_run", str(cases), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if child.returncode != 0 or not Path(out).exists():
        raise RuntimeError(f"the lifecycle run failed ({child.returncode}):\n{child.stderr[-3000:]}")
    document = json.loads(out.read_text())
    for figure in document["figures"]:
        result.add(figure["name"], figure["value"], figure["unit"], tuple(figure["target"] or ()) or None)
    result.notes.extend(document["notes"])
