"""GPU-hour accounting: every way an attempt ends records its GPU seconds (from the claim of its GPU
group to its end, times the group's devices) and adds them to the ledger of its owner, host and
month, once. The end paths run against the real sshd and the sandbox pueue, each with two cases
side by side: one on a group of one device, one on a group of two. An attempt's start is moved an
hour back once it is claimed, so what is recorded is an hour's worth, however fast the machine."""

import threading
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import F
from django.utils import timezone

from cases.models import Attempt, Case, CaseStatus, GpuUsage
from cases.services import accounting, intake, monitoring, operations, reconciliation, submission
from cases.services.jobs import EXIT_MARKER
from cases.services.retention import prune
from cases.services.transitions import transition
from resources.contact import contact
from resources.models import GpuGroup
from tests.factories import make_case, make_group, make_host
from tests.support.cases import drop_case
from tests.support.system import wait_for

S = CaseStatus
HOUR = 3600


@pytest.fixture
def inbox(mqic_dirs):
    return mqic_dirs.MQIC_NEW_CASES_DIR


@pytest.fixture
def one_and_two(hpc):
    """The host's gpu_a holds one device, gpu_b two."""
    GpuGroup.objects.filter(name="gpu_a").update(devices="0")
    GpuGroup.objects.filter(name="gpu_b").update(devices="1,2")
    return hpc


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", password="pw-alice")


def registered(inbox, script: str, alice) -> list[Case]:
    """Two cases, "mine" owned by alice and "ops" the operators' (no owner), registered."""
    for name in ("mine", "ops"):
        drop_case(inbox, name, script)
    intake.scan()
    Case.objects.filter(name="mine").update(owner=alice)
    return list(Case.objects.order_by("name"))


def an_hour_ago(cases: list[Case]) -> None:
    """The open attempts of ``cases`` claimed their group an hour earlier than they did."""
    Attempt.objects.filter(case__in=cases, ended_at__isnull=True).update(
        started_at=F("started_at") - timedelta(seconds=HOUR)
    )


def running(inbox, script: str, alice) -> list[Case]:
    cases = registered(inbox, script, alice)
    assert sorted(submission.submit_pass().started) == ["mine", "ops"]
    an_hour_ago(cases)
    return [Case.objects.get(pk=c.pk) for c in cases]


def ended_attempt(case: Case) -> Attempt:
    """The case's last attempt, ended, with exactly its run time times its group's devices recorded."""
    attempt = Attempt.objects.select_related("gpu_group").filter(case=case).latest("started_at")
    assert attempt.ended_at is not None, f"{case.name}'s attempt ended"
    run = round((attempt.ended_at - attempt.started_at).total_seconds())
    assert run >= HOUR
    assert attempt.gpu_seconds == run * attempt.gpu_group.device_count
    return attempt


def assert_charged(cases: list[Case]) -> None:
    """Each case's attempt recorded its GPU time, one on a single device and one on two, and the ledger
    holds exactly the attempts' seconds, by owner, host and month."""
    attempts = [ended_attempt(case) for case in cases]
    assert sorted(a.gpu_group.device_count for a in attempts) == [1, 2]
    assert ledger() == attempts_by_key()


def ledger() -> dict[tuple, int]:
    rows = GpuUsage.objects.values_list("owner_id", "host_id", "month", "gpu_seconds")
    return {(owner, host, month): seconds for owner, host, month, seconds in rows}


def attempts_by_key() -> dict[tuple, int]:
    found = defaultdict(int)
    for a in Attempt.objects.filter(ended_at__isnull=False).select_related("case", "gpu_group"):
        found[a.case.owner_id, a.gpu_group.host_id, accounting.month_of(a.ended_at)] += a.gpu_seconds
    return dict(found)


def wait_for_exit_markers(cases: list[Case]) -> None:
    for case in cases:
        wait_for((Path(case.remote_dir) / EXIT_MARKER).exists, 30, f"the job of {case.name} to end")


