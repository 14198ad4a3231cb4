"""Staff users with partial rights, host keys and the installation's secrets: what a careless or
hostile user tried, and what MQIC now refuses. Real users with exactly the permissions named,
real sshd, real processes for start-up."""

import os
import stat
import subprocess
import sys
from datetime import datetime

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django_q.models import Schedule

from cases.management.commands.bootstrap_demo import Command as Bootstrap
from cases.management.commands.bootstrap_demo import keep_private
from cases.models import Case, CaseStatus
from cases.services import intake, submission
from cases.services.operations import cancel
from resources.models import HpcHost
from resources.remote import ssh
from resources.remote.errors import ChangedHostKey
from sandbox import demo
from tests.support.cases import drop_case
from tests.support.processes import REPO, django_env
from tests.support.sshd import generate_key
from tests.support.users import user_with

S = CaseStatus
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("plain_static")]

HOST_EDITOR = ["resources.view_hpchost", "resources.change_hpchost"]


def change_form(client, host):
    return client.get(reverse("admin:resources_hpchost_change", args=[host.pk])).content.decode()


def post_host(client, host, **changes):
    data = {
        "name": host.name,
        "hostname": host.hostname,
        "port": host.port,
        "username": host.username,
        "key_path": host.key_path,
        "known_hosts_path": host.known_hosts_path,
        "base_dir": host.base_dir,
        "pueue_command": host.pueue_command,
        "enabled": "on",
        **changes,
    }
    return client.post(reverse("admin:resources_hpchost_change", args=[host.pk]), data)


# -- item 6: staff users can run code --------------------------------------------------------


def test_a_host_editor_who_is_no_superuser_cannot_touch_how_the_host_is_reached(client, hpc):
    client.force_login(user_with("editor", HOST_EDITOR))
    html = change_form(client, hpc)
    for field in ("hostname", "port", "username", "key_path", "known_hosts_path", "base_dir", "pueue_command"):
        assert f'name="{field}"' not in html, f"{field} must be read-only for a non-superuser"
    post_host(client, hpc, hostname="attacker.example", pueue_command="sh -c id")
    hpc.refresh_from_db()
    assert (hpc.hostname, hpc.pueue_command) == ("127.0.0.1", HpcHost.objects.get().pueue_command)
    assert "sh -c" not in hpc.pueue_command


def test_the_transport_is_never_an_admin_edit(admin_client, hpc):
    assert 'name="transport"' not in change_form(admin_client, hpc)
    post_host(admin_client, hpc, transport="local")
    assert HpcHost.objects.get().transport == HpcHost.Transport.SSH


@pytest.mark.parametrize(
    "command",
    ["sh -c 'id' #", "pueue; id", "pueue $(id)", "/bin/sh", "pueue status --json", "pueue -c", "-pueue"],
)
def test_a_pueue_command_with_shell_syntax_or_another_program_is_refused(admin_client, hpc, command):
    response = post_host(admin_client, hpc, pueue_command=command)
    assert response.status_code == 200 and "errorlist" in response.content.decode()
    assert HpcHost.objects.get().pueue_command != command


def test_pueue_with_its_own_config_option_is_a_valid_command(admin_client, hpc):
    response = post_host(admin_client, hpc, pueue_command="/opt/pueue/bin/pueue -c /home/hpc/.config/pueue.yml")
    assert response.status_code == 302
    assert HpcHost.objects.get().pueue_command == "/opt/pueue/bin/pueue -c /home/hpc/.config/pueue.yml"


def test_the_base_dir_cannot_be_the_root_or_relative(admin_client, hpc):
    for value in ("/", "cases", "/srv/../etc"):
        assert "errorlist" in post_host(admin_client, hpc, base_dir=value).content.decode()


def test_a_user_who_may_add_schedules_still_cannot_schedule_code(client):
    client.force_login(user_with("scheduler", ["django_q.add_schedule", "django_q.view_schedule"]))
    assert client.get(reverse("admin:django_q_schedule_add")).status_code == 403
    client.post(
        reverse("admin:django_q_schedule_add"),
        {"name": "evil", "func": "os.system", "args": "'touch /tmp/owned'", "schedule_type": "O", "repeats": "-1"},
    )
    assert not Schedule.objects.filter(func="os.system").exists()
    assert client.get(reverse("admin:django_q_schedule_changelist")).status_code == 200, "looking is fine"


