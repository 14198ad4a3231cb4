"""Management commands a user runs by hand, against the real sshd and sandbox."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from cases.models import PassRun
from resources.connections import transport_for
from resources.models import GpuGroup, HpcHost
from resources.remote import ssh
from resources.remote.errors import UnknownHostKey
from tests.support.sshd import generate_key
from tests.support.system import wait_for

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_configure_hpc_is_idempotent(settings):
    settings.MQIC_HPC_HOST, settings.MQIC_GPU_GROUPS = "login.example", ["gpu_a", "gpu_b"]
    assert "GPU group gpu_b -> pueue group gpu_b" in run("configure_hpc", "--offline")
    settings.MQIC_GPU_GROUPS = ["gpu_a"]
    run("configure_hpc", "--offline")
    run("configure_hpc", "--offline")
    assert HpcHost.objects.count() == 1
    assert dict(GpuGroup.objects.values_list("name", "status")) == {"gpu_a": "available", "gpu_b": "disabled"}


def test_pueue_status_prints_the_remote_state(hpc, sandbox):
    sandbox.cli("add", "-l", "hello", "-g", "gpu_a", "--", "true")
    assert "hello" in run("pueue_status")
    state = json.loads(run("pueue_status", "--host", "sshd", "--json"))
    assert [t["label"] for t in state["sshd"]["tasks"]] == ["hello"]
    assert state["sshd"]["groups"]["gpu_a"] == {"status": "running", "parallel": 1}


def test_pueue_status_says_which_host_did_not_answer(hpc, sandbox):
    sandbox.stop()
    with pytest.raises(CommandError, match="some hosts did not answer"):
        run("pueue_status")


def test_an_unknown_key_is_refused_until_trusted(hpc, sshd):
    HpcHost.objects.update(known_hosts_path="")
    ssh.close_all()
    with pytest.raises(UnknownHostKey) as refused:
        transport_for(HpcHost.objects.get()).run("true")
    assert refused.value.fingerprint.startswith("SHA256:")
    assert refused.value.fingerprint in run("trust_host_key", "sshd", "--yes")
    assert HpcHost.objects.get().host_key == sshd.host_key
    assert transport_for(HpcHost.objects.get()).run("echo hi").stdout == "hi\n"


def test_a_changed_key_is_refused_loudly_unless_replaced(hpc, sshd, tmp_path):
    HpcHost.objects.update(known_hosts_path="", host_key=generate_key(tmp_path / "old"))
    with pytest.raises(CommandError, match="MISMATCH"):
        run("trust_host_key", "sshd", "--yes")
    run("trust_host_key", "sshd", "--yes", "--replace")
    assert HpcHost.objects.get().host_key == sshd.host_key


def test_setup_schedules_is_idempotent():
    from django_q.models import Schedule

    run("setup_schedules")
    out = run("setup_schedules")
    assert Schedule.objects.count() == 4
    assert "mqic monitor: cases.tasks.monitor every 1 min" in out


def test_one_pass_commands_say_what_they_did(hpc, sandbox, settings, tmp_path):
    settings.MQIC_NEW_CASES_DIR = tmp_path / "inbox"
    settings.MQIC_RESULTS_DIR = tmp_path / "results"
    (settings.MQIC_NEW_CASES_DIR / "c1").mkdir(parents=True)
    (settings.MQIC_NEW_CASES_DIR / "c1" / "run.sh").write_text("true\n")
    (settings.MQIC_NEW_CASES_DIR / "c1" / "READY").touch()
    assert run("scan_cases").startswith("registered 1, rejected 0")
    assert run("submit_cases").startswith("started 1, adopted 0")
    assert "adopted 0, retried 0, failed 0" in run("reconcile", "--dry-run")
    wait_for(lambda: "completed 1" in run("monitor_cases"), 10, "the case to complete")
    assert PassRun.objects.filter(kind="monitor").first().summary.startswith("completed")
