"""The transition table, the compare-and-swap service and its event log."""

import json
import subprocess
import sys
from unittest import mock

import pytest

from cases.models import TRANSITIONS, Case, CaseEvent, CaseStatus
from cases.services import submission
from cases.services.transitions import IllegalTransition, transition
from resources.models import GpuGroup
from resources.services import free_groups, lock_free_group, release_group, set_enabled
from tests.factories import make_case, make_group, make_host
from tests.support.processes import REPO, django_env

S = CaseStatus
pytestmark = [pytest.mark.django_db, pytest.mark.engine]


def test_every_status_has_a_row_in_the_table():
    assert set(TRANSITIONS) == {None, *S.values}
    for targets in TRANSITIONS.values():
        assert targets <= set(S.values)


def test_completed_is_final_and_registration_only_enters_submitted_or_rejected():
    assert TRANSITIONS[S.COMPLETED] == frozenset()
    assert TRANSITIONS[None] == {S.SUBMITTED, S.REJECTED}


@pytest.mark.parametrize("old", list(S.values))
@pytest.mark.parametrize("new", list(S.values))
def test_illegal_moves_raise_and_change_nothing(old, new):
    case = make_case(status=old)
    if new in TRANSITIONS[old]:
        assert transition(case, old, new, reason="legal") is True
        assert Case.objects.get(pk=case.pk).status == new
        assert case.events.get().to_status == new
    else:
        with pytest.raises(IllegalTransition):
            transition(case, old, new, reason="illegal")
        assert Case.objects.get(pk=case.pk).status == old
        assert not case.events.exists()


def test_a_stale_expectation_loses_and_writes_no_event():
    case = make_case(status=S.RUNNING)
    assert transition(case.pk, S.SUBMITTED, S.SUBMITTING, reason="stale") is False
    assert Case.objects.get(pk=case.pk).status == S.RUNNING
    assert not CaseEvent.objects.exists()


def test_transition_writes_fields_phase_stamp_and_event_in_one_go():
    case = make_case(status=S.SUBMITTING)
    assert transition(case, S.SUBMITTING, S.RUNNING, reason="task stored", detail={"id": 4}, pueue_task_id=4)
    case.refresh_from_db()
    assert (case.status, case.pueue_task_id) == (S.RUNNING, 4)
    assert case.running_at is not None
    event = case.events.get()
    assert (event.from_status, event.to_status, event.reason) == (S.SUBMITTING, S.RUNNING, "task stored")
    assert (event.detail, event.actor, event.user) == ({"id": 4}, "system", None)


def test_an_event_names_the_user(django_user_model):
    user = django_user_model.objects.create_user("ops")
    case = make_case(status=S.FAILED)
    transition(case, S.FAILED, S.SUBMITTED, reason="retry", user=user)
    assert case.events.get().actor == "ops"


def test_gpu_lock_bumps_generation_and_release_needs_the_current_one():
    group = make_group()
    locked = lock_free_group(holder_id=1)
    assert (locked.pk, locked.status, locked.holder_id, locked.lease_generation) == (
        group.pk,
        "assigned",
        1,
        1,
    )
    assert lock_free_group(holder_id=2) is None
    assert release_group(group.pk, holder_id=1, generation=0) is False
    assert release_group(group.pk, holder_id=2, generation=1) is False
    assert release_group(group.pk, holder_id=1, generation=1) is True
    assert release_group(group.pk, holder_id=1, generation=1) is False
    assert lock_free_group(holder_id=3).lease_generation == 2


def test_disabled_flagged_and_disabled_host_groups_are_never_locked():
    make_group(status=GpuGroup.Status.DISABLED)
    make_group(blocked_reason="task 3 of someone else runs here")
    make_group(host=make_host(enabled=False))
    assert lock_free_group(holder_id=1) is None


def test_enable_and_disable_leave_an_assigned_group_alone():
    group = make_group()
    lock_free_group(holder_id=9)
    assert set_enabled(group.pk, False) is False
    release_group(group.pk, holder_id=9, generation=1)
    assert set_enabled(group.pk, False) is True
    assert set_enabled(group.pk, True) is True


def test_a_claim_batch_passes_over_what_peers_take_after_it_read_them():
    """A pass reads the free groups and the waiting cases once. A group a peer locks after that read
    is passed over for the next; a case a peer moves after it gives its group back to the pool, for
    the case behind it."""
    host = make_host()
    first, second, third = (make_group(host, name=f"g{n}", pueue_group=f"g{n}") for n in range(3))
    oldest, cancelled, newest = make_case(), make_case(), make_case()

    def read_then_a_peer_locks_the_first():
        pool = free_groups()
        assert lock_free_group(holder_id=999) == first
        return pool

    claim_on = submission.claim_on

    def a_peer_cancels_it_first(group, case, prefix):
        if case.pk == cancelled.pk:
            transition(cancelled.pk, S.SUBMITTED, S.CANCELLED, reason="a peer cancelled it")
        return claim_on(group, case, prefix)

    with (
        mock.patch.object(submission, "free_groups", read_then_a_peer_locks_the_first),
        mock.patch.object(submission, "claim_on", a_peer_cancels_it_first),
    ):
        claimed = submission.claim_cases()

    assert [(case.name, case.gpu_group.name) for case in claimed] == [(oldest.name, "g1"), (newest.name, "g2")]
    assert GpuGroup.objects.get(pk=first.pk).holder_id == 999
    for case, group in ((oldest, second), (newest, third)):
        stored, held = Case.objects.get(pk=case.pk), GpuGroup.objects.get(pk=group.pk)
        assert (stored.status, stored.lease_generation) == (S.SUBMITTING, held.lease_generation)
        assert held.holder_id == case.pk
    stored = Case.objects.get(pk=cancelled.pk)
    assert (stored.status, stored.gpu_group, stored.attempt_rows.count()) == (S.CANCELLED, None, 0)


def test_a_case_a_peer_claimed_first_gets_no_second_group():
    host = make_host()
    make_group(host, name="g0", pueue_group="g0")
    make_group(host, name="g1", pueue_group="g1")
    case = make_case()

    def read_then_a_peer_claims_the_case():
        pool = free_groups()
        assert submission.claim_on(free_groups()[0], Case.objects.get(pk=case.pk), None) is True
        return pool

    with mock.patch.object(submission, "free_groups", read_then_a_peer_claims_the_case):
        assert submission.claim_cases() == []
    assert GpuGroup.objects.filter(holder_id=case.pk).count() == 1
    assert case.attempt_rows.count() == 1


@pytest.mark.django_db(transaction=True)
def test_racing_processes_never_both_win(tmp_path):
    """Six processes race on the same 30 cases and 3 GPU groups: one winner per row."""
    cases = [make_case() for _ in range(30)]
    groups = [make_group() for _ in range(3)]
    ids = ",".join(str(c.pk) for c in cases)
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.race_worker", ids, str(tmp_path), "6"],
            cwd=REPO,
            env=django_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    results = [json.loads(w.communicate(timeout=120)[0]) for w in workers]
    assert all(w.returncode == 0 for w in workers)

    won_cases = [c for r in results for c in r["cases"]]
    assert sorted(won_cases) == sorted(c.pk for c in cases)
    assert CaseEvent.objects.count() == len(cases)
    won_groups = [g for r in results for g in r["groups"]]
    assert sorted(won_groups) == sorted(g.pk for g in groups)
    assert sum(1 for r in results if r["cases"]) > 1, "the race never happened: one worker took everything"
    assert set(GpuGroup.objects.values_list("lease_generation", flat=True)) == {1}