def test_failed_tasks_cannot_be_resubmitted_by_staff(client):
    client.force_login(user_with("watcher", ["django_q.view_failure", "django_q.change_failure"]))
    page = client.get(reverse("admin:django_q_failure_changelist")).content.decode()
    assert "resubmit_task" not in page


# -- item 7: host key trust ignores known_hosts ----------------------------------------------


def test_a_key_other_than_the_one_in_known_hosts_is_a_mismatch_not_a_new_host(client, hpc, sshd, tmp_path):
    """A man in the middle presents his own key: known_hosts already holds the real one."""
    real_file = tmp_path / "known_hosts"
    real_file.write_text(f"[127.0.0.1]:{sshd.port} {generate_key(tmp_path / 'real')}\n")
    HpcHost.objects.update(known_hosts_path=str(real_file), host_key="")
    client.force_login(user_with("trust", ["resources.view_hpchost", "resources.trust_host_key"]))
    url = reverse("admin:resources_hpchost_trust", args=[hpc.pk])
    page = client.get(url)
    check = page.context["check"]
    assert check.state == "mismatch" and b"HOST KEY MISMATCH" in page.content
    assert (
        check.file
        and check.offered.fingerprint in page.content.decode()
        and check.file[0] in page.content.decode()
    )
    client.post(url, {"fingerprint": check.offered.fingerprint})
    assert sshd.host_key.split()[1] not in real_file.read_text(), "one click must not trust it"
    client.post(url, {"fingerprint": check.offered.fingerprint, "replace": "yes"})
    assert sshd.host_key.split()[1] not in real_file.read_text(), "only the typed word replaces it"
    with pytest.raises(CommandError, match="MISMATCH"):
        call_command("trust_host_key", "sshd", "--yes")
    call_command("trust_host_key", "sshd", "--yes", "--replace")
    assert sshd.host_key.split()[1] in real_file.read_text() and HpcHost.objects.get().host_key == ""


def test_a_row_and_a_file_that_disagree_refuse_to_connect(hpc, sshd, tmp_path):
    HpcHost.objects.update(host_key=generate_key(tmp_path / "other"))  # known_hosts holds the real key
    ssh.close_all()
    with pytest.raises(ChangedHostKey, match="MISMATCH"):
        ssh.get_transport(_target(HpcHost.objects.get())).run("true")


def test_the_key_page_of_a_local_host_says_no_key_is_involved(admin_client):
    host = HpcHost.objects.create(name="here", hostname="localhost", base_dir="/tmp/x", transport="local")
    page = admin_client.get(reverse("admin:resources_hpchost_trust", args=[host.pk])).content.decode()
    assert "no SSH connection and no host key are involved" in page


def _target(host):
    from resources.connections import ssh_target

    return ssh_target(host)


# -- item 8: secrets and files ---------------------------------------------------------------


def test_start_up_refuses_without_a_secret_key():
    env = {k: v for k, v in django_env().items() if k not in ("DJANGO_SECRET_KEY", "DJANGO_SECRET_KEY_FILE")}
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "DJANGO_SECRET_KEY" in done.stderr and "Traceback" not in done.stderr


def test_production_mode_passes_the_deployment_checks():
    env = django_env(DJANGO_SECURE="1", DJANGO_DEBUG="0", DJANGO_SECRET_KEY=os.urandom(40).hex())
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "no issues" in done.stdout


def test_the_demo_password_is_said_once_and_kept_private(settings, tmp_path):
    settings.MQIC_VAR_DIR = tmp_path / "var"
    settings.MQIC_VAR_DIR.mkdir()
    first, again = Bootstrap().admin_login(), Bootstrap().admin_login()
    password = (settings.MQIC_VAR_DIR / "admin-password.txt").read_text().strip()
    assert password in first and password not in again
    assert stat.S_IMODE((settings.MQIC_VAR_DIR / "admin-password.txt").stat().st_mode) == 0o600


