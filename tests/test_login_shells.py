"""Every login shell a site may give the HPC account: bash, dash, zsh, tcsh and fish.

Each test runs on real pueue 4.0.4, as a fresh account of the real sshd whose login shell is the
one named, whose rc files greet on stdout and stderr for every command (``tests/support/accounts``),
whose HOME and case folder have spaces in their names, and whose pueued runs as the account. What
broke before every command went to ``sh`` in a frame (``resources/remote/script.py``): under tcsh
every clean-up failed and the exit markers could not be read after a pueued restart; fish exited 0
on lines it could not parse, so clean-ups were recorded that never happened; zsh did not split the
pids of the process sweep, so leftovers lived on and the case ran a second time beside them.
"""

from __future__ import annotations

import time
from pathlib import Path

import paramiko
import pytest

from cases.models import Attempt, Case, CaseEvent, CaseStatus
from cases.services import intake, monitoring, reconciliation, submission
from resources.jobqueue import TRACES
from resources.models import GpuGroup, HpcHost
from tests.support.accounts import SHELLS, ShellAccount
from tests.support.cases import busy_case, drop_case
from tests.support.hpc import GROUPS, RealPueue, make_hpc_host
from tests.support.processes import alive

S = CaseStatus
pytestmark = [pytest.mark.real_pueue, pytest.mark.django_db]
UNFINISHED = (S.SUBMITTED, S.SUBMITTING, S.RUNNING)


class Site:
    def __init__(self, account: ShellAccount, remote: RealPueue, host: HpcHost):
        self.account, self.remote, self.host = account, remote, host


@pytest.fixture(params=list(SHELLS))
def site(request, sshd, mqic_dirs):
    public = Path(f"{sshd.client_key}.pub").read_text().split()
    account = ShellAccount(request.param, " ".join(public[:2]))
    remote = None
    try:
        remote = RealPueue(groups=GROUPS, user=account.name, base_name="case folders")
        host = make_hpc_host(sshd, remote, username=account.name)
        assert_the_account_talks(sshd, account)
        yield Site(account, remote, host)
    finally:
        if remote is not None:
            remote.cleanup()
        account.close()


def assert_the_account_talks(sshd, account: ShellAccount) -> None:
    """The noise is real: a plain exec of ``true`` prints the rc files' banner and module note,
    and the login shell is the one named (so the test would see what a site sees)."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(sshd.known_hosts))
    client.connect(
        "127.0.0.1", sshd.port, username=account.name, key_filename=str(sshd.client_key), allow_agent=False
    )
    try:
        _, out, err = client.exec_command("echo $SHELL")
        stdout, stderr = out.read().decode(), err.read().decode()
    finally:
        client.close()
    assert SHELLS[account.shell][0] in stdout
    if account.shell != "dash":  # dash -c reads no rc file
        assert account.banner in stdout and account.note in stderr, (stdout, stderr)


def settle(timeout: float = 180) -> None:
    """Run the passes until no case is unfinished and every ended attempt is cleaned up (a state,
    with a generous bound for a loaded machine)."""
    untidy = Attempt.objects.filter(case__status__in=[S.COMPLETED, S.FAILED], cleaned_at__isnull=True, kept="")
    deadline = time.monotonic() + timeout
    rounds = 0
    while Case.objects.filter(status__in=UNFINISHED).exists() or untidy.exists():
        assert time.monotonic() < deadline, list(Case.objects.values_list("name", "status", "last_error"))
        submission.submit_pass()
        monitoring.monitor_pass()
        if rounds % 5 == 4:
            reconciliation.reconcile_pass()
        rounds += 1
        time.sleep(0.2)


def test_cases_run_end_and_leave_nothing_on_the_host(site, mqic_dirs):
    inbox = mqic_dirs.MQIC_NEW_CASES_DIR
    drop_case(inbox, "good", "echo result > out.txt\n", files={"in put.dat": b"x" * 50_000})
    drop_case(inbox, "bad", "echo broken >&2; exit 5\n")
    intake.scan()
    settle()
    good, bad = Case.objects.get(name="good"), Case.objects.get(name="bad")
    assert (good.status, good.exit_code, bad.status, bad.exit_code) == (S.COMPLETED, 0, S.FAILED, 5)
    assert (Path(good.result_path) / "out.txt").read_text() == "result\n"
    assert "broken" in (Path(bad.result_path) / ".mqic_job.log").read_text()
    cleaned = CaseEvent.objects.filter(reason__startswith="remote cleanup: pueue task")
    assert cleaned.count() == 2, list(CaseEvent.objects.values_list("reason", flat=True))
    # What MQIC recorded as removed is removed: no task in pueue, no folder on the host.
    assert site.remote.status()["tasks"] == {}
    assert [p.name for p in site.remote.base_dir.iterdir()] == [TRACES], "only the traces of the cleaned attempts"
    assert len(list((site.remote.base_dir / TRACES).iterdir())) == 2
    site.host.refresh_from_db()
    assert site.host.consecutive_failures == 0 and not site.host.last_error
    assert good.last_error == "" and "5" in bad.last_error
    said = " ".join(CaseEvent.objects.values_list("reason", flat=True))
    assert site.account.banner not in said and site.account.note not in said, "the rc files' talk is no data"
    assert GpuGroup.objects.filter(holder_id__isnull=False).count() == 0


def test_after_a_pueued_restart_the_old_processes_are_ended_and_the_case_runs_once_more(site, mqic_dirs):
    """pueued SIGKILLed and started again calls its task Killed while the job goes on: the process
    sweep must end every process of the attempt (several pids at once) before the case runs again,
    and then the case runs once, in a new folder, to its end."""
    case, pid = busy_case(mqic_dirs.MQIC_NEW_CASES_DIR)
    site.remote.restart()
    assert site.remote.status()["tasks"][str(case.pueue_task_id)]["status"]["Done"]["result"] == "Killed"
    assert alive(pid)
    report = monitoring.monitor_pass()
    assert report.requeued == ["busy"], (report, list(case.events.values_list("reason", flat=True)))
    assert not alive(pid), "the old attempt's processes are gone before the case runs again"
    (Path(case.source_path) / "run.sh").write_text("echo second > out.txt\n")
    settle()
    case.refresh_from_db()
    assert case.status == S.COMPLETED and (Path(case.result_path) / "out.txt").read_text() == "second\n"
    assert Attempt.objects.filter(case=case).count() == 2
    assert site.remote.status()["tasks"] == {} and [p.name for p in site.remote.base_dir.iterdir()] == [TRACES]
