"""Scenario 4: scanning an inbox of 10,000 case folders.

The first scan registers every folder (per case, one transaction: the row, its label and its
first event). The rescan that follows finds nothing new: it must read the directory and one
column, and write nothing. Statements are counted with ``execute_wrapper``. Then the same for a
per-user inbox (``MQIC_INBOX_PER_USER``): 100 user folders of 100 case folders each, where the
rescan also lists every user folder and must look up no user.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.test import override_settings

from cases.services import intake

from .env import Bench
from .folders import make_inbox
from .measure import counting_queries, median_seconds, stopwatch
from .report import ScenarioResult

TITLE = "scan an inbox of 10,000 folders: first registration, then a rescan with nothing new"


def run(bench: Bench, result: ScenarioResult) -> None:
    n = 2_000 if bench.quick else 10_000
    inbox = make_inbox(bench.dir("s4-inbox"), n)
    with counting_queries() as first_counts, stopwatch() as took:
        report = intake.scan(inbox)
    if len(report.registered) != n:
        raise RuntimeError(f"the first scan registered {len(report.registered)} of {n}: {report}")
    with counting_queries() as rescan_counts:
        rescan = median_seconds(lambda: check_nothing_new(intake.scan(inbox)), 5)

    result.add(f"first scan, {n} folders registered", took[0], "s")
    result.add("first scan: per folder", took[0] / n * 1000, "ms")
    result.add("first scan: SQL statements per folder", first_counts["queries"] / n, "")
    result.add("rescan, nothing new", rescan, "s", ("<=", 0.2))
    result.add("rescan: database writes (5 rescans)", rescan_counts["writes"], "count", ("==", 0))
    result.add("rescan: SQL statements per rescan", rescan_counts["queries"] / 5, "")
    result.notes.append("Each folder holds the entry script and READY. Rescan: median of 5.")
    with override_settings(MQIC_INBOX_PER_USER=True):
        per_user_rescan = per_user(bench, result, users=20 if bench.quick else 100, each=100)
    result.add("per-user rescan / flat rescan, same run", per_user_rescan / rescan, "x", ("<=", 1.5))


def per_user(bench: Bench, result: ScenarioResult, *, users: int, each: int) -> float:
    """The per-user half; returns its median rescan time."""
    inbox = bench.dir("s4-per-user")
    for u in range(users):
        get_user_model().objects.create_user(f"user{u:03d}")
        make_inbox(inbox / f"user{u:03d}", each)
    with counting_queries() as first_counts, stopwatch() as took:
        report = intake.scan(inbox)
    if len(report.registered) != users * each:
        raise RuntimeError(f"the first per-user scan registered {len(report.registered)}: {report}")
    with counting_queries() as rescan_counts:
        rescan = median_seconds(lambda: check_nothing_new(intake.scan(inbox)), 5)
    what = f"per-user inbox, {users} x {each}"
    result.add(f"{what}: first scan", took[0], "s")
    result.add(f"{what}: first scan, SQL statements per folder", first_counts["queries"] / (users * each), "")
    result.add(f"{what}: rescan, nothing new", rescan, "s", ("<=", 0.2))
    result.add(f"{what}: rescan, database writes (5 rescans)", rescan_counts["writes"], "count", ("==", 0))
    result.add(f"{what}: rescan, SQL statements per rescan", rescan_counts["queries"] / 5, "count", ("==", 1))
    return rescan


def check_nothing_new(report: intake.ScanReport) -> None:
    if report.registered or report.rejected or report.incomplete:
        raise RuntimeError(f"a rescan with nothing new found something: {report}")
