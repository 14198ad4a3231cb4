"""A database restored from a backup taken while cases ran, after they ended: every case reaches
its true end and nothing runs twice (issue 24, item 2). Real sshd and sandbox pueue.

The backup holds two cases ``running`` and one ``submitted``; after it was taken all three ran,
ended, came home and (retention 0) were cleaned up from the host, or (retention 3600) are still
there. Then the backup is restored and ``after_restore`` run, as docs/deployment.md says.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.core.management import call_command

from cases.models import FINISHED, Attempt, Case, CaseEvent, CaseStatus
from cases.services import intake, monitoring, reconciliation, submission
from cases.services.monitoring import CLEANED_NOT_HOME
from cases.services.restore import CHECKING, RAN_AFTER_BACKUP
from resources.models import GpuGroup
from tests.support import backup, invariants
from tests.support.cases import drop_case
from tests.support.system import wait_for

S = CaseStatus
pytestmark = pytest.mark.django_db
NAMES = ["c0", "c1", "c2"]


def passes() -> None:
    reconciliation.reconcile_pass()
    submission.submit_pass()
    monitoring.monitor_pass()


def settled() -> bool:
    passes()
    return not Case.objects.exclude(status__in=FINISHED).exists()


def ran_after_a_backup(mqic_dirs, tmp_path, retention: float) -> str:
    """Three cases, two GPU groups: a backup while c0 and c1 run and c2 waits; then all three run
    to their end. Returns the backup."""
    mqic_dirs.MQIC_REMOTE_RETENTION_SECONDS = retention
    go = tmp_path / "go"
    for name in NAMES:
        drop_case(
            mqic_dirs.MQIC_NEW_CASES_DIR, name, f"while [ ! -e {go} ]; do sleep 0.1; done; echo {name} > out.txt\n"
        )
    intake.scan()
    submission.submit_pass()
    statuses = dict(Case.objects.values_list("name", "status"))
    assert statuses == {"c0": S.RUNNING, "c1": S.RUNNING, "c2": S.SUBMITTED}
    taken = backup.take()
    go.touch()
    wait_for(settled, 60, "every case to end after the backup")
    assert set(Case.objects.values_list("status", flat=True)) == {S.COMPLETED}
    return taken


def results(mqic_dirs, name: str) -> Path:
    return Path(mqic_dirs.MQIC_RESULTS_DIR) / name


def assert_once_each(sandbox) -> None:
    found = invariants.check(sandbox, {})
    assert not found.duplicates and not found.gpu_mismatches, found
    labels = sorted(a["label"] for a in sandbox.adds())
    assert labels == sorted(Case.objects.values_list("label", flat=True)), "each case was added once"
    assert not GpuGroup.objects.filter(status=GpuGroup.Status.ASSIGNED).exists()


@pytest.mark.parametrize("retention", [0, 3600])
def test_a_restored_backup_brings_every_case_to_its_true_end_and_runs_none_twice(
    hpc, sandbox, mqic_dirs, tmp_path, retention
):
    taken = ran_after_a_backup(mqic_dirs, tmp_path, retention)
    backup.restore(taken)
    assert dict(Case.objects.values_list("name", "status")) == {
        "c0": S.RUNNING,
        "c1": S.RUNNING,
        "c2": S.SUBMITTED,
    }

    call_command("after_restore")
    wait_for(settled, 60, "every restored case to reach its end")

    for case in Case.objects.all():
        assert case.status == S.COMPLETED, (case.name, list(case.events.values_list("reason", flat=True)))
        assert (results(mqic_dirs, case.name) / "out.txt").read_text() == f"{case.name}\n"
        assert not case.restore_check
    assert_once_each(sandbox)
    c2 = Case.objects.get(name="c2")
    assert c2.events.filter(reason__contains=RAN_AFTER_BACKUP, to_status=S.COMPLETED).exists()
    [attempt] = Attempt.objects.filter(case=c2)
    if retention:  # its task and folder are still on the host: hygiene removes them in time
        assert attempt.task_id is not None and attempt.cleaned_at is None and attempt.gpu_group is not None
    else:
        for name in ("c0", "c1"):
            assert Case.objects.get(name=name).events.filter(reason__contains="already home").exists()


def test_a_run_still_going_after_the_backup_is_adopted_once_its_gpu_group_is_free(
    hpc, sandbox, mqic_dirs, tmp_path
):
    """After the backup c0 ended and c2 started in its GPU group; restored, the database still
    gives that group to c0 and calls c2 waiting. c2's task, found by its label in an attempt folder
    of the host, is adopted once c0 has ended (not run a second time), and runs to its end."""
    mqic_dirs.MQIC_REMOTE_RETENTION_SECONDS = 3600
    gates = {name: tmp_path / f"go-{name}" for name in NAMES}
    for name in NAMES:
        drop_case(
            mqic_dirs.MQIC_NEW_CASES_DIR,
            name,
            f"while [ ! -e {gates[name]} ]; do sleep 0.1; done; echo {name} > out.txt\n",
        )
    intake.scan()
    submission.submit_pass()
    taken = backup.take()
    gates["c0"].touch()
    wait_for(lambda: passes() or Case.objects.get(name="c2").status == S.RUNNING, 60, "c2 to run in c0's group")
    backup.restore(taken)

    call_command("after_restore")
    c2 = Case.objects.get(name="c2")
    assert (c2.status, c2.restore_check) == (S.SUBMITTED, True), "its group is c0's until c0 ends"
    wait_for(lambda: passes() or Case.objects.get(name="c2").status == S.RUNNING, 60, "c2 to be adopted")
    assert (
        Case.objects.get(name="c2").events.filter(reason__contains="found on the host after the database").exists()
    )
    for gate in gates.values():
        gate.touch()
    wait_for(settled, 60, "every case to end")

    assert set(Case.objects.values_list("status", flat=True)) == {S.COMPLETED}
    assert (results(mqic_dirs, "c2") / "out.txt").read_text() == "c2\n"
    assert_once_each(sandbox)


def test_where_the_evidence_is_gone_the_case_fails_saying_so_and_is_not_run_again(
    hpc, sandbox, mqic_dirs, tmp_path
):
    """Retention 0: tasks and folders are gone; c1's and c2's results were moved away meanwhile.
    Only the traces of their cleaned-up attempts are left on the host: they fail, not run again."""
    taken = ran_after_a_backup(mqic_dirs, tmp_path, 0)
    for name in ("c1", "c2"):
        shutil.rmtree(results(mqic_dirs, name))
    backup.restore(taken)

    call_command("after_restore")
    wait_for(settled, 60, "every restored case to reach its end")

    statuses = dict(Case.objects.values_list("name", "status"))
    assert statuses == {"c0": S.COMPLETED, "c1": S.FAILED, "c2": S.FAILED}
    assert Case.objects.get(name="c1").last_error == CLEANED_NOT_HOME
    c2 = Case.objects.get(name="c2")
    assert RAN_AFTER_BACKUP in c2.last_error and "evidence is gone" in c2.last_error
    assert c2.label in c2.last_error, "it names what was found on the host"
    assert_once_each(sandbox)


def test_a_submitting_case_whose_run_ended_after_the_backup_ends_from_its_results(
    hpc, sandbox, mqic_dirs, tmp_path
):
    """The backup caught the case ``submitting`` (claimed, not yet added); it ran and was cleaned up
    afterwards. Restored, its lease has run out: the reconciler finds no task, but the results
    home carry this attempt's origin: it completes, and is not tried again."""
    mqic_dirs.MQIC_REMOTE_RETENTION_SECONDS = 0
    mqic_dirs.MQIC_SUBMIT_LEASE_SECONDS = 1
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "c0", "echo c0 > out.txt\n")
    intake.scan()
    [case] = submission.claim_cases()
    taken = backup.take()
    report = submission.SubmitReport()
    submission.submit_to_host(case.gpu_group.host, [case], report)
    assert report.started == ["c0"]
    wait_for(settled, 60, "the case to end after the backup")
    backup.restore(taken)
    assert Case.objects.get().status == S.SUBMITTING

    wait_for(settled, 60, "the restored case to reach its end")

    case = Case.objects.get()
    assert case.status == S.COMPLETED, list(case.events.values_list("reason", flat=True))
    assert case.events.filter(reason__contains="already home", from_status=S.SUBMITTING).exists()
    assert_once_each(sandbox)


