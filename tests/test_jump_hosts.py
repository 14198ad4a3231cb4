"""A host reached only through a gateway (OpenSSH ``ProxyJump``), as many HPC sites allow.

The target is a real sshd of its own; a rule of the test (``iptables -m owner``, naming the
target's port and the gateway's account only, removed at the end) rejects every connection to it
except those the gateway's sshd makes for its logged-in account: MQIC, running as root, can reach
it only through ``direct-tcpip`` channels of the gateway. Every hop's key is verified against the
host's known_hosts file, never trusted on first use.
"""

from __future__ import annotations

import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse

from cases.models import Case, CaseStatus
from cases.services import intake, monitoring, submission
from resources import operations
from resources.remote.errors import OutcomeUnknown
from resources.remote.ssh import SshTransport
from tests.support.accounts import ShellAccount
from tests.support.cases import drop_case
from tests.support.hpc import GROUPS, Sandbox, make_hpc_host
from tests.support.sshd import SshServer
from tests.support.system import wait_for

S = CaseStatus
pytestmark = pytest.mark.django_db


class Route:
    def __init__(self, gateway_server: SshServer, gateway: ShellAccount, target: SshServer):
        self.gateway_server, self.gateway, self.target = gateway_server, gateway, target

    @property
    def proxy_jump(self) -> str:
        return f"{self.gateway.name}@127.0.0.1:{self.gateway_server.port}"


@pytest.fixture
def route(sshd):
    """The session sshd as the gateway (a login of its own), and a target only it may reach."""
    target = SshServer().start()
    public = " ".join(Path(f"{target.client_key}.pub").read_text().split()[:2])
    gateway = ShellAccount("bash", public)  # the same key logs in at both, as `key` says
    rule = ["OUTPUT", "-p", "tcp", "-d", "127.0.0.1", "--dport", str(target.port), "-m", "owner", "!"]
    rule += ["--uid-owner", gateway.name, "-j", "REJECT", "--reject-with", "tcp-reset"]
    subprocess.run(["iptables", "-I", *rule], check=True)
    try:
        yield Route(sshd, gateway, target)
    finally:
        subprocess.run(["iptables", "-D", *rule], check=False)
        gateway.close()
        target.cleanup()


@pytest.fixture
def box():
    sandbox = Sandbox(groups=GROUPS)
    yield sandbox
    sandbox.cleanup()


def test_cases_run_on_a_host_reached_only_through_a_jump_host(route, box, mqic_dirs, tmp_path):
    with pytest.raises(OutcomeUnknown):
        SshTransport(route.target.target(connect_timeout=3)).run("true")  # no direct way in
    known = tmp_path / "known_hosts"
    known.write_text(route.target.known_hosts.read_text() + route.gateway_server.known_hosts.read_text())
    host = make_hpc_host(route.target, box, known_hosts_path=str(known), proxy_jump=route.proxy_jump)
    assert all(f.ok for f in operations.check_site(host)), operations.check_site(host)

    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "far", "echo far away > out.txt\n", files={"in.dat": b"x" * 100_000})
    intake.scan()
    assert submission.submit_pass().started == ["far"]
    wait_for(lambda: monitoring.monitor_pass().completed == ["far"], 60, "the case to complete", interval=0.3)
    case = Case.objects.get(name="far")
    assert (Path(case.result_path) / "out.txt").read_text() == "far away\n"
    host.refresh_from_db()
    assert host.consecutive_failures == 0


def test_a_jump_hosts_key_is_never_trusted_on_first_use(route, box, mqic_dirs, tmp_path):
    """Only the target's key is known: the gateway is refused, and so is the whole route, until
    ``trust_host_key`` has shown and trusted the gateway's key (then the target's, already known)."""
    known = tmp_path / "known_hosts"
    known.write_text(route.target.known_hosts.read_text())
    host = make_hpc_host(route.target, box, known_hosts_path=str(known), proxy_jump=route.proxy_jump)
    [refused] = operations.check_site(host)
    assert not refused.ok and "unknown" in refused.text and "trust_host_key" in refused.text, refused.text

    out = StringIO()
    call_command("trust_host_key", host.name, "--yes", stdout=out)
    said = out.getvalue()
    gateway_key = route.gateway_server.host_key.split()[1]
    assert "jump host 1: 127.0.0.1" in said and "trusted the key of" in said, said
    assert gateway_key in known.read_text()
    assert "this key is already trusted" in said, "the target's own key was known already"
    assert all(f.ok for f in operations.check_site(host))


def test_the_admins_key_page_shows_and_trusts_each_hop(route, box, tmp_path, admin_client, plain_static):
    known = tmp_path / "known_hosts"
    known.write_text(route.target.known_hosts.read_text())
    host = make_hpc_host(route.target, box, known_hosts_path=str(known), proxy_jump=route.proxy_jump)
    url = reverse("admin:resources_hpchost_trust", args=[host.pk])
    page = admin_client.get(url + "?hop=0")
    gateway_fp = page.context["check"].offered.fingerprint
    assert page.context["check"].state == "new" and "jump host 1: 127.0.0.1" in page.content.decode()
    admin_client.post(url, {"fingerprint": gateway_fp, "hop": "0"})
    assert route.gateway_server.host_key.split()[1] in known.read_text(), "the hop's key, in known_hosts"
    assert admin_client.get(url).context["check"].state == "trusted", "then the host itself, through it"