def test_the_installation_files_are_private(tmp_path):
    var = tmp_path / "var"
    (var / "sandbox" / "bin").mkdir(parents=True)
    (var / "db.sqlite3").write_text("db")
    (var / "sandbox" / "bin" / "pueue").write_text("#!/bin/sh\n")
    (var / "sandbox" / "bin" / "pueue").chmod(0o755)
    for path in (var, var / "sandbox", var / "db.sqlite3"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    keep_private(var)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [var, *var.rglob("*")]}
    assert modes == {
        "var": 0o700,
        "var/db.sqlite3": 0o600,
        "var/sandbox": 0o700,
        "var/sandbox/bin": 0o700,
        "var/sandbox/bin/pueue": 0o700,
    }


# -- item 9: cases on one HPC account can see each other ------------------------------------


def test_a_forged_task_with_a_cases_label_is_shown_in_full_and_never_adopted(client, hpc, sandbox, mqic_dirs):
    """Any job on the HPC account can add a task with another case's label, in the folder an
    attacker can guess (``<base>/<label>``); only the attempt's random token proves a task."""
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "victim", "sleep 30\n")
    intake.scan()
    submission.submit_pass()
    victim = Case.objects.get(name="victim")
    cancel(victim, user_with("boss", []))
    guessed = os.path.join(hpc.base_dir, victim.label)
    os.makedirs(guessed, exist_ok=True)
    forged = sandbox.cli(
        "add", "-p", "-l", victim.label, "-g", "gpu_b", "-w", guessed, "--", "echo pwned; sleep 30"
    )
    task_id = int(forged.stdout.split()[-1])
    created = sandbox.status()["tasks"][str(task_id)]["created_at"]
    created_at = datetime.fromisoformat(created).isoformat()
    client.force_login(user_with("op", ["resources.view_remote_state", "cases.manage_orphans", "cases.view_case"]))
    url = reverse("console:orphan", args=[hpc.pk, task_id, "adopt"])
    page = client.get(url, {"created_at": created_at}).content.decode()
    assert "echo pwned; sleep 30" in page and guessed in page, "the page shows the task's command and folder"
    assert "cannot be adopted" in page and 'value="Yes, adopt' not in page
    client.post(url, {"created_at": created_at})
    assert Case.objects.get(pk=victim.pk).status == S.CANCELLED


def test_case_folders_on_the_host_are_private(hpc, sandbox, mqic_dirs):
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "private", "sleep 5\n")
    intake.scan()
    submission.submit_pass()
    remote = Case.objects.get(name="private").remote_dir
    assert stat.S_IMODE(os.stat(remote).st_mode) == 0o700


def test_replacing_a_mismatched_key_in_the_admin_is_an_explicit_step(client, hpc, sshd, tmp_path):
    """The page shows both fingerprints; typing the word ``replace`` (and only that) replaces the
    file's key with the one offered, and the row stays empty: the two never disagree."""
    real_file = tmp_path / "known_hosts"
    real_file.write_text(f"[127.0.0.1]:{sshd.port} {generate_key(tmp_path / 'real')}\n")
    HpcHost.objects.update(known_hosts_path=str(real_file), host_key="")
    client.force_login(user_with("trust", ["resources.view_hpchost", "resources.trust_host_key"]))
    url = reverse("admin:resources_hpchost_trust", args=[hpc.pk])
    offered = client.get(url).context["check"].offered.fingerprint
    client.post(url, {"fingerprint": offered, "replace": " replace "})
    assert sshd.host_key.split()[1] in real_file.read_text() and HpcHost.objects.get().host_key == ""
    assert client.get(url).context["check"].state == "trusted"


def test_the_demo_makes_its_secret_key_once_and_keeps_it_private(tmp_path, monkeypatch):
    monkeypatch.delenv("DJANGO_SECRET_KEY", raising=False)
    monkeypatch.setenv("MQIC_VAR_DIR", str(tmp_path))
    demo.secret_key()
    path = tmp_path / "secret_key"
    key = path.read_text()
    assert len(key.strip()) >= 50 and stat.S_IMODE(path.stat().st_mode) == 0o600
    demo.secret_key()
    assert path.read_text() == key, "made once: a restart keeps the sessions and signed tasks valid"
