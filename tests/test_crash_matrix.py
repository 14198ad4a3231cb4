"""Crash at every named point, run on, and check that nothing was lost, doubled or left lying.

In ``make test`` (on the sandbox, also on PostgreSQL, and on real pueue) one run arms a worker
at every point at once: it dies at the first point it reaches, a new one dies at the next, and so
on until each point has killed one worker; then the system must settle. In ``make soak`` each
point gets runs of its own: fresh cases, a worker that dies at that point, a clean worker until
all is quiet, ten times over, on both remotes. A cancelled case rides along wherever hygiene can
be cut (``HYGIENE``): what its job left is brought home (``mid_collect``) before its folder goes,
and must come home whole.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from cases.faults import POINTS
from cases.models import Case, CaseEvent
from cases.services import intake, operations, submission
from tests.support import invariants
from tests.support.cases import drop_case
from tests.support.hpc import make_hpc_host
from tests.support.processes import REPO, django_env
from tests.support.users import user_with

pytestmark = pytest.mark.django_db(transaction=True)
EVERY_POINT = [
    pytest.param("sandbox", marks=pytest.mark.engine),
    pytest.param("real", marks=pytest.mark.real_pueue),
]
SOAK = [pytest.mark.slow, pytest.mark.timeout(5400)]
"""Eleven points ten times over, two workers each: far past the suite's five minutes per test."""
CONFIGURATIONS = [
    pytest.param("sandbox", 10, marks=[pytest.mark.engine, *SOAK]),
    pytest.param("real", 10, marks=[pytest.mark.real_pueue, *SOAK]),
]
DATA = {"data.bin": b"\0" * 200_000}
HYGIENE = ("before_cleanup", "mid_collect", "after_cleanup")
"""The points a cancelled case's cleanup passes; only it reaches ``mid_collect``."""


@pytest.fixture
def crash_settings(mqic_dirs):
    """Short leases, so that a dead worker's submission is reconciled soon; an add's lease lasts
    the command timeout and a margin (``submission.held_for_add``), hence a short one too."""
    mqic_dirs.MQIC_SUBMIT_LEASE_SECONDS = 1
    mqic_dirs.MQIC_SSH_COMMAND_TIMEOUT = 10
    return mqic_dirs


def drive(settings, stall=120, **env) -> int:
    """A worker that runs until all is settled; it fails only when nothing moved for ``stall`` s."""
    child_env = django_env(
        MQIC_RESULTS_DIR=str(settings.MQIC_RESULTS_DIR),
        MQIC_SUBMIT_LEASE_SECONDS=str(settings.MQIC_SUBMIT_LEASE_SECONDS),
        MQIC_SSH_COMMAND_TIMEOUT=str(settings.MQIC_SSH_COMMAND_TIMEOUT),
        MQIC_CLOCK_SKEW_SECONDS=str(settings.MQIC_CLOCK_SKEW_SECONDS),
        **env,
    )
    done = subprocess.run([sys.executable, "-m", "tests.support.drive", str(stall)], cwd=REPO, env=child_env)
    return done.returncode


def drop_pair(settings, prefix: str) -> dict[str, str]:
    """A case that succeeds and one whose job fails, with the final status each must reach."""
    drop_case(settings.MQIC_NEW_CASES_DIR, f"{prefix}-ok", files=DATA)
    drop_case(settings.MQIC_NEW_CASES_DIR, f"{prefix}-bad", "echo broken >&2; exit 5\n", files=DATA)
    return {f"{prefix}-ok": "completed", f"{prefix}-bad": "failed"}


def cancel_one(settings, name: str) -> dict[str, str]:
    """A case cancelled while its job runs, so that its cleanup first brings home what the job left.
    An operator cancels, not a worker: it is submitted and cancelled here, before any other case
    is scanned, and the workers then do the rest."""
    drop_case(settings.MQIC_NEW_CASES_DIR, name, "echo partial > partial.txt; sleep 30\n", files=DATA)
    intake.scan()
    submission.submit_pass()
    assert operations.cancel(Case.objects.get(name=name), user_with(f"op-{name}", [])).changed
    return {name: "cancelled"}