def test_a_host_that_cannot_be_asked_keeps_a_restored_waiting_case_waiting(hpc, sandbox, mqic_dirs, tmp_path):
    """ "Could not ask" is never "not found": while the host does not answer, the waiting case that
    the backup knew (and whose results were moved away) is neither sent nor settled; once it
    answers, the trace of its cleaned-up run settles it."""
    taken = ran_after_a_backup(mqic_dirs, tmp_path, 0)
    shutil.rmtree(results(mqic_dirs, "c2"))
    backup.restore(taken)
    port = hpc.port
    hpc.port = 9  # discard: nothing answers SSH there
    hpc.save(update_fields=["port"])

    call_command("after_restore")
    passes()

    c2 = Case.objects.get(name="c2")
    assert (c2.status, c2.restore_check) == (S.SUBMITTED, True)
    assert CaseEvent.objects.filter(case=c2, reason__startswith=CHECKING).exists()
    assert [a["label"] for a in sandbox.adds()].count(c2.label) == 1, "not sent again"

    hpc.port = port
    hpc.save(update_fields=["port"])
    hpc.next_try_at = None
    wait_for(settled, 90, "the case to settle once the host answers")
    assert Case.objects.get(name="c2").status == S.FAILED
    assert RAN_AFTER_BACKUP in Case.objects.get(name="c2").last_error
    assert_once_each(sandbox)


def test_a_case_registered_after_the_backup_is_not_run_again_from_the_inbox(hpc, sandbox, mqic_dirs):
    """The backup predates the case: restored, the database does not know it, and its folder is
    still in the inbox. Its results at home say it ran: it is registered rejected, saying so."""
    taken = backup.take()
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "late", "echo late > out.txt\n")
    intake.scan()
    wait_for(settled, 60, "the case to end after the backup")
    backup.restore(taken)
    assert not Case.objects.exists()

    intake.scan()
    wait_for(settled, 60, "the restored database to settle")

    case = Case.objects.get()
    assert case.status == S.REJECTED
    assert "already in" in case.last_error and "restored" in case.last_error
    assert (results(mqic_dirs, "late") / "out.txt").read_text() == "late\n", "its results stay as they were"
    assert len(sandbox.adds()) == 1, "not run again"
