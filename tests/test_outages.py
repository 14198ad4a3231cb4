"""Outages of what MQIC itself stands on: here, the results disk filling up while results come home.

Nothing half-written is taken for whole (the case does not end with partial results, and its
folder stays on the host), the case says why it waits, and it ends by itself once there is room.
The results folder is a tmpfs of the test's own, mounted and removed by it (root only).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cases.models import Case, CaseStatus
from cases.services import intake, monitoring, submission
from tests.support.cases import drop_case
from tests.support.system import wait_for

S = CaseStatus
MB = 1 << 20


@pytest.fixture
def small_disk(tmp_path, mqic_dirs):
    """The results folder on a 1 MB tmpfs; ``grow()`` gives it room."""
    folder = tmp_path / "results"
    folder.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(folder)], check=True)
    mqic_dirs.MQIC_RESULTS_DIR = folder

    class Disk:
        path = folder

        @staticmethod
        def grow():
            subprocess.run(["mount", "-o", "remount,size=64m", str(folder)], check=True)

    yield Disk
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_results_disk_makes_the_case_wait_then_it_completes_whole(hpc, sandbox, small_disk, mqic_dirs):
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "big", "head -c 3145728 /dev/urandom > big.bin; echo done\n")
    intake.scan()
    submission.submit_pass()
    case = Case.objects.get(name="big")
    remote = Path(case.remote_dir)
    wait_for(lambda: (remote / ".mqic_exit_code").exists(), 30, "the job to end")

    for _ in range(2):
        report = monitoring.monitor_pass()
        assert (report.completed, report.failed) == ([], [])
    case.refresh_from_db()
    assert case.status == S.RUNNING, "not ended on what could not come home"
    notes = case.events.filter(reason__startswith=monitoring.RESULTS_WAIT)
    assert notes.count() == 1 and "No space left on device" in notes.get().reason, "said once, with why"
    assert (remote / "big.bin").stat().st_size == 3 * MB, "the job's folder stays on the host"
    assert not (small_disk.path / "big").exists(), "nothing half-written is left as results"

    small_disk.grow()
    assert monitoring.monitor_pass().completed == ["big"]
    case.refresh_from_db()
    assert (Path(case.result_path) / "big.bin").stat().st_size == 3 * MB


def test_a_full_remote_disk_during_the_upload_runs_nothing_and_the_case_waits(hpc, sandbox, mqic_dirs):
    """The host's disk fills while the case folder goes up: the partial folder is never run, the
    case waits with the reason, and it runs once the host has room."""
    base = sandbox.base_dir
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(base)], check=True)
    try:
        drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "heavy", "echo ran > out.txt\n", files={"in.bin": b"\1" * 3 * MB})
        intake.scan()
        report = submission.submit_pass()
        case = Case.objects.get(name="heavy")
        assert (report.started, case.status, case.attempts) == ([], S.SUBMITTED, 0)
        assert case.last_error.startswith("waiting: could not send") and "No space left" in case.last_error
        assert sandbox.adds() == [], "no task for a folder that did not arrive whole"
        subprocess.run(["mount", "-o", "remount,size=64m", str(base)], check=True)
        assert submission.submit_pass().started == ["heavy"]
        wait_for(
            lambda: monitoring.monitor_pass().completed == ["heavy"], 60, "the case to complete", interval=0.3
        )
        case.refresh_from_db()
        assert (Path(case.result_path) / "out.txt").read_text() == "ran\n" and case.last_error == ""
    finally:
        subprocess.run(["umount", "-l", str(base)], check=False)