def collected(remote, names: list[str]) -> list[str]:
    """What is wrong with the cleanup of these cancelled cases: what their job left did not come
    home whole, or their task or folder is still on the host."""
    found = []
    tasks = {t["label"] for t in remote.status()["tasks"].values()}
    folders = {p.name.rpartition(".")[0] for p in remote.base_dir.iterdir()}
    for case in Case.objects.filter(name__in=names):
        home = Path(case.result_path) / "data.bin" if case.result_path else None
        if home is None or not home.is_file() or home.stat().st_size != len(DATA["data.bin"]):
            found.append(f"{case.name}: what its job left did not come home whole ({case.result_path!r})")
        if case.label in tasks:
            found.append(f"{case.name}: its task is still on the host")
        if case.label in folders:
            found.append(f"{case.name}: its folder is still on the host")
    return found


@pytest.mark.parametrize("remote", EVERY_POINT, indirect=True)
def test_a_worker_dies_at_every_point_in_turn_and_the_system_settles(sshd, remote, crash_settings, tmp_path):
    make_hpc_host(sshd, remote)
    expected = cancel_one(crash_settings, "cancelled")  # passes mid_collect, and the cleanup points
    for point in POINTS:  # two cases per other point: enough work that every point is passed
        if point != "mid_collect":
            expected |= drop_pair(crash_settings, point)
    intake.scan()
    fired = tmp_path / "fired"  # a file per point that has killed its worker
    fired.mkdir()
    codes = []
    while len(codes) <= 2 * len(POINTS) and (not codes or codes[-1] == -9):
        codes.append(drive(crash_settings, MQIC_CRASH_AT=",".join(POINTS), MQIC_CRASH_ONCE=str(fired)))
    assert sorted(p.name for p in fired.iterdir()) == sorted(POINTS), "every point killed a worker"
    assert codes.count(-9) == len(POINTS) and codes[-1] == 0, codes
    total = invariants.check(remote, expected)
    print(f"\ncrash at every point on {remote.kind} pueue: {len(POINTS)} workers killed; {total}")
    assert not total, total
    assert not collected(remote, ["cancelled"])
    adopted = CaseEvent.objects.filter(reason__contains="adopted pueue task")
    assert adopted.exists(), "the crash after pueue add must be healed by adoption, not a second add"


@pytest.mark.parametrize(("remote", "repetitions"), CONFIGURATIONS, indirect=["remote"])
def test_crash_matrix(sshd, remote, crash_settings, tmp_path, repetitions):
    make_hpc_host(sshd, remote)
    expected, findings, crashes = {}, [], 0
    for point in POINTS:
        for rep in range(repetitions):
            names = cancel_one(crash_settings, f"{point}-{rep}-cancelled") if point in HYGIENE else {}
            names |= drop_pair(crash_settings, f"{point}-{rep}")
            intake.scan()
            once = tmp_path / f"crashed-{point}-{rep}"
            code = drive(crash_settings, MQIC_CRASH_AT=point, MQIC_CRASH_ONCE=str(once))
            crashes += code == -9
            assert once.exists(), f"the worker never reached {point}"
            assert drive(crash_settings) == 0, f"the system did not settle after a crash at {point}"
            expected |= names
            if found := invariants.check(remote, names):
                findings.append((point, rep, found))
            if found := collected(remote, [name for name, status in names.items() if status == "cancelled"]):
                findings.append((point, rep, found))
    total = invariants.check(remote, expected)
    print(
        f"\ncrash matrix on {remote.kind} pueue: {len(POINTS)} points x {repetitions} repetitions, "
        f"{crashes} crashes, "
        f"lost {len(total.lost)}, duplicates {len(total.duplicates)}, GPU mismatches {len(total.gpu_mismatches)}, "
        f"remote leftovers {len(total.leftovers)}"
    )
    assert crashes == len(POINTS) * repetitions
    assert not findings, findings
    assert not total, total
    adopted = CaseEvent.objects.filter(
        case__name__startswith="after_pueue_add", reason__contains="adopted pueue task"
    )
    assert adopted.count() >= repetitions, "a crash after pueue add must be healed by adoption, not a second add"
