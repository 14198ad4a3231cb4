"""One host never slows another (issue 15.2): three hosts, each a private sshd with its own sandbox
pueued; one of them unreachable or slow. Within a pass the other hosts' cases go on while the bad
host's call still hangs; across a qcluster's workers the other hosts keep being served while a
pass is stuck; a failing host backs off and comes back; and however many workers run, a host never
sees more than ``MQIC_HOST_MAX_CONNECTIONS`` connections from MQIC.

"While it still hangs" is read from evidence, not from durations: the slow ``status`` writes when it
began and ended, the silent port when each connection came and went, and cases' events carry the
time of each move.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from django import db
from django.core.checks import run_checks
from django.urls import reverse
from django.utils import timezone

import resources.contact
from cases.models import Case, CaseEvent, CaseStatus, PassRun
from cases.services import intake, monitoring, reconciliation, submission
from resources import operations
from resources.contact import contact, host_down, host_up, retry_now
from resources.models import HpcHost
from resources.remote import ssh
from resources.remote.errors import OutcomeUnknown
from tests.support.cases import drop_case as drop
from tests.support.fleet import ConnectionWatch, SilentPort, SlowStatus, assert_settled, sites
from tests.support.processes import REPO, django_env
from tests.support.proxy import FaultProxy
from tests.support.sshd import LOOPBACK
from tests.support.system import running_system, wait_for

S = CaseStatus
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def inbox(mqic_dirs):
    yield mqic_dirs.MQIC_NEW_CASES_DIR
    ssh.close_all()


class Pass(threading.Thread):
    """A pass on a thread of its own, so the test can look at the world while the pass still runs."""

    def __init__(self, run):
        super().__init__(daemon=True)
        self._run, self.report, self.error = run, None, None

    def run(self):
        try:
            self.report = self._run()
        except BaseException as error:
            self.error = error
        finally:
            db.connections.close_all()  # this thread's own: none may outlive the test database

    def result(self, timeout: float):
        self.join(timeout)
        assert not self.is_alive(), "the pass did not end"
        if self.error is not None:
            raise self.error
        return self.report


def moved_at(case_names, to_status) -> dict[str, float]:
    """When each case moved to ``to_status`` (epoch seconds), from its events."""
    events = CaseEvent.objects.filter(case__name__in=case_names, to_status=to_status)
    return {name: at.timestamp() for name, at in events.values_list("case__name", "created_at")}


def names_on(site) -> list[str]:
    return sorted(site.cases().values_list("name", flat=True))


def test_an_unreachable_host_holds_up_no_other_host_in_a_submission_pass(inbox, settings):
    """alpha accepts TCP but never answers SSH: its connect waits out the timeout, and bravo's and
    charlie's cases are added meanwhile, although alpha comes first in the pass."""
    settings.MQIC_SSH_CONNECT_TIMEOUT = 15
    with SilentPort() as silent, sites("alpha", "bravo", "charlie") as (alpha, bravo, charlie):
        alpha.register(port=silent.port)
        bravo.register()
        charlie.register()
        for n in range(6):
            drop(inbox, f"case{n}", "echo ok > out.txt\n")
        intake.scan()
        running = Pass(submission.submit_pass)
        running.start()
        wait_for(lambda: silent.connections, timeout=30, message="the pass to knock at alpha")
        good = ["case2", "case3", "case4", "case5"]  # groups are taken in name order: alpha's first
        wait_for(
            lambda: Case.objects.filter(name__in=good, status=S.RUNNING).count() == 4,
            timeout=60,
            message="bravo's and charlie's cases to run",
        )
        assert running.is_alive() and silent.connections[0][1] is None, "alpha's connect still hangs"
        report = running.result(timeout=60)

        assert sorted(report.started) == good
        assert "could not connect" in report.host_errors["alpha"]
        labels = dict(Case.objects.values_list("label", "name"))
        assert alpha.sandbox.adds() == []
        assert sorted(labels[a["label"]] for a in bravo.sandbox.adds() + charlie.sandbox.adds()) == good
        assert dict(Case.objects.filter(name__in=["case0", "case1"]).values_list("name", "status")) == {
            "case0": S.SUBMITTED,
            "case1": S.SUBMITTED,
        }, "nothing was sent to alpha: its cases are simply back in the queue"
        wait_for(  # the listener's thread notes the close when it reads the end of the stream
            lambda: silent.connections[0][1] is not None, timeout=30, message="alpha's connection to be closed"
        )
        opened, closed = silent.connections[0]
        for name, at in moved_at(good, S.RUNNING).items():
            assert opened < at < closed, f"{name} was added while alpha's connect was still open"


