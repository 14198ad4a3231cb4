"""Telling the operators: a failed case, a stuck case, a host that went down or came back.

Each event is announced once, however many passes, workers and nodes see it: ``announce``
inserts a ``Notification`` whose unique ``key`` names the event (the failure's event row, the
lease that ran out, the outage's start); a second insert of the same key does nothing. The row is
an outbox: it is written in the same transaction as what it announces (a change rolled back is
never announced, and one committed always is), and it holds everything its delivery needs.
``console.delivery`` sends it later, from a django-q2 task enqueued once the row is committed and
after each pass while rows are due: mail through Django's mail settings to
``MQIC_NOTIFY_EMAILS``, one JSON POST to ``MQIC_NOTIFY_WEBHOOK`` (e.g. a Slack or Mattermost
incoming webhook, which shows its ``text``). No pass or request waits for either.

The receivers listen to what the other apps already say, so ``cases`` and ``resources`` know
nothing about notifications: a ``CaseEvent`` that moves a case to ``failed``, a ``PassRun``
saved (then stuck cases are looked for), and ``resources.contact``'s ``host_down``/``host_up``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django_q.tasks import async_task

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
    log: str = ""
    """The last lines of the job's log, for a failed case."""

    def payload(self) -> dict:
        """The webhook's JSON: ``text`` for chat webhooks, the fields for anything else, and the
        event's ``id``, the same at every delivery of it (a receiver drops what it has seen)."""
        body = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"mqic:{self.key}")),
            "event": self.event,
            "reason": self.reason,
            "url": self.url,
            "text": f"MQIC: {self.subject}: {self.reason} ({self.url})",
            "at": timezone.now().isoformat(),
        }
        if self.case is not None:
            body["case"] = {"id": self.case.pk, "name": self.case.name, "status": self.case.status}
        if self.log:
            body["log"] = self.log
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


LOG_LINES = 20
LOG_MAX_CHARS = 2000
"""What a failure's notification carries of the job's log: its last lines, bounded."""


def case_failed(event: CaseEvent) -> Event:
    case = Case.objects.get(pk=event.case_id)
    return Event(
        key=f"case_failed:{event.case_id}:{event.pk}",
        event="case_failed",
        subject=f"case {case.name} failed",
        reason=event.reason,
        url=case_url(case.pk),
        case=case,
        log=last_lines(case.log_tail),
    )


def last_lines(text: str) -> str:
    tail = "\n".join(text.splitlines()[-LOG_LINES:])
    return tail[-LOG_MAX_CHARS:]


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


# -- the outbox -----------------------------------------------------------------------------


def announce(event: Event) -> Notification | None:
    """Write the event into the outbox, in the caller's transaction, unless it is there already
    (then ``None``); its delivery is enqueued for when that transaction commits."""
    state = Notification.State
    try:
        with transaction.atomic():
            row = Notification.objects.create(
                key=event.key[:200],
                event=event.event,
                subject=event.subject[:300],
                reason=event.reason,
                url=event.url,
                payload=event.payload(),
                mail_state=state.PENDING if settings.MQIC_NOTIFY_EMAILS else state.OFF,
                webhook_state=state.PENDING if settings.MQIC_NOTIFY_WEBHOOK else state.OFF,
                next_try_at=timezone.now(),
            )
    except IntegrityError:
        return None
    transaction.on_commit(enqueue_delivery)
    return row


def enqueue_delivery() -> None:
    """Have the cluster deliver what is due; a task that finds nothing due does nothing."""
    try:
        async_task("console.tasks.deliver_notifications", task_name="mqic notifications")
    except Exception:  # the broker is down: the next pass enqueues it again
        log.exception("notification delivery not enqueued")


def guarded(make_event, *args) -> None:
    """Announce what ``make_event(*args)`` describes, in the caller's transaction; an error is
    logged, never raised (the caller is a pass or a status change)."""
    if not enabled():
        return
    try:
        announce(make_event(*args))
    except Exception:  # a notification never breaks what it announces
        log.exception("notification not written")


# -- the receivers (connected in ``ConsoleConfig.ready``) -----------------------------------------


def on_case_event(sender, instance: CaseEvent, created: bool, **kwargs) -> None:
    if created and instance.to_status == CaseStatus.FAILED:
        guarded(case_failed, instance)


def on_pass_run(sender, instance, created: bool, **kwargs) -> None:
    """After each recorded pass, announce the cases stuck past their lease (each lease once), and
    have what is due delivered (a retry, or a row whose worker died before enqueueing it)."""
    if created and enabled():
        transaction.on_commit(announce_stuck)
        if Notification.objects.filter(next_try_at__lte=timezone.now()).exists():
            transaction.on_commit(enqueue_delivery)


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
    guarded(host_down, host, reason)


def on_host_up(sender, host: HpcHost, down_since=None, **kwargs) -> None:
    guarded(host_up, host, down_since)
