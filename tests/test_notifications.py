"""Notifications of failed and stuck cases and of hosts going down and coming back, received by a
real SMTP server (aiosmtpd) and a real HTTP server on 127.0.0.1: once per event, with what, why
and a link, from the outbox (``console.delivery``), never from the pass; a failed delivery is
recorded, retried with back-off when it may pass, and never breaks what it announces."""

from __future__ import annotations

import socket
import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from cases.models import Case, CaseEvent, CaseStatus, PassRun
from cases.services.lifecycle import fail
from cases.services.transitions import transition
from console import delivery, notifications
from console.models import Notification
from resources.contact import contact, retry_now
from resources.services import lock_free_group
from tests.factories import make_case, make_group
from tests.support.notify import delivered, free_port

S = CaseStatus
pytestmark = [pytest.mark.django_db(transaction=True)]


def running_case(name="sim-7"):
    group = make_group()
    case = make_case(S.SUBMITTED, name=name)
    locked = lock_free_group(case.pk)
    Case.objects.filter(pk=case.pk).update(
        status=S.RUNNING, gpu_group=locked, lease_generation=locked.lease_generation
    )
    assert locked.pk == group.pk
    return Case.objects.get(pk=case.pk)


def test_a_failed_case_is_mailed_and_posted_once_with_why_and_a_link(notify):
    box, receiver = notify
    case = running_case()
    assert fail(case, "job failed with exit code 3")
    url = f"https://mqic.example.org/admin/cases/case/{case.pk}/change/"
    assert box.messages == [] and receiver.posts == [], "the pass never waits for a delivery"
    assert delivered() == 1

    assert len(box.messages) == 1
    recipients, mail = box.messages[0]
    assert sorted(recipients) == ["oncall@example.org", "ops@example.org"]
    assert mail["Subject"] == "[MQIC] case sim-7 failed"
    text = mail.get_payload()
    assert "job failed with exit code 3" in text and url in text
    assert len(receiver.posts) == 1
    post = receiver.posts[0]
    assert post["event"] == "case_failed" and post["reason"] == "job failed with exit code 3"
    assert post["case"] == {"id": case.pk, "name": "sim-7", "status": "failed"} and post["url"] == url
    assert "sim-7" in post["text"]
    assert receiver.ids == [post["id"]] and mail[delivery.HEADER] == post["id"], "one stable event id"

    # Another worker (or the next pass) seeing the same failure sends nothing more.
    event = CaseEvent.objects.get(case=case, to_status=S.FAILED)
    assert notifications.announce(notifications.case_failed(event)) is None
    assert delivered() == 0
    assert len(box.messages) == 1 and len(receiver.posts) == 1
    row = Notification.objects.get()
    assert row.mailed_at and row.posted_at and not row.mail_error and not row.webhook_error
    assert (row.mail_state, row.webhook_state, row.next_try_at) == ("sent", "sent", None)


def test_a_failure_rolled_back_is_never_announced(notify):
    box, receiver = notify
    case = running_case()
    with transaction.atomic():
        transition(case, S.RUNNING, S.FAILED, reason="about to be rolled back")
        transaction.set_rollback(True)
    assert Case.objects.get(pk=case.pk).status == S.RUNNING
    assert box.messages == [] and receiver.posts == [] and not Notification.objects.exists()


def test_a_stuck_case_is_announced_once_per_lease_however_many_passes_see_it(notify):
    box, receiver = notify
    case = running_case("stuck-one")
    expired = timezone.now() - timedelta(minutes=2)
    Case.objects.filter(pk=case.pk).update(status=S.SUBMITTING, lease_expires_at=expired)

    def a_pass():
        now = timezone.now()
        PassRun.objects.create(
            kind="monitor", actor="monitor", started_at=now, finished_at=now, outcome="ok", summary=""
        )

    for _ in range(3):
        a_pass()
    delivered()
    assert [p["event"] for p in receiver.posts] == ["case_stuck"]
    assert "lease ran out" in receiver.posts[0]["reason"] and receiver.posts[0]["case"]["name"] == "stuck-one"
    assert len(box.messages) == 1

    # The reconciler takes it over and it gets stuck again under a new lease: a new event.
    Case.objects.filter(pk=case.pk).update(lease_generation=case.lease_generation + 1, lease_expires_at=expired)
    a_pass()
    a_pass()
    delivered()
    assert [p["event"] for p in receiver.posts] == ["case_stuck", "case_stuck"]


def test_a_host_going_down_and_coming_back_is_announced_once_each(notify, hpc, sandbox, settings):
    _box, receiver = notify
    sandbox.stop()
    for _ in range(settings.MQIC_HOST_FAILURES_BEFORE_BACKOFF + 2):  # the last ones back off: no contact
        with contact(hpc) as link:
            link.queue.state()
        assert link.failed
    delivered()
    assert [p["event"] for p in receiver.posts] == ["host_down"]
    down = receiver.posts[0]
    assert down["host"]["name"] == "sshd" and "failed contacts in a row" in down["reason"]
    assert down["url"] == f"https://mqic.example.org/admin/resources/hpchost/{hpc.pk}/change/"

    sandbox.start()
    retry_now(hpc)
    hpc.refresh_from_db()
    for _ in range(2):
        with contact(hpc) as link:
            link.queue.state()
        assert not link.failed
    delivered()
    assert [p["event"] for p in receiver.posts] == ["host_down", "host_up"]
    assert "answers again (down since" in receiver.posts[1]["reason"]


