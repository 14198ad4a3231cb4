"""One case's trouble is that case's alone: a folder that went bad after registration, an error
while finishing, a case that keeps failing. Real sshd and sandbox pueue; the other cases of the
same pass must go on in that pass."""

import os
import shutil
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from cases.models import Case, CaseStatus, PassRun
from cases.selectors import troubled_cases
from cases.services import intake, monitoring, passes, reconciliation, submission
from resources.models import GpuGroup
from tests.support.cases import drop_case

S = CaseStatus
pytestmark = pytest.mark.django_db


@pytest.fixture
def four_groups(hpc, sandbox):
    for name in ("gpu_c", "gpu_d"):
        sandbox.cli("group", "add", name, "-p", "1")
        GpuGroup.objects.create(host=hpc, name=name, pueue_group=name)
    return hpc


def registered(settings, *names):
    for name in names:
        drop_case(settings.MQIC_NEW_CASES_DIR, name)
    assert len(intake.scan().registered) == len(names)


def folder(settings, name):
    return settings.MQIC_NEW_CASES_DIR / name


def spoil(settings, name, how):
    path = folder(settings, name)
    if how == "fifo":
        os.mkfifo(path / "pipe")
    elif how == "deleted":
        shutil.rmtree(path)
    elif how == "script link":
        (path / "run.sh").unlink()
        (path / "run.sh").symlink_to("input.dat")  # inside the folder, but no longer a plain script


def wait_until_finished(names, timeout=30):
    deadline = time.monotonic() + timeout
    while Case.objects.filter(name__in=names, status=S.RUNNING).exists():
        assert time.monotonic() < deadline
        monitoring.monitor_pass()
        time.sleep(0.2)


@pytest.mark.parametrize("how", ["fifo", "deleted", "script link"])
def test_a_folder_that_went_bad_after_registration_fails_alone(four_groups, mqic_dirs, how):
    registered(mqic_dirs, "good-1", "bad", "good-2")
    spoil(mqic_dirs, "bad", how)
    report = submission.submit_pass()
    assert sorted(report.started) == ["good-1", "good-2"] and report.failed == ["bad"]
    bad = Case.objects.get(name="bad")
    assert bad.status == S.FAILED and "no longer a valid case" in bad.last_error
    assert bad.events.last().to_status == S.FAILED
    assert not GpuGroup.objects.filter(holder_id=bad.pk).exists(), "its GPU group is released at once"
    assert Case.objects.get(name="good-1").status == S.RUNNING


def test_an_error_while_finishing_one_case_is_recorded_on_it_and_the_others_finish(
    four_groups, mqic_dirs, monkeypatch
):
    registered(mqic_dirs, "fine", "cursed")
    submission.submit_pass()
    cursed = Case.objects.get(name="cursed")
    real_log_tail = monitoring.log_tail

    def log_tail(results, *args):
        if results.name == "cursed":
            raise MemoryError("no memory left for this one")
        return real_log_tail(results, *args)

    monkeypatch.setattr(monitoring, "log_tail", log_tail)
    wait_until_finished(["fine"])
    assert Case.objects.get(name="fine").status == S.COMPLETED
    cursed.refresh_from_db()
    assert cursed.status == S.RUNNING and cursed.error_count >= 1
    assert "MemoryError: no memory left for this one" in cursed.last_error
    assert cursed.events.filter(reason__contains="unexpected error").exists()
    assert list(troubled_cases()) == [cursed], "the dashboard counts it"
    assert cursed.lease_expires_at is None, "the next pass may try again at once"

    for _ in range(5):
        monitoring.monitor_pass()
    cursed.refresh_from_db()
    assert cursed.status == S.FAILED and "gave up after 3 unexpected errors" in cursed.last_error
    assert not GpuGroup.objects.filter(status="assigned").exists()


def test_a_failing_pass_is_recorded_where_the_dashboard_reads_it(hpc, mqic_dirs, monkeypatch):
    def broken():
        raise RuntimeError("the database went away")

    monkeypatch.setitem(passes.KINDS, "monitor", passes.PassKind(broken, "monitor"))
    with pytest.raises(RuntimeError):
        passes.run("monitor", trigger="test")
    run = PassRun.objects.get(kind="monitor")
    assert run.outcome == PassRun.Outcome.FAILED and "the database went away" in run.summary
    assert "Traceback" in run.error


def test_an_unreadable_inbox_entry_does_not_stop_the_scan(mqic_dirs, monkeypatch):
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "a")
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "b")
    real_validate = intake.validate

    def validate(entry):
        if entry.name == "a":
            raise MemoryError("while reading a")
        return real_validate(entry)

    monkeypatch.setattr(intake, "validate", validate)
    report = intake.scan()
    assert report.registered == ["b"] and "MemoryError" in report.errors[0]


