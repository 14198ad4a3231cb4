"""Who gets the next GPU group: the one rule behind the submit pass's choice and the place in the wait
that the case list shows, so that the two cannot disagree.

- **Fair share.** Waiting cases are taken in the order of their owner's recent GPU time
  (``usage.standings``: decayed with ``MQIC_FAIR_SHARE_HALF_LIFE_HOURS``), the least first, and
  within the same amount, the oldest case first. The operators' cases (no owner) are one owner of
  their own; with one owner the order is the age order alone. A pass that finds several groups
  free hands them out in this order, so one owner may get them all: GPU time under way counts up
  to now, so the next pass already sees it, and ``MQIC_MAX_RUNNING_PER_USER`` caps what one owner
  holds.
- **Quota.** An owner whose cases hold ``MQIC_MAX_RUNNING_PER_USER`` GPU groups (0: no limit) is
  passed over; the others' cases go on. The pass reads what is held once; the claim itself checks
  it again in its own transaction with the owner's row locked (``claim_within_quota``), so two
  workers, or nodes, claiming for one owner at once never exceed it.
- **Where a case may go** (``fits``): its placement wish (``placement.py``) and the hosts its owner
  may use (``tenancy.py``). A case that no group at hand fits is not read at all, so a case waiting
  for a busy target never holds up the ones behind it.

The choice of a pass costs two queries whatever the number of owners and waiting cases (the
standings, then the first waiting cases in order), and one more when a free host has a list of
who may use it. The case list numbers the cases that can start (1 = next) and says why each waits
where it does, for the page's rows only, in a fixed number of queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Case as DbCase
from django.db.models import Exists, FloatField, IntegerField, OuterRef, Q, QuerySet, Value, When

from resources.models import GpuGroup
from resources.services import assignable_groups

from ..models import HOLDS_GPU, Case, CaseStatus
from .tenancy import Tenancy, tenancy
from .usage import NONE, Standing, standings

S = CaseStatus


class OverQuota(Exception):
    """The case's owner already holds its quota of GPU groups: no claim for it now."""


def quota() -> int:
    return settings.MQIC_MAX_RUNNING_PER_USER


def claim_within_quota(owner_id: int | None) -> None:
    """Inside a claim's transaction: raise ``OverQuota`` if the owner's cases hold their quota.

    The owner's row is locked first (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's transactions
    take the write lock when they begin), so a second claim for the same owner waits for the first
    to commit and then counts its group too."""
    limit = quota()
    if not limit or owner_id is None:
        return
    list(get_user_model().objects.select_for_update().filter(pk=owner_id).values_list("pk"))
    held = Case.objects.filter(owner_id=owner_id, status__in=HOLDS_GPU).count()
    if held >= limit:
        raise OverQuota(f"over quota: {held} of {limit} running")


def fits(group: GpuGroup, case: Case, rules: Tenancy) -> bool:
    """Whether ``case`` may run in ``group``: what its folder asks for, on a host its owner may use."""
    return wished(group, case) and rules.allows(group.host, case.owner_id)


def wished(group: GpuGroup, case: Case) -> bool:
    """The host and the group the case's folder asks for, if any (``placement.py``)."""
    return (not case.wanted_host or group.host.name == case.wanted_host) and (
        not case.wanted_group or group.name == case.wanted_group
    )


@dataclass(frozen=True)
class Queue:
    """What the order and the quota depend on, read once: every owner's standing and who may use
    the hosts at hand."""

    standings: dict[int | None, Standing]
    rules: Tenancy

    def standing(self, owner_id: int | None) -> Standing:
        return self.standings.get(owner_id, NONE)

    def full(self, owner_id: int | None, claimed: int = 0) -> bool:
        """The owner holds its quota (with ``claimed`` more taken since the standings were read)."""
        return bool(quota()) and owner_id is not None and self.standing(owner_id).holding + claimed >= quota()

    def order(self, descending: bool = False) -> list:
        """The fair-share order, as ``order_by`` arguments: the owner's recent GPU time, then age."""
        age = ["-created_at", "-pk"] if descending else ["created_at", "pk"]
        shares = {owner: s.gpu_seconds for owner, s in self.standings.items() if s.gpu_seconds > 0}
        if not shares:
            return age
        share = DbCase(
            *(When(owner_is(owner), then=Value(seconds)) for owner, seconds in shares.items()),
            default=Value(0.0),
            output_field=FloatField(),
        )
        return [share.desc() if descending else share.asc(), *age]

    def can_start(self, groups: Iterable[GpuGroup]) -> Q:
        """The waiting cases that may start in one of ``groups`` now: an owner within its quota, and
        a group that fits (``fits``, written for the database)."""
        return self.within_quota() & self.fitting(groups, tenancy=True)

    def in_line(self, groups: Iterable[GpuGroup]) -> Q:
        """The waiting cases that have a place in the line for ``groups`` (the groups in service): an
        owner within its quota, and a host its owner may use among those its folder asks for. A case
        whose wish no group meets (a group retired since) keeps its place and waits."""
        groups = list(groups)
        limits = self.rules.restricted()
        if not limits:
            return self.within_quota()
        everyone = any(group.host.pk not in limits for group in groups)
        somewhere = Q() if everyone else Q(owner__isnull=True) | Q(owner_id__in=set().union(*limits.values()))
        return (
            self.within_quota()
            & somewhere
            & (self.fitting(groups, tenancy=True) | ~self.fitting(groups, tenancy=False))
        )

    def within_quota(self) -> Q:
        full = [owner for owner in self.standings if self.full(owner)]
        return ~Q(owner_id__in=full) if full else Q()

    def fitting(self, groups: Iterable[GpuGroup], *, tenancy: bool) -> Q:
        """The cases whose wish one of ``groups`` meets (on a host the owner may use, with ``tenancy``)."""
        by_host: dict = {}
        for group in groups:
            by_host.setdefault(group.host, []).append(group.name)
        somewhere = Q(pk__in=[])
        limits = self.rules.restricted() if tenancy else {}
        for host, names in by_host.items():
            here = Q(wanted_host="") | Q(wanted_host=host.name)
            here &= Q(wanted_group="") | Q(wanted_group__in=names)
            if host.pk in limits:
                here &= Q(owner__isnull=True) | Q(owner_id__in=limits[host.pk])
            somewhere |= here
        return somewhere

    def waiting(self, which: Q) -> QuerySet[Case]:
        """The waiting cases ``which`` selects (``can_start``, ``in_line``), in the order they get groups."""
        return Case.objects.filter(status=S.SUBMITTED, restore_check=False).filter(which).order_by(*self.order())


