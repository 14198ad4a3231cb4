"""The crash tests' judge must see what it is there to see, on the sandbox and on real pueue
alike: a case added twice, a GPU group MQIC is wrong about, what hygiene left behind."""

import pytest

from cases.models import CaseStatus
from resources.models import GpuGroup
from tests.factories import make_case
from tests.support import invariants
from tests.support.hpc import make_hpc_host

S = CaseStatus
pytestmark = pytest.mark.django_db


@pytest.fixture
def host(sshd, remote):
    return make_hpc_host(sshd, remote)


def add(remote, label: str, group: str, folder) -> None:
    folder.mkdir(exist_ok=True)
    remote.cli("add", "-l", label, "-g", group, "-w", str(folder), "--", "sleep 60")


def test_a_quiet_end_is_clean(remote, host):
    make_case(S.COMPLETED, name="done", label="mqic_case_1")
    assert not invariants.check(remote, {"done": S.COMPLETED})


def test_a_case_added_twice_is_a_duplicate(remote, host):
    case = make_case(S.RUNNING, name="twice", label="mqic_case_1")
    GpuGroup.objects.filter(name="gpu_a").update(status=GpuGroup.Status.ASSIGNED, holder_id=case.pk)
    add(remote, case.label, "gpu_a", remote.base_dir / "one")
    add(remote, case.label, "gpu_a", remote.base_dir / "two")
    assert invariants.check(remote, {"twice": S.RUNNING}).duplicates == ["mqic_case_1 added 2 times"]


def test_gpu_lies_are_seen(remote, host):
    running = make_case(S.RUNNING, name="running", label="mqic_case_1")
    ended = make_case(S.COMPLETED, name="ended", label="mqic_case_2")
    GpuGroup.objects.filter(name="gpu_a").update(status=GpuGroup.Status.ASSIGNED, holder_id=running.pk)
    add(remote, running.label, "gpu_b", remote.base_dir / "b")  # a group MQIC calls available
    add(remote, ended.label, "gpu_a", remote.base_dir / "a")  # a group MQIC gave to another case
    found = " | ".join(invariants.gpu_mismatches(remote))
    assert "of mqic_case_1" not in found and "in gpu_b, which MQIC calls available" in found
    assert "of mqic_case_2 is" in found and "in gpu_a, held by another case" in found  # Queued or Running
    assert found.count("|") == 1

    GpuGroup.objects.filter(name="gpu_b").update(status=GpuGroup.Status.ASSIGNED, holder_id=ended.pk)
    assert f"gpu_b assigned to case {ended.pk} (completed)" in invariants.gpu_mismatches(remote)


def test_what_hygiene_left_is_a_leftover(remote, host):
    case = make_case(S.COMPLETED, name="left", label="mqic_case_1")
    folder = remote.base_dir / f"{case.label}.0123456789abcdef"
    folder.mkdir()
    remote.cli("add", "-l", case.label, "-g", "gpu_a", "-w", str(folder), "--", "true")
    found = invariants.check(remote, {"left": S.COMPLETED}).leftovers
    assert len(found) == 2 and found[1] == f"folder {folder.name}"