@pytest.mark.parametrize("length", [246, 255])
def test_names_as_long_as_the_filesystem_allows_run_to_the_end(hpc, mqic_dirs, length):
    """Intake accepts any name the filesystem does; finishing once broke on names past 245 bytes
    (its staging folders added to the name)."""
    name = ("é" * length)[: length // 2] + "x" * (length - 2 * (length // 2))  # 2 bytes per é
    assert len(os.fsencode(name)) == length
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, name, "echo long > out.txt\n")
    assert intake.scan().registered == [name]
    submission.submit_pass()
    wait_until_finished([name])
    case = Case.objects.get()
    assert case.status == S.COMPLETED, case.last_error
    assert (mqic_dirs.MQIC_RESULTS_DIR / name / "out.txt").read_text() == "long\n"


def test_a_folder_damaged_while_it_is_sent_costs_its_case_an_attempt_and_the_batch_goes_on(
    four_groups, mqic_dirs, monkeypatch
):
    big = {"input.dat": os.urandom(2 << 20)}
    for name in ("first", "shrinking", "last"):
        drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, name, files=big)
    assert len(intake.scan().registered) == 3
    shrunk = []

    def shrink_once(point):
        if point == "mid_upload" and not shrunk:
            shrunk.append(point)
            os.truncate(folder(mqic_dirs, "shrinking") / "input.dat", 10)

    monkeypatch.setattr(submission, "crash_point", shrink_once)
    report = submission.submit_pass()
    assert shrunk, "the upload reported its progress"
    assert sorted(report.started) == ["first", "last"] and report.returned == ["shrinking"]
    case = Case.objects.get(name="shrinking")
    assert case.status == S.SUBMITTED and case.attempts == 1, "it costs the case an attempt"
    assert "changed while it was being sent" in case.events.last().reason
    assert not GpuGroup.objects.filter(holder_id=case.pk).exists()


def test_a_running_case_that_keeps_failing_is_stopped_on_its_host_then_failed(
    four_groups, mqic_dirs, monkeypatch, sandbox
):
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "endless", "sleep 600\n")
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "quick")
    intake.scan()
    submission.submit_pass()
    endless = Case.objects.get(name="endless")
    real_note_live = monitoring.note_live

    def note_live(case, task):
        if case.pk == endless.pk:
            raise RuntimeError("a bug met only by this case")
        real_note_live(case, task)

    monkeypatch.setattr(monitoring, "note_live", note_live)
    deadline = time.monotonic() + 30
    while Case.objects.filter(status=S.RUNNING).exists():
        assert time.monotonic() < deadline
        monitoring.monitor_pass()
        time.sleep(0.2)
    assert Case.objects.get(name="quick").status == S.COMPLETED
    endless.refresh_from_db()
    assert endless.status == S.FAILED and "gave up after 3 unexpected errors" in endless.last_error
    stopped = endless.events.get(to_status=S.FAILED).detail["stopped"]
    assert stopped["killed"] == [endless.pueue_task_id], "its task was killed before its GPU group was freed"
    status = sandbox.status()["tasks"][str(endless.pueue_task_id)]["status"]
    assert "Done" in status and "Killed" in str(status), status
    assert not GpuGroup.objects.filter(status="assigned").exists()


def test_an_error_reconciling_one_submission_stays_with_it_and_is_given_up_in_the_end(
    four_groups, mqic_dirs, monkeypatch
):
    registered(mqic_dirs, "cursed", "fine")
    assert len(submission.claim_cases()) == 2
    Case.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))  # their workers died
    cursed = Case.objects.get(name="cursed")
    real_retry_or_fail = reconciliation.retry_or_fail

    def retry_or_fail(case, *args, **kwargs):
        if case.pk == cursed.pk:
            raise RuntimeError("a bug met only by this case")
        return real_retry_or_fail(case, *args, **kwargs)

    monkeypatch.setattr(reconciliation, "retry_or_fail", retry_or_fail)
    run = passes.run("reconcile", follow_ups=False)
    assert run.outcome == PassRun.Outcome.PARTIAL and "cursed" in run.summary
    assert run.report.retried == ["fine"], "the other submission is settled in the same pass"
    cursed.refresh_from_db()
    assert cursed.status == S.SUBMITTING and "a bug met only by this case" in cursed.last_error
    for _ in range(2):
        passes.run("reconcile", follow_ups=False)
    cursed.refresh_from_db()
    assert cursed.status == S.FAILED and "gave up after 3 unexpected errors" in cursed.last_error
    assert not GpuGroup.objects.filter(holder_id=cursed.pk).exists()