# -- every end path, on the sandbox ------------------------------------------------------------


def test_completed_attempts_record_their_gpu_time(one_and_two, inbox, alice):
    cases = running(inbox, "echo ok > out.txt\n", alice)
    wait_for_exit_markers(cases)
    assert sorted(monitoring.monitor_pass().completed) == ["mine", "ops"]
    assert_charged(cases)
    assert {owner for owner, _host, _month in ledger()} == {alice.pk, None}


def test_failed_attempts_record_their_gpu_time(one_and_two, inbox, alice):
    cases = running(inbox, "exit 3\n", alice)
    wait_for_exit_markers(cases)
    assert sorted(monitoring.monitor_pass().failed) == ["mine", "ops"]
    assert_charged(cases)


def test_cancelled_attempts_record_their_gpu_time(one_and_two, inbox, alice):
    cases = running(inbox, "sleep 30\n", alice)
    for case in cases:
        assert operations.cancel(case, alice).changed
    assert {c.status for c in Case.objects.all()} == {S.CANCELLED}
    assert_charged(cases)


def test_attempts_marked_failed_by_an_operator_record_their_gpu_time(one_and_two, inbox, alice):
    cases = running(inbox, "sleep 30\n", alice)
    for case in cases:
        assert operations.mark_failed(case, alice, why="stuck").changed
    assert {c.status for c in Case.objects.all()} == {S.FAILED}
    assert_charged(cases)


def test_lost_attempts_record_their_gpu_time(one_and_two, inbox, alice, sandbox, settings):
    settings.MQIC_LOST_GRACE_SECONDS = 60
    cases = running(inbox, "sleep 30\n", alice)
    for case in cases:
        sandbox.cli("kill", str(case.pueue_task_id))
    wait_for(lambda: all("Done" in t["status"] for t in sandbox.status()["tasks"].values()), 30, "the kills")
    sandbox.cli("clean")
    monitoring.monitor_pass()
    Case.objects.update(task_missing_since=timezone.now() - timedelta(seconds=61))
    assert sorted(monitoring.monitor_pass().failed) == ["mine", "ops"]
    assert all(c.last_error.startswith("lost:") for c in Case.objects.all())
    assert_charged(cases)


def test_attempts_killed_outside_mqic_and_run_again_record_their_gpu_time(one_and_two, inbox, alice, sandbox):
    cases = running(inbox, "sleep 30\n", alice)
    sandbox.restart()  # pueued killed hard: its tasks are Killed, the cases go back for another attempt
    assert sorted(monitoring.monitor_pass().requeued) == ["mine", "ops"]
    assert {c.status for c in Case.objects.all()} == {S.SUBMITTED}
    assert_charged(cases)


def test_attempts_the_reconciler_retries_record_their_gpu_time(one_and_two, inbox, alice):
    cases = registered(inbox, "echo ok\n", alice)
    for case in cases:
        assert submission.claim(case.pk) is not None  # claimed, then the worker died before its add
    an_hour_ago(cases)
    Case.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    reconciliation.reconcile_pass()
    assert {c.status for c in Case.objects.all()} == {S.SUBMITTED}
    assert_charged(cases)


def test_an_adopted_attempt_adds_only_what_came_after_its_first_end(hpc, inbox, alice):
    GpuGroup.objects.update(devices="0,1")
    drop_case(inbox, "sim", "while [ ! -e go ]; do sleep 0.1; done; echo done > out.txt\n")
    intake.scan()
    submission.submit_pass()
    case = Case.objects.get()
    an_hour_ago([case])
    operations.mark_failed(case, alice)  # its task runs on: an orphan
    first = ended_attempt(case).gpu_seconds
    assert ledger() == {(None, hpc.pk, accounting.month_of(timezone.now())): first}

    with contact(hpc, force=True) as link:
        task = link.queue.state().tasks[case.pueue_task_id]
    assert operations.adopt_orphan(hpc, task.id, task.created_at.isoformat(), alice).changed
    assert Attempt.objects.get().ended_at is None, "the attempt is the case's current one again"
    (Path(case.remote_dir) / "go").touch()
    wait_for_exit_markers([case])
    assert monitoring.monitor_pass().completed == ["sim"]

    attempt = ended_attempt(case)  # claim to the second end, once
    assert attempt.gpu_seconds >= first
    assert sum(ledger().values()) == attempt.gpu_seconds, "the first end's seconds are not charged twice"


