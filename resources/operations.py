"""What an operator does by hand to hosts and GPU groups, for the admin.

Each action returns an ``Outcome``: whether it changed anything and the sentence to show.
An action that does not apply changes nothing and says why. Anything that talks to a host
keeps the host's health line (``record_contact``). Like the rest of ``resources``, this
knows nothing about cases: the holder of a group is only an id.
"""

from __future__ import annotations

from dataclasses import dataclass

from .connections import pueue_for, record_contact
from .hostkeys import OfferedKey, offered_key, trust
from .models import GpuGroup, HpcHost
from .remote.errors import ChangedHostKey, RemoteError
from .remote.pueue import UnknownGroup
from .remote.ssh import fingerprint
from .services import group_name_for, release_group, set_blocked, set_enabled

Status = GpuGroup.Status


@dataclass(frozen=True)
class Outcome:
    """What an action did; ``level`` names a ``django.contrib.messages`` level."""

    changed: bool
    message: str
    level: str = "success"


def refused(message: str, level: str = "warning") -> Outcome:
    return Outcome(False, message, level)


# -- GPU groups -----------------------------------------------------------------------------


def set_group_enabled(group: GpuGroup, enabled: bool) -> Outcome:
    """Enable a disabled group or disable a free one; an assigned group must be released first."""
    verb = "enabled" if enabled else "disabled"
    if set_enabled(group.pk, enabled):
        return Outcome(True, f"GPU group {group.name} {verb}")
    group.refresh_from_db(fields=["status"])
    return refused(f"GPU group {group.name} is {group.status}: {verb} does not apply")


def release_idle_group(group: GpuGroup) -> Outcome:
    """Free an assigned group, only once its pueue group runs nothing.

    The check is remote because the database may be wrong (that is why a human releases
    it): a live task in the pueue group means the GPU is in use, whatever the rows say. A
    host that does not answer is no answer, so nothing is released. The holding case is
    left as it is; its own release later names an old lease generation and does nothing.
    """
    group.refresh_from_db()
    if group.status != Status.ASSIGNED:
        return refused(f"GPU group {group.name} is {group.status}: release does not apply")
    host = group.host
    try:
        live = pueue_for(host).status(group=group.pueue_group).live_tasks_in_group(group.pueue_group)
    except UnknownGroup:
        live = []  # a definite answer: pueue has no such group, so nothing runs in it
    except RemoteError as error:
        record_contact(host, error)
        return refused(f"GPU group {group.name} not released: {host.name} did not answer ({error})", "error")
    record_contact(host)
    if live:
        tasks = ", ".join(f"{t.id} ({t.label or 'no label'}, {t.status.value})" for t in live)
        return refused(
            f"GPU group {group.name} not released: pueue group {group.pueue_group} still holds live tasks {tasks}",
            "error",
        )
    if not release_group(group.pk, holder_id=group.holder_id, generation=group.lease_generation):
        return refused(f"GPU group {group.name} changed meanwhile: not released")
    return Outcome(
        True,
        f"GPU group {group.name} released (held by case id {group.holder_id}, lease {group.lease_generation}); "
        "that case itself was not changed",
    )


def missing_group_reason(host: HpcHost, pueue_group: str) -> str:
    return f"pueue on {host.name} has no group {pueue_group}"


def sync_groups(host: HpcHost) -> Outcome:
    """Make the GPU groups match the host's pueue groups.

    A pueue group without a row gets one, *disabled*: only an operator knows whether it
    is a GPU group and which devices it has, so nothing is sent there before they enable
    it. A row whose pueue group is gone is blocked (never deleted: old cases point at it),
    and unblocked again once the pueue group is back.
    """
    try:
        remote = pueue_for(host).groups()
    except RemoteError as error:
        record_contact(host, error)
        return refused(f"{host.name} did not answer: {error}", "error")
    record_contact(host)
    known = {group.pueue_group: group for group in host.gpu_groups.all()}
    created = [
        GpuGroup.objects.create(
            host=host, pueue_group=name, name=group_name_for(host, name), status=Status.DISABLED
        ).name
        for name in sorted(remote.keys() - known.keys())
    ]
    blocked, unblocked = [], []
    for name, group in known.items():
        reason = missing_group_reason(host, name)
        if name not in remote and set_blocked(group.pk, reason):
            blocked.append(group.name)
        elif name in remote and group.blocked_reason == reason and set_blocked(group.pk, ""):
            unblocked.append(group.name)
    parts = [
        f"created (disabled) {', '.join(created)}" if created else "",
        f"blocked (gone from pueue) {', '.join(blocked)}" if blocked else "",
        f"unblocked {', '.join(unblocked)}" if unblocked else "",
    ]
    summary = "; ".join(p for p in parts if p)
    if not summary:
        return refused(f"{host.name}: the GPU groups already match pueue groups {sorted(remote)}", "info")
    return Outcome(True, f"{host.name}: {summary}")


# -- hosts ----------------------------------------------------------------------------------


def check_health(host: HpcHost) -> Outcome:
    """Ask the host for its pueue version: proves SSH, the host key and the pueue command."""
    try:
        version = pueue_for(host).version()
    except RemoteError as error:
        record_contact(host, error)
        return refused(f"{host.name}: {error}", "error")
    record_contact(host)
    HpcHost.objects.filter(pk=host.pk).update(pueue_version=version)
    return Outcome(True, f"{host.name} answers: pueue {version}")


def trusted_fingerprint(host: HpcHost) -> str:
    """The fingerprint of the key stored on the row, "" when none (or it cannot be read)."""
    try:
        key_type, key_base64 = host.host_key.split()[:2]
        return fingerprint(key_type, key_base64)
    except ValueError:
        return ""


@dataclass(frozen=True)
class KeyCheck:
    """The key a host offers now, against the one trusted on its row."""

    offered: OfferedKey
    trusted: str

    @property
    def state(self) -> str:
        """ "new" (nothing trusted yet), "trusted" (the same key) or "changed" (a different key!)."""
        if not self.trusted:
            return "new"
        return "trusted" if self.trusted == self.offered.fingerprint else "changed"


def check_host_key(host: HpcHost) -> KeyCheck:
    """Fetch the offered key (raises ``OutcomeUnknown`` when the host cannot be reached)."""
    return KeyCheck(offered_key(host), trusted_fingerprint(host))


def trust_host_key(host: HpcHost, confirmed: str, *, replace: bool = False) -> Outcome:
    """Trust the key the host offers, if it is still the one the operator confirmed.

    The key is fetched again: a key that changed between the look and the click is never
    trusted on the strength of the earlier look. A changed key needs ``replace``.
    """
    try:
        key = offered_key(host)
    except RemoteError as error:
        return refused(f"could not fetch the key of {host.name}: {error}", "error")
    if key.fingerprint != confirmed:
        return refused(
            f"{host.name} now offers {key.fingerprint}, not the {confirmed} you confirmed: nothing trusted",
            "error",
        )
    try:
        changed = trust(host, key, replace=replace)
    except ChangedHostKey as error:
        return refused(str(error), "error")
    if not changed:
        return refused(f"{host.name}: {key.fingerprint} was already trusted", "info")
    return Outcome(True, f"{host.name}: now trusting {key.key_type} {key.fingerprint}")
