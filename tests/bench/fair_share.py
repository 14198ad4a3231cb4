"""Scenario 12: who gets the next GPU group, with 50 owners and 10,000 waiting cases.

Rows by ``bulk_create``: 50 users, 4 hosts of 10 GPU groups (1, 2 or 4 devices), 36 of them held
by running cases (an attempt under way each), 4 free; 10,000 waiting cases (200 per owner, of
the last week, one in twenty asking for a host or a group); a usage history of 30 days, 1,000
attempts a day of 5 to 120 minutes (what 40 groups can run: 20 attempts per ended case), so a
third of it falls in the fair-share window (10 half-lives of 24 h) and the rest must not be read.

Measured, each the median of 5 after a warm-up, statements counted with ``execute_wrapper``:

- MQIC: a submit pass's choice (``queueing.next_cases``: the owners' standings in one aggregate
  query, then the first waiting cases in fair-share order that fit the free groups), as the pass
  runs it after reading the free groups; the same with two hosts naming who may use them.
- naive: the same choice owner by owner, as one would write it first: per owner, its attempts of
  the window (GPU time decayed in Python), the groups it holds, its oldest waiting cases that fit
  the free groups; then the owners sorted. Both must choose the same cases.
- the case list (Django test client, superuser): as it opens (its newest 100 cases: the 36 running
  and 64 waiting, each with its place and why) and sorted by place; queries and server time.
"""

from __future__ import annotations

import random
import warnings
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from cases.models import HOLDS_GPU, Attempt, Case, CaseStatus
from cases.services import queueing
from cases.services.submission import PLACED_LOOKAHEAD
from cases.services.usage import WINDOW_HALF_LIVES, half_life_seconds
from resources.models import GpuGroup, HpcHost, count_devices
from resources.services import free_groups

from .admin_list import PLAIN_STATIC, measure_page
from .env import Bench
from .measure import counting_queries, median_seconds
from .report import ScenarioResult

TITLE = "fair share: a submit pass's choice with 50 owners and 10,000 waiting cases, against a per-owner loop"
S = CaseStatus
OWNERS, HOSTS, GROUPS_PER_HOST, FREE = 50, 4, 10, 4
BATCH = 5_000
REPEAT = 5


def run(bench: Bench, result: ScenarioResult) -> None:
    waiting, days, per_day = (2_000, 10, 200) if bench.quick else (10_000, 30, 1_000)
    rng = random.Random(12)
    owners = [get_user_model().objects.create_user(f"owner{n:02d}") for n in range(OWNERS)]
    groups = make_hosts()
    make_history(rng, owners, groups, days, per_day)
    hold(rng, owners, groups[: len(groups) - FREE])
    make_waiting(rng, owners, groups, waiting)
    pool = free_groups()
    wanted = len(pool)

    def mqic():
        return queueing.next_cases(pool, wanted + PLACED_LOOKAHEAD)[1]

    def naive():
        return naive_choice(pool, wanted + PLACED_LOOKAHEAD, owners)

    chosen, by_loop = [c.pk for c in mqic()][:wanted], [c.pk for c in naive()][:wanted]
    if chosen != by_loop:
        raise RuntimeError(f"the two ways chose differently: {chosen} against {by_loop}")
    mqic_queries, mqic_seconds = measure(mqic)
    naive_queries, naive_seconds = measure(naive)
    result.add("MQIC: queries of a pass's choice", mqic_queries, "count", ("<=", 2))
    result.add("MQIC: a pass's choice", mqic_seconds * 1000, "ms")
    result.add("naive per-owner loop: queries", naive_queries, "count")
    result.add("naive per-owner loop: time", naive_seconds * 1000, "ms")
    result.add("naive / MQIC (time)", naive_seconds / mqic_seconds, "x")

    restrict(owners)
    pool = free_groups()
    restricted_queries, restricted_seconds = measure(mqic)
    result.add("MQIC, two hosts naming who may use them: queries", restricted_queries, "count", ("<=", 3))
    result.add("MQIC, two hosts naming who may use them: time", restricted_seconds * 1000, "ms")

    measure_list(result)
    in_window = Attempt.objects.filter(ended_at__gte=timezone.now() - window()).count()
    result.notes.append(
        f"{OWNERS} owners, {waiting} waiting cases, {HOSTS} hosts x {GROUPS_PER_HOST} GPU groups ({FREE} free), "
        f"{Attempt.objects.count()} attempts over {days} days ({in_window} in the fair-share window); both ways "
        f"chose the same {wanted} cases. Median of {REPEAT} after a warm-up."
    )


def measure(choose) -> tuple[int, float]:
    choose()
    with counting_queries() as counts:
        choose()
    return counts["queries"], median_seconds(choose, REPEAT)


def window() -> timedelta:
    return timedelta(seconds=WINDOW_HALF_LIVES * half_life_seconds())


def make_hosts() -> list[GpuGroup]:
    groups = []
    for h in range(HOSTS):
        host = HpcHost.objects.create(name=f"h{h}", hostname="localhost", base_dir=f"/data/h{h}")
        for g in range(GROUPS_PER_HOST):
            devices = ",".join(str(d) for d in range([1, 2, 4][g % 3]))
            groups.append(
                GpuGroup.objects.create(host=host, name=f"h{h}-g{g}", pueue_group=f"g{g}", devices=devices)
            )
    return groups


