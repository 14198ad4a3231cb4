"""What the GPU accounting page and its CSV show: GPU time per case owner, host and month.

Read from the ledger (``cases.models.GpuUsage``, written as attempts end: ``cases/services/
accounting.py``) in one aggregate query, newest month first. Operators see every line; anyone else
only their own (``cases.access.sees_all``, the one rule of who sees what), so the operators' cases
(no owner) are the operators' lines alone. The month range comes from the query string: checked
here, and a bad bound is ignored with the reason shown.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import date

from django.db.models import F, Sum

from cases.access import sees_all, visible_owned
from cases.models import GpuUsage

NO_OWNER = "(none)"
"""The owner shown for the operators' cases (a case without an owner)."""
_MONTH = re.compile(r"(\d{4})-(\d{2})")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""A spreadsheet takes a cell starting so for a formula (CSV injection): such names get a ``'`` first."""


@dataclass(frozen=True)
class Months:
    """The months asked for (either bound may be open), and what was wrong with the asking."""

    first: date | None = None
    last: date | None = None
    problems: tuple[str, ...] = ()

    def query(self) -> str:
        """The range as a query string (``from=2026-01&to=2026-03``), for the CSV link."""
        parts = [f"{key}={bound:%Y-%m}" for key, bound in (("from", self.first), ("to", self.last)) if bound]
        return "&".join(parts)


def months_asked(params) -> Months:
    """The ``from`` and ``to`` months (``YYYY-MM``) of a query string; a bad one is left out, with why."""
    bounds, problems = {}, []
    for key in ("from", "to"):
        text = params.get(key, "").strip()
        if not text:
            continue
        found = _MONTH.fullmatch(text[:8])
        if found is None or not 1 <= int(found[2]) <= 12 or int(found[1]) < 1:
            problems.append(f"{key}: {text[:20]!r} is no month (YYYY-MM); left out")
            continue
        bounds[key] = date(int(found[1]), int(found[2]), 1)
    return Months(bounds.get("from"), bounds.get("to"), tuple(problems))


@dataclass(frozen=True)
class Line:
    owner: str
    host: str
    month: date
    gpu_seconds: int

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600


@dataclass(frozen=True)
class Report:
    lines: list[Line]
    everyone: bool
    """Whether these are every owner's lines (an operator), or the user's own."""

    @property
    def gpu_seconds(self) -> int:
        return sum(line.gpu_seconds for line in self.lines)

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600


def report(user, months: Months) -> Report:
    """The lines ``user`` may see within ``months``, newest month first, in one query."""
    rows = visible_owned(user, GpuUsage.objects.all())
    if months.first:
        rows = rows.filter(month__gte=months.first)
    if months.last:
        rows = rows.filter(month__lte=months.last)
    totals = (
        rows.values_list("owner__username", "host__name", "month")
        .annotate(seconds=Sum("gpu_seconds"))
        .order_by("-month", F("owner__username").asc(nulls_first=True), "host__name")
    )
    lines = [Line(owner or NO_OWNER, host, month, seconds) for owner, host, month, seconds in totals]
    return Report(lines, everyone=sees_all(user))


def write_csv(report: Report, out) -> None:
    """The report's lines as CSV (``csv`` quotes; names that a spreadsheet would run are defused)."""
    writer = csv.writer(out)
    writer.writerow(["owner", "host", "month", "gpu_seconds", "gpu_hours"])
    for line in report.lines:
        month, hours = f"{line.month:%Y-%m}", f"{line.gpu_hours:.4f}"
        writer.writerow([defused(line.owner), defused(line.host), month, line.gpu_seconds, hours])


def defused(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_name(months: Months) -> str:
    span = "-".join(f"{bound:%Y-%m}" for bound in (months.first, months.last) if bound)
    return f"gpu-accounting{'-' + span if span else ''}.csv"


def counter_values() -> dict[tuple[str, str], int]:
    """``{(owner, host): GPU seconds}`` of every month, as ``/metrics`` labels them, in one query. A
    user named like ``NO_OWNER`` adds to the operators' line: one series per label pair."""
    found: dict[tuple[str, str], int] = {}
    rows = GpuUsage.objects.values_list("owner__username", "host__name").annotate(seconds=Sum("gpu_seconds"))
    for owner, host, seconds in rows.order_by():
        key = (owner or NO_OWNER, host)
        found[key] = found.get(key, 0) + seconds
    return found
