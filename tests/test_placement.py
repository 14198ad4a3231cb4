"""A case may name the host or GPU group it must run on, in a file in its folder; the cases behind
a case that waits for its busy target go on meanwhile. Two hosts: two sandboxes over the real sshd."""

import pytest

from cases.models import Case, CaseStatus
from cases.services import intake, submission
from resources.models import GpuGroup
from tests.support.cases import drop_case
from tests.support.hpc import Sandbox, make_hpc_host

S = CaseStatus
pytestmark = pytest.mark.django_db(transaction=True)  # two hosts: each is contacted on a thread of its own


@pytest.fixture
def two_hosts(sshd):
    boxes = [Sandbox(groups={"gpu_a": 1}), Sandbox(groups={"gpu_b": 1, "gpu_c": 1})]
    make_hpc_host(sshd, boxes[0], name="alpha", groups=("gpu_a",))
    make_hpc_host(sshd, boxes[1], name="beta", groups=("gpu_b", "gpu_c"))
    yield boxes
    for box in boxes:
        box.cleanup()


def drop(settings, name, placement=None):
    files = {"input.dat": b"x"} | ({"placement.toml": placement.encode()} if placement is not None else {})
    drop_case(settings.MQIC_NEW_CASES_DIR, name, "sleep 5\n", files=files)


def test_cases_go_where_their_folder_asks(two_hosts, mqic_dirs):
    drop(mqic_dirs, "1-on-alpha", 'host = "alpha"')
    drop(mqic_dirs, "2-on-gpu_c", 'gpu_group = "gpu_c"')
    drop(mqic_dirs, "3-anywhere")
    assert len(intake.scan().registered) == 3
    submission.submit_pass()
    where = {c.name: c.gpu_group.name for c in Case.objects.select_related("gpu_group")}
    assert where == {"1-on-alpha": "gpu_a", "2-on-gpu_c": "gpu_c", "3-anywhere": "gpu_b"}


def test_a_case_waiting_for_its_busy_group_does_not_hold_up_the_others(two_hosts, mqic_dirs):
    drop(mqic_dirs, "1-first")
    assert intake.scan().registered == ["1-first"]
    Case.objects.filter(name="1-first").update(wanted_group="gpu_a")
    submission.submit_pass()  # 1-first now holds gpu_a
    drop(mqic_dirs, "2-wants-gpu_a", 'gpu_group = "gpu_a"')
    drop(mqic_dirs, "3-anywhere")
    intake.scan()
    report = submission.submit_pass()
    assert report.started == ["3-anywhere"]
    assert Case.objects.get(name="2-wants-gpu_a").status == S.SUBMITTED
    assert GpuGroup.objects.get(name="gpu_a").holder_id == Case.objects.get(name="1-first").pk


@pytest.mark.parametrize(
    ("placement", "reason"),
    [
        ('host = "gamma"', "names host 'gamma', which MQIC does not know (hosts: alpha, beta)"),
        ('gpu_group = "gpu_z"', "names GPU group 'gpu_z', which MQIC does not know"),
        ('host = "alpha"\ngpu_group = "gpu_b"', "GPU group gpu_b is on host beta, not alpha"),
        ('queue = "fast"', 'may only say host = "..." and/or gpu_group = "..."'),
        ("host = ", "is not valid TOML"),
    ],
)
def test_a_placement_that_cannot_be_met_rejects_the_case_with_the_reason(two_hosts, mqic_dirs, placement, reason):
    drop(mqic_dirs, "misplaced", placement)
    [(name, why)] = intake.scan().rejected
    assert name == "misplaced" and reason in why
