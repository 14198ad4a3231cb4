"""Crash at every named point, run on, and check that nothing was lost, doubled or left lying.

Each repetition drops fresh cases, runs a worker process that SIGKILLs itself at the
point (``MQIC_CRASH_AT``), then a clean worker until all is quiet.
"""

import subprocess
import sys

import pytest

from cases.faults import POINTS
from cases.models import CaseEvent
from cases.services import intake
from tests.support import invariants
from tests.support.cases import drop_case
from tests.support.processes import REPO, django_env

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def crash_settings(mqic_dirs):
    mqic_dirs.MQIC_SUBMIT_LEASE_SECONDS = 1
    return mqic_dirs


def drive(settings, seconds=60, **env) -> int:
    child_env = django_env(
        MQIC_RESULTS_DIR=str(settings.MQIC_RESULTS_DIR),
        MQIC_SUBMIT_LEASE_SECONDS=str(settings.MQIC_SUBMIT_LEASE_SECONDS),
        MQIC_CLOCK_SKEW_SECONDS=str(settings.MQIC_CLOCK_SKEW_SECONDS),
        **env,
    )
    done = subprocess.run([sys.executable, "-m", "tests.support.drive", str(seconds)], cwd=REPO, env=child_env)
    return done.returncode


@pytest.mark.parametrize("repetitions", [2, pytest.param(10, marks=pytest.mark.slow)])
def test_crash_matrix(hpc, sandbox, crash_settings, tmp_path, repetitions):
    expected, findings, crashes = {}, [], 0
    for point in POINTS:
        for rep in range(repetitions):
            names = {f"{point}-{rep}-ok": "completed", f"{point}-{rep}-bad": "failed"}
            data = {"data.bin": b"\0" * 200_000}
            drop_case(crash_settings.MQIC_NEW_CASES_DIR, f"{point}-{rep}-ok", files=data)
            drop_case(
                crash_settings.MQIC_NEW_CASES_DIR, f"{point}-{rep}-bad", "echo broken >&2; exit 5\n", files=data
            )
            intake.scan()
            once = tmp_path / f"crashed-{point}-{rep}"
            code = drive(crash_settings, MQIC_CRASH_AT=point, MQIC_CRASH_ONCE=str(once))
            crashes += code == -9
            assert once.exists(), f"the worker never reached {point}"
            assert drive(crash_settings) == 0, f"the system did not settle after a crash at {point}"
            expected |= names
            if found := invariants.check(sandbox, names):
                findings.append((point, rep, found))
    total = invariants.check(sandbox, expected)
    print(
        f"\ncrash matrix: {len(POINTS)} points x {repetitions} repetitions, {crashes} crashes, "
        f"lost {len(total.lost)}, duplicates {len(total.duplicates)}, GPU mismatches {len(total.gpu_mismatches)}"
    )
    assert crashes == len(POINTS) * repetitions
    assert not findings, findings
    assert not total, total
    adopted = CaseEvent.objects.filter(
        case__name__startswith="after_pueue_add", reason__contains="adopted pueue task"
    )
    assert adopted.count() >= repetitions, "a crash after pueue add must be healed by adoption, not a second add"
