"""Which hosts an owner's cases may use: the hosts' ``allowed_groups`` in the deployment's host file.

A host whose list is empty is everyone's. Otherwise its list names Django users and groups
(``resources.validators.validate_allowed_names``): a case may run there if its owner is named, or
is in a group that is named. The operators' cases (no owner) may run anywhere: the operators run
the installation. One HPC account is one trust domain (README, "Trust boundary"), so tenants who
must not see each other's data are kept on hosts of their own this way.

The names of the hosts at hand are resolved to user ids in one query, and none when no host has a
list: the rule is then answered from memory for every case and every host.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import Q

from resources.models import HpcHost


@dataclass(frozen=True)
class Tenancy:
    allowed: dict[int, frozenset[int] | None]
    """Per host id: the ids of the users who may use it, or ``None`` for everyone."""

    def allows(self, host: HpcHost, owner_id: int | None) -> bool:
        users = self.allowed.get(host.pk)
        return owner_id is None or users is None or owner_id in users

    def restricted(self) -> dict[int, frozenset[int]]:
        """The hosts with a list, and who may use each."""
        return {host: users for host, users in self.allowed.items() if users is not None}


def tenancy(hosts: Iterable[HpcHost]) -> Tenancy:
    """Who may use each of ``hosts`` (their ``allowed_groups`` as read with them)."""
    hosts = list({host.pk: host for host in hosts}.values())
    names = {name for host in hosts for name in host.allowed_groups}
    if not names:
        return Tenancy({host.pk: None for host in hosts})
    rows = (
        get_user_model()
        .objects.filter(Q(username__in=names) | Q(groups__name__in=names))
        .values_list("pk", "username", "groups__name")
    )
    known: dict[int, set[str]] = {}
    for user, username, group in rows:
        known.setdefault(user, set()).update(name for name in (username, group) if name in names)
    allowed = {}
    for host in hosts:
        wanted = set(host.allowed_groups)
        allowed[host.pk] = frozenset(user for user, has in known.items() if has & wanted) if wanted else None
    return Tenancy(allowed)
