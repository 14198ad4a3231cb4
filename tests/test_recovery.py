"""Reconciliation decisions against the real sshd and sandbox pueue, one situation at a time."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from cases.models import Case, CaseEvent, CaseStatus
from cases.services import intake, monitoring, reconciliation, submission
from cases.services.jobs import ATTEMPT_VARIABLE, EXIT_MARKER, job_command, token_of
from cases.services.labels import label_prefix
from resources.contact import retry_now
from resources.models import GpuGroup, HpcHost
from tests.support.cases import drop_case
from tests.support.processes import processes_with
from tests.support.system import wait_for

S = CaseStatus


@pytest.fixture
def inbox(mqic_dirs):
    return mqic_dirs.MQIC_NEW_CASES_DIR


def new_case(inbox, name="c", script="echo ok > out.txt\n") -> Case:
    drop_case(inbox, name, script)
    intake.scan()
    return Case.objects.get(name=name)


def claim_and_add(case, sandbox, copies=1) -> list[int]:
    """The danger zone: claimed, uploaded and added remotely, but the id never stored."""
    claimed = submission.claim(case.pk)
    host = claimed.gpu_group.host
    Path(claimed.remote_dir).mkdir(parents=True, exist_ok=True)
    (Path(claimed.remote_dir) / "run.sh").write_text((Path(case.source_path) / "run.sh").read_text())
    ids = []
    for _ in range(copies):
        done = sandbox.cli(
            "add",
            "-l",
            claimed.label,
            "-g",
            claimed.gpu_group.pueue_group,
            "-w",
            claimed.remote_dir,
            "-p",
            "--",
            job_command("run.sh"),
        )
        ids.append(int(done.stdout.strip()))
    assert host.base_dir == str(sandbox.base_dir)
    return ids


def expire_lease(case):
    Case.objects.filter(pk=case.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def test_a_live_submission_is_left_alone_until_its_lease_expires(hpc, sandbox, inbox):
    case = new_case(inbox)
    claim_and_add(case, sandbox)
    reconciliation.reconcile_pass()
    assert Case.objects.get(pk=case.pk).status == S.SUBMITTING


def test_one_task_with_the_label_is_adopted(hpc, sandbox, inbox):
    case = new_case(inbox)
    [task_id] = claim_and_add(case, sandbox)
    expire_lease(case)
    report = reconciliation.reconcile_pass()
    case.refresh_from_db()
    assert report.adopted == ["c"]
    assert (case.status, case.pueue_task_id) == (S.RUNNING, task_id)
    assert case.pueue_task_created_at is not None
    event = case.events.last()
    assert "adopted pueue task" in event.reason and event.detail["adopted"]["id"] == task_id
    assert len(sandbox.adds()) == 1


def test_duplicates_adopt_the_oldest_and_kill_the_rest_by_id(hpc, sandbox, inbox):
    case = new_case(inbox, script="sleep 30\n")
    first, second = claim_and_add(case, sandbox, copies=2)
    expire_lease(case)
    reconciliation.reconcile_pass()
    case.refresh_from_db()
    assert case.pueue_task_id == first
    assert str(second) not in sandbox.status()["tasks"]  # it was queued: removed, by its id
    assert f"killing duplicates [{second}]" in case.events.last().reason
    sandbox.cli("kill", str(first))


def test_no_task_and_an_answer_means_retry_then_fail(hpc, sandbox, inbox, settings):
    settings.MQIC_MAX_ATTEMPTS = 2
    case = new_case(inbox)
    for attempt, final in [(1, S.SUBMITTED), (2, S.FAILED)]:
        submission.claim(case.pk)
        Case.objects.filter(pk=case.pk).update(attempts=attempt)
        expire_lease(case)
        reconciliation.reconcile_pass()
        case.refresh_from_db()
        assert case.status == final
        assert GpuGroup.objects.filter(status="assigned").count() == 0
    assert "no attempts left" in case.last_error
    assert "holds no task of this attempt" in case.events.filter(to_status=S.FAILED).get().reason


def test_an_unanswered_host_changes_nothing_and_warns_once(hpc, sandbox, inbox):
    case = new_case(inbox)
    submission.claim(case.pk)
    expire_lease(case)
    sandbox.stop()  # pueue's daemon is down: status fails
    for _ in range(3):
        report = reconciliation.reconcile_pass()
    case.refresh_from_db()
    assert case.status == S.SUBMITTING and "sshd" in report.host_errors
    warnings = case.events.filter(reason__startswith=reconciliation.NO_ANSWER)
    assert warnings.count() == 1 and "Did you start it?" in warnings.get().reason
    assert GpuGroup.objects.filter(status="assigned").count() == 1
    host = HpcHost.objects.get()
    assert host.consecutive_failures == 3 and host.next_try_at is not None, "three failures in a row: back off"
    sandbox.start()
    reconciliation.reconcile_pass()
    assert Case.objects.get(pk=case.pk).status == S.SUBMITTING, "a host backing off is not asked"
    retry_now(host)  # what an operator's "check health now" does
    reconciliation.reconcile_pass()
    assert Case.objects.get(pk=case.pk).status == S.SUBMITTED
    assert HpcHost.objects.get().consecutive_failures == 0


def test_an_unreachable_host_is_not_found_either(hpc, sandbox, inbox):
    case = new_case(inbox)
    submission.claim(case.pk)
    expire_lease(case)
    HpcHost.objects.update(port=1)
    reconciliation.reconcile_pass()
    assert Case.objects.get(pk=case.pk).status == S.SUBMITTING


def test_a_namesake_task_is_never_adopted(hpc, sandbox, inbox):
    """Same label, but another folder (a restored database, another installation)."""
    case = new_case(inbox)
    claimed = submission.claim(case.pk)
    sandbox.cli("add", "-l", claimed.label, "-g", "gpu_a", "-w", str(sandbox.base_dir), "--", "sleep 30")
    expire_lease(case)
    report = reconciliation.reconcile_pass()
    case.refresh_from_db()
    assert case.status == S.SUBMITTED and case.pueue_task_id is None
    assert "carry the label but not this attempt's evidence" in case.events.last().reason
    assert [o["label"] for o in report.orphans] == [claimed.label]
    assert report.blocked_groups == ["gpu_a"]  # a task MQIC does not own runs there
    assert submission.claim(case.pk).gpu_group.name == "gpu_b"


def test_a_retry_adopts_a_live_task_of_an_earlier_attempt_instead_of_adding(hpc, sandbox, inbox):
    case = new_case(inbox, script="sleep 30\n")
    [task_id] = claim_and_add(case, sandbox)
    # Someone put the case back by hand while its task still ran.
    Case.objects.filter(pk=case.pk).update(status=S.SUBMITTED, attempts=1)
    GpuGroup.objects.update(status="available", holder_id=None)
    report = submission.submit_pass()
    assert report.adopted == ["c"] and len(sandbox.adds()) == 1
    assert Case.objects.get(pk=case.pk).pueue_task_id == task_id
    sandbox.cli("kill", str(task_id))


def start_running(inbox, script="echo ok > out.txt\n", name="c"):
    new_case(inbox, name=name, script=script)
    assert submission.submit_pass().started == [name]
    return Case.objects.get(name=name)


def test_a_cleaned_task_is_judged_by_its_exit_marker(hpc, sandbox, inbox):
    case = start_running(inbox)
    wait_for(lambda: (Path(case.remote_dir) / EXIT_MARKER).exists(), 10, "the job to end")
    sandbox.cli("clean")
    monitoring.monitor_pass()
    case.refresh_from_db()
    assert case.status == S.COMPLETED and case.exit_code == 0


def test_a_vanished_task_without_marker_fails_as_lost_after_the_grace_period(hpc, sandbox, inbox, settings):
    settings.MQIC_LOST_GRACE_SECONDS = 60
    case = start_running(inbox, script="sleep 30\n")
    sandbox.cli("kill", str(case.pueue_task_id))
    wait_for(lambda: "Done" in str(sandbox.status()["tasks"][str(case.pueue_task_id)]["status"]), 10, "kill")
    sandbox.cli("clean")
    monitoring.monitor_pass()
    case.refresh_from_db()
    assert case.status == S.RUNNING and case.task_missing_since is not None
    Case.objects.filter(pk=case.pk).update(task_missing_since=timezone.now() - timedelta(seconds=61))
    monitoring.monitor_pass()
    case.refresh_from_db()
    assert case.status == S.FAILED and case.last_error.startswith("lost:")
    assert case.events.filter(to_status=S.FAILED).get().detail["task_missing_since"]
    assert GpuGroup.objects.filter(status="assigned").count() == 0


def test_a_pueued_restart_requeues_killed_tasks_and_reports_paused_groups(hpc, sandbox, inbox):
    first = start_running(inbox, script="sleep 30\n", name="first")
    sandbox.cli("add", "-g", "gpu_b", "--", "sleep 30")  # not ours: queued behind nothing, runs
    sandbox.cli("add", "-g", "gpu_b", "--", "sleep 30")  # queued: gpu_b will be paused
    sandbox.restart()
    report = monitoring.monitor_pass()
    assert report.requeued == ["first"]
    first.refresh_from_db()
    assert first.status == S.SUBMITTED and "killed outside MQIC" in first.events.last().reason
    reconcile = reconciliation.reconcile_pass()
    assert reconcile.paused_groups == ["gpu_b"]
    assert sandbox.status()["groups"]["gpu_b"]["status"] == "Paused"


def test_paused_groups_are_resumed_only_when_configured(hpc, sandbox, inbox, settings):
    sandbox.cli("pause", "-g", "gpu_a")
    reconciliation.reconcile_pass()
    assert sandbox.status()["groups"]["gpu_a"]["status"] == "Paused"
    settings.MQIC_RESUME_PAUSED_GROUPS = True
    reconciliation.reconcile_pass()
    assert sandbox.status()["groups"]["gpu_a"]["status"] == "Running"


def test_a_group_assigned_to_a_finished_case_is_released(hpc, sandbox, inbox):
    case = new_case(inbox)
    submission.claim(case.pk)
    Case.objects.filter(pk=case.pk).update(status=S.FAILED)  # as an old bug might have left it
    report = reconciliation.reconcile_pass()
    assert len(report.released_groups) == 1
    assert GpuGroup.objects.filter(status="assigned").count() == 0
    assert "still assigned to this case while failed" in CaseEvent.objects.filter(case=case).last().reason


def test_dry_run_changes_nothing(hpc, sandbox, inbox):
    case = new_case(inbox)
    claim_and_add(case, sandbox)
    expire_lease(case)
    report = reconciliation.reconcile_pass(dry_run=True)
    assert report.adopted == ["c"] and str(report).startswith("(dry run)")
    assert Case.objects.get(pk=case.pk).status == S.SUBMITTING


def test_orphans_are_tasks_with_our_prefix_and_no_live_case(hpc, sandbox, inbox):
    sandbox.cli("add", "-l", f"{label_prefix()}999", "-g", "default", "--", "sleep 30")
    sandbox.cli("add", "-l", "mqic_case_otherinstall_1", "-g", "default", "--", "sleep 30")
    report = reconciliation.reconcile_pass()
    assert [o["label"] for o in report.orphans] == [f"{label_prefix()}999"]


def test_a_task_that_took_over_a_stored_id_blocks_its_group(hpc, sandbox, inbox):
    """pueue reuses ids after ``clean``: a live task under a running case's id, created at another
    time, is not that case's task but work MQIC did not start."""
    case = start_running(inbox, script="sleep 30\n")
    Case.objects.filter(pk=case.pk).update(pueue_task_created_at=timezone.now() - timedelta(days=1))
    report = reconciliation.reconcile_pass()
    assert report.blocked_groups == [case.gpu_group.name]
    assert "did not start" in GpuGroup.objects.get(pk=case.gpu_group_id).blocked_reason
    sandbox.cli("kill", str(case.pueue_task_id))


