"""Remote hygiene: a finished case leaves nothing on its host (its pueue task is removed, its
folder deleted) once its results are home; a cancelled case's folder comes home first. Real sshd
and sandbox pueue."""

import html
import os
import posixpath
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from cases.models import Attempt, Case, CaseStatus
from cases.services import hygiene, intake, monitoring, operations, reconciliation, submission
from cases.services.labels import label_prefix
from resources.jobqueue import TRACES
from tests.support.cases import drop_case
from tests.support.system import wait_for
from tests.support.users import user_with

S = CaseStatus
pytestmark = pytest.mark.django_db


def finished(settings, *scripts):
    for n, script in enumerate(scripts):
        drop_case(settings.MQIC_NEW_CASES_DIR, f"c{n}", script)
    intake.scan()
    submission.submit_pass()
    wait_for(
        lambda: not monitoring.monitor_pass().still_running and not Case.objects.filter(status=S.RUNNING).exists(),
        30,
        "every case to end",
    )
    return list(Case.objects.order_by("name"))


def our_tasks(sandbox):
    return [t for t in sandbox.status()["tasks"].values() if (t["label"] or "").startswith(label_prefix())]


def cleanup_shown(client, case) -> str:
    """The "cleaned up" cell of the case page's only attempt, as text."""
    client.force_login(user_with(f"viewer-{case.pk}", ["cases.view_case", "cases.view_all_cases"]))
    page = client.get(reverse("admin:cases_case_change", args=[case.pk])).content.decode()
    [cell] = re.findall(r'<td class="mqic-cleanup">(.*?)</td>', page, re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", cell))


def test_a_finished_case_leaves_nothing_on_its_host(hpc, sandbox, mqic_dirs, client, plain_static):
    done, broken = finished(mqic_dirs, "echo ok > out.txt\n", "exit 3\n")
    assert (done.status, broken.status) == (S.COMPLETED, S.FAILED)
    assert our_tasks(sandbox) == [], "their pueue tasks are removed"
    assert os.listdir(hpc.base_dir) == [TRACES], "their folders are deleted, each leaving its trace"
    assert sorted(os.listdir(os.path.join(hpc.base_dir, TRACES))) == sorted(
        posixpath.basename(a.remote_dir) for a in Attempt.objects.filter(case__in=[done, broken])
    )
    assert (mqic_dirs.MQIC_RESULTS_DIR / done.name / "out.txt").read_text() == "ok\n", (
        "after the results came home"
    )
    attempt = Attempt.objects.get(case=done)
    assert attempt.cleaned_at and attempt.results_at and attempt.results_at <= attempt.cleaned_at
    assert done.events.filter(reason__startswith="remote cleanup: pueue task").exists()
    assert cleanup_shown(client, done).endswith(f": pueue task {done.pueue_task_id} removed, folder deleted")


def test_nothing_is_removed_before_the_retention_period(hpc, sandbox, mqic_dirs, settings):
    settings.MQIC_REMOTE_RETENTION_SECONDS = 3600
    [case] = finished(mqic_dirs, "echo ok > out.txt\n")
    assert len(our_tasks(sandbox)) == 1 and Path(case.remote_dir).is_dir()
    Case.objects.filter(pk=case.pk).update(finished_at=timezone.now() - timedelta(hours=2))
    assert monitoring.monitor_pass().cleaned == 1, "a host with nothing running is visited for its hygiene"
    assert our_tasks(sandbox) == [] and not Path(case.remote_dir).exists()


def test_a_cancelled_case_brings_home_what_its_job_left_then_leaves_nothing(hpc, sandbox, mqic_dirs):
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "stopped", "echo partial > partial.txt; sleep 60\n")
    intake.scan()
    submission.submit_pass()
    case = Case.objects.get()
    wait_for(lambda: (Path(case.remote_dir) / "partial.txt").exists(), 10, "the job to write something")
    operations.cancel(case, user_with("op", []))
    monitoring.monitor_pass()
    case.refresh_from_db()
    assert (mqic_dirs.MQIC_RESULTS_DIR / "stopped" / "partial.txt").read_text() == "partial\n"
    assert case.result_path.endswith("stopped") and case.status == S.CANCELLED
    assert our_tasks(sandbox) == [] and not Path(case.remote_dir).exists()


def test_a_reused_task_id_is_never_removed(hpc, sandbox, mqic_dirs, settings, client, plain_static):
    """pueue reuses ids after ``clean``: the task under our old id may be someone else's now."""
    settings.MQIC_REMOTE_RETENTION_SECONDS = 3600
    [case] = finished(mqic_dirs, "true\n")
    sandbox.cli("clean")
    stranger = sandbox.cli("add", "-p", "-l", case.label, "-g", "gpu_b", "--", "sleep 30").stdout.split()[-1]
    assert int(stranger) == case.pueue_task_id, "the id was reused"
    Case.objects.filter(pk=case.pk).update(finished_at=timezone.now() - timedelta(hours=2))
    monitoring.monitor_pass()
    assert str(case.pueue_task_id) in sandbox.status()["tasks"], "not ours: left alone"
    assert Attempt.objects.get(case=case).cleaned_at is not None and not Path(case.remote_dir).exists()
    shown = cleanup_shown(client, case)
    assert shown.endswith(
        f": pueue task {case.pueue_task_id} not removed (gone, or no longer its own), folder deleted"
    )


def test_a_removed_task_is_never_taken_for_lost(hpc, sandbox, mqic_dirs):
    [case] = finished(mqic_dirs, "true\n")
    report = reconciliation.reconcile_pass()
    monitoring.monitor_pass()
    assert Case.objects.get(pk=case.pk).status == S.COMPLETED
    assert not report.orphans and not report.failed


def test_a_claim_of_a_worker_that_died_is_taken_again(hpc, sandbox, mqic_dirs, settings):
    settings.MQIC_REMOTE_RETENTION_SECONDS = 3600
    [case] = finished(mqic_dirs, "true\n")
    Case.objects.filter(pk=case.pk).update(finished_at=timezone.now() - timedelta(hours=2))
    stale = timezone.now() - timedelta(seconds=settings.MQIC_SUBMIT_LEASE_SECONDS + 1)
    Attempt.objects.filter(case=case).update(cleanup_started_at=stale)  # claimed, then the worker died
    assert list(hygiene.due(hpc)) == list(Attempt.objects.filter(case=case))
    assert monitoring.monitor_pass().cleaned == 1


def test_a_folder_whose_results_were_refused_is_kept_on_the_host(
    hpc, sandbox, mqic_dirs, settings, client, plain_static
):
    """Nothing is lost: results MQIC would not bring home (past the caps) stay where they are."""
    settings.MQIC_RESULT_MAX_BYTES = 10_000
    [case] = finished(mqic_dirs, "head -c 50000 /dev/zero > big.bin\n")
    assert case.status == S.FAILED and "its results were refused" in case.last_error
    assert "MQIC_RESULT_MAX_BYTES" in case.last_error
    attempt = Attempt.objects.get(case=case)
    assert attempt.kept and attempt.cleaned_at is None
    assert (Path(case.remote_dir) / "big.bin").stat().st_size == 50_000, "the folder is still on the host"
    assert case.events.filter(reason__contains="is kept on the host").exists()
    monitoring.monitor_pass()
    assert Path(case.remote_dir).exists() and not list(hygiene.due(hpc)), "and it stays"
    assert cleanup_shown(client, case) == f"kept on {hpc.name} at {case.remote_dir}: {attempt.kept}"
