"""End to end with real processes: sshd, a pueue daemon, qcluster, the watcher and tick.

On the sandbox (also on PostgreSQL: ``engine``) and on real pueue (``real_pueue``, SQLite only:
the engine's part is the same whichever pueue runs the jobs).
"""

import pytest

from cases.models import Attempt, Case, CaseStatus
from resources.models import GpuGroup
from tests.support import invariants, stamps
from tests.support.cases import drop_case
from tests.support.hpc import make_hpc_host, overlaps_per_group
from tests.support.system import running_system, wait_for

S = CaseStatus
pytestmark = pytest.mark.django_db(transaction=True)
REMOTES = [pytest.param("sandbox", marks=pytest.mark.engine), pytest.param("real", marks=pytest.mark.real_pueue)]


@pytest.fixture
def system_settings(mqic_dirs):
    mqic_dirs.MQIC_QUIET_SECONDS = 2
    return mqic_dirs


def drop(settings, name, script):
    """Written aside, then moved in whole, as users are told to."""
    staging = drop_case(settings.MQIC_NEW_CASES_DIR.parent / "staging", name, script)
    staging.rename(settings.MQIC_NEW_CASES_DIR / name)


@pytest.mark.parametrize("remote", REMOTES, indirect=True)
def test_dropped_folders_run_to_the_end_one_case_per_gpu_group(sshd, remote, system_settings, tmp_path):
    make_hpc_host(sshd, remote)
    ran = tmp_path / "stamps.log"
    with running_system(system_settings, log_dir=tmp_path):
        for n in range(5):
            drop(system_settings, f"case {n}", stamps.stamped(f"sleep 1; echo done-{n} > out.txt", ran))
        drop(system_settings, "fails", stamps.stamped("echo 'bad input' >&2; exit 3", ran))
        drop(system_settings, "no script", "")
        (system_settings.MQIC_NEW_CASES_DIR / "no script" / "run.sh").unlink()

        finished = [S.COMPLETED, S.FAILED, S.REJECTED]
        wait_for(
            lambda: Case.objects.count() == 7 and not Case.objects.exclude(status__in=finished).exists(),
            timeout=120,
            message="all cases to finish",
        )
        untidy = Attempt.objects.filter(cleaned_at__isnull=True)
        wait_for(lambda: not untidy.exists(), timeout=30, message="the remote cleanup of every attempt")
    statuses = dict(Case.objects.values_list("name", "status"))
    assert statuses == {**{f"case {n}": S.COMPLETED for n in range(5)}, "fails": S.FAILED, "no script": S.REJECTED}
    for n in range(5):
        assert (system_settings.MQIC_RESULTS_DIR / f"case {n}" / "out.txt").read_text() == f"done-{n}\n"
    failed = Case.objects.get(name="fails")
    assert failed.exit_code == 3 and "bad input" in failed.log_tail
    assert "run.sh is missing" in Case.objects.get(name="no script").last_error

    expected = {**{f"case {n}": S.COMPLETED for n in range(5)}, "fails": S.FAILED}
    assert not invariants.check(remote, expected)
    assert len(stamps.events(ran)) == 12, "every job started and ended once"
    assert overlaps_per_group(stamps.events(ran)) == {"gpu_a": 1, "gpu_b": 1}
    assert len(remote.adds()) == 6
    assert set(GpuGroup.objects.values_list("status", flat=True)) == {"available"}
