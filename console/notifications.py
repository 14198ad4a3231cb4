"""Telling the operators: a failed case, a stuck case, a host that went down or came back.

Each event is announced once, however many passes, workers and nodes see it: ``announce``
inserts a ``Notification`` whose unique ``key`` names the event (the failure's event row, the
lease that ran out, the outage's start), and only the worker whose insert wins sends it. It
runs after the commit of what it announces (``transaction.on_commit``), so nothing is said
about a change that was rolled back. Mail goes through Django's mail settings to
``MQIC_NOTIFY_EMAILS``; the webhook gets one JSON POST per event (``MQIC_NOTIFY_WEBHOOK``, e.g.
a Slack or Mattermost incoming webhook, which shows its ``text``). A failed delivery is written
on the row and logged; it never reaches the pass that caused it.

The receivers listen to what the other apps already say, so ``cases`` and ``resources`` know
nothing about notifications: a ``CaseEvent`` that moves a case to ``failed``, a ``PassRun``
saved (then stuck cases are looked for), and ``resources.contact``'s ``host_down``/``host_up``.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from cases.models import Case, CaseEvent, CaseStatus
from cases.selectors import stuck_cases
from resources.models import HpcHost

from .models import Notification

log = logging.getLogger("mqic.notifications")


@dataclass(frozen=True)
class Event:
    key: str
    event: str
    """"case_failed", "case_stuck", "host_down" or "host_up"."""
    subject: str
    reason: str
    url: str
    case: Case | None = None
    host: HpcHost | None = None

    def payload(self) -> dict:
        """The webhook's JSON: ``text`` for chat webhooks, the fields for anything else."""
        body = {
            "event": self.event,
            "reason": self.reason,
            "url": self.url,
            "text": f"MQIC: {self.subject}: {self.reason} ({self.url})",
            "at": timezone.now().isoformat(),
        }
        if self.case is not None:
            body["case"] = {"id": self.case.pk, "name": self.case.name, "status": self.case.status}
        if self.host is not None:
            body["host"] = {"id": self.host.pk, "name": self.host.name}
        return body


def enabled() -> bool:
    return bool(settings.MQIC_NOTIFY_EMAILS or settings.MQIC_NOTIFY_WEBHOOK)


def absolute(path: str) -> str:
    return settings.MQIC_PUBLIC_URL + path


def case_url(case_id: int) -> str:
    return absolute(reverse("admin:cases_case_change", args=[case_id]))


def host_url(host_id: int) -> str:
    return absolute(reverse("admin:resources_hpchost_change", args=[host_id]))


# -- the events -----------------------------------------------------------------------------


def case_failed(event: CaseEvent) -> Event:
    case = Case.objects.get(pk=event.case_id)
    return Event(
        key=f"case_failed:{event.case_id}:{event.pk}",
        event="case_failed",
        subject=f"case {case.name} failed",
        reason=event.reason,
        url=case_url(case.pk),
        case=case,
    )


def case_stuck(case: Case) -> Event:
    lease = f"{case.lease_expires_at:%Y-%m-%d %H:%M:%S}"
    return Event(
        key=f"case_stuck:{case.pk}:{case.lease_generation}:{case.lease_expires_at.isoformat()}",
        event="case_stuck",
        subject=f"case {case.name} is stuck",
        reason=f"{case.status} since its lease ran out at {lease}: the worker that held it is gone; the "
        "reconciler takes it over, or an operator marks it failed",
        url=case_url(case.pk),
        case=case,
    )


def host_down(host: HpcHost, reason: str) -> Event:
    since = host.down_since.isoformat() if host.down_since else ""
    return Event(
        key=f"host_down:{host.pk}:{since}",
        event="host_down",
        subject=f"host {host.name} is down",
        reason=f"{host.consecutive_failures} failed contacts in a row: {reason}",
        url=host_url(host.pk),
        host=host,
    )


