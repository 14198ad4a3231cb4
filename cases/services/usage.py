"""How much GPU time each owner used lately: what fair share orders the waiting cases by.

An attempt holds its GPU group from its claim to its end (or to now, while it is under way); its
GPU time is that span times the group's device count (``count_devices``, the rule behind
``GpuGroup.device_count``). Fair share looks at recent use: each attempt's GPU time is weighted by
``0.5 ** (age of its end / MQIC_FAIR_SHARE_HALF_LIFE_HOURS)``, so what ended one half-life ago
counts half, what runs now counts whole, and attempts that ended more than ``WINDOW_HALF_LIVES``
half-lives ago (weight below 0.1 %) are left out. Cases without an owner (the operators') are one
owner of their own, under the key ``None``.

One aggregate query, in SQL, grouped by owner and by the group's devices: its rows are at most the
owners times the device lists, however long the history (an index on the attempts' end, start,
case and group finds the recent ones and answers from itself, without a visit to each row). The
weight is computed in the database: seconds since 1970 by the engine's own function
(``julianday`` on SQLite, ``EXTRACT(EPOCH ...)`` on PostgreSQL; Django has no portable one) and
``POWER``, which Django provides on SQLite builds without the math functions. The device count is
applied here, per row, by the same rule as everywhere else.

Where each attempt records its own GPU seconds when it ends, the sum may take that value for ended
attempts; the span times the device count is what it records.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, DateTimeField, F, FloatField, Func, Q, Sum, Value
from django.db.models.functions import Coalesce, Greatest, Power
from django.utils import timezone

from resources.models import count_devices

from ..models import Attempt

WINDOW_HALF_LIVES = 10
"""Attempts that ended longer ago than this many half-lives weigh less than 0.1 %: not read."""


class EpochSeconds(Func):
    """Seconds since 1970 of a datetime, as a float (PostgreSQL's form; SQLite's below)."""

    output_field = FloatField()
    template = "CAST(EXTRACT(EPOCH FROM %(expressions)s) AS double precision)"

    def as_sqlite(self, compiler, connection, **extra):
        # Django keeps datetimes in SQLite as UTC text; julianday reads it (to the millisecond).
        return self.as_sql(compiler, connection, template="((julianday(%(expressions)s) - 2440587.5) * 86400.0)")


@dataclass(frozen=True)
class Standing:
    """One owner's recent GPU time (seconds, decayed) and the GPU groups its cases hold now."""

    gpu_seconds: float = 0.0
    holding: int = 0

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / 3600


NONE = Standing()


def half_life_seconds() -> float:
    return settings.MQIC_FAIR_SHARE_HALF_LIFE_HOURS * 3600


def standings(now: datetime | None = None) -> dict[int | None, Standing]:
    """Every owner with recent GPU time or a GPU group held now, by owner id (``None``: the operators')."""
    now = now or timezone.now()
    half_life = half_life_seconds()
    end = Coalesce(F("ended_at"), Value(now, output_field=DateTimeField()))
    run = Greatest(EpochSeconds(end) - EpochSeconds(F("started_at")), Value(0.0))
    weight = Power(Value(0.5), (Value(now.timestamp()) - EpochSeconds(end)) / Value(half_life))
    recent = Q(ended_at__isnull=True) | Q(ended_at__gte=now - timedelta(seconds=WINDOW_HALF_LIVES * half_life))
    rows = (
        Attempt.objects.filter(recent)
        .values_list("case__owner", "gpu_group__devices")
        .annotate(
            weighted=Sum(run * weight, output_field=FloatField()),
            holding=Count("pk", filter=Q(ended_at__isnull=True)),
        )
        .order_by()
    )
    found: dict[int | None, Standing] = {}
    for owner, devices, weighted, holding in rows:
        was, gpu_seconds = found.get(owner, NONE), (weighted or 0.0) * count_devices(devices)
        found[owner] = Standing(was.gpu_seconds + gpu_seconds, was.holding + holding)
    return found