def test_a_slow_host_holds_up_no_other_host_in_a_monitor_pass(inbox, settings, tmp_path):
    """alpha's ``pueue status`` hangs: bravo's and charlie's finished cases come home and end
    meanwhile; alpha's end in the same pass once its answer comes."""
    settings.MQIC_SSH_COMMAND_TIMEOUT = 60
    with sites("alpha", "bravo", "charlie") as (alpha, bravo, charlie):
        slow = SlowStatus(alpha.sandbox, tmp_path / "slow", limit=60)
        alpha.register(pueue=str(slow.path))
        bravo.register()
        charlie.register()
        for n in range(6):
            drop(inbox, f"case{n}", f"echo ok-{n} > out.txt\n")
        intake.scan()
        assert len(submission.submit_pass().started) == 6  # a first add asks no status: not slowed
        for site in (alpha, bravo, charlie):
            wait_for(lambda s=site: all_done(s.sandbox), timeout=60, message=f"{site.name}'s jobs to end")

        slow.hold()
        running = Pass(monitoring.monitor_pass)
        running.start()
        good, slowed = names_on(bravo) + names_on(charlie), names_on(alpha)
        wait_for(
            lambda: Case.objects.filter(name__in=good, status=S.COMPLETED).count() == 4,
            timeout=60,
            message="bravo's and charlie's cases to complete",
        )
        assert running.is_alive() and slow.hanging(), "alpha's status call still hangs"
        slow.release()
        report = running.result(timeout=60)

        assert sorted(report.completed) == [f"case{n}" for n in range(6)]
        # That bravo's and charlie's cases completed while alpha hung was seen above, before the
        # release (their threads may even finish before alpha's status call begins).
        ((_, ended),) = slow.calls()
        assert len(slowed) == 2
        for name, at in moved_at(slowed, S.COMPLETED).items():
            assert at > ended, f"{name} completed once alpha answered"
        for n in range(6):
            assert (settings.MQIC_RESULTS_DIR / f"case{n}" / "out.txt").read_text() == f"ok-{n}\n"


def all_done(sandbox) -> bool:
    tasks = sandbox.status()["tasks"].values()
    return all(isinstance(t["status"], dict) and "Done" in t["status"] for t in tasks)


@pytest.mark.django_db(transaction=False)
def test_a_node_with_no_more_workers_than_connections_per_host_is_warned(settings):
    """The rule the qcluster test relies on, checked where an operator sees it: ``manage.py check``."""
    settings.Q_CLUSTER = settings.Q_CLUSTER | {"workers": 2}
    settings.MQIC_HOST_MAX_CONNECTIONS = 2
    assert [m.id for m in run_checks()] == ["mqic.W001"]
    settings.MQIC_HOST_MAX_CONNECTIONS = 1
    assert run_checks() == []


@pytest.mark.engine
def test_a_qcluster_keeps_serving_the_other_hosts_while_a_pass_is_stuck_on_a_slow_host(inbox, settings, tmp_path):
    """A real qcluster of two workers, the watcher and tick, one connection per host (the rule: fewer
    than the workers). alpha's ``status`` hangs: the pass that asks it is stuck, the other worker
    finds alpha's connection slot taken and serves bravo and charlie, round after round, until alpha
    answers. (With two connections per host, both workers hung on alpha and nothing moved.)"""
    settings.MQIC_QUIET_SECONDS = 2
    with sites("alpha", "bravo", "charlie") as (alpha, bravo, charlie):
        slow = SlowStatus(alpha.sandbox, tmp_path / "slow", limit=240)
        alpha.register(pueue=str(slow.path))
        bravo.register()
        charlie.register()
        slow.hold()
        names = [f"case{n:02}" for n in range(14)]
        env = {"MQIC_SSH_COMMAND_TIMEOUT": "300", "MQIC_HOST_MAX_CONNECTIONS": "1"}
        with running_system(settings, log_dir=tmp_path, **env):
            for name in names:
                drop(inbox.parent / "staging", name, "sleep 1; echo ok > out.txt\n").rename(inbox / name)
            wait_for(slow.hanging, timeout=120, message="a pass to get stuck on alpha")
            stuck_since = slow.hanging()[0]
            on_alpha = set(names_on(alpha))
            others = [n for n in names if n not in on_alpha]
            wait_for(
                lambda: Case.objects.filter(name__in=others, status=S.COMPLETED).count() == len(others),
                timeout=180,
                message="every case of bravo and charlie to complete",
            )
            assert stuck_since in slow.hanging(), "alpha's first status call still hangs"
            assert Case.objects.filter(name__in=on_alpha).exclude(status=S.COMPLETED).exists()
            served_meanwhile = [n for n, at in moved_at(others, S.COMPLETED).items() if at > stuck_since]
            assert len(served_meanwhile) > 4, "several rounds on bravo's and charlie's four groups"
            slow.release()
            wait_for(
                lambda: Case.objects.filter(status=S.COMPLETED).count() == len(names),
                timeout=180,
                message="alpha's cases to complete once it answers",
            )
            assert_settled([alpha, bravo, charlie], dict.fromkeys(names, S.COMPLETED))


