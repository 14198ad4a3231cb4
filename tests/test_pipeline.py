"""The pipeline in-process against the real sshd and the sandbox pueue: scan, submit, monitor."""

import os
import time
from pathlib import Path

import pytest

from cases.models import Case, CaseStatus
from cases.services import intake, monitoring, submission
from cases.services.progress import UploadProgress
from resources.jobqueue import list_folder
from resources.models import GpuGroup, HpcHost
from resources.remote import ssh
from tests.support.cases import drop_case

S = CaseStatus


@pytest.fixture
def dirs(mqic_dirs):
    return mqic_dirs


def drop(settings, name, script="echo result > output.txt\n"):
    files = {f"input{n}.dat": bytes([n]) * 20_000 for n in range(3)}
    return drop_case(settings.MQIC_NEW_CASES_DIR, name, script, files=files)


def run_until_quiet(timeout=30):
    """Monitor and submit until no case is submitted, submitting or running."""
    deadline = time.monotonic() + timeout
    while Case.objects.filter(status__in=[S.SUBMITTED, S.SUBMITTING, S.RUNNING]).exists():
        assert time.monotonic() < deadline, list(Case.objects.values_list("name", "status"))
        monitoring.monitor_pass()
        submission.submit_pass()
        time.sleep(0.2)


def test_cases_run_to_completion_with_results_and_released_gpus(hpc, sandbox, dirs):
    for name in ["one", "two $(x)", "-three"]:
        drop(dirs, name)
    drop(dirs, "broken", script="echo partial > partial.txt; echo 'it broke' >&2; exit 7\n")
    assert len(intake.scan().registered) == 4

    ssh.close_all()
    ssh.reset_stats()
    report = submission.submit_pass()
    assert len(report.started) == 2, report  # two GPU groups
    assert ssh.stats().connections_opened == 1
    assert ssh.stats().channels_opened == 2  # one upload stream, one batch of adds
    assert Case.objects.filter(status=S.SUBMITTED).count() == 2

    run_until_quiet()
    statuses = dict(Case.objects.values_list("name", "status"))
    assert statuses == {
        "one": S.COMPLETED,
        "two $(x)": S.COMPLETED,
        "-three": S.COMPLETED,
        "broken": S.FAILED,
    }
    for name in ["one", "two $(x)", "-three"]:
        case = Case.objects.get(name=name)
        assert (dirs.MQIC_RESULTS_DIR / name / "output.txt").read_text() == "result\n"
        assert case.exit_code == 0 and case.result_path == str(dirs.MQIC_RESULTS_DIR / name)
        assert case.pueue_task_created_at is not None
    broken = Case.objects.get(name="broken")
    assert broken.exit_code == 7 and "exit code 7" in broken.last_error
    assert "it broke" in broken.log_tail
    assert (dirs.MQIC_RESULTS_DIR / "broken" / "partial.txt").exists()
    assert set(GpuGroup.objects.values_list("status", flat=True)) == {"available"}
    labels = [a["label"] for a in sandbox.adds()]
    assert sorted(labels) == sorted(Case.objects.values_list("label", flat=True))


def test_without_a_free_gpu_cases_wait_untouched(hpc, dirs):
    GpuGroup.objects.update(status=GpuGroup.Status.DISABLED)
    drop(dirs, "waiting")
    intake.scan()
    report = submission.submit_pass()
    assert report.started == [] and report.host_errors == {}
    case = Case.objects.get()
    assert case.status == S.SUBMITTED and case.events.count() == 1


def test_an_unreachable_host_fails_nothing_and_says_why(hpc, dirs):
    HpcHost.objects.update(port=1)  # nothing listens there
    drop(dirs, "patient")
    intake.scan()
    report = submission.submit_pass()
    assert "sshd" in report.host_errors and report.returned == ["patient"]
    case = Case.objects.get()
    assert (case.status, case.attempts) == (S.SUBMITTED, 0)
    assert "could not send to sshd, will retry" in case.events.last().reason
    assert GpuGroup.objects.filter(status="assigned").count() == 0
    assert HpcHost.objects.get().last_error


