"""Delivering the outbox: each ``Notification`` row's mail and webhook, away from any pass.

``deliver_due`` runs as a django-q2 task (``console.tasks``), enqueued when a row is committed and
after each pass while rows are due, so no pass and no request ever waits for a mail server or a
webhook. Like healthchecks' transports, each delivery has one total deadline
(``MQIC_NOTIFY_TIMEOUT``: a server that answers one byte a second is cut off there, not at each
read), and its outcome is "sent", a temporary error (tried again with back-off, the first retry
within a minute) or a permanent one (given up at once: a redirect, a 4xx, an address refused).
Mail goes to the addresses the row was written with (``Notification.mail_to``).
Delivery is at least once: a worker that dies mid-delivery leaves the row due, and the next one
sends it again; the payload's ``id`` and the ``X-MQIC-Event-Id`` header are the same every time,
so a receiver can drop duplicates. Webhooks must be ``https`` unless ``MQIC_NOTIFY_ALLOW_HTTP``;
redirects are never followed.
"""

from __future__ import annotations

import http.client
import json
import logging
import smtplib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import BadHeaderError, EmailMessage, get_connection
from django.utils import timezone

from .models import Notification

log = logging.getLogger("mqic.notifications")
State = Notification.State

RETRY_SECONDS = (30, 60, 120, 300, 600, 1800, 3600)
"""The waits after each failed try; after the last, the channel is given up (about two hours)."""
BATCH = 50
"""Rows one delivery task takes at most; a longer backlog goes in steps."""
HEADER = "X-MQIC-Event-Id"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    error: str = ""
    permanent: bool = False


SENT = Outcome(True)


def deliver_due(now=None) -> int:
    """Deliver every row that is due, each taken by one worker (its ``next_try_at`` moved on first,
    by compare-and-swap, as a lease). Returns how many rows this call took."""
    now = now or timezone.now()
    taken = 0
    due = Notification.objects.filter(next_try_at__lte=now).order_by("next_try_at")
    for row in due[:BATCH]:
        lease = now + timedelta(seconds=4 * settings.MQIC_NOTIFY_TIMEOUT + 30)
        if Notification.objects.filter(pk=row.pk, next_try_at=row.next_try_at).update(next_try_at=lease):
            deliver(row)
            taken += 1
    return taken


def deliver(row: Notification) -> None:
    """Try each pending channel of ``row`` once and write down what became of it."""
    fields: dict = {"tries": row.tries + 1}
    tried = {"mail": (row.mail_state, send_mail), "webhook": (row.webhook_state, post)}
    for channel, (state, send) in tried.items():
        if state != State.PENDING:
            continue
        outcome = within_deadline(lambda send=send: send(row))
        stamp = "mailed_at" if channel == "mail" else "posted_at"
        if outcome.ok:
            fields |= {f"{channel}_state": State.SENT, stamp: timezone.now(), f"{channel}_error": ""}
            continue
        gave_up = outcome.permanent or row.tries + 1 > len(RETRY_SECONDS)
        note = "" if gave_up else f"will try again (try {row.tries + 1}): "
        fields |= {f"{channel}_error": (note + outcome.error)[:2000]}
        if gave_up:
            fields[f"{channel}_state"] = State.FAILED
        log.warning("notification %s: %s %s", row.key, channel, fields[f"{channel}_error"])
    pending = [c for c in tried if fields.get(f"{c}_state", getattr(row, f"{c}_state")) == State.PENDING]
    wait = RETRY_SECONDS[min(row.tries, len(RETRY_SECONDS) - 1)]
    fields["next_try_at"] = timezone.now() + timedelta(seconds=wait) if pending else None
    Notification.objects.filter(pk=row.pk).update(**fields)


def within_deadline(send: Callable[[], Outcome]) -> Outcome:
    """``send()``, given ``MQIC_NOTIFY_TIMEOUT`` in all; past it a temporary failure (the thread is
    left to its socket timeout, which the same setting bounds)."""
    deadline = settings.MQIC_NOTIFY_TIMEOUT
    result: list[Outcome] = []

    def run() -> None:
        try:
            result.append(send())
        except Exception as error:  # a bug in a transport is this delivery's failure, not the task's
            result.append(Outcome(False, f"{type(error).__name__}: {error}"))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(deadline)
    if not result:
        return Outcome(False, f"no answer within {deadline:g} s")
    return result[0]


# -- the channels -----------------------------------------------------------------------------


def send_mail(row: Notification) -> Outcome:
    body = f"{row.subject}\n\nWhy: {row.reason}\n\nSee: {row.url}\n"
    if log := row.payload.get("log"):
        body += f"\nThe last lines of its job log:\n\n{log}\n"
    message = EmailMessage(
        f"[MQIC] {one_line(row.subject)}",
        body,
        None,
        row.mail_to,
        headers={HEADER: row.payload.get("id", "")},
        connection=get_connection(timeout=settings.MQIC_NOTIFY_TIMEOUT),
    )
    try:
        message.send()
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, BadHeaderError) as error:
        return Outcome(False, f"{type(error).__name__}: {error}", permanent=True)
    except (OSError, smtplib.SMTPException) as error:
        return Outcome(False, f"{type(error).__name__}: {error}")
    return SENT


def post(row: Notification) -> Outcome:
    url = urlsplit(settings.MQIC_NOTIFY_WEBHOOK)
    allowed = ("https", "http") if settings.MQIC_NOTIFY_ALLOW_HTTP else ("https",)
    if url.scheme not in allowed or not url.hostname:
        why = "MQIC_NOTIFY_WEBHOOK must be an https URL (http only with MQIC_NOTIFY_ALLOW_HTTP=true)"
        return Outcome(False, why, permanent=True)
    kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    connection = kind(url.hostname, url.port, timeout=settings.MQIC_NOTIFY_TIMEOUT)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    headers = {"Content-Type": "application/json", "User-Agent": "MQIC notifications", HEADER: row.payload["id"]}
    try:
        connection.request("POST", path, body=json.dumps(row.payload).encode(), headers=headers)
        answer = connection.getresponse()
        answer.read(1 << 16)
    except (OSError, http.client.HTTPException) as error:
        return Outcome(False, f"{type(error).__name__}: {error}")
    finally:
        connection.close()
    if 200 <= answer.status < 300:
        return SENT
    said = f"HTTP {answer.status} {answer.reason}"
    if 300 <= answer.status < 400:
        return Outcome(
            False, f"{said}: redirects are not followed ({answer.getheader('Location')})", permanent=True
        )
    return Outcome(False, said, permanent=answer.status < 500 and answer.status not in (408, 429))


def one_line(text: str) -> str:
    """A mail header holds one line: control characters become spaces."""
    return "".join(c if c.isprintable() else " " for c in text)
