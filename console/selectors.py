"""What the dashboard reads: a handful of aggregate queries, cheap with 100,000 cases."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count
from django.utils import timezone
from django_q.models import Schedule
from django_q.status import Stat

from cases.access import sees_all, visible_cases
from cases.models import Case, CaseStatus, PassRun
from cases.selectors import stuck_cases, troubled_cases
from cases.services.passes import KINDS as PASS_KINDS
from resources.models import GpuGroup, HpcHost

from .accounting import counter_values

# django-q2's scheduler looks every 30 s and our schedules run every minute: a schedule
# overdue by more than this means no cluster is running them.
SCHEDULE_GRACE = timedelta(seconds=120)


@dataclass(frozen=True)
class ClusterHealth:
    alive: bool
    detail: str


def cluster_health(now: datetime | None = None) -> ClusterHealth:
    """Whether a qcluster runs: its heartbeat, else the schedules as a second witness.

    django-q2 keeps the heartbeat (``Stat``) in Django's cache, shared by all processes
    through the database cache in settings; should a deployment configure a per-process
    cache, the schedules still tell: the cluster moves their ``next_run`` on as it runs them.
    """
    if stats := Stat.get_all():
        return ClusterHealth(True, ", ".join(f"{s.cluster_id} {s.status} on {s.host}" for s in stats))
    now = now or timezone.now()
    schedules = Schedule.objects.exclude(repeats=0).exclude(next_run=None)
    oldest = schedules.order_by("next_run").values_list("next_run", flat=True).first()
    if oldest is None:
        return ClusterHealth(False, "no schedules set up (run setup_schedules)")
    if now - oldest > SCHEDULE_GRACE:
        return ClusterHealth(False, f"no cluster has run the schedules since {oldest:%Y-%m-%d %H:%M:%S}")
    return ClusterHealth(True, f"schedules on time (next due {oldest:%H:%M:%S})")


@dataclass(frozen=True)
class Overview:
    operator: bool
    """Whether the reader sees every case (``cases.access``). Anyone else reads the numbers of their
    own cases only, and none of the operators' cards (passes, hosts, blocked groups): pass summaries
    and host errors may name other owners' folders."""
    per_status: list[tuple[str, int]]
    groups: list[GpuGroup]
    busy: int
    free: int
    stuck: int
    troubled: int
    """Cases not finished whose handling raised errors (each is on the case's page)."""
    last_troubled: Case | None
    """The most recently changed of them, as an example."""
    passes: list[PassRun]
    """The last run of each kind of pass."""
    failed_passes: int
    """Runs that failed (raised) in the last ``FAILURE_WINDOW``."""
    last_failure: PassRun | None
    hosts: list[HpcHost]
    cluster: ClusterHealth | None

    @property
    def blocked_groups(self) -> list[GpuGroup]:
        """Enabled groups that take no new work until something on their host changes."""
        if not self.operator:
            return []
        return [
            g for g in self.groups if g.blocked_reason and g.status != GpuGroup.Status.DISABLED and g.host.enabled
        ]

    @property
    def hosts_down(self) -> int:
        """Hosts whose last contacts failed (backing off, or on the way to it)."""
        return sum(bool(h.last_error) for h in self.hosts if h.enabled)


FAILURE_WINDOW = timedelta(hours=24)


def overview(user) -> Overview:
    """The dashboard as ``user`` may see it: the counts of the cases they may see; a GPU group's
    holder is named only when the reader may see that case."""
    cases = visible_cases(user)
    operator = sees_all(user)
    counts = dict(cases.order_by().values_list("status").annotate(n=Count("pk")))
    groups = list(GpuGroup.objects.select_related("host"))
    holders = dict(cases.filter(pk__in={g.holder_id for g in groups if g.holder_id}).values_list("pk", "name"))
    for group in groups:
        group.holder_name = holders.get(group.holder_id, "")
    troubled = visible_cases(user, troubled_cases())
    failures = PassRun.objects.filter(
        outcome=PassRun.Outcome.FAILED, started_at__gte=timezone.now() - FAILURE_WINDOW
    )
    passes = [run for kind in PASS_KINDS if (run := PassRun.objects.filter(kind=kind).first())] if operator else []
    return Overview(
        operator=operator,
        per_status=[(status, counts.get(status, 0)) for status in CaseStatus],
        groups=groups,
        busy=sum(g.status == GpuGroup.Status.ASSIGNED for g in groups),
        free=sum(
            g.status == GpuGroup.Status.AVAILABLE and not g.blocked_reason and g.host.enabled for g in groups
        ),
        stuck=visible_cases(user, stuck_cases()).count(),
        troubled=troubled.count(),
        last_troubled=troubled.order_by("-updated_at").only("name", "last_error").first(),
        passes=passes,
        failed_passes=failures.count() if operator else 0,
        last_failure=failures.first() if operator else None,
        hosts=list(HpcHost.objects.all()) if operator else [],
        cluster=cluster_health() if operator else None,
    )


# -- the numbers of /metrics ------------------------------------------------------------------


@dataclass(frozen=True)
class PassNumbers:
    kind: str
    last: PassRun | None
    last_hour: dict[str, int]


@dataclass(frozen=True)
class HostNumbers:
    name: str
    up: bool
    contact_age: float | None
    failures: int


@dataclass(frozen=True)
class MetricValues:
    cases: dict[str, int]
    stuck: int
    troubled: int
    groups: dict[str, int]
    passes: list[PassNumbers]
    hosts: list[HostNumbers]
    gpu_seconds: dict[tuple[str, str], int]
    """GPU seconds of ended attempts by (owner, host), all months: ``accounting.counter_values``."""


def metric_values(now: datetime | None = None) -> MetricValues:
    """Everything ``/metrics`` reports, in a few aggregate queries (one per pass kind for its last run)."""
    now = now or timezone.now()
    counts = dict(Case.objects.order_by().values_list("status").annotate(n=Count("pk")))
    groups = {"busy": 0, "free": 0, "disabled": 0, "blocked": 0}
    for status, blocked, enabled in GpuGroup.objects.values_list("status", "blocked_reason", "host__enabled"):
        groups[_group_state(status, blocked, enabled)] += 1
    hour = PassRun.objects.filter(started_at__gte=now - timedelta(hours=1)).order_by()
    per_kind: dict[str, dict[str, int]] = {}
    for kind, outcome, n in hour.values_list("kind", "outcome").annotate(n=Count("pk")):
        per_kind.setdefault(kind, {})[outcome] = n
    passes = [
        PassNumbers(kind, PassRun.objects.filter(kind=kind).first(), per_kind.get(kind, {})) for kind in PASS_KINDS
    ]
    hosts = [
        HostNumbers(
            h.name,
            up=h.consecutive_failures == 0 and h.last_contact_at is not None,
            contact_age=(now - h.last_contact_at).total_seconds() if h.last_contact_at else None,
            failures=h.consecutive_failures,
        )
        for h in HpcHost.objects.only("name", "last_contact_at", "consecutive_failures")
    ]
    return MetricValues(
        cases={status: counts.get(status, 0) for status in CaseStatus},
        stuck=stuck_cases().count(),
        troubled=troubled_cases().count(),
        groups=groups,
        passes=passes,
        hosts=hosts,
        gpu_seconds=counter_values(),
    )


def _group_state(status: str, blocked_reason: str, host_enabled: bool = True) -> str:
    if status == GpuGroup.Status.ASSIGNED:
        return "busy"
    if status == GpuGroup.Status.DISABLED or not host_enabled:
        return "disabled"
    return "blocked" if blocked_reason else "free"