def host_up(host: HpcHost, down_since) -> Event:
    since = down_since.isoformat() if down_since else ""
    was = f" (down since {down_since:%Y-%m-%d %H:%M:%S})" if down_since else ""
    return Event(
        key=f"host_up:{host.pk}:{since}",
        event="host_up",
        subject=f"host {host.name} is back",
        reason=f"it answers again{was}",
        url=host_url(host.pk),
        host=host,
    )


# -- sending once ---------------------------------------------------------------------------


def announce(event: Event) -> Notification | None:
    """Record the event and send it, unless another worker already did (then ``None``)."""
    try:
        with transaction.atomic():
            row = Notification.objects.create(
                key=event.key[:200],
                event=event.event,
                subject=event.subject[:300],
                reason=event.reason,
                url=event.url,
            )
    except IntegrityError:
        return None
    _mail(row, event)
    _post(row, event)
    return row


def _mail(row: Notification, event: Event) -> None:
    if not settings.MQIC_NOTIFY_EMAILS:
        return
    body = f"{event.subject}\n\nWhy: {event.reason}\n\nSee: {event.url}\n"
    try:
        send_mail(f"[MQIC] {event.subject}", body, None, settings.MQIC_NOTIFY_EMAILS)
    except Exception as error:
        log.warning("notification %s: mail failed: %s", row.key, error)
        Notification.objects.filter(pk=row.pk).update(mail_error=f"{type(error).__name__}: {error}"[:2000])
        return
    Notification.objects.filter(pk=row.pk).update(mailed_at=timezone.now())


def _post(row: Notification, event: Event) -> None:
    url = settings.MQIC_NOTIFY_WEBHOOK
    if not url:
        return
    if not url.startswith(("http://", "https://")):
        Notification.objects.filter(pk=row.pk).update(webhook_error="MQIC_NOTIFY_WEBHOOK is no http(s) URL")
        return
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url,
        data=json.dumps(event.payload()).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "MQIC notifications"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.MQIC_NOTIFY_TIMEOUT) as answer:  # noqa: S310
            answer.read(1 << 16)
    except (OSError, urllib.error.URLError, ValueError) as error:
        log.warning("notification %s: webhook failed: %s", row.key, error)
        Notification.objects.filter(pk=row.pk).update(webhook_error=f"{type(error).__name__}: {error}"[:2000])
        return
    Notification.objects.filter(pk=row.pk).update(posted_at=timezone.now())


def after_commit(make_event, *args) -> None:
    """Announce what ``make_event(*args)`` describes once the current transaction commits; any error
    is logged, never raised (the caller is a pass)."""
    if not enabled():
        return

    def send():
        try:
            announce(make_event(*args))
        except Exception:  # a notification never breaks what it announces
            log.exception("notification not sent")

    transaction.on_commit(send)


# -- the receivers (connected in ``ConsoleConfig.ready``) -----------------------------------------


def on_case_event(sender, instance: CaseEvent, created: bool, **kwargs) -> None:
    if created and instance.to_status == CaseStatus.FAILED:
        after_commit(case_failed, instance)


def on_pass_run(sender, instance, created: bool, **kwargs) -> None:
    """After each recorded pass, announce the cases stuck past their lease (each lease once)."""
    if created and enabled():
        transaction.on_commit(announce_stuck)


STUCK_PER_PASS = 100
"""At most this many stuck cases are announced after one pass (the next pass announces more)."""


def announce_stuck() -> None:
    try:
        stuck = stuck_cases().only("pk", "name", "status", "lease_generation", "lease_expires_at")
        events = [case_stuck(case) for case in stuck[:STUCK_PER_PASS]]
        sent = set(Notification.objects.filter(key__in=[e.key for e in events]).values_list("key", flat=True))
        for event in events:
            if event.key not in sent:
                announce(event)
    except Exception:
        log.exception("stuck cases not announced")


def on_host_down(sender, host: HpcHost, reason: str, **kwargs) -> None:
    after_commit(host_down, host, reason)


def on_host_up(sender, host: HpcHost, down_since=None, **kwargs) -> None:
    after_commit(host_up, host, down_since)
