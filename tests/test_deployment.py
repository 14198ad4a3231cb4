"""The production deployment of docs/deployment.md, as far as one machine can try it: the example
systemd units pass ``systemd-analyze verify``, the example environment file passes
``check --deploy``, and gunicorn started with the web unit's own command line serves the admin's
login page and its static files (whitenoise) after the documented ``collectstatic``.

The units name the documented install folder (/opt/mqic); the tests point those paths at this
checkout and its virtualenv, and the environment file's database and folders at the test's own.
"""

from __future__ import annotations

import http.client
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.processes import REPO, django_env
from tests.support.sshd import free_port

DEPLOY = REPO / "deploy"
INSTALL = "/opt/mqic"
HOST = "mqic.example.org"


def unit_lines(name: str) -> list[str]:
    return (DEPLOY / "systemd" / name).read_text().splitlines()


def exec_start(name: str) -> list[str]:
    (line,) = [line for line in unit_lines(name) if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def here(path: str) -> str:
    """A path of the documented install, as it is in this checkout and its virtualenv."""
    venv_bin = f"{INSTALL}/.venv/bin/"
    if path.startswith(venv_bin):
        return str(Path(sys.executable).parent / path.removeprefix(venv_bin))
    return path.replace(INSTALL, str(REPO))


def env_file() -> dict[str, str]:
    lines = (DEPLOY / "mqic.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_the_example_units_pass_systemd_analyze_verify(tmp_path):
    units = sorted(path.name for path in (DEPLOY / "systemd").iterdir())
    assert units == [
        "mqic-prune.service",
        "mqic-prune.timer",
        "mqic-qcluster.service",
        "mqic-tick.service",
        "mqic-watcher.service",
        "mqic-web.service",
        "mqic.target",
    ]
    for name in units:
        text = "\n".join(unit_lines(name))
        venv_bin = f"{INSTALL}/.venv/bin/"
        text = text.replace(venv_bin, f"{Path(sys.executable).parent}/").replace(INSTALL, str(REPO))
        (tmp_path / name).write_text(text + "\n")
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (Debian package systemd) is needed to check the units"
    done = subprocess.run(
        [analyze, "verify", "--man=no", *(f"./{name}" for name in units)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")  # a bad line is only a message


def test_every_service_runs_from_the_environment_file_as_the_mqic_user():
    for name in ("mqic-web.service", "mqic-qcluster.service", "mqic-watcher.service", "mqic-tick.service"):
        lines = unit_lines(name)
        assert "EnvironmentFile=/etc/mqic/mqic.env" in lines and "User=mqic" in lines
        assert "WantedBy=mqic.target" in lines and "PartOf=mqic.target" in lines


@pytest.fixture
def production_env(tmp_path, db):
    """The example environment file, with this test's database, folders and a secret key file."""
    key = tmp_path / "secret_key"
    key.write_text(secrets.token_urlsafe(50))
    env = django_env(**env_file())
    env.update(
        DATABASE_URL=django_env()["DATABASE_URL"],
        DJANGO_SECRET_KEY_FILE=str(key),
        DJANGO_STATIC_ROOT=str(tmp_path / "static"),
        MQIC_Q_BROKER="orm",  # the web pages asked here never enqueue
        MQIC_HPC_CONFIG="",
        MQIC_NEW_CASES_DIR=str(tmp_path / "new_cases"),
        MQIC_RESULTS_DIR=str(tmp_path / "results"),
        MQIC_VAR_DIR=str(tmp_path / "var"),
    )
    env.pop("DJANGO_SECRET_KEY", None)  # the test run's own: the file must be what is read
    return env


def test_the_environment_file_passes_the_deployment_checks(production_env):
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=production_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_gunicorn_with_the_units_command_serves_the_admin_login_page(production_env):
    collect = [sys.executable, "manage.py", "collectstatic", "--noinput"]
    subprocess.run(collect, cwd=REPO, env=production_env, check=True, capture_output=True, timeout=300)
    command = [here(word) for word in exec_start("mqic-web.service")]
    port = free_port()
    command[command.index("--bind") + 1] = f"127.0.0.1:{port}"
    output = subprocess.PIPE
    server = subprocess.Popen(command, cwd=REPO, env=production_env, stdout=output, stderr=subprocess.STDOUT)
    try:
        page = get(port, "/admin/login/", forwarded_https=True)
        assert page.status == 200 and b"Log in" in page.body
        assert "secure" in page.headers.get("Set-Cookie", "").lower(), "cookies only over HTTPS"
        assert "max-age=31536000" in page.headers.get("Strict-Transport-Security", "")
        style = get(port, "/static/admin/css/base.css", forwarded_https=True)
        assert style.status == 200 and b"body" in style.body, "whitenoise serves the collected files"
        plain = get(port, "/admin/login/", forwarded_https=False)
        assert plain.status == 301 and plain.headers["Location"] == f"https://{HOST}/admin/login/"
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode(errors="replace")
    assert "Booting worker" in output


class Reply:
    def __init__(self, response: http.client.HTTPResponse):
        self.status, self.headers, self.body = response.status, response.headers, response.read()


def get(port: int, path: str, *, forwarded_https: bool, timeout: float = 60) -> Reply:
    """GET through the documented proxy's eyes: its Host, and X-Forwarded-Proto when it spoke HTTPS."""
    headers = {"Host": HOST} | ({"X-Forwarded-Proto": "https"} if forwarded_https else {})
    deadline = time.monotonic() + timeout
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", path, headers=headers)
            return Reply(connection.getresponse())
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        finally:
            connection.close()


def test_check_deploy_fails_on_a_missing_hosts_file_and_the_example_file_is_valid(settings, tmp_path):
    from django.core.checks import run_checks

    from resources.config import read_file

    settings.MQIC_HPC_CONFIG = str(tmp_path / "missing.toml")
    assert "mqic.E001" in [m.id for m in run_checks(include_deployment_checks=True)]
    settings.MQIC_HPC_CONFIG = str(DEPLOY / "hosts.toml.example")
    assert "mqic.E001" not in [m.id for m in run_checks(include_deployment_checks=True)]
    hosts = read_file(DEPLOY / "hosts.toml.example")
    assert [h.name for h in hosts] == ["cluster-a", "cluster-b"] and hosts[1].proxy_jump


def test_the_units_are_sandboxed(tmp_path):
    """``systemd-analyze security --offline=yes`` rates each service's exposure (0 best, 10 worst);
    the guide quotes the score. The units write only below /var/lib/mqic and /srv/mqic."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (Debian package systemd) is needed to check the units"
    for path in sorted((DEPLOY / "systemd").glob("*.service")):
        (tmp_path / path.name).write_text(path.read_text())
        done = subprocess.run(
            [analyze, "security", "--offline=yes", f"./{path.name}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        score = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
        assert score, done.stdout[-500:] + done.stderr[-500:]
        assert float(score[1]) <= 2.0, f"{path.name}: {score[1]}"
        text = path.read_text()
        assert "ProtectSystem=strict" in text and "ReadWritePaths=/var/lib/mqic /srv/mqic" in text