def test_upload_progress_follows_each_case_through_the_stream(db, tmp_path):
    first = drop_case(tmp_path, "first", files={"a.bin": b"1" * 1000})
    second = drop_case(tmp_path, "second", files={"b.bin": b"2" * 3000})
    cases = [Case.objects.create(name=p.name, source_path=str(p), status=S.SUBMITTING) for p in (first, second)]
    progress = UploadProgress([(c.pk, list_folder(Path(c.source_path)).size) for c in cases], interval=0)
    sizes = [case_size for _id, _start, case_size in progress.spans]
    percents = []
    for sent in (sizes[0] // 2, sizes[0], sizes[0] + sizes[1] // 3, sum(sizes)):
        progress(sent)
        percents.append(tuple(Case.objects.get(pk=c.pk).upload_percent for c in cases))
    assert percents == [(50, 0), (100, 0), (100, 33), (100, 100)]


@pytest.mark.django_db(transaction=True)
def test_a_large_upload_reports_its_progress(hpc, dirs, monkeypatch):
    """The SSH transport reports from its worker thread, which writes through its own connection."""
    monkeypatch.setattr("cases.services.progress.INTERVAL_SECONDS", 0)
    drop_case(dirs.MQIC_NEW_CASES_DIR, "big", files={"big.bin": b"\0" * 30_000_000})
    intake.scan()
    assert submission.submit_pass().started == ["big"]
    assert Case.objects.get().upload_percent == 100


def test_a_folder_unsafe_at_upload_fails_alone_and_the_batch_goes_on(hpc, dirs):
    drop(dirs, "good")
    bad = drop(dirs, "bad")
    intake.scan()
    os.mkfifo(bad / "pipe")  # after intake checked it

    report = submission.submit_pass()

    assert report.started == ["good"] and report.failed == ["bad"]
    case = Case.objects.get(name="bad")
    assert (case.status, case.attempts) == (S.FAILED, 0)
    assert "no longer a valid case: pipe is a special file" in case.events.last().reason
    assert GpuGroup.objects.filter(status="assigned").count() == 1


def test_links_a_job_leaves_in_its_results_are_listed_not_created(hpc, sandbox, dirs):
    drop(dirs, "linker", script="ln -s /etc/passwd stolen; mkfifo pipe; echo done > out.txt\n")
    intake.scan()

    run_until_quiet()

    case = Case.objects.get()
    results = dirs.MQIC_RESULTS_DIR / "linker"
    assert case.status == S.COMPLETED and (results / "out.txt").read_text() == "done\n"
    assert not os.path.lexists(results / "stolen") and not os.path.lexists(results / "pipe")
    event = case.events.get(reason__startswith="results: 2 link(s)")
    folder = Path(case.remote_dir).name
    assert sorted(event.detail["skipped"]) == [[f"{folder}/pipe", "fifo"], [f"{folder}/stolen", "symlink"]]


def test_a_retried_case_shows_its_current_attempt_and_keeps_the_earlier_ones(
    hpc, sandbox, dirs, admin_client, plain_static
):
    """Retry used to leave the failed attempt's exit code, log, task and folder on the case while it
    waited again, and the next attempt's results replaced the failed one's, job log and all."""
    from cases.models import Attempt
    from cases.services import operations

    drop(dirs, "flaky", "echo first try; exit 3\n")
    intake.scan()
    submission.submit_pass()
    run_until_quiet()
    case = Case.objects.get(name="flaky")
    assert (case.status, case.exit_code) == (S.FAILED, 3)
    (Path(case.source_path) / "run.sh").write_text("echo second try > output.txt\n")
    assert operations.retry(case, make_operator()).changed
    case.refresh_from_db()
    assert (case.status, case.exit_code, case.log_tail, case.remote_dir) == (S.SUBMITTED, None, "", "")
    assert case.gpu_group_id is None and case.pueue_task_id is None and case.result_path == ""
    first = Attempt.objects.get(case=case)
    assert first.exit_code == 3 and "first try" in first.log_tail
    assert (Path(first.result_path) / ".mqic_job.log").read_text() == "first try\n"
    page = admin_client.get(f"/admin/cases/case/{case.pk}/change/").content.decode()
    assert "exit code 3" in page and "first try" in page

    run_until_quiet()
    case.refresh_from_db()
    assert case.status == S.COMPLETED and (Path(case.result_path) / "output.txt").read_text() == "second try\n"
    assert (Path(first.result_path) / ".mqic_job.log").read_text() == "first try\n", (
        "the failed attempt's log stays"
    )
    assert [a.exit_code for a in Attempt.objects.filter(case=case)] == [3, 0]


def make_operator():
    from django.contrib.auth.models import User

    return User.objects.create_superuser("retrier", "", "x")
