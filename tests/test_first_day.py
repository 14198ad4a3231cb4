"""A host's first day, as a new operator meets it: groups not created yet, pueue that cannot run.

``configure_hpc`` contacts each host and says what it lacks (``--create-groups`` creates the pueue
groups); a case waiting for a group whose pueue group is missing says so, spends no attempt, and
runs once the group exists, with no operator action; a pueue command that cannot run is a certain
answer (no task can exist), shown on the host and the case, never a case stuck ``submitting``.
"""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from cases.models import Case, CaseStatus
from cases.services import intake, monitoring, passes, reconciliation, submission
from console.selectors import overview
from resources import operations
from resources.config import ConfigError, check_host
from resources.models import GpuGroup, HpcHost
from tests.support.cases import drop_case
from tests.support.hpc import RealPueue, Sandbox, make_hpc_host
from tests.support.system import wait_for

S = CaseStatus
pytestmark = pytest.mark.django_db


@pytest.fixture(params=["sandbox", pytest.param("real", marks=pytest.mark.real_pueue)])
def bare(request):
    """A pueued that runs, on its first day: no pueue group but ``default``."""
    box = Sandbox() if request.param == "sandbox" else RealPueue()
    yield box
    box.cleanup()


def configure(settings, sshd, bare, *args) -> str:
    settings.MQIC_HPC_CONFIG = ""
    settings.MQIC_HPC_HOST, settings.MQIC_HPC_PORT, settings.MQIC_HPC_USER = "127.0.0.1", sshd.port, "root"
    settings.MQIC_HPC_KEY, settings.MQIC_HPC_KNOWN_HOSTS = str(sshd.client_key), str(sshd.known_hosts)
    settings.MQIC_HPC_BASE_DIR, settings.MQIC_PUEUE = str(bare.base_dir), bare.pueue
    settings.MQIC_GPU_GROUPS = ["gpu_a", "gpu_b"]
    out = StringIO()
    call_command("configure_hpc", *args, stdout=out)
    return out.getvalue()


def test_configure_hpc_says_what_a_host_lacks_and_creates_its_groups(settings, sshd, bare):
    said = configure(settings, sshd, bare)
    assert "ok: reachable at 127.0.0.1" in said and "ok: host key SHA256:" in said
    assert "ok: pueue 4.0.4 runs" in said and "ok: pueued answers" in said
    assert "NOT READY: GPU group gpu_a: no pueue group gpu_a on hpc: create it there" in said, said
    assert "hpc is ready" not in said
    assert set(GpuGroup.objects.values_list("blocked_reason", flat=True)) != {""}, "missing groups are blocked"
    assert HpcHost.objects.get().pueue_version == "4.0.4"

    said = configure(settings, sshd, bare, "--create-groups")
    assert "ok: GPU group gpu_a: pueue group gpu_a created" in said and "hpc is ready" in said, said
    assert {"gpu_a", "gpu_b"} <= set(bare.status()["groups"])
    assert set(GpuGroup.objects.values_list("blocked_reason", flat=True)) == {""}, "and unblocked at once"
    assert "gpu_a present" in configure(settings, sshd, bare)


def test_configure_hpc_stops_at_an_untrusted_key_and_offline_contacts_nothing(settings, sshd, bare, tmp_path):
    settings.MQIC_HPC_CONFIG = ""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    said = configure(settings, sshd, bare, "--offline")
    assert "ok:" not in said and "NOT READY" not in said
    settings.MQIC_HPC_KNOWN_HOSTS = str(empty)
    out = StringIO()
    call_command("configure_hpc", stdout=out)
    assert "NOT READY: host key SHA256:" in out.getvalue() and "trust_host_key hpc" in out.getvalue()