# -- the rule itself, by direct calls ----------------------------------------------------------


def open_attempt(group: GpuGroup, started_at: datetime, owner=None) -> Attempt:
    case = make_case(S.RUNNING, owner=owner, gpu_group=group)
    return Attempt.objects.create(
        case=case, token=f"t{case.pk}", remote_dir=f"/d/{case.pk}", gpu_group=group, started_at=started_at
    )


@pytest.mark.django_db
@pytest.mark.parametrize(("zone", "month"), [("UTC", date(2026, 1, 1)), ("Europe/Berlin", date(2026, 2, 1))])
def test_an_attempt_counts_in_the_month_it_ended_in_the_sites_time_zone(settings, zone, month):
    settings.TIME_ZONE = zone
    group = make_group(devices="")  # no devices given: one
    end = datetime(2026, 1, 31, 23, 30, tzinfo=UTC)  # already February in Berlin
    attempt = open_attempt(group, end - timedelta(hours=2))
    accounting.end_attempts(attempt.case_id, end, outcome="completed")
    attempt.refresh_from_db()
    assert (attempt.ended_at, attempt.gpu_seconds) == (end, 2 * HOUR)
    assert ledger() == {(None, group.host_id, month): 2 * HOUR}


@pytest.mark.django_db
def test_an_attempt_is_charged_once_and_a_deleted_case_or_pruning_keeps_its_gpu_time(alice):
    group = make_group(devices="0,1,2")
    start = timezone.now() - timedelta(days=400)
    attempt = open_attempt(group, start, owner=alice)
    case = attempt.case
    assert transition(case, S.RUNNING, S.COMPLETED, reason="job finished", finished_at=start + timedelta(hours=1))
    recorded = Attempt.objects.get().gpu_seconds
    assert recorded >= 3 * 400 * 24 * HOUR
    accounting.end_attempts(case.pk, timezone.now() + timedelta(days=1), outcome="again")  # already ended
    assert Attempt.objects.get().gpu_seconds == recorded and sum(ledger().values()) == recorded

    prune()
    Case.objects.filter(pk=case.pk).delete()  # its attempts go with it
    assert not Attempt.objects.exists()
    assert ledger() == {(alice.pk, group.host_id, accounting.month_of(timezone.now())): recorded}


@pytest.mark.django_db
def test_an_attempt_without_a_gpu_group_used_none():
    case = make_case(S.RUNNING)
    Attempt.objects.create(case=case, token="t", remote_dir="/d/t", started_at=timezone.now() - timedelta(hours=1))
    accounting.end_attempts(case.pk, timezone.now(), outcome="failed")
    assert Attempt.objects.get().gpu_seconds == 0 and not GpuUsage.objects.exists()


@pytest.mark.engine
@pytest.mark.django_db(transaction=True)
def test_attempts_ending_at_once_on_many_workers_all_count_in_one_row(alice):
    group = make_group(make_host(), devices="0")
    now = timezone.now()
    attempts = [open_attempt(group, now - timedelta(seconds=100 + n), owner=alice) for n in range(4)]
    start = threading.Barrier(len(attempts))

    def worker(case_id):
        start.wait()
        try:
            assert transition(case_id, S.RUNNING, S.FAILED, reason="raced")
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(a.case_id,)) for a in attempts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorded = list(Attempt.objects.values_list("gpu_seconds", flat=True))
    assert len(recorded) == 4 and all(s >= 100 for s in recorded)
    assert GpuUsage.objects.count() == 1 and GpuUsage.objects.get().gpu_seconds == sum(recorded)
