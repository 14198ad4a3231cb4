"""What must hold after any crash or fault, checked against the database and the remote's evidence.

Works on both remotes (``Sandbox`` and ``RealPueue``): duplicates come from ``adds()`` (every
add that succeeded, which both record as it happens), GPU lies and leftovers from ``status()``
and the base folder as they are now.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from cases.models import HOLDS_GPU, Case, CaseStatus
from resources.models import GpuGroup
from tests.support.hpc import RealPueue, Sandbox

LIVE = {"Queued", "Running", "Paused", "Locked"}


@dataclass
class Findings:
    lost: list[str]
    duplicates: list[str]
    gpu_mismatches: list[str]
    leftovers: list[str]

    def __bool__(self):
        return bool(self.lost or self.duplicates or self.gpu_mismatches or self.leftovers)


def check(remote: Sandbox | RealPueue, expected: dict[str, str]) -> Findings:
    """``expected`` maps case name to its final status (completed, or failed for a failing job)."""
    actual = dict(Case.objects.filter(name__in=expected).values_list("name", "status"))
    lost = [f"{name}: {actual.get(name)}" for name, status in expected.items() if actual.get(name) != status]
    added = Counter(a["label"] for a in remote.adds())
    duplicates = [f"{label} added {n} times" for label, n in added.items() if n > 1]
    return Findings(lost, duplicates, gpu_mismatches(remote), leftovers(remote, expected))


def gpu_mismatches(remote: Sandbox | RealPueue) -> list[str]:
    """A GPU group MQIC calls assigned to a case that cannot hold it, and a live task in a group
    MQIC calls available, or in one it gave to another of its cases."""
    found = []
    cases = {pk: (status, label) for pk, status, label in Case.objects.values_list("pk", "status", "label")}
    groups = {g.pueue_group: g for g in GpuGroup.objects.all()}
    for group in groups.values():
        status = cases.get(group.holder_id, (None, None))[0]
        if group.status == GpuGroup.Status.ASSIGNED and status not in HOLDS_GPU:
            found.append(f"{group.name} assigned to case {group.holder_id} ({status})")
    ours = {label for _status, label in cases.values() if label}
    for task in remote.status()["tasks"].values():
        status = task["status"] if isinstance(task["status"], str) else next(iter(task["status"]))
        group = groups.get(task["group"])
        if status not in LIVE or group is None:
            continue
        if group.status == GpuGroup.Status.AVAILABLE:
            found.append(f"task {task['id']} is {status} in {task['group']}, which MQIC calls available")
        elif task["label"] in ours and cases.get(group.holder_id, (None, None))[1] != task["label"]:
            found.append(
                f"task {task['id']} of {task['label']} is {status} in {task['group']}, held by another case"
            )
    return found


def leftovers(remote: Sandbox | RealPueue, expected: dict[str, str]) -> list[str]:
    """Tasks and folders of ended cases still on the host (hygiene removes them; retention 0)."""
    ended = Case.objects.filter(name__in=expected, status__in=[CaseStatus.COMPLETED, CaseStatus.FAILED])
    labels = set(ended.values_list("label", flat=True))
    tasks = [f"task {t['id']} of {t['label']}" for t in remote.status()["tasks"].values() if t["label"] in labels]
    folders = [f"folder {p.name}" for p in remote.base_dir.iterdir() if p.name.rpartition(".")[0] in labels]
    return tasks + folders
