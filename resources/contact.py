"""The one seam through which MQIC talks to a host, and the only writer of the host's health.

As healthchecks' ``Channel.notify`` is the one door to the outside world, ``contact(host)`` is
the one door to an HPC host::

    with contact(host) as link:
        state = link.queue.state()
        ...                           # decisions that need the answer
    if link.failed:
        report.host_errors[host.name] = str(link.error)

It hands out the host's ``JobQueue``. A ``RemoteError`` that escapes the block ends it, is
recorded and is swallowed: callers read ``link.error`` instead of catching. A contact holds one
of the host's ``MQIC_HOST_MAX_CONNECTIONS`` slots from its first call to its end, when its
connection is closed (its lease renewed all along, a long transfer included): however many
workers run, a login node never sees more connections at once. When every slot is taken the
contact does not wait: ``HostBusy``, and the host is left for the next pass. An operator's contact
(``force``) never takes the first slot while there are others, so pages cannot starve the passes. ``for_each_host``
runs a pass's hosts side by side, so that a slow or unreachable host delays no other. When the
block ends, the host row gets one update: the time of a successful contact, or the failure (last
error, consecutive failures, down since). After ``MQIC_HOST_FAILURES_BEFORE_BACKOFF`` failures
in a row the host backs off (a circuit breaker): until ``next_try_at`` the queue refuses to
call it (``HostBackingOff``, an "unknown" like any other), unless the contact is ``force``d by
an operator. ``host_down`` and ``host_up`` are sent once per outage, when a host enters the
back-off and when it answers again.
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db import connections as db_connections
from django.dispatch import Signal
from django.utils import timezone

from .connections import pueue_for, ssh_target
from .jobqueue import DaemonDown, JobQueue, OutcomeUnknown, RemoteError, guarded
from .models import HostSlot, HpcHost
from .remote.ssh import scan_host_key
from .remote.transport import while_waiting

T = TypeVar("T")
log = logging.getLogger("mqic.contact")

host_down = Signal()
"""Sent with ``host`` and ``reason`` when a host enters its back-off after repeated failures."""
host_up = Signal()
"""Sent with ``host`` and ``down_since`` when a host that was down answers again."""


HEALTH_WRITE_INTERVAL = timedelta(seconds=5)
"""A host that keeps answering gets its ``last_contact_at`` written at most this often."""


class HostBackingOff(OutcomeUnknown):
    """The host failed repeatedly and is not contacted again before its next try."""


class HostBusy(OutcomeUnknown):
    """Every connection slot of the host is in use by other workers: nothing was asked."""


def is_host_failure(error: RemoteError) -> bool:
    """Failures that say the host (or its pueue) cannot be used, as opposed to a definite "no"."""
    return isinstance(error, OutcomeUnknown | DaemonDown) and not isinstance(error, HostBackingOff | HostBusy)


@dataclass
class Link:
    """One contact with one host: its queue, and how the contact went."""

    host: HpcHost
    force: bool = False
    error: RemoteError | None = None
    answered: bool = False
    failures: list[RemoteError] = field(default_factory=list)
    slot: int | None = None
    slot_renewed: datetime | None = None
    queue: JobQueue = field(init=False)

    def __post_init__(self):
        self.queue = JobQueue(pueue_for(self.host), self._observe, self._gate)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def _observe(self, error: RemoteError | None) -> None:
        if error is not None and is_host_failure(error):
            self.failures.append(error)
        else:
            self.answered = True  # a reply, even a definite "no", is a host that answers

    def _gate(self) -> None:
        """Before each call: not while the host backs off, and only holding one of its slots."""
        host, now = self.host, timezone.now()
        if not self.force and host.next_try_at is not None and host.next_try_at > now:
            raise HostBackingOff(
                f"{host.name} failed {host.consecutive_failures} times in a row (down since "
                f"{host.down_since:%Y-%m-%d %H:%M:%S}); not contacted again before {host.next_try_at:%H:%M:%S}"
            )
        if self.slot is None:
            self.slot = take_slot(host, leave_one=self.force)
            if self.slot is None:
                limit = settings.MQIC_HOST_MAX_CONNECTIONS
                raise HostBusy(f"{host.name}: all {limit} connection slots are in use by other workers")
            self.slot_renewed = now
        else:
            self.keep_slot()

    def offered_key(self, hop: int | None = None) -> tuple[str, str, str]:
        """The SSH key the host (or its jump host number ``hop``) offers now, ``(key_type, base64,
        fingerprint)``: a handshake with no login (past the jump hosts before it), made as any call
        of the contact (gated, on one of the host's slots, its outcome recorded on the host)."""
        target = ssh_target(self.host)
        return guarded(self._gate, self._observe, scan_host_key, target if hop is None else target.hop(hop))

    def keep_slot(self) -> None:
        """Renew the slot's lease every third of it while the contact lasts: before each call, and
        (through ``while_waiting``) all along a long one, such as a transfer of many gigabytes."""
        now = timezone.now()
        if self.slot is None or now - self.slot_renewed <= slot_lease() / 3:
            return
        mine = HostSlot.objects.filter(host=self.host, number=self.slot, holder=_holder())
        try:
            mine.update(expires_at=now + slot_lease())
        except DatabaseError:
            log.warning("%s: could not renew connection slot %s", self.host.name, self.slot, exc_info=True)
            return  # the call goes on: a missed renewal only risks one connection too many
        self.slot_renewed = now

    def hang_up(self) -> None:
        """Close the connection and free the slot (a dead holder's slot frees itself later)."""
        if self.slot is None:
            return
        self.queue.transport.close()
        HostSlot.objects.filter(host=self.host, number=self.slot, holder=_holder()).update(
            holder="", expires_at=timezone.now()
        )
        self.slot = None


@contextmanager
def contact(host: HpcHost, *, force: bool = False) -> Iterator[Link]:
    """Talk to ``host`` through ``link.queue``; see the module docstring."""
    link = Link(host, force=force)
    try:
        with while_waiting(link.keep_slot):
            yield link
    except RemoteError as error:
        link.error = error
    finally:
        link.hang_up()
        if link.failures:
            record_failure(host, link.failures[-1])
        elif link.answered:
            record_success(host)


def take_slot(host: HpcHost, *, leave_one: bool = False) -> int | None:
    """One free connection slot of ``host`` for this thread; ``None`` when all are taken.

    A slot is free when its lease ran out, or at once when it is held by a process of this node
    that is gone (a worker killed mid-pass): no waiting for its lease after a local crash. With
    ``leave_one`` (an operator's contact: pages, buttons), slot 0 is never taken when there are
    more: however many pages follow logs, the passes keep a connection of their own.
    """
    now, limit = timezone.now(), settings.MQIC_HOST_MAX_CONNECTIONS
    HostSlot.objects.bulk_create(
        [HostSlot(host=host, number=n, expires_at=now) for n in range(limit)], ignore_conflicts=True
    )
    lowest = 1 if leave_one and limit > 1 else 0
    slots = HostSlot.objects.filter(host=host, number__lt=limit, number__gte=lowest).values_list(
        "number", "holder", "expires_at"
    )
    for number, holder, expires in slots:
        if expires > now and not _dead_here(holder):
            continue
        taken = HostSlot.objects.filter(host=host, number=number, holder=holder, expires_at=expires)
        if taken.update(holder=_holder(), expires_at=now + slot_lease()):
            return number
    return None


def slot_lease() -> timedelta:
    """A slot whose holder died elsewhere is free again after this (each call renews it)."""
    return timedelta(seconds=2 * settings.MQIC_SSH_COMMAND_TIMEOUT)


def _dead_here(holder: str) -> bool:
    node, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if node != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _holder() -> str:
    """Who holds a slot: this node, process and thread (a pass runs its hosts on threads)."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"[:128]


def for_each_host(work: dict[HpcHost, T], handle: Callable[[HpcHost, T], None]) -> None:
    """``handle(host, items)`` for every host, side by side: a slow or unreachable host delays no other.

    Each host due this pass runs on a thread of its own, however many there are (a capped pool would
    queue the hosts past the cap behind the slow ones; a thread that mostly waits on SSH is cheap,
    and a deployment has as many as it has enabled hosts). Each gets a copy of the caller's context
    (the actor of its events) and its own database connection, closed when it ends. A single host
    runs inline.
    """
    if len(work) <= 1:
        for host, items in work.items():
            handle(host, items)
        return
    with ThreadPoolExecutor(max_workers=len(work), thread_name_prefix="mqic-host") as pool:
        futures = [pool.submit(contextvars.copy_context().run, _on_thread, handle, h, i) for h, i in work.items()]
    for future in futures:
        future.result()  # an unexpected error of one host's work fails the pass, after every host ran


def _on_thread(handle: Callable[[HpcHost, T], None], host: HpcHost, items: T) -> None:
    try:
        handle(host, items)
    finally:
        db_connections.close_all()  # this thread's own connections; the thread ends with the pass


def record_success(host: HpcHost) -> None:
    """A contact that got answers: the host is up (and ``host_up`` if it was down)."""
    now = timezone.now()
    fresh = host.last_contact_at is not None and now - host.last_contact_at < HEALTH_WRITE_INTERVAL
    if fresh and not host.consecutive_failures and not host.last_error:
        return  # nothing new to say: a quiet pass writes nothing
    with transaction.atomic():
        row = HpcHost.objects.select_for_update().get(pk=host.pk)
        was_down, down_since = row.consecutive_failures >= _threshold(), row.down_since
        HpcHost.objects.filter(pk=host.pk).update(
            last_contact_at=now, last_error="", consecutive_failures=0, down_since=None, next_try_at=None
        )
    host.last_contact_at, host.last_error, host.consecutive_failures = now, "", 0
    host.down_since = host.next_try_at = None
    if was_down:
        host_up.send(HpcHost, host=host, down_since=down_since)


def record_failure(host: HpcHost, error: RemoteError) -> None:
    """A contact that failed: count it, and back off once it happened too often in a row."""
    now = timezone.now()
    with transaction.atomic():
        row = HpcHost.objects.select_for_update().get(pk=host.pk)
        failures = row.consecutive_failures + 1
        fields = {
            "last_error": f"{now:%Y-%m-%d %H:%M:%S} {error}",
            "consecutive_failures": failures,
            "down_since": row.down_since or now,
            "next_try_at": now + backoff(failures) if failures >= _threshold() else None,
        }
        HpcHost.objects.filter(pk=host.pk).update(**fields)
    for name, value in fields.items():
        setattr(host, name, value)
    if failures == _threshold():
        host_down.send(HpcHost, host=host, reason=str(error))


def backoff(failures: int) -> timedelta:
    """The wait before the next try: doubles with every failure past the threshold, up to a cap."""
    steps = min(max(0, failures - _threshold()), 20)
    seconds = min(settings.MQIC_HOST_BACKOFF_SECONDS * 2**steps, settings.MQIC_HOST_BACKOFF_MAX_SECONDS)
    return timedelta(seconds=seconds)


def retry_now(host: HpcHost) -> bool:
    """An operator's "try again now": the next contact goes ahead whatever the back-off."""
    return bool(HpcHost.objects.filter(pk=host.pk, next_try_at__isnull=False).update(next_try_at=None))


def _threshold() -> int:
    return settings.MQIC_HOST_FAILURES_BEFORE_BACKOFF
