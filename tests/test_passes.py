"""What runs after what: the one rule in ``passes.KINDS``, seen from the passes a run enqueues."""

import pytest

from cases.models import CaseStatus, PassRun
from cases.services import passes
from cases.services.monitoring import MonitorReport
from cases.services.reconciliation import ReconcileReport
from tests.factories import make_case
from tests.support.cases import drop_case

pytestmark = pytest.mark.django_db


@pytest.fixture
def enqueued(monkeypatch):
    kinds = []
    monkeypatch.setattr(passes, "enqueue", kinds.append)
    return kinds


def reporting(monkeypatch, kind, report):
    """Let the pass of ``kind`` do nothing but say ``report``."""
    spec = passes.KINDS[kind]
    monkeypatch.setitem(passes.KINDS, kind, passes.PassKind(lambda **_: report, spec.actor, spec.then))


def test_a_scan_that_registered_a_case_is_followed_by_a_submission(mqic_dirs, enqueued):
    passes.run("scan")
    assert enqueued == []
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "one")
    passes.run("scan")
    assert enqueued == ["submit"]


def test_a_monitor_pass_that_freed_a_gpu_group_is_followed_by_a_submission(monkeypatch, enqueued):
    reporting(monkeypatch, "monitor", MonitorReport(still_running=3))
    passes.run("monitor")
    assert enqueued == []
    reporting(monkeypatch, "monitor", MonitorReport(failed=["a"]))
    passes.run("monitor")
    assert enqueued == ["submit"]


@pytest.mark.parametrize(
    ("report", "follows"),
    [
        (ReconcileReport(adopted=["a"]), False),
        (ReconcileReport(retried=["a"]), True),
        (ReconcileReport(released_groups=["gpu_a"]), True),
        (ReconcileReport(retried=["a"], dry_run=True), False),
    ],
)
def test_a_reconcile_pass_is_followed_by_a_submission_when_a_case_waits_again(
    monkeypatch, enqueued, report, follows
):
    reporting(monkeypatch, "reconcile", report)
    passes.run("reconcile")
    assert enqueued == (["submit"] if follows else [])


def test_a_submission_is_followed_by_nothing_and_a_caller_may_refuse_follow_ups(mqic_dirs, enqueued):
    make_case(CaseStatus.SUBMITTED)  # no GPU group: it waits
    passes.run("submit")
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "one")
    passes.run("scan", follow_ups=False)
    assert enqueued == []
    assert list(PassRun.objects.values_list("kind", flat=True).order_by("pk")) == ["submit", "scan"]