def test_a_lost_case_whose_processes_live_on_keeps_its_gpu_group_until_they_are_ended(
    hpc, sandbox, inbox, settings
):
    """A task removed from pueue while it ran leaves no task and no marker, but its processes run
    on: they are ended before the case fails as lost and its GPU group is handed on."""
    settings.MQIC_LOST_GRACE_SECONDS = 0
    case = start_running(inbox, script="sleep 300\n")
    wait_for(lambda: case_pids(case), 10, "the job to start")
    sandbox.restart()  # its task becomes Killed while its processes run on...
    sandbox.cli("clean")  # ...and is then cleaned away: no task, no marker
    assert str(case.pueue_task_id) not in sandbox.status()["tasks"]
    monitoring.monitor_pass()  # notices the task is gone
    monitoring.monitor_pass()  # the grace is over: its processes are ended, then it fails
    case.refresh_from_db()
    assert case.status == S.FAILED and case.last_error.startswith("lost:")
    assert case.events.get(to_status=S.FAILED).detail["processes_ended"] >= 1
    assert not case_pids(case), "nothing of the attempt runs any more"
    assert GpuGroup.objects.filter(status="assigned").count() == 0


def case_pids(case) -> list[int]:
    """The processes on this machine that carry the case's attempt marker in their environment."""
    return [int(proc.name) for proc in processes_with(f"{ATTEMPT_VARIABLE}={token_of(case.remote_dir)}")]


def test_a_worker_slowed_past_its_lease_does_not_add_once_the_reconciler_retried(hpc, sandbox, inbox, monkeypatch):
    """The scale-out run's duplicate: a submitting worker stalled until its lease ran out (a
    loaded node, a long upload); the reconciler asked the host, found no task and put the case
    back; then the stalled worker's add still went through, and the retry ran the case again."""
    case = new_case(inbox)
    real_crash_point = submission.crash_point

    def stall_past_the_lease(name):
        if name == "after_upload":
            expire_lease(case)
            assert reconciliation.reconcile_pass().retried == ["c"]
        real_crash_point(name)

    monkeypatch.setattr(submission, "crash_point", stall_past_the_lease)
    submission.submit_pass()
    assert [a for a in sandbox.adds() if a["label"] == Case.objects.get(pk=case.pk).label] == []
    assert CaseEvent.objects.filter(case=case, reason__contains="lease ran out first").exists()
    monkeypatch.setattr(submission, "crash_point", real_crash_point)
    submission.submit_pass()
    assert len([a for a in sandbox.adds() if a["label"] == Case.objects.get(pk=case.pk).label]) == 1
