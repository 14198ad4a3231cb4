"""Scale-out (issue 15.5): two qcluster nodes on one PostgreSQL database and one Redis queue, the
watcher and tick, three hosts (each a private sshd with its own sandbox pueued). Mid-run one node is
killed with SIGKILL (all its processes at once, as a machine that dies) and one host's sshd is
stopped for a while; the node comes back later, as systemd would bring it back.

What must hold: no case lost, none added twice, no GPU group that lies, nothing left on a host, every
case completed once the host is back; and each schedule fired once per period across the nodes.
The schedules are instrumented for that: django-q2 hands each scheduled task its intended run time
(``intended_date_kwarg``), which becomes the pass's trigger, so a period fired twice shows as two
pass runs with the same time.

Both nodes serve one queue (``Q_CLUSTER["name"]``, no ``Q_CLUSTER_NAME``), as docs/deployment.md
advises: what the killed node would have taken goes to the other at once. What tells the nodes
apart is each one's log (and django-q2's cluster id and host, in the admin).
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
import redis
from django_q.models import Schedule

from cases.models import Case, CaseStatus, PassRun
from cases.services import passes
from resources.remote import ssh
from tests.support.cases import drop_case
from tests.support.fleet import assert_settled, sites
from tests.support.nodes import Node
from tests.support.processes import django_env
from tests.support.system import running_system, wait_for

S = CaseStatus
REDIS_URL = os.environ.get("MQIC_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.engine, pytest.mark.postgres]


@pytest.fixture
def queue():
    """django-q2's Redis queue, empty before and after (a database number of the tests' own)."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.mark.parametrize(
    "cases, host_down_for",
    [
        pytest.param(30, 8, id="30-cases"),
        pytest.param(300, 60, id="300-cases", marks=[pytest.mark.slow, pytest.mark.timeout(2400)]),
    ],
)
def test_two_nodes_a_killed_node_and_a_stopped_host_lose_nothing(mqic_dirs, queue, tmp_path, cases, host_down_for):
    settings = mqic_dirs
    settings.MQIC_QUIET_SECONDS = 2
    settings.MQIC_SUBMIT_LEASE_SECONDS = 20
    for schedule in passes.setup_schedules():
        Schedule.objects.filter(pk=schedule.pk).update(intended_date_kwarg="trigger")
    names = [f"case{n:03}" for n in range(cases)]
    with sites("alpha", "bravo", "charlie") as all_sites:
        charlie = all_sites[2]
        for site in all_sites:
            site.register()
        env = {
            "MQIC_Q_BROKER": "redis",
            "MQIC_REDIS_URL": queue,
            "MQIC_HOST_BACKOFF_SECONDS": "2",
            "MQIC_HOST_BACKOFF_MAX_SECONDS": "8",
            "MQIC_SSH_CONNECT_TIMEOUT": "5",
            "MQIC_SSH_COMMAND_TIMEOUT": "30",
        }
        node_env = django_env(
            MQIC_NEW_CASES_DIR=str(settings.MQIC_NEW_CASES_DIR),
            MQIC_RESULTS_DIR=str(settings.MQIC_RESULTS_DIR),
            MQIC_SUBMIT_LEASE_SECONDS=str(settings.MQIC_SUBMIT_LEASE_SECONDS),
            MQIC_Q_WORKERS="2",
            **env,
        )
        one, two = Node("node1", node_env, tmp_path).start(), Node("node2", node_env, tmp_path).start()
        try:
            with running_system(settings, log_dir=tmp_path, commands=("watch_cases", "tick"), **env):
                began = time.monotonic()
                staging = tmp_path / "staging"
                # The first case runs on charlie until the test opens its gate, so charlie surely holds a
                # running case when it is stopped, however fast the others went.
                gate = tmp_path / "gate"
                for name in names:
                    first = name == names[0]
                    wait = f"while [ ! -e {gate} ]; do sleep 0.2; done\n" if first else "sleep 0.5\n"
                    files = {"placement.toml": b'host = "charlie"\n'} if first else None
                    drop_case(staging, name, wait + "echo ok > out.txt\n", files=files).rename(
                        settings.MQIC_NEW_CASES_DIR / name
                    )

                completed = Case.objects.filter(status=S.COMPLETED)
                wait_for(lambda: completed.count() >= cases // 4, timeout=600, message="a quarter of the cases")
                before_kill = one.processed()
                one.kill()
                wait_for(lambda: completed.count() >= cases // 2, timeout=600, message="half, on one node alone")
                running_on_charlie = charlie.cases().filter(status=S.RUNNING)
                wait_for(running_on_charlie.exists, timeout=120, message="charlie to run a case", interval=0.05)
                charlie.server.stop()
                held = running_on_charlie.count()
                time.sleep(host_down_for)
                charlie.server.restart()
                gate.touch()
                one.start()  # the dead node's machine is back
                wait_for(lambda: completed.count() == cases, timeout=900, message="every case to complete")
                minutes = (time.monotonic() - began) / 60
                wait_for(lambda: periods_fired() >= 2, timeout=180, message="two schedule periods")
                assert_settled(all_sites, dict.fromkeys(names, S.COMPLETED), timeout=180)
        finally:
            one.stop()
            two.stop()
            ssh.close_all()

    assert before_kill > 0 and two.processed() > 0, "both nodes served the one queue"
    assert held and PassRun.objects.filter(summary__contains="host charlie: ").exists(), "charlie was down"
    fired = scheduled_runs()
    twice = [key for key, n in Counter(fired).items() if n > 1]
    assert not twice, f"schedule periods fired more than once: {twice}"
    retried = Case.objects.filter(attempts__gt=1).count()
    print(
        f"\n{cases} cases in {minutes:.1f} min ({cases / minutes:.0f} cases/min) on two nodes, one killed "
        f"and restarted, charlie stopped for {host_down_for} s holding {held} case(s); "
        f"scheduled runs {Counter(kind for kind, _ in fired)}; tasks processed: node1 {one.processed()}, "
        f"node2 {two.processed()}; cases tried more than once: {retried}"
    )


def scheduled_runs() -> list[tuple[str, str]]:
    """(kind, intended run time) of every pass a schedule fired (its trigger is the intended time)."""
    runs = PassRun.objects.filter(actor__regex=r"\(\d{4}-\d\d-\d\dT")
    return [(kind, actor.partition("(")[2].rstrip(")")) for kind, actor in runs.values_list("kind", "actor")]


def periods_fired() -> int:
    """The fewest periods any schedule has fired so far."""
    per_kind = Counter(kind for kind, _ in set(scheduled_runs()))
    return min(per_kind[kind] for kind in passes.KINDS)
