"""Scenario 11: a year of data. At 1,000 cases a day: 365,000 ended cases of 50 owners with their
attempts and events (each case's status changes and a few notes), the pass records of the retention
period, the notifications of the failures. The attempts are as an installation before GPU accounting
holds them: the upgrade's backfill (migration cases 0012) is timed on them. Then, through Django's
test client as a superuser: the case list as it opens, a case's page, the GPU accounting page and
``/metrics``; and one monitor pass over 64 running cases (parse + decide, ``status --json``
replayed, no SSH), against the same pass with an empty history.

Rows are made with ``bulk_create``; ``--quick`` makes a tenth of them. ``manage.py prune`` is not
run first: this is the year an installation holds before it prunes notes, the worst case.
"""

from __future__ import annotations

import time
import warnings
from datetime import timedelta
from importlib import import_module

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from cases.models import Attempt, Case, CaseEvent, CaseStatus, GpuUsage, PassRun
from cases.services import monitoring
from console.models import Notification
from resources.models import GpuGroup, HpcHost

from .admin_list import PLAIN_STATIC, measure_page
from .env import Bench, reset_database
from .measure import median_seconds
from .remote_state import GROUPS, TaskMaker, replaying, running_cases
from .report import ScenarioResult

TITLE = (
    "a year of data (365,000 cases, their attempts and events): case list, case page, GPU accounting, "
    "/metrics, the accounting backfill, monitor pass"
)
S = CaseStatus
BATCH = 5_000
NOTES_PER_CASE = 3
REPEAT = 5
OWNERS = 50


def run(bench: Bench, result: ScenarioResult) -> None:
    cases = 36_500 if bench.quick else 365_000
    reset_database()
    host = HpcHost.objects.create(name="y", hostname="127.0.0.1", base_dir="/data/y", pueue_command="pueue")
    groups = [
        GpuGroup.objects.create(host=host, name=f"gpu{g:02d}", pueue_group=f"gpu{g:02d}") for g in range(GROUPS)
    ]
    empty = monitor_seconds(bench, host, groups)
    rows = make_year(cases, groups)
    full = monitor_seconds(bench, host, groups)
    started = time.perf_counter()
    with connection.schema_editor() as editor:
        import_module("cases.migrations.0014_gpu_seconds_of_ended_attempts").backfill(apps, editor)
    result.add("GPU accounting backfill of a year's attempts (the upgrade)", time.perf_counter() - started, "s")
    rows["GPU accounting lines (owners x months)"] = GpuUsage.objects.count()
    user = get_user_model().objects.create_superuser("bench-year", "", "bench-password")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    some = Case.objects.filter(status=S.COMPLETED).order_by("pk")[cases // 2]
    pages = {
        "the case list as it opens": reverse("admin:cases_case_changelist"),
        "a case's page": reverse("admin:cases_case_change", args=[some.pk]),
        "the GPU accounting page": reverse("admin:console_gpuaccounting_changelist"),
        "/metrics": reverse("metrics"),
    }
    with override_settings(STORAGES=PLAIN_STATIC), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No directory at")
        for what, url in pages.items():
            queries, seconds = measure_page(client, url)
            result.add(f"{what}: server time", seconds * 1000, "ms", ("<=", 300))
            result.add(f"{what}: queries", queries, "count")
    result.add("monitor pass, 64 running, empty history: parse + decide", empty, "s")
    result.add("monitor pass, 64 running, a year's history: parse + decide", full, "s")
    result.add("a year's history / empty (monitor pass)", full / empty, "x", ("<=", 1.2))
    for name, count in rows.items():
        result.add(f"rows: {name}", count, "count")


def monitor_seconds(bench: Bench, host: HpcHost, groups: list[GpuGroup]) -> float:
    """One running case per GPU group, their tasks live: a monitor pass's parse + decide."""
    Case.objects.filter(status=S.RUNNING).delete()
    GpuGroup.objects.update(status=GpuGroup.Status.AVAILABLE, holder_id=None)
    tasks = TaskMaker(host, groups, {"HOME": "/data/y"})
    text = tasks.status_json(GROUPS, live=GROUPS)
    from resources.remote.pueue_state import parse_status

    running_cases(parse_status(text), groups)
    with replaying(text):
        monitoring.monitor_pass()
        return median_seconds(monitoring.monitor_pass, REPEAT)


def make_year(cases: int, groups: list[GpuGroup]) -> dict[str, int]:
    """A year's ended cases, oldest first, each with one attempt, three status changes and notes."""
    now = timezone.now()
    owners = get_user_model().objects.bulk_create(
        get_user_model()(username=f"scientist-{k:02d}") for k in range(OWNERS)
    )
    day = timedelta(days=365) / cases
    for start in range(0, cases, BATCH):
        made = Case.objects.bulk_create(
            Case(
                name=f"year-{n:06d}",
                source_path=f"/inbox/year-{n:06d}",
                status=S.FAILED if n % 20 == 0 else S.COMPLETED,
                label=f"mqic_case_year_{n}",
                gpu_group=groups[n % len(groups)],
                owner=owners[n % OWNERS],
                exit_code=1 if n % 20 == 0 else 0,
                finished_at=now - (cases - n) * day,
            )
            for n in range(start, min(start + BATCH, cases))
        )
        Attempt.objects.bulk_create(
            Attempt(
                case=c,
                token=f"t{c.pk}",
                remote_dir=f"/data/y/{c.label}.t{c.pk}",
                gpu_group=c.gpu_group,
                started_at=c.finished_at - timedelta(hours=2),
                ended_at=c.finished_at,
                task_id=c.pk % 5000,
                exit_code=c.exit_code,
                outcome=f"{c.status}: job finished with exit code {c.exit_code}",
                results_at=c.finished_at,
                cleaned_at=c.finished_at,
            )
            for c in made
        )
        CaseEvent.objects.bulk_create(
            [
                CaseEvent(case=c, from_status=old, to_status=new, reason=why)
                for c in made
                for old, new, why in (
                    ("", S.SUBMITTED, "new case folder"),
                    (S.SUBMITTED, S.SUBMITTING, "GPU group locked"),
                    (S.SUBMITTING, S.RUNNING, "pueue task added"),
                    (S.RUNNING, c.status, f"job finished with exit code {c.exit_code}"),
                    *(("", "", f"note {k}: results came home") for k in range(NOTES_PER_CASE)),
                )
            ],
            batch_size=BATCH,
        )
        Notification.objects.bulk_create(
            Notification(
                key=f"case_failed:{c.pk}",
                event="case_failed",
                subject=f"case {c.name} failed",
                reason="job failed with exit code 1",
                url="u",
            )
            for c in made
            if c.status == S.FAILED
        )
    runs_per_day = 5_000
    PassRun.objects.bulk_create(
        (
            PassRun(
                kind="monitor",
                actor="tick",
                started_at=now - timedelta(seconds=17 * k),
                finished_at=now - timedelta(seconds=17 * k),
                outcome="ok",
                summary="completed 0",
            )
            for k in range(runs_per_day * 14)
        ),
        batch_size=BATCH,
    )
    return {
        "cases": Case.objects.count(),
        "attempts": Attempt.objects.count(),
        "case events": CaseEvent.objects.count(),
        "pass records": PassRun.objects.count(),
        "notifications": Notification.objects.count(),
    }
