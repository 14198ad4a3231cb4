"""Killed is not dead: a pueued killed with SIGKILL and restarted calls its running tasks
``Killed`` while their processes go on. MQIC must end those processes before the case runs
again, must never hand the GPU group on while they may live, and each attempt works in a folder
of its own, so a late writer never touches the next attempt."""

import re
import time
from pathlib import Path

import pytest

from cases.models import Attempt, Case, CaseStatus
from cases.services import intake, monitoring, submission
from cases.services.jobs import EXIT_MARKER
from resources.jobqueue import JobQueue, Sweep
from resources.models import GpuGroup
from tests.support.cases import busy_case, drop_case
from tests.support.hpc import make_hpc_host
from tests.support.processes import alive
from tests.support.system import wait_for

S = CaseStatus
pytestmark = pytest.mark.django_db


@pytest.fixture
def busy(sshd, remote, mqic_dirs):
    """On the stand-in and on real pueue 4.0.4: both keep a killed daemon's tasks running."""
    make_hpc_host(sshd, remote)
    return busy_case(mqic_dirs.MQIC_NEW_CASES_DIR)


def test_the_old_processes_are_ended_before_the_case_runs_again(busy, remote):
    case, pid = busy
    remote.restart()  # SIGKILL pueued and start it again: the task is Killed, its process lives
    assert remote.status()["tasks"][str(case.pueue_task_id)]["status"]["Done"]["result"] == "Killed"
    assert alive(pid)
    report = monitoring.monitor_pass()
    assert report.requeued == ["busy"]
    assert not alive(pid), "the old attempt's process must be gone before the case runs again"
    moved = Case.objects.get(pk=case.pk).events.filter(to_status=S.SUBMITTED).last()
    ended = re.search(r"ended (\d+) leftover process\(es\)", moved.reason)
    assert ended and int(ended[1]) >= 2, moved.reason  # the wrapper's shells, tee, the job and its sleep
    old_folder = Path(case.remote_dir)
    beat = (old_folder / "heartbeat").read_text()
    time.sleep(0.5)
    assert (old_folder / "heartbeat").read_text() == beat, "nothing writes into the old folder any more"

    (Path(case.source_path) / "run.sh").write_text("echo second > out.txt\n")
    submission.submit_pass()
    again = Case.objects.get(pk=case.pk)
    assert again.status == S.RUNNING and again.remote_dir != case.remote_dir, "a new attempt, a new folder"
    assert Attempt.objects.filter(case=case).count() == 2


def test_while_old_processes_may_live_the_gpu_group_is_kept(busy, remote, monkeypatch):
    case, pid = busy
    remote.restart()
    monkeypatch.setattr(JobQueue, "end_processes", lambda self, variable, values: {v: Sweep(1, 1) for v in values})
    for _ in range(3):
        monitoring.monitor_pass()
    case.refresh_from_db()
    assert case.status == S.RUNNING
    assert GpuGroup.objects.get(pk=case.gpu_group_id).holder_id == case.pk
    notes = case.events.filter(reason__contains="its processes may live on")
    assert notes.count() == 1, "said once, not once per pass"
    monkeypatch.undo()
    monitoring.monitor_pass()
    assert Case.objects.get(pk=case.pk).status == S.SUBMITTED and not alive(pid)


def test_a_killed_task_whose_job_left_its_exit_marker_finished(sshd, remote, mqic_dirs):
    """pueued died under a job that then ran to its end: pueue says Killed, the exit marker says
    done. The marker wins: the case ends with the job's own result, and is not run again."""
    make_hpc_host(sshd, remote)
    drop_case(
        mqic_dirs.MQIC_NEW_CASES_DIR, "late", "while [ ! -e go ]; do sleep 0.05; done; echo done > out.txt\n"
    )
    intake.scan()
    submission.submit_pass()
    case = Case.objects.get(name="late")
    folder = Path(case.remote_dir)
    wait_for(
        lambda: remote.status()["tasks"][str(case.pueue_task_id)]["status"].get("Running"), 10, "the job to start"
    )
    remote.crash()
    (folder / "go").touch()  # the orphaned job finishes while no daemon watches it
    wait_for((folder / EXIT_MARKER).exists, 10, "the job's exit marker")
    remote.start()
    assert remote.status()["tasks"][str(case.pueue_task_id)]["status"]["Done"]["result"] == "Killed"

    report = monitoring.monitor_pass()

    case.refresh_from_db()
    assert (report.completed, report.requeued) == (["late"], [])
    assert (case.status, case.exit_code) == (S.COMPLETED, 0)
    assert (Path(case.result_path) / "out.txt").read_text() == "done\n"
    assert Attempt.objects.filter(case=case).count() == 1, "not run again"
    assert GpuGroup.objects.get(pk=case.gpu_group_id).holder_id is None