def test_delivery_failures_are_recorded_and_never_break_what_they_announce(notify, settings):
    _box, receiver = notify
    receiver.status = 500
    settings.EMAIL_PORT = free_port()  # nobody listens there
    case = running_case()
    assert fail(case, "job failed with exit code 1")
    assert Case.objects.get(pk=case.pk).status == S.FAILED
    delivered()
    row = Notification.objects.get()
    assert "HTTP 500" in row.webhook_error and row.posted_at is None
    assert "Connection refused" in row.mail_error or "Errno 111" in row.mail_error
    assert row.mailed_at is None and (row.mail_state, row.webhook_state) == ("pending", "pending")
    soon = timezone.now() + timedelta(minutes=1)
    assert timezone.now() < row.next_try_at <= soon, "the first retry within a minute"

    receiver.status = 200
    assert delivered() == 0, "not due yet"
    assert delivered(now=row.next_try_at) == 1
    row.refresh_from_db()
    assert row.webhook_state == "sent" and row.tries == 2 and len(receiver.posts) == 2
    assert receiver.posts[0]["id"] == receiver.posts[1]["id"], "the same event id at every try"


def test_nothing_is_sent_or_recorded_when_no_address_is_set(settings, receiver):
    settings.MQIC_NOTIFY_EMAILS, settings.MQIC_NOTIFY_WEBHOOK = [], ""
    case = running_case()
    assert fail(case, "job failed with exit code 1")
    assert not Notification.objects.exists() and receiver.posts == []


@pytest.mark.engine
def test_workers_racing_on_one_event_send_it_once(notify):
    _box, receiver = notify
    case = running_case()
    fail_event = notifications.Event(
        key=f"case_failed:{case.pk}:race",
        event="case_failed",
        subject="case raced failed",
        reason="seen by several workers",
        url="https://mqic.example.org/x",
        case=case,
    )
    results, start = [], threading.Barrier(4)

    def worker():
        start.wait()
        try:
            results.append(notifications.announce(fail_event))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r is not None for r in results) == 1
    delivered()
    assert [p["reason"] for p in receiver.posts] == ["seen by several workers"]


class Trickle:
    """A webhook that reads the request, then answers a byte every 0.2 s (a slow or hostile peer): each
    read gets its byte well within a 1 s socket timeout, even on a loaded machine; the whole answer
    takes 8 s."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        self.stop = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stop.is_set():
            try:
                peer, _ = self.server.accept()
            except OSError:
                return
            with peer:
                peer.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                    if self.stop.wait(0.2):
                        return
                    try:
                        peer.sendall(bytes([byte]))
                    except OSError:
                        break

    def close(self):
        self.stop.set()
        self.server.close()


def test_a_webhook_that_trickles_is_cut_off_at_the_deadline_and_tried_again(notify, settings):
    """A byte every 0.2 s: each read is within the socket timeout, so only a total deadline ends it
    (the old delivery held the pass for 20 s and more with the timeout at 2 s)."""
    trickle = Trickle()
    try:
        settings.MQIC_NOTIFY_EMAILS, settings.MQIC_NOTIFY_WEBHOOK = [], trickle.url
        settings.MQIC_NOTIFY_TIMEOUT = 1
        assert fail(running_case(), "job failed with exit code 2")
        assert delivered() == 1
        row = Notification.objects.get()
        assert row.webhook_state == "pending" and "no answer within 1 s" in row.webhook_error
        assert row.next_try_at is not None
    finally:
        trickle.close()


def test_redirects_are_not_followed_and_http_needs_saying_so(notify, settings):
    _box, receiver = notify
    settings.MQIC_NOTIFY_EMAILS = []
    receiver.status = 302
    assert fail(running_case("a"), "job failed with exit code 1")
    delivered()
    row = Notification.objects.get()
    assert (row.webhook_state, row.next_try_at) == ("failed", None), "a redirect is a permanent refusal"
    assert "redirects are not followed" in row.webhook_error and len(receiver.posts) == 1

    settings.MQIC_NOTIFY_ALLOW_HTTP = False
    receiver.status = 200
    assert fail(running_case("b"), "job failed with exit code 1")
    delivered()
    row = Notification.objects.get(subject="case b failed")
    assert row.webhook_state == "failed" and "must be an https URL" in row.webhook_error
    assert len(receiver.posts) == 1, "nothing was sent in the clear"


def test_a_worker_that_dies_while_delivering_leaves_the_event_to_the_next(notify, monkeypatch):
    """At least once: the row is taken (its next try moved on) and the worker dies before sending;
    once that lease is over, the next delivery sends it."""
    _box, receiver = notify
    assert fail(running_case(), "job failed with exit code 4")
    monkeypatch.setattr(delivery, "deliver", lambda row: None)  # died right after taking the row
    assert delivered() == 1
    monkeypatch.undo()
    assert delivered() == 0 and receiver.posts == [], "taken: not due until its lease is over"
    later = Notification.objects.get().next_try_at
    assert delivered(now=later) == 1
    assert [p["reason"] for p in receiver.posts] == ["job failed with exit code 4"]


def test_a_failures_notification_carries_the_last_lines_of_its_job_log(notify):
    from cases.services.lifecycle import move_and_release

    box, receiver = notify
    case = running_case()
    log = "\n".join(f"step {n}" for n in range(1, 31))
    assert move_and_release(case, S.RUNNING, S.FAILED, reason="job failed with exit code 1", log_tail=log)
    delivered()
    assert receiver.posts[0]["log"].splitlines() == [f"step {n}" for n in range(11, 31)], "the last 20 lines"
    body = box.messages[0][1].get_payload()
    assert "The last lines of its job log" in body and "step 30" in body and "step 10\n" not in body
