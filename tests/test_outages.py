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