def test_a_failing_host_backs_off_longer_each_time_and_is_tried_again_when_due_or_when_asked(
    inbox, settings, admin_client
):
    """alpha's sshd is down. After two failures it backs off: 5 s, then 10, 20, 20 (the cap); while it
    waits no pass knocks and new cases go to bravo; once the wait is over a pass tries it by itself
    (the first wait is waited out; later ones are moved into the past, as time would); ``retry_now``
    tries it at once; and the admin's "check health" brings it back as soon as it answers."""
    settings.MQIC_HOST_FAILURES_BEFORE_BACKOFF = 2
    settings.MQIC_HOST_BACKOFF_SECONDS = 5
    settings.MQIC_HOST_BACKOFF_MAX_SECONDS = 20
    downs, ups = [], []
    host_down.connect(on_down := lambda sender, host, reason, **kw: downs.append(host.name), weak=False)
    host_up.connect(on_up := lambda sender, host, down_since, **kw: ups.append(host.name), weak=False)
    try:
        with sites("alpha", "bravo") as (alpha, bravo):
            row = alpha.register()
            bravo.register()
            alpha.server.stop()
            waits = []
            for attempt in range(6):
                if attempt == 2:
                    wait_until(row.next_try_at)
                elif row.next_try_at is not None:
                    HpcHost.objects.filter(pk=row.pk).update(next_try_at=timezone.now())
                before = timezone.now()
                report = reconciliation.reconcile_pass()
                assert "could not connect" in report.host_errors["alpha"] and "bravo" not in report.host_errors
                row.refresh_from_db()
                assert row.consecutive_failures == attempt + 1, "due: tried by the next pass"
                waits.append(round((row.next_try_at - before).total_seconds()) if row.next_try_at else None)
                if row.next_try_at:  # not due: the next pass does not knock
                    assert "not contacted again before" in reconciliation.reconcile_pass().host_errors["alpha"]
                    row.refresh_from_db()
                    assert row.consecutive_failures == attempt + 1
            assert waits == [None, 5, 10, 20, 20, 20]
            assert downs == ["alpha"], "host_down once per outage"

            drop(inbox, "meanwhile")
            intake.scan()
            assert submission.submit_pass().started == ["meanwhile"]
            assert Case.objects.get(name="meanwhile").gpu_group.host.name == "bravo", "alpha takes no work"

            retry_now(row)  # an operator: try now, whatever the wait
            assert "could not connect" in reconciliation.reconcile_pass().host_errors["alpha"]
            row.refresh_from_db()
            assert row.consecutive_failures == 7 and row.next_try_at is not None

            alpha.server.restart()
            changelist = reverse("admin:resources_hpchost_changelist")
            admin_client.post(changelist, {"action": "check_health", "_selected_action": [row.pk]})
            row.refresh_from_db()
            health = (row.consecutive_failures, row.next_try_at, row.down_since, row.last_error)
            assert health == (0, None, None, "")
            assert row.pueue_version and ups == ["alpha"]
            assert reconciliation.reconcile_pass().host_errors == {}
    finally:
        host_down.disconnect(on_down)
        host_up.disconnect(on_up)


def wait_until(moment) -> None:
    if moment is not None:
        time.sleep(max(0.0, (moment - timezone.now()).total_seconds()) + 0.05)


def test_a_contact_leaves_no_connection_behind_at_the_host():
    """When a contact ends its connection is gone, as the host sees it, before the next contact can
    open one. (paramiko's close left the socket to its reader thread for up to a tenth of a second:
    the host still counted it, and strictly one-after-another contacts overlapped there.)"""
    with sites("alpha") as (alpha,):
        row = alpha.register()
        watch = ConnectionWatch(alpha.server.port)
        lingering = []
        for _ in range(30):
            with contact(row) as link:
                link.queue.version()
            assert not link.failed
            lingering.append(watch.established())
        assert lingering == [0] * 30


