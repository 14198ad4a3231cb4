"""Scenario 5: the admin's case list over 100,000 cases, through Django's test client.

Rows are made with ``bulk_create`` (a mostly finished history: completed, some failed,
cancelled, rejected, waiting and running cases, all with labels and GPU groups). A superuser
asks for the list as it opens, filtered by status, searched by name, and both. Server time
is the in-process request (middleware, queries, template rendering), median of 5 after a
warm-up; queries are counted with ``CaptureQueriesContext``. Then a scientist who owns one case
in a hundred (a staff user holding ``cases.view_case``, no operator) opens the list and the
dashboard: both narrowed to their own cases by ``cases.access``.
"""

from __future__ import annotations

import itertools
import warnings

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from cases.models import Case, CaseStatus
from cases.services.labels import label_prefix
from resources.models import GpuGroup, HpcHost

from .env import Bench
from .measure import median_seconds
from .report import ScenarioResult

TITLE = "admin case list over 100,000 cases: queries and server time"
S = CaseStatus
# One status per 100 cases, in this proportion: a history that is mostly finished.
MIX = [S.COMPLETED] * 88 + [S.FAILED] * 5 + [S.CANCELLED, S.REJECTED] + [S.SUBMITTED] * 4
# collectstatic is not run for the bench: plain static URLs instead of the manifest's.
PLAIN_STATIC = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}


def run(bench: Bench, result: ScenarioResult) -> None:
    n = 20_000 if bench.quick else 100_000
    make_cases(n)
    user = get_user_model().objects.create_superuser("bench", "", "bench-password")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    changelist = reverse("admin:cases_case_changelist")
    pages = {
        "as it opens": "",
        "filtered by status": "?status__exact=failed",
        "searched by name": "?q=case-012345",
        "filtered and searched": "?status__exact=failed&q=case-01",
    }
    with override_settings(STORAGES=PLAIN_STATIC), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No directory at")  # WhiteNoise: no collectstatic here
        for what, query in pages.items():
            queries, seconds = measure_page(client, changelist + query)
            result.add(f"{what}: queries", queries, "count", ("<=", 10))
            result.add(f"{what}: server time", seconds * 1000, "ms", ("<=", 300))
        _queries, seconds = measure_page(client, reverse("admin:index"))
        result.add("the dashboard, superuser: server time", seconds * 1000, "ms", ("<=", 300))
        client.force_login(scientist_of(n))
        queries, seconds = measure_page(client, changelist)
        result.add("a scientist's own cases (1 in 100): queries", queries, "count", ("<=", 10))
        result.add("a scientist's own cases (1 in 100): server time", seconds * 1000, "ms", ("<=", 300))
        _queries, seconds = measure_page(client, reverse("admin:index"))
        result.add("a scientist's dashboard: server time", seconds * 1000, "ms", ("<=", 300))
    result.notes.append(f"{n} cases, 8 GPU groups; superuser; median of 5 after one warm-up request.")


def scientist_of(n: int):
    """A staff user who owns one case in a hundred and may see only their own."""
    user = get_user_model().objects.create_user("scientist", is_staff=True)
    user.user_permissions.add(Permission.objects.get(content_type__app_label="cases", codename="view_case"))
    Case.objects.filter(pk__in=range(1, n + 1, 100)).update(owner=user)
    return user


def make_cases(n: int) -> None:
    host = HpcHost.objects.create(name="s5", hostname="localhost", base_dir="/remote/cases")
    groups = [GpuGroup.objects.create(host=host, name=f"gpu{g}", pueue_group=f"gpu{g}") for g in range(8)]
    prefix, statuses = label_prefix(), itertools.cycle(MIX)
    cases = []
    for pk in range(1, n + 1):
        status = S.RUNNING if pk > n - len(groups) else next(statuses)
        started = status not in (S.SUBMITTED, S.REJECTED)
        cases.append(
            Case(
                pk=pk,
                name=f"case-{pk:06d}",
                source_path=f"/inbox/case-{pk:06d}",
                status=status,
                label=f"{prefix}{pk}",
                gpu_group=groups[pk % len(groups)] if started else None,
                pueue_task_id=pk if started else None,
                attempts=1 if started else 0,
                remote_dir=f"/remote/cases/{prefix}{pk}" if started else "",
                exit_code=0 if status == S.COMPLETED else None,
            )
        )
    Case.objects.bulk_create(cases, batch_size=2000)


def measure_page(client: Client, url: str) -> tuple[int, float]:
    """(queries of one request, median server time of 5) for ``url``."""
    get(client, url)
    with CaptureQueriesContext(connection) as captured:
        get(client, url)
    return len(captured), median_seconds(lambda: get(client, url), 5)


def get(client: Client, url: str) -> None:
    response = client.get(url)
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}")