def owner_is(owner_id: int | None) -> Q:
    return Q(owner__isnull=True) if owner_id is None else Q(owner_id=owner_id)


def read(groups: Iterable[GpuGroup]) -> Queue:
    """The queue as it stands, for placing cases in ``groups`` (their hosts' lists are read with them)."""
    return Queue(standings(), tenancy(group.host for group in groups))


def next_cases(pool: list[GpuGroup], count: int) -> tuple[Queue, list[Case]]:
    """The submit pass's choice: the first ``count`` waiting cases that may start in ``pool``."""
    queue = read(pool)
    return queue, list(queue.waiting(queue.can_start(pool))[:count]) if pool else []


# -- the case list's view: each waiting case's place and why --------------------------------------


def in_service() -> list[GpuGroup]:
    """The groups a waiting case may still get one day (on an enabled host, and not retired), each
    with ``free_now``: whether new work may go there now (``assignable_groups``). One query."""
    free = assignable_groups().filter(pk=OuterRef("pk"))
    groups = GpuGroup.objects.filter(retired=False, host__enabled=True).select_related("host")
    return list(groups.annotate(free_now=Exists(free)))


@dataclass
class Places:
    """The queue as the case list shows it: read once per page, for its rows."""

    queue: Queue
    groups: list[GpuGroup]
    free: list[GpuGroup]

    @classmethod
    def read(cls) -> Places:
        groups = in_service()
        return cls(read(groups), groups, [group for group in groups if group.free_now])

    def ordering(self, descending: bool = False) -> list:
        """The list sorted by place: the cases that can start in order, then those held back, then the rest."""
        rank = DbCase(
            When(Q(status=S.SUBMITTED) & self.queue.in_line(self.groups), then=Value(0)),
            When(status=S.SUBMITTED, then=Value(1)),
            default=Value(2),
            output_field=IntegerField(),
        )
        return [rank.desc() if descending else rank.asc(), *self.queue.order(descending)]

    def place(self, cases: Iterable[Case]) -> None:
        """Set ``wait_position`` (1 = next; ``None`` when it is not waiting or held back) and
        ``wait_why`` on each of ``cases``."""
        cases = list(cases)
        for case in cases:
            case.wait_position, case.wait_why = None, ""
        waiting = [case for case in cases if case.status == S.SUBMITTED]
        if not waiting:
            return
        order = list(self.queue.waiting(self.queue.in_line(self.groups)).values_list("pk", "owner_id"))
        places = {pk: n for n, (pk, _) in enumerate(order, 1)}
        several = len({owner for _, owner in order}) > 1
        for case in waiting:
            case.wait_position = places.get(case.pk)
            case.wait_why = self.why(case, several) if case.wait_position else self.held_why(case)

    def why(self, case: Case, several_owners: bool) -> str:
        target = case.wanted_group or (f"a GPU group of {case.wanted_host}" if case.wanted_host else "")
        if target and not any(wished(group, case) for group in self.groups):
            return f"waits for {target} (not in service)"
        if not any(fits(group, case, self.queue.rules) for group in self.free):
            if target:
                return f"waits for {target} (busy)"
            if self.limited(case):
                return "waits for a host its owner may use (busy)"
        if not several_owners:
            return "oldest first"
        standing = self.queue.standing(case.owner_id)
        return f"{who(case)} used {standing.gpu_hours:.1f} GPU h recently"

    def held_why(self, case: Case) -> str:
        if case.restore_check:
            return "held until every host was asked about it (the database was restored)"
        if self.queue.full(case.owner_id):
            return f"over quota: {self.queue.standing(case.owner_id).holding} of {quota()} running"
        refusing = sorted({group.host.name for group in self.groups if wished(group, case)})
        if refusing and any(self.queue.rules.allows(group.host, case.owner_id) for group in self.groups):
            return f"{', '.join(refusing)} does not allow {who(case)}"
        return f"no host allows {who(case)}"

    def limited(self, case: Case) -> bool:
        return any(not self.queue.rules.allows(group.host, case.owner_id) for group in self.groups)


def who(case: Case) -> str:
    return "the operators' cases" if case.owner_id is None else f"owner {case.owner.get_username()}"


def place(cases: Iterable[Case]) -> None:
    """``Places.place`` on a fresh read, for a page that shows a few cases (a case page, live cells)."""
    cases = list(cases)
    if any(case.status == S.SUBMITTED for case in cases):
        Places.read().place(cases)
    else:
        for case in cases:
            case.wait_position, case.wait_why = None, ""
