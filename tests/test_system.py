"""End to end with real processes: sshd, the sandbox pueue, qcluster, the watcher and tick."""

import pytest

from cases.models import Case, CaseStatus
from resources.models import GpuGroup
from tests.support.cases import drop_case
from tests.support.hpc import overlaps_per_group
from tests.support.system import running_system, wait_for

S = CaseStatus
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def system_settings(mqic_dirs):
    mqic_dirs.MQIC_QUIET_SECONDS = 2
    return mqic_dirs


def drop(settings, name, script):
    """Written aside, then moved in whole, as users are told to."""
    staging = drop_case(settings.MQIC_NEW_CASES_DIR.parent / "staging", name, script)
    staging.rename(settings.MQIC_NEW_CASES_DIR / name)


def test_dropped_folders_run_to_the_end_one_case_per_gpu_group(hpc, sandbox, system_settings, tmp_path):
    with running_system(system_settings, log_dir=tmp_path):
        for n in range(5):
            drop(system_settings, f"case {n}", f"sleep 1; echo done-{n} > out.txt\n")
        drop(system_settings, "fails", "echo 'bad input' >&2; exit 3\n")
        drop(system_settings, "no script", "")
        (system_settings.MQIC_NEW_CASES_DIR / "no script" / "run.sh").unlink()

        finished = [S.COMPLETED, S.FAILED, S.REJECTED]
        wait_for(
            lambda: Case.objects.count() == 7 and not Case.objects.exclude(status__in=finished).exists(),
            timeout=120,
            message="all cases to finish",
        )
    statuses = dict(Case.objects.values_list("name", "status"))
    assert statuses == {**{f"case {n}": S.COMPLETED for n in range(5)}, "fails": S.FAILED, "no script": S.REJECTED}
    for n in range(5):
        assert (system_settings.MQIC_RESULTS_DIR / f"case {n}" / "out.txt").read_text() == f"done-{n}\n"
    failed = Case.objects.get(name="fails")
    assert failed.exit_code == 3 and "bad input" in failed.log_tail
    assert "run.sh is missing" in Case.objects.get(name="no script").last_error

    assert overlaps_per_group(sandbox.events()) == {"gpu_a": 1, "gpu_b": 1}
    labels = [a["label"] for a in sandbox.adds()]
    assert len(labels) == len(set(labels)) == 6
    assert set(GpuGroup.objects.values_list("status", flat=True)) == {"available"}
