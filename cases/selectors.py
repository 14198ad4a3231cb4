"""What the operations console reads: the overview, a host's live remote state, a task's log.

Reads only. The overview is a handful of aggregate queries, so it stays cheap with
100,000 cases; the remote state asks the host once (``pueue status``) and joins the
tasks to their cases through the labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count
from django.utils import timezone
from django_q.models import Schedule
from django_q.status import Stat

from resources.connections import pueue_for, record_contact
from resources.models import GpuGroup, HpcHost
from resources.remote.errors import RemoteError
from resources.remote.pueue_state import PueueGroup, PueueTask

from .models import HOLDS_GPU, Case, CaseStatus, PassRecord
from .services.labels import case_id_from_label, label_prefix
from .services.monitoring import LOG_TAIL_LINES, is_same_task
from .services.reconciliation import find_orphans

# django-q2's scheduler looks every 30 s and our schedules run every minute: a schedule
# overdue by more than this means no cluster is running them.
SCHEDULE_GRACE = timedelta(seconds=120)
# The remote state page lists every live task but only this many finished ones.
DONE_TASKS_SHOWN = 100


# -- the overview on the admin index ---------------------------------------------------------


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
    per_status: list[tuple[str, int]]
    groups: list[GpuGroup]
    busy: int
    free: int
    stuck: int
    passes: list[PassRecord]
    hosts: list[HpcHost]
    cluster: ClusterHealth


def overview() -> Overview:
    counts = dict(Case.objects.order_by().values_list("status").annotate(n=Count("pk")))
    groups = list(GpuGroup.objects.select_related("host"))
    return Overview(
        per_status=[(status, counts.get(status, 0)) for status in CaseStatus],
        groups=groups,
        busy=sum(g.status == GpuGroup.Status.ASSIGNED for g in groups),
        free=sum(g.status == GpuGroup.Status.AVAILABLE and not g.blocked_reason for g in groups),
        stuck=stuck_cases().count(),
        passes=list(PassRecord.objects.order_by("kind")),
        hosts=list(HpcHost.objects.all()),
        cluster=cluster_health(),
    )


def stuck_cases():
    """Cases whose submitting or finishing worker's lease ran out: the reconciler's, or a human's."""
    return Case.objects.filter(status__in=HOLDS_GPU, lease_expires_at__lt=timezone.now())


# -- a host's remote state -------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRow:
    task: PueueTask
    case_id: int | None
    case_name: str = ""
    role: str = "foreign"
    """"orphan" (live, ours, no case holds it), "case" (a case's task), "gone" (ours, but that case
    is not in this database) or "foreign" (not started by this installation)."""


@dataclass(frozen=True)
class GroupRow:
    group: PueueGroup
    gpu_group: GpuGroup | None


@dataclass
class RemoteState:
    host: HpcHost
    error: str = ""
    tasks: list[TaskRow] = field(default_factory=list)
    groups: list[GroupRow] = field(default_factory=list)
    done_hidden: int = 0


def remote_state(host: HpcHost) -> RemoteState:
    view = RemoteState(host)
    try:
        state = pueue_for(host).status()
    except RemoteError as error:
        record_contact(host, error)
        view.error = str(error)
        return view
    record_contact(host)
    prefix = label_prefix()
    live = [t for t in state.tasks.values() if t.is_live]
    done = sorted((t for t in state.tasks.values() if not t.is_live), key=lambda t: t.id, reverse=True)
    shown = sorted(live + done[:DONE_TASKS_SHOWN], key=lambda t: t.id)
    orphans = {o["id"] for o in find_orphans(state, prefix)}
    case_ids = {task.id: case_id_from_label(task.label, prefix) for task in shown}
    names = dict(Case.objects.filter(pk__in={i for i in case_ids.values() if i}).values_list("pk", "name"))
    for task in shown:
        case_id = case_ids[task.id]
        role = _role(task.id in orphans, case_id, case_id in names)
        view.tasks.append(TaskRow(task, case_id, names.get(case_id, ""), role))
    view.done_hidden = max(0, len(done) - DONE_TASKS_SHOWN)
    rows = {g.pueue_group: g for g in host.gpu_groups.all()}
    view.groups = [GroupRow(group, rows.get(name)) for name, group in sorted(state.groups.items())]
    return view


def _role(orphan: bool, case_id: int | None, case_exists: bool) -> str:
    if orphan:
        return "orphan"
    if case_id is None:
        return "foreign"
    return "case" if case_exists else "gone"


# -- a case's log ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LogTail:
    text: str = ""
    error: str = ""


def fetch_log_tail(case: Case, lines: int = LOG_TAIL_LINES) -> LogTail:
    """The tail of the case's task output, asked from pueue now.

    pueue reuses ids after ``clean``, so the id is first checked to still be this case's
    task (same label and creation time) in the task's own group.
    """
    if case.pueue_task_id is None or case.gpu_group is None:
        return LogTail(error="this case has no pueue task yet")
    host = case.gpu_group.host
    pueue = pueue_for(host)
    try:
        task = pueue.status(group=case.gpu_group.pueue_group).tasks.get(case.pueue_task_id)
        if task is None or not is_same_task(task, case):
            return LogTail(error=f"pueue on {host.name} no longer has task {case.pueue_task_id} of this case")
        text = pueue.log(case.pueue_task_id, lines=lines)
    except RemoteError as error:
        record_contact(host, error)
        return LogTail(error=f"{host.name} did not answer: {error}")
    record_contact(host)
    return LogTail(text=text)
