"""What must hold after any crash or fault, checked against the database and the sandbox."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from cases.models import HOLDS_GPU, Case
from resources.models import GpuGroup
from tests.support.hpc import Sandbox

LIVE = {"Queued", "Running", "Paused", "Locked"}


@dataclass
class Findings:
    lost: list[str]
    duplicates: list[str]
    gpu_mismatches: list[str]

    def __bool__(self):
        return bool(self.lost or self.duplicates or self.gpu_mismatches)


def check(sandbox: Sandbox, expected: dict[str, str]) -> Findings:
    """``expected`` maps case name to its final status (completed, or failed for a failing job)."""
    actual = dict(Case.objects.filter(name__in=expected).values_list("name", "status"))
    lost = [f"{name}: {actual.get(name)}" for name, status in expected.items() if actual.get(name) != status]
    added = Counter(a["label"] for a in sandbox.adds())
    duplicates = [f"{label} added {n} times" for label, n in added.items() if n > 1]
    return Findings(lost, duplicates, gpu_mismatches(sandbox))


def gpu_mismatches(sandbox: Sandbox) -> list[str]:
    found = []
    holders = dict(Case.objects.values_list("pk", "status"))
    for group in GpuGroup.objects.filter(status=GpuGroup.Status.ASSIGNED):
        if holders.get(group.holder_id) not in HOLDS_GPU:
            found.append(f"{group.name} assigned to case {group.holder_id} ({holders.get(group.holder_id)})")
    available = set(
        GpuGroup.objects.filter(status=GpuGroup.Status.AVAILABLE).values_list("pueue_group", flat=True)
    )
    for task in sandbox.status()["tasks"].values():
        status = task["status"] if isinstance(task["status"], str) else next(iter(task["status"]))
        if status in LIVE and task["group"] in available:
            found.append(f"task {task['id']} is {status} in {task['group']}, which MQIC calls available")
    return found