def test_a_case_waits_for_a_missing_group_spends_no_attempt_and_runs_once_it_exists(
    sshd, bare, mqic_dirs, admin_user
):
    host = make_hpc_host(sshd, bare)
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "first", "echo ok > out.txt\n")
    intake.scan()
    for _ in range(4):  # each group is tried once, found missing and blocked; then the case waits
        submission.submit_pass()
    case = Case.objects.get(name="first")
    assert (case.status, case.attempts) == (S.SUBMITTED, 0)
    assert case.last_error.startswith("waiting: no pueue group gpu_"), case.last_error
    assert case.events.filter(reason__contains="no attempt spent").exists()
    blocked = overview(admin_user).blocked_groups
    assert {(g.name, g.host.name) for g in blocked} == {("gpu_a", "sshd"), ("gpu_b", "sshd")}
    assert all("pueue group add" in g.blocked_reason for g in blocked)
    assert "reconcile" in passes.due(), "the reconciler keeps looking while cases wait for a missing group"

    bare.cli("group", "add", "gpu_a", "-p", "1")  # the operator creates one of them on the host
    reconciliation.reconcile_pass()
    assert GpuGroup.objects.get(host=host, name="gpu_a").blocked_reason == ""
    assert GpuGroup.objects.get(host=host, name="gpu_b").blocked_reason != ""
    assert submission.submit_pass().started == ["first"]
    wait_for(lambda: monitoring.monitor_pass().completed == ["first"], 60, "the case to complete", interval=0.3)
    case.refresh_from_db()
    assert (case.status, case.attempts, case.last_error) == (S.COMPLETED, 1, "")


def test_pueue_that_cannot_run_sends_the_case_back_and_the_host_says_why(sshd, bare, mqic_dirs):
    """pueue off the PATH (sh's exit 127): no task can exist, so nothing is left to reconcile."""
    host = make_hpc_host(sshd, bare, pueue_command="/opt/nowhere/bin/pueue")
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "c", "echo ok\n")
    intake.scan()
    report = submission.submit_pass()
    case = Case.objects.get(name="c")
    assert (report.unknown, case.status, case.attempts) == ([], S.SUBMITTED, 0)
    said = case.events.last().reason
    assert "/opt/nowhere/bin/pueue was not found on the host" in said, said
    host.refresh_from_db()
    assert "was not found on the host" in host.last_error and host.consecutive_failures >= 1
    assert not GpuGroup.objects.filter(holder_id__isnull=False).exists()


def test_a_tilde_in_the_pueue_command_is_refused_with_the_reason():
    with pytest.raises(ConfigError) as refused:
        check_host(
            "x",
            {"hostname": "h", "base_dir": "/data", "pueue": "/opt/x/bin/pueue -c ~/p.yml", "gpu_groups": ["g"]},
            where="test",
        )
    assert "'~' is not expanded" in str(refused.value) and "absolute path" in str(refused.value)


def test_sync_takes_no_group_whose_name_breaks_the_rule(sshd, bare):
    """A job runs as the HPC account and can add pueue groups: their names are data from outside."""
    host = make_hpc_host(sshd, bare, groups=())
    hostile = "gpu<img src=x onerror=alert(1)>"
    bare.cli("group", "add", hostile)
    bare.cli("group", "add", "gpu_c")
    outcome = operations.sync_groups(host)
    assert set(GpuGroup.objects.values_list("pueue_group", flat=True)) == {"default", "gpu_c"}
    said = outcome.message
    assert "ignored pueue groups whose names MQIC does not accept" in said and hostile in said


@pytest.mark.real_pueue
def test_real_pueue_refusing_its_configuration_is_a_certain_answer(sshd, mqic_dirs):
    """``-c`` naming a file pueue cannot read: real pueue 4.0.4 says "Failed to read configuration"
    before it contacts any daemon, so no task can exist and the case waits again at once."""
    remote = RealPueue(groups={"gpu_a": 1, "gpu_b": 1})
    try:
        command = f"{remote.bin_dir / 'pueue'} -c /nonexistent/pueue.yml"
        host = make_hpc_host(sshd, remote, pueue_command=command)
        drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "c", "echo ok\n")
        intake.scan()
        report = submission.submit_pass()
        case = Case.objects.get(name="c")
        assert (report.unknown, case.status, case.attempts) == ([], S.SUBMITTED, 0)
        assert "Failed to read configuration" in case.events.last().reason
        host.refresh_from_db()
        assert "Failed to read configuration" in host.last_error
    finally:
        remote.cleanup()