@pytest.mark.engine
def test_a_host_never_sees_more_connections_than_its_budget(inbox, settings, tmp_path):
    """Six workers hammer one host whose ``status`` takes half a second, with a budget of two
    connections: the sshd, counted at its own port all along, never has more than two from MQIC,
    the workers do find the host busy, and every case completes once."""
    budget, workers = 2, 6
    with sites("alpha") as (alpha,):
        slow = SlowStatus(alpha.sandbox, tmp_path / "slow", limit=0.5)
        slow.hold()
        alpha.register(pueue=str(slow.path))
        names = [f"case{n:02}" for n in range(12)]
        for name in names:
            drop(inbox, name)
        intake.scan()
        env = django_env(MQIC_RESULTS_DIR=str(settings.MQIC_RESULTS_DIR), MQIC_HOST_MAX_CONNECTIONS=str(budget))
        with ConnectionWatch(alpha.server.port) as seen:
            drivers = [
                subprocess.Popen([sys.executable, "-m", "tests.support.drive", "240"], cwd=REPO, env=env)
                for _ in range(workers)
            ]
            assert [d.wait(timeout=300) for d in drivers] == [0] * workers
        for at, c, out in getattr(seen, "over", [])[:5]:
            print("OVER", at, c, out)
        print(f"connections seen at alpha's sshd: at most {seen.most} (budget {budget}); {seen.histogram}")
        assert seen.most == budget, "the budget is used and never exceeded"
        assert PassRun.objects.filter(summary__contains="connection slots are in use").exists()
        assert_settled([alpha], dict.fromkeys(names, S.COMPLETED))


@pytest.mark.engine
def test_a_transfer_that_outlasts_the_slot_lease_keeps_its_slot(inbox, settings, monkeypatch, request):
    """A slot's lease (twice the command timeout) frees the slots of holders that died elsewhere; a
    download that takes longer than that is no dead holder. With one connection allowed and a slow
    link, another process asking the host while the results still come home finds it busy, and the
    sshd never has two connections. (The lease was renewed only between calls: the other process got
    in, and a long upload or download let every waiting worker in.)"""
    monkeypatch.setattr(resources.contact, "slot_lease", lambda: timedelta(seconds=2))
    settings.MQIC_HOST_MAX_CONNECTIONS = 1
    with sites("alpha") as (alpha,):
        proxy = FaultProxy(LOOPBACK, alpha.server.port)
        request.addfinalizer(proxy.close)
        alpha.register(port=proxy.port)
        drop(inbox, "big", "head -c 16000000 /dev/zero > big.bin\n")
        intake.scan()
        assert submission.submit_pass().started == ["big"]
        wait_for(lambda: all_done(alpha.sandbox), timeout=60, message="the job to end")
        proxy.add_latency(50)  # 64 KiB every 50 ms: some twelve seconds for 16 MB
        with ConnectionWatch(alpha.server.port) as seen:
            running = Pass(monitoring.monitor_pass)
            running.start()
            wait_for(lambda: Case.objects.filter(name="big", lease_expires_at__isnull=False).exists(), timeout=30)
            time.sleep(3 * 2)  # three slot leases into the download
            other = subprocess.run(
                [sys.executable, "manage.py", "pueue_status", "--host", "alpha"],
                cwd=REPO,
                env=django_env(MQIC_HOST_MAX_CONNECTIONS="1"),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert running.is_alive(), "the download was still under way"
            assert other.returncode != 0 and "connection slots are in use" in other.stderr, other.stderr
            assert running.result(timeout=120).completed == ["big"]
        assert seen.most == 1
        assert (settings.MQIC_RESULTS_DIR / "big" / "big.bin").stat().st_size == 16_000_000


def test_asking_a_host_for_its_key_is_a_contact_like_any_other(settings):
    """The key page and ``trust_host_key`` go through the contact seam: an unreachable host's
    failure is written on its health, and an operator's look goes ahead through a back-off."""
    settings.MQIC_SSH_CONNECT_TIMEOUT = 2
    settings.MQIC_HOST_FAILURES_BEFORE_BACKOFF = 1
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there once the socket is closed
    host = HpcHost.objects.create(name="nowhere", hostname="127.0.0.1", port=port, base_dir="/tmp/nowhere")
    for attempt in (1, 2):
        with pytest.raises(OutcomeUnknown):
            operations.check_host_key(host)
        host.refresh_from_db()
        assert host.consecutive_failures == attempt and "could not fetch the host key" in host.last_error
    assert host.next_try_at is not None, "the host backs off, and the operator's second look still went ahead"
