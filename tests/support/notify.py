"""A real SMTP server (aiosmtpd) and a real HTTP server on 127.0.0.1 that keep what they are given,
and the settings that point MQIC's notifications at them (``notify``)."""

from __future__ import annotations

import json
import socket
import threading
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from console import delivery


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
    """A local HTTP server keeping every JSON body posted to it (and its event id header);
    ``status`` is what it answers."""

    def __init__(self):
        self.posts: list[dict] = []
        self.ids: list[str] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                receiver.posts.append(json.loads(self.rfile.read(length)))
                receiver.ids.append(self.headers.get(delivery.HEADER, ""))
                self.send_response(receiver.status)
                if 300 <= receiver.status < 400:
                    self.send_header("Location", receiver.url + "/elsewhere")
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
    settings.MQIC_NOTIFY_ALLOW_HTTP = True  # the local receiver speaks plain http
    settings.MQIC_PUBLIC_URL = "https://mqic.example.org"
    return box, receiver


def delivered(**kwargs) -> int:
    """What the delivery task does when the cluster runs it."""
    return delivery.deliver_due(**kwargs)
