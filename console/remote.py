"""A host's live remote state for its page: one ``pueue status``, its tasks joined to their cases.

A service, not a selector: it talks to the host (through the one contact seam) before it reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cases.models import Case
from cases.services.labels import case_id_from_label, label_prefix
from cases.services.matching import orphans
from resources.contact import contact
from resources.jobqueue import PueueGroup, PueueTask
from resources.models import GpuGroup, HpcHost

DONE_TASKS_SHOWN = 100
"""The page lists every live task but only this many finished ones."""


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
    with contact(host, force=True) as link:
        state = link.queue.state()
    if link.failed:
        view.error = str(link.error)
        return view
    prefix = label_prefix()
    live = [t for t in state.tasks.values() if t.is_live]
    done = sorted((t for t in state.tasks.values() if not t.is_live), key=lambda t: t.id, reverse=True)
    shown = sorted(live + done[:DONE_TASKS_SHOWN], key=lambda t: t.id)
    orphaned = {o.task.id for o in orphans(state, prefix)}
    case_ids = {task.id: case_id_from_label(task.label, prefix) for task in shown}
    names = dict(Case.objects.filter(pk__in={i for i in case_ids.values() if i}).values_list("pk", "name"))
    for task in shown:
        case_id = case_ids[task.id]
        role = _role(task.id in orphaned, case_id, case_id in names)
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