def make_history(rng: random.Random, owners, groups, days: int, per_day: int) -> None:
    """Ended cases of the last ``days``, 20 attempts each, by owners of very different appetites."""
    now, attempts_per_case = timezone.now(), 20
    appetite = [rng.uniform(0.1, 3) for _ in owners]
    n_cases = days * per_day // attempts_per_case
    for start in range(0, n_cases, BATCH):
        made = Case.objects.bulk_create(
            Case(
                name=f"done-{n}",
                source_path=f"/inbox/done-{n}",
                status=S.COMPLETED,
                owner=owners[rng.choices(range(len(owners)), weights=appetite)[0]],
            )
            for n in range(start, min(start + BATCH, n_cases))
        )
        rows = []
        for case in made:
            for k in range(attempts_per_case):
                end = now - timedelta(days=rng.uniform(0, days))
                rows.append(
                    Attempt(
                        case=case,
                        token=f"t{case.pk}-{k}",
                        remote_dir=f"/data/{case.pk}.{k}",
                        gpu_group=rng.choice(groups),
                        started_at=end - timedelta(minutes=rng.uniform(5, 120)),
                        ended_at=end,
                    )
                )
        Attempt.objects.bulk_create(rows, batch_size=BATCH)
    Case.objects.filter(status=S.COMPLETED).update(created_at=now - timedelta(days=days + 1))


def hold(rng: random.Random, owners, groups: list[GpuGroup]) -> None:
    """A running case in each of ``groups``, its attempt under way for up to two hours."""
    now = timezone.now()
    for n, group in enumerate(groups):
        case = Case.objects.create(
            name=f"running-{n}", source_path=f"/inbox/running-{n}", status=S.RUNNING, owner=rng.choice(owners)
        )
        Attempt.objects.create(
            case=case,
            token=f"r{n}",
            remote_dir=f"/data/r{n}",
            gpu_group=group,
            started_at=now - timedelta(hours=rng.uniform(0, 2)),
        )
        GpuGroup.objects.filter(pk=group.pk).update(
            status=GpuGroup.Status.ASSIGNED, holder_id=case.pk, assigned_at=now
        )
        Case.objects.filter(pk=case.pk).update(gpu_group=group)


def make_waiting(rng: random.Random, owners, groups: list[GpuGroup], count: int) -> None:
    now = timezone.now()
    made = Case.objects.bulk_create(
        (
            Case(
                name=f"wait-{n:05d}",
                source_path=f"/inbox/wait-{n:05d}",
                status=S.SUBMITTED,
                owner=owners[n % len(owners)],
                wanted_group=rng.choice(groups).name if n % 20 == 0 else "",
            )
            for n in range(count)
        ),
        batch_size=BATCH,
    )
    for start in range(0, len(made), BATCH):  # registered over the last week, in no owner's order
        for case in made[start : start + BATCH]:
            case.created_at = now - timedelta(days=rng.uniform(0, 7))
        Case.objects.bulk_update(made[start : start + BATCH], ["created_at"])


def restrict(owners) -> None:
    """Two hosts name who may use them: the one with the free groups, a Django group of ten owners and
    five owners by name; another, five other owners by name."""
    lab = Group.objects.create(name="lab-a")
    lab.user_set.add(*owners[:10])
    HpcHost.objects.filter(name=f"h{HOSTS - 1}").update(
        allowed_groups=["lab-a", *(owner.username for owner in owners[10:15])]
    )
    HpcHost.objects.filter(name="h0").update(allowed_groups=[owner.username for owner in owners[15:20]])


def naive_choice(pool: list[GpuGroup], count: int, owners) -> list[Case]:
    """The choice owner by owner: per owner a read of its recent attempts (the GPU time decayed in
    Python), one of the groups it holds, one of its first waiting cases that fit; then the owners'
    cases sorted by their GPU time and age."""
    now = timezone.now()
    since, half_life = now - window(), half_life_seconds()
    groups, hosts = ["", *(group.name for group in pool)], ["", *(group.host.name for group in pool)]
    candidates = []
    for owner in [None, *owners]:
        attempts = Attempt.objects.filter(case__owner=owner).exclude(ended_at__lt=since)
        used = 0.0
        for started, ended, devices in attempts.values_list("started_at", "ended_at", "gpu_group__devices"):
            end = ended or now
            weight = 0.5 ** ((now - end).total_seconds() / half_life)
            used += max(0.0, (end - started).total_seconds()) * count_devices(devices) * weight
        Case.objects.filter(owner=owner, status__in=HOLDS_GPU).count()  # for the quota
        mine = Case.objects.filter(owner=owner, status=S.SUBMITTED, wanted_group__in=groups, wanted_host__in=hosts)
        candidates += [
            (used, case.created_at, case.pk, case) for case in mine.order_by("created_at", "pk")[:count]
        ]
    candidates.sort(key=lambda row: row[:3])
    return [row[3] for row in candidates[:count]]


def measure_list(result: ScenarioResult) -> None:
    user = get_user_model().objects.create_superuser("bench-share", "", "bench-password")
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    changelist = reverse("admin:cases_case_changelist")
    pages = {"the case list as it opens": "", "the case list sorted by place": "?o=8"}
    with override_settings(STORAGES=PLAIN_STATIC), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No directory at")
        for what, query in pages.items():
            queries, seconds = measure_page(client, changelist + query)
            result.add(f"{what}: queries", queries, "count", ("<=", 12))
            result.add(f"{what}: server time", seconds * 1000, "ms", ("<=", 300))
