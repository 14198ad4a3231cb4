"""Faults between MQIC and the remote side: nothing is failed on an unknown outcome, and
everything finishes once the fault clears. Real sshd, real sandbox, a real TCP proxy."""

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from cases.models import Case, CaseStatus
from cases.services import intake, monitoring, reconciliation, submission
from cases.services.jobs import EXIT_MARKER
from resources.models import GpuGroup, HpcHost
from resources.remote import ssh
from tests.support import invariants
from tests.support.cases import drop_case as drop
from tests.support.hpc import Sandbox, kill_hung_clients, make_hpc_host, overlaps_per_group
from tests.support.processes import REPO, django_env
from tests.support.sshd import SshServer
from tests.support.system import wait_for

S = CaseStatus


@pytest.fixture
def inbox(mqic_dirs):
    # Short enough that a hang is noticed soon, long enough for an upload on a loaded machine
    # (make test runs its two passes side by side on six workers).
    mqic_dirs.MQIC_SSH_COMMAND_TIMEOUT = 8
    mqic_dirs.MQIC_SSH_CONNECT_TIMEOUT = 4
    yield mqic_dirs.MQIC_NEW_CASES_DIR
    ssh.close_all()


def settle(timeout=30):
    """What the schedules do: pass after pass, leases expiring, until all cases have ended."""
    deadline = timezone.now() + timedelta(seconds=timeout)
    while Case.objects.filter(status__in=[S.SUBMITTED, S.SUBMITTING, S.RUNNING]).exists():
        assert timezone.now() < deadline, list(Case.objects.values_list("name", "status", "last_error"))
        Case.objects.filter(status=S.SUBMITTING).update(lease_expires_at=timezone.now())
        reconciliation.reconcile_pass()
        submission.submit_pass()
        monitoring.monitor_pass()


def assert_all_completed_once(sandbox, names):
    assert not invariants.check(sandbox, dict.fromkeys(names, "completed"))
    assert not Case.objects.filter(status=S.FAILED).exists()


def test_connection_cut_after_upload_before_add(hpc, sandbox, inbox, fault_proxy, sshd, monkeypatch):
    HpcHost.objects.update(port=fault_proxy.port, known_hosts_path="", host_key=sshd.host_key)
    drop(inbox, "cut")
    intake.scan()

    def cut_at(point):
        if point == "after_upload":
            fault_proxy.hang()
            fault_proxy.cut_all()

    monkeypatch.setattr("cases.services.submission.crash_point", cut_at)
    report = submission.submit_pass()
    case = Case.objects.get()
    assert report.unknown == ["cut"] and case.status == S.SUBMITTING
    assert "outcome unknown" in case.events.last().reason
    reconciliation.reconcile_pass()  # the host does not answer: nothing is decided
    assert Case.objects.get().status == S.SUBMITTING
    fault_proxy.pass_through()
    monkeypatch.undo()
    settle()
    assert_all_completed_once(sandbox, ["cut"])


def test_a_hang_during_add_is_an_unknown_outcome_then_adopted(hpc, sandbox, inbox):
    drop(inbox, "hang")
    intake.scan()
    sandbox.set_fault("hang_after_add")
    try:
        report = submission.submit_pass()
    finally:
        sandbox.set_fault("hang_after_add", armed=False)
        kill_hung_clients(sandbox)
    assert report.unknown == ["hang"] and Case.objects.get().status == S.SUBMITTING
    assert len(sandbox.adds()) == 1  # the task exists; we just never heard its id
    settle()
    assert_all_completed_once(sandbox, ["hang"])
    assert "adopted pueue task" in Case.objects.get().events.filter(to_status=S.RUNNING).get().reason


