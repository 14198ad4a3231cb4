"""Telling the operators, and a case's owner: a failed case, a stuck case, a host that went down
or came back, and (to an owner who chose it) a completed case.

Each event is announced once, however many passes, workers and nodes see it: ``announce``
inserts a ``Notification`` whose unique ``key`` names the event (the failure's event row, the
lease that ran out, the outage's start); a second insert of the same key does nothing. The row is
an outbox: it is written in the same transaction as what it announces (a change rolled back is
never announced, and one committed always is), and it holds everything its delivery needs.
``console.delivery`` sends it later, from a django-q2 task enqueued once the row is committed and
after each pass while rows are due: mail through Django's mail settings to the addresses the row
names, one JSON POST to ``MQIC_NOTIFY_WEBHOOK`` (e.g. a Slack or Mattermost incoming webhook, which
shows its ``text``). No pass or request waits for either.

Who is mailed is decided when the row is written and kept on it (a retry mails the same people):
the operators (``MQIC_NOTIFY_EMAILS``) for every event but a completion, and a case's owner, an
active user with a valid e-mail address, for their case's failure and stuck lease, and for its
completion when their ``NotificationPreference`` asks for it. A completion is the owner's alone:
neither the operators nor the webhook hear of it. An event nobody is to hear of writes no row.

The receivers listen to what the other apps already say, so ``cases`` and ``resources`` know
nothing about notifications: a ``CaseEvent`` that moves a case to ``failed``, a ``PassRun``
saved (then stuck cases are looked for), and ``resources.contact``'s ``host_down``/``host_up``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django_q.tasks import async_task

from cases.models import Case, CaseEvent, CaseStatus
from cases.selectors import stuck_cases
from resources.models import HpcHost

from .models import Notification, NotificationPreference

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
    to_operators: bool = True
    """Mailed to ``MQIC_NOTIFY_EMAILS`` and posted to the webhook (a completion is not)."""
    owner: str = ""
    """The address of the case's owner, when they are to get this event."""

    def mail_to(self) -> list[str]:
        operators = list(settings.MQIC_NOTIFY_EMAILS) if self.to_operators else []
        return operators + ([self.owner] if self.owner and self.owner not in operators else [])

    def posted(self) -> bool:
        return self.to_operators and bool(settings.MQIC_NOTIFY_WEBHOOK)

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


ADDRESS_MAX = 254
"""The longest e-mail address there is (RFC 5321's path limit)."""


def owner_address(case: Case, *, completion: bool = False) -> str:
    """The address of ``case``'s owner if they are to be mailed: an active user with a valid address
    (edited by operators: checked here, where it is used), and for a completion one who chose it."""
    owner = case.owner
    if owner is None or not owner.is_active or not owner.email or len(owner.email) > ADDRESS_MAX:
        return ""
    try:
        validate_email(owner.email)
    except ValidationError:
        return ""
    if completion and not NotificationPreference.objects.filter(user=owner, mail_on_completion=True).exists():
        return ""
    return owner.email


def case_ended(event: CaseEvent, outcome: str, case: Case, **fields) -> Event:
    """The event of a case's end (``outcome``: "failed", "completed"), from the move's event row."""
    return Event(
        key=f"case_{outcome}:{event.case_id}:{event.pk}",
        event=f"case_{outcome}",
        subject=f"case {case.name} {outcome}",
        reason=event.reason,
        url=case_url(case.pk),
        case=case,
        **fields,
    )


def ended_case(event: CaseEvent) -> Case:
    return Case.objects.select_related("owner").get(pk=event.case_id)


def case_failed(event: CaseEvent) -> Event:
    case = ended_case(event)
    return case_ended(event, "failed", case, log=last_lines(case.log_tail), owner=owner_address(case))


def case_completed(event: CaseEvent) -> Event:
    """For the case's owner alone, when they asked for it."""
    case = ended_case(event)
    return case_ended(event, "completed", case, to_operators=False, owner=owner_address(case, completion=True))


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
        owner=owner_address(case),
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
    """Write the event into the outbox with its recipients, in the caller's transaction, unless it
    is there already or nobody is to hear of it (then ``None``); its delivery is enqueued for when
    that transaction commits."""
    state = Notification.State
    mail_to, posted = event.mail_to(), event.posted()
    if not mail_to and not posted:
        return None
    try:
        with transaction.atomic():
            row = Notification.objects.create(
                key=event.key[:200],
                event=event.event,
                subject=event.subject[:300],
                reason=event.reason,
                url=event.url,
                payload=event.payload(),
                mail_to=mail_to,
                mail_state=state.PENDING if mail_to else state.OFF,
                webhook_state=state.PENDING if posted else state.OFF,
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
    try:
        announce(make_event(*args))
    except Exception:  # a notification never breaks what it announces
        log.exception("notification not written")


# -- the receivers (connected in ``ConsoleConfig.ready``) -----------------------------------------


def on_case_event(sender, instance: CaseEvent, created: bool, **kwargs) -> None:
    if created and instance.to_status == CaseStatus.FAILED:
        guarded(case_failed, instance)
    elif created and instance.to_status == CaseStatus.COMPLETED:
        guarded(case_completed, instance)


def on_pass_run(sender, instance, created: bool, **kwargs) -> None:
    """After each recorded pass, announce the cases stuck past their lease (each lease once), and
    have what is due delivered (a retry, or a row whose worker died before enqueueing it)."""
    if created:
        transaction.on_commit(announce_stuck)
        if Notification.objects.filter(next_try_at__lte=timezone.now()).exists():
            transaction.on_commit(enqueue_delivery)


STUCK_PER_PASS = 100
"""At most this many stuck cases are announced after one pass (the next pass announces more)."""
STUCK_FIELDS = ("pk", "name", "status", "lease_generation", "lease_expires_at", "owner__email", "owner__is_active")


def announce_stuck() -> None:
    try:
        shown = (
            "pk",
            "name",
            "status",
            "lease_generation",
            "lease_expires_at",
            "owner__email",
            "owner__is_active",
        )
        stuck = stuck_cases().select_related("owner").only(*shown)
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
