"""A site's limits on SSH: one session per connection (``MaxSessions 1``), few connections being
set up at once (``MaxStartups``). MQIC keeps within them with several workers and an operator
following a log at the same time: one channel at a time on a connection (a session refused while
the server still closes the last one is asked again), never more connections than the host's
budget."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from django.urls import reverse

from cases.models import Case, CaseStatus, PassRun
from cases.services import intake
from resources.remote import ssh
from tests.support.cases import drop_case
from tests.support.fleet import ConnectionWatch, Site, assert_settled
from tests.support.processes import REPO, django_env
from tests.support.sshd import SshServer
from tests.support.users import user_with

S = CaseStatus
STRICT = {"MaxSessions": "1", "MaxStartups": "2"}


def test_commands_side_by_side_on_one_connection_wait_for_the_one_session_allowed():
    """Three threads share one connection to a server that allows one session per connection: they
    take turns, and a session refused for a moment after the last one closed is asked again."""
    with SshServer(options=STRICT) as server:
        transport = ssh.SshTransport(server.target())
        results = []

        def run(word):
            results.append(transport.run(f"sleep 1; echo {word}"))

        threads = [threading.Thread(target=run, args=(w,)) for w in ("one", "two", "three")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        transport.close()
        assert sorted(r.stdout for r in results) == ["one\n", "three\n", "two\n"]
        assert all(r.exit_code == 0 for r in results)


@pytest.mark.django_db(transaction=True)
def test_workers_and_an_operator_following_a_log_stay_within_a_strict_sites_limits(mqic_dirs, client):
    budget = 2
    mqic_dirs.MQIC_HOST_MAX_CONNECTIONS = budget
    site = Site("strict", sshd_options=STRICT)
    try:
        site.register()
        names = [f"case{n}" for n in range(6)]
        for name in names:
            drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, name, "for i in 1 2 3 4 5 6; do echo $i; sleep 0.3; done\n")
        intake.scan()
        env = django_env(MQIC_RESULTS_DIR=str(mqic_dirs.MQIC_RESULTS_DIR), MQIC_HOST_MAX_CONNECTIONS=str(budget))
        operator = ["cases.view_case", "cases.view_all_cases", "resources.view_remote_state"]
        client.force_login(user_with("op", operator))
        with ConnectionWatch(site.server.port) as seen:
            drivers = [
                subprocess.Popen([sys.executable, "-m", "tests.support.drive", "120"], cwd=REPO, env=env)
                for _ in range(3)
            ]
            followed = 0
            while any(d.poll() is None for d in drivers):
                running = Case.objects.filter(status=S.RUNNING).first()
                if running is not None:
                    assert client.get(reverse("console:live_log", args=[running.pk])).status_code == 200
                    followed += 1
                time.sleep(0.2)
            assert [d.wait(timeout=300) for d in drivers] == [0, 0, 0]
        assert followed > 0, "the operator did follow a running case's log"
        assert seen.most <= budget, seen.histogram
        assert not PassRun.objects.filter(outcome=PassRun.Outcome.FAILED).exists()
        assert "past MaxStartups" not in site.server.log.read_text()
        site.host.refresh_from_db()
        assert "refused a session" not in site.host.last_error, "a session refused is waited for, never an error"
        assert_settled([site], dict.fromkeys(names, S.COMPLETED))
    finally:
        site.cleanup()


@pytest.mark.django_db
def test_pages_never_take_the_connection_the_passes_keep(hpc, settings):
    """Open pages following logs are operator contacts: with two connections per host they share
    one, and a pass still finds the other free."""
    from resources.contact import take_slot

    settings.MQIC_HOST_MAX_CONNECTIONS = 2
    assert take_slot(hpc, leave_one=True) == 1
    assert take_slot(hpc, leave_one=True) is None, "a second page waits for its turn"
    assert take_slot(hpc) == 0, "the pass gets its connection"
