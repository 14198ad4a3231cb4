"""Notifications of failed and stuck cases and of hosts going down and coming back, received by a
real SMTP server (aiosmtpd) and a real HTTP server on 127.0.0.1: once per event, with what, why
and a link; a failed delivery is recorded and never breaks what it announces."""

from __future__ import annotations

import json
import socket
import threading
from datetime import timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from django.db import connection, transaction
from django.utils import timezone

from cases.models import Case, CaseEvent, CaseStatus, PassRun
from cases.services.lifecycle import fail
from cases.services.transitions import transition
from console import notifications
from console.models import Notification
from resources.contact import contact, retry_now
from resources.services import lock_free_group
from tests.factories import make_case, make_group

S = CaseStatus
pytestmark = [pytest.mark.django_db(transaction=True)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Mailbox:
    """An aiosmtpd handler that keeps every message it is given."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def mailbox():
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield box, controller.port
    controller.stop()


class Receiver:
    """A local HTTP server keeping every JSON body posted to it; ``status`` is what it answers."""

    def __init__(self):
        self.posts: list[dict] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                receiver.posts.append(json.loads(self.rfile.read(length)))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def notify(settings, mailbox, receiver):
    """Notifications on, to the local SMTP server and HTTP receiver."""
    box, port = mailbox
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.MQIC_NOTIFY_EMAILS = ["ops@example.org", "oncall@example.org"]
    settings.MQIC_NOTIFY_WEBHOOK = receiver.url
    settings.MQIC_PUBLIC_URL = "https://mqic.example.org"
    return box, receiver


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

    # Another worker (or the next pass) seeing the same failure sends nothing more.
    event = CaseEvent.objects.get(case=case, to_status=S.FAILED)
    assert notifications.announce(notifications.case_failed(event)) is None
    assert len(box.messages) == 1 and len(receiver.posts) == 1
    row = Notification.objects.get()
    assert row.mailed_at and row.posted_at and not row.mail_error and not row.webhook_error


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
    assert [p["event"] for p in receiver.posts] == ["case_stuck"]
    assert "lease ran out" in receiver.posts[0]["reason"] and receiver.posts[0]["case"]["name"] == "stuck-one"
    assert len(box.messages) == 1

    # The reconciler takes it over and it gets stuck again under a new lease: a new event.
    Case.objects.filter(pk=case.pk).update(lease_generation=case.lease_generation + 1, lease_expires_at=expired)
    a_pass()
    a_pass()
    assert [p["event"] for p in receiver.posts] == ["case_stuck", "case_stuck"]


def test_a_host_going_down_and_coming_back_is_announced_once_each(notify, hpc, sandbox, settings):
    _box, receiver = notify
    sandbox.stop()
    for _ in range(settings.MQIC_HOST_FAILURES_BEFORE_BACKOFF + 2):  # the last ones back off: no contact
        with contact(hpc) as link:
            link.queue.state()
        assert link.failed
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
    assert [p["event"] for p in receiver.posts] == ["host_down", "host_up"]
    assert "answers again (down since" in receiver.posts[1]["reason"]


def test_delivery_failures_are_recorded_and_never_break_what_they_announce(notify, settings):
    _box, receiver = notify
    receiver.status = 500
    settings.EMAIL_PORT = free_port()  # nobody listens there
    case = running_case()
    assert fail(case, "job failed with exit code 1")
    assert Case.objects.get(pk=case.pk).status == S.FAILED
    row = Notification.objects.get()
    assert "HTTP Error 500" in row.webhook_error and row.posted_at is None
    assert "Connection refused" in row.mail_error or "Errno 111" in row.mail_error
    assert row.mailed_at is None


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
    assert [p["reason"] for p in receiver.posts] == ["seen by several workers"]