def test_pueue_daemon_down_fails_nothing_and_burns_no_attempt(hpc, sandbox, inbox, settings):
    settings.MQIC_HOST_FAILURES_BEFORE_BACKOFF = 100  # every pass asks (the back-off has its own tests)
    drop(inbox, "early")
    intake.scan()
    submission.submit_pass()
    early = Case.objects.get(name="early")
    wait_for(lambda: (Path(early.remote_dir) / EXIT_MARKER).exists(), 10, "the early job to end")
    sandbox.stop()
    drop(inbox, "late")
    intake.scan()
    for _ in range(5):
        report = submission.submit_pass()
        monitoring.monitor_pass()
        reconciliation.reconcile_pass()
    assert report.returned == ["late"]
    assert "Did you start it?" in Case.objects.get(name="late").events.last().reason
    late = Case.objects.get(name="late")
    assert (late.status, late.attempts) == (S.SUBMITTED, 0)
    assert Case.objects.get(name="early").status == S.RUNNING
    sandbox.start()
    settle()
    assert_all_completed_once(sandbox, ["early", "late"])


def test_sshd_stopped_for_a_while(sandbox, inbox, db, settings):
    settings.MQIC_HOST_BACKOFF_SECONDS = 2
    server = SshServer().start()
    try:
        make_hpc_host(server, sandbox)
        drop(inbox, "before", "sleep 1; echo ok > out.txt\n")
        intake.scan()
        submission.submit_pass()
        server.stop()
        drop(inbox, "during")
        intake.scan()
        for _ in range(3):
            submission.submit_pass()
            monitoring.monitor_pass()
            reconciliation.reconcile_pass()
        assert dict(Case.objects.values_list("name", "status")) == {"before": S.RUNNING, "during": S.SUBMITTED}
        host = HpcHost.objects.get()
        assert host.last_error and host.down_since and host.next_try_at, "repeated failures: the host backs off"
        assert host.consecutive_failures == settings.MQIC_HOST_FAILURES_BEFORE_BACKOFF, (
            "no contact while backing off"
        )
        server.restart()
        settle()
        assert_all_completed_once(sandbox, ["before", "during"])
    finally:
        server.cleanup()


def test_pueued_restart_under_running_tasks(hpc, sandbox, inbox):
    drop(inbox, "a", "sleep 30\n")
    drop(inbox, "b", "sleep 30\n")
    intake.scan()
    submission.submit_pass()
    sandbox.cli("add", "-g", "gpu_b", "--", "sleep 30")  # someone else's work, queued behind b
    for name in "ab":
        (inbox / name / "run.sh").write_text("echo ok > out.txt\n")  # the second run is quick
    sandbox.restart()  # a and b become Killed; gpu_b has a queued task, so pueue pauses it
    report = monitoring.monitor_pass()
    assert sorted(report.requeued) == ["a", "b"]
    reconcile = reconciliation.reconcile_pass()
    assert reconcile.paused_groups == ["gpu_b"] and reconcile.blocked_groups == ["gpu_b"]
    settle()
    assert dict(Case.objects.values_list("name", "status")) == {"a": S.COMPLETED, "b": S.COMPLETED}
    assert sandbox.status()["groups"]["gpu_b"]["status"] == "Paused"  # not resumed: not configured to
    assert GpuGroup.objects.get(name="gpu_b").blocked_reason.startswith("remote: ")


@pytest.mark.engine
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("cases", [24, pytest.param(100, marks=pytest.mark.slow)])
def test_four_workers_many_cases_three_groups(sshd, inbox, tmp_path, cases):
    sandbox = Sandbox(groups={"gpu_a": 1, "gpu_b": 1, "gpu_c": 1})
    try:
        make_hpc_host(sshd, sandbox, groups=("gpu_a", "gpu_b", "gpu_c"))
        names = [f"case{n:03}" for n in range(cases)]
        for name in names:
            drop(inbox, name)
        intake.scan()
        env = django_env(MQIC_RESULTS_DIR=str(tmp_path / "results"))
        workers = [
            subprocess.Popen([sys.executable, "-m", "tests.support.drive", "240"], cwd=REPO, env=env)
            for _ in range(4)
        ]
        assert [w.wait(timeout=300) for w in workers] == [0, 0, 0, 0]
        assert_all_completed_once(sandbox, names)
        assert overlaps_per_group(sandbox.events()) == {"gpu_a": 1, "gpu_b": 1, "gpu_c": 1}
        assert len(sandbox.adds()) == cases
    finally:
        sandbox.cleanup()
