"""What an operator does by hand to hosts and GPU groups, for the admin.

Each action returns an ``Outcome``: whether it changed anything and the sentence to show.
An action that does not apply changes nothing and says why. Anything that talks to a host
goes through ``contact`` (forced: an operator asked, so a host's back-off does not stop it).
Like the rest of ``resources``, this knows nothing about cases: a group's holder is only an id.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import hostkeys
from .contact import contact, retry_now
from .jobqueue import UnknownGroup
from .models import GpuGroup, HpcHost
from .remote.errors import ChangedHostKey, RemoteError
from .services import group_name_for, release_group, set_blocked, set_enabled
from .validators import PUEUE_GROUP_NAME

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
    group.refresh_from_db(fields=["status", "retired"])
    if group.retired:
        return refused(
            f"GPU group {group.name} was dropped from the host configuration: list it again there "
            "(MQIC_HPC_CONFIG, then configure_hpc) to put it back in service"
        )
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
    with contact(host, force=True) as link:
        try:
            live = link.queue.state(group=group.pueue_group).live_tasks_in_group(group.pueue_group)
        except UnknownGroup:
            live = []  # a definite answer: pueue has no such group, so nothing runs in it
    if link.failed:
        return refused(f"GPU group {group.name} not released: {host.name} did not answer ({link.error})", "error")
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


MISSING_GROUP = "no pueue group "
"""How the blocked reason of a GPU group whose pueue group is missing starts."""


def missing_group_reason(host: HpcHost, pueue_group: str) -> str:
    return (
        f"{MISSING_GROUP}{pueue_group} on {host.name}: create it there (pueue group add "
        f"{pueue_group} --parallel 1) or run configure_hpc --create-groups"
    )


def missing_groups():
    """GPU groups blocked because their pueue group is missing on their host."""
    return GpuGroup.objects.filter(blocked_reason__startswith=MISSING_GROUP)


def note_pueue_groups(host: HpcHost, present: set[str] | frozenset[str]) -> tuple[list[str], list[str]]:
    """The one rule for GPU groups whose pueue group is missing: given the pueue groups the host
    has now, block each group of the host whose pueue group is missing (nothing can be added
    there) and unblock each one blocked for that reason whose pueue group exists again. Called
    wherever pueue's groups are read: the reconciler, "Sync GPU groups", configure_hpc.
    Returns the names (blocked, unblocked)."""
    blocked, unblocked = [], []
    for group in host.gpu_groups.all():
        reason = missing_group_reason(host, group.pueue_group)
        if group.pueue_group not in present:
            if set_blocked(group.pk, reason):
                blocked.append(group.name)
        elif group.blocked_reason == reason and set_blocked(group.pk, ""):
            unblocked.append(group.name)
    return blocked, unblocked


def sync_groups(host: HpcHost) -> Outcome:
    """Make the GPU groups match the host's pueue groups.

    A pueue group without a row gets one, *disabled*: only an operator knows whether it
    is a GPU group and which devices it has, so nothing is sent there before they enable
    it. A row whose pueue group is gone is blocked (never deleted: old cases point at it),
    and unblocked again once the pueue group is back.
    """
    with contact(host, force=True) as link:
        remote = link.queue.groups()
    if link.failed:
        return refused(f"{host.name} did not answer: {link.error}", "error")
    known = {group.pueue_group: group for group in host.gpu_groups.all()}
    refused_names = sorted(name for name in remote if not PUEUE_GROUP_NAME.fullmatch(name))
    created = [
        GpuGroup.objects.create(
            host=host, pueue_group=name, name=group_name_for(host, name), status=Status.DISABLED
        ).name
        for name in sorted(remote.keys() - known.keys() - set(refused_names))
    ]
    blocked, unblocked = note_pueue_groups(host, set(remote))
    parts = [
        f"created (disabled) {', '.join(created)}" if created else "",
        f"blocked (gone from pueue) {', '.join(blocked)}" if blocked else "",
        f"unblocked {', '.join(unblocked)}" if unblocked else "",
        f"ignored pueue groups whose names MQIC does not accept: {', '.join(map(repr, refused_names))}"
        if refused_names
        else "",
    ]
    summary = "; ".join(p for p in parts if p)
    if not summary:
        return refused(f"{host.name}: the GPU groups already match pueue groups {sorted(remote)}", "info")
    return Outcome(True, f"{host.name}: {summary}")


# -- hosts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    ok: bool
    text: str


def check_site(host: HpcHost, *, create_groups: bool = False) -> list[Finding]:
    """A host's first day, checked in the order things depend on each other: reachable, its key
    trusted, pueue runs (its version), pueued answers, each GPU group's pueue group present (with
    ``create_groups``, a missing one is created: ``pueue group add NAME --parallel 1``). Stops at
    the first step that fails, saying why. The groups found go through ``note_pueue_groups``, so a
    missing group is blocked at once and one that exists again is unblocked."""
    found = []
    if not host.is_local:
        try:
            key = hostkeys.check(host, hostkeys.offered_key(host))
        except RemoteError as error:
            return [Finding(False, f"not reachable: {error}")]
        found.append(Finding(True, f"reachable at {host.hostname}:{host.port}"))
        if key.state != "trusted":
            why = "no key trusted yet" if key.state == "new" else "it is not the trusted one"
            return [
                *found,
                Finding(
                    False,
                    f"host key {key.offered.fingerprint} not trusted ({why}): compare it with the host's "
                    f"administrators, then run trust_host_key {host.name}",
                ),
            ]
        found.append(Finding(True, f"host key {key.offered.fingerprint} trusted"))
    wanted = list(host.gpu_groups.filter(retired=False))
    created: list[str] = []
    with contact(host, force=True) as link:
        version = link.queue.version()
        found.append(Finding(True, f"pueue {version} runs ({host.pueue_command})"))
        groups = link.queue.groups()
        found.append(Finding(True, "pueued answers"))
        if create_groups:
            for group in wanted:
                if group.pueue_group not in groups:
                    link.queue.add_group(group.pueue_group)
                    created.append(group.pueue_group)
            groups = link.queue.groups() if created else groups
    if link.failed:
        return [*found, Finding(False, str(link.error))]
    HpcHost.objects.filter(pk=host.pk).update(pueue_version=version)
    note_pueue_groups(host, set(groups))
    for group in wanted:
        if group.pueue_group not in groups:
            found.append(
                Finding(False, f"GPU group {group.name}: {missing_group_reason(host, group.pueue_group)}")
            )
        else:
            how = "created" if group.pueue_group in created else "present"
            found.append(Finding(True, f"GPU group {group.name}: pueue group {group.pueue_group} {how}"))
    return found


def check_health(host: HpcHost) -> Outcome:
    """Ask the host for its pueue version now: proves SSH, the host key and the pueue command.

    It also ends a back-off: if the host answers, the passes use it again at once.
    """
    retry_now(host)
    with contact(host, force=True) as link:
        version = link.queue.version()
    if link.failed:
        return refused(f"{host.name}: {link.error}", "error")
    HpcHost.objects.filter(pk=host.pk).update(pueue_version=version)
    return Outcome(True, f"{host.name} answers: pueue {version}")


def on_route(host: HpcHost, hop: int | None):
    """What a key check is about: the host, or its jump host number ``hop`` (from 0)."""
    return host if hop is None else hostkeys.jump_hosts(host)[hop]


def check_host_key(host: HpcHost, hop: int | None = None) -> hostkeys.KeyCheck:
    """Fetch the key the host (or its jump host ``hop``) offers and compare it (raises
    ``OutcomeUnknown`` when it cannot be reached)."""
    return hostkeys.check(on_route(host, hop), hostkeys.offered_key(host, hop))


def trust_host_key(host: HpcHost, confirmed: str, *, replace: bool = False, hop: int | None = None) -> Outcome:
    """Trust the key the host (or its jump host ``hop``) offers, if it is still the one the
    operator confirmed.

    The key is fetched again: a key that changed between the look and the click is never
    trusted on the strength of the earlier look. A mismatch needs ``replace``.
    """
    if host.is_local:
        return refused(f"{host.name} runs on this machine: no SSH key is involved", "info")
    seen = on_route(host, hop)
    try:
        key = hostkeys.offered_key(host, hop)
    except RemoteError as error:
        return refused(f"could not fetch the key of {seen.name}: {error}", "error")
    if key.fingerprint != confirmed:
        return refused(
            f"{seen.name} now offers {key.fingerprint}, not the {confirmed} you confirmed: nothing trusted",
            "error",
        )
    try:
        changed = hostkeys.trust(seen, key, replace=replace)
    except ChangedHostKey as error:
        return refused(str(error), "error")
    if not changed:
        return refused(f"{seen.name}: {key.fingerprint} was already trusted", "info")
    where = f"in {host.known_hosts_path}" if host.known_hosts_path else "on its row"
    return Outcome(True, f"{seen.name}: now trusting {key.key_type} {key.fingerprint} ({where})")
