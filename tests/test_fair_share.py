"""Fair share: the next free GPU group goes to the waiting case whose owner used the least GPU time
lately (decayed), ties to the oldest case; placement still holds, a case waiting for a busy target
holds up no one, one owner alone keeps the age order; the case list shows each case's place and
why, by the same rule. Usage comes from attempt rows made directly; claims are the real ones."""

import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from cases.models import Attempt, Case, CaseStatus
from cases.services import intake, monitoring, queueing, submission
from cases.services.usage import WINDOW_HALF_LIVES, standings
from resources.models import GpuGroup
from resources.services import lock_free_group
from tests.factories import make_case, make_group, make_host
from tests.support.cases import drop_case
from tests.support.hpc import Sandbox, make_hpc_host

S = CaseStatus
HOUR = timedelta(hours=1)
pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:No directory at")]


@pytest.fixture
def owners():
    return {name: User.objects.create_user(name) for name in ("alice", "bob", "carol")}


def used(owner, hours: float, *, ended_ago: timedelta = timedelta(0), devices: str = "0", running=False):
    """An attempt of ``owner`` (a case of its own) that held a group of ``devices`` for ``hours``."""
    now = timezone.now()
    end = now - ended_ago
    group = make_group(devices=devices)
    case = make_case(S.RUNNING if running else S.COMPLETED, owner=owner)
    Attempt.objects.create(
        case=case,
        token=f"t{case.pk}",
        remote_dir=f"/r/{case.pk}",
        gpu_group=group,
        started_at=end - timedelta(hours=hours),
        ended_at=None if running else end,
    )
    GpuGroup.objects.filter(pk=group.pk).update(status=GpuGroup.Status.DISABLED, retired=True)  # history only
    return case


def waiting(owner, name: str, minutes_ago: float, **fields) -> Case:
    case = make_case(name=name, owner=owner, **fields)
    Case.objects.filter(pk=case.pk).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))
    return Case.objects.get(pk=case.pk)


def claimed_in_order(groups: int) -> list[str]:
    """Free ``groups`` groups one pass at a time, each taken by the next case: who got them, in order."""
    host = make_host()
    names = []
    for n in range(groups):
        make_group(host, name=f"slot{n}", pueue_group=f"slot{n}")
        names += [case.name for case in submission.claim_cases()]
    return names


@pytest.mark.engine  # GPU time is computed in SQL, in each engine's own terms
def test_usage_is_gpu_time_decayed_by_age_with_running_attempts_counted_up_to_now(owners, settings):
    settings.MQIC_FAIR_SHARE_HALF_LIFE_HOURS = 24
    alice, bob, carol = owners.values()
    used(alice, 2, devices="0,1")  # ended now, two GPUs: 4 GPU h
    used(alice, 4, ended_ago=timedelta(hours=24))  # a half-life ago: 2 GPU h
    used(bob, 3, ended_ago=timedelta(hours=48), devices="")  # two half-lives, one GPU (none listed): 0.75
    used(bob, 100, ended_ago=timedelta(hours=24 * WINDOW_HALF_LIVES + 1))  # out of the window
    used(carol, 1.5, running=True)  # under way for 1.5 h, counted to now

    found = standings()

    assert {user.username: round(found[user.pk].gpu_hours, 3) for user in owners.values()} == {
        "alice": 6.0,
        "bob": 0.75,
        "carol": 1.5,
    }
    assert (found[alice.pk].holding, found[carol.pk].holding) == (0, 1)


@pytest.mark.engine  # GPU time is computed in SQL, in each engine's own terms
def test_the_next_group_goes_to_the_owner_who_used_least_and_ties_go_to_the_oldest(owners):
    alice, bob, carol = owners.values()
    used(alice, 3)
    used(bob, 1)
    used(carol, 2)
    for n, owner in enumerate((alice, bob, carol, alice, bob, carol)):
        waiting(owner, f"{owner.username}-{n // 3}", minutes_ago=60 - n)
    waiting(None, "operators-0", minutes_ago=10)  # no GPU time lately: first
    dave = User.objects.create_user("dave")
    waiting(dave, "dave-0", minutes_ago=5)  # no GPU time either: a tie, so the older case first

    order = claimed_in_order(8)

    assert order == ["operators-0", "dave-0", "bob-0", "bob-1", "carol-0", "carol-1", "alice-0", "alice-1"]


@pytest.mark.engine  # GPU time is computed in SQL, in each engine's own terms
def test_an_owner_overtakes_another_once_its_time_has_decayed(owners, settings):
    settings.MQIC_FAIR_SHARE_HALF_LIFE_HOURS = 1
    alice, bob, _ = owners.values()
    used(alice, 8, ended_ago=timedelta(hours=4))  # 8 GPU h, four half-lives ago: 0.5
    used(bob, 1)  # 1 GPU h just now
    waiting(bob, "bob-old", minutes_ago=30)
    waiting(alice, "alice-new", minutes_ago=1)

    assert claimed_in_order(1) == ["alice-new"]


@pytest.mark.parametrize("owner", [None, "alice"])
def test_one_owner_alone_keeps_the_age_order_whatever_it_used(owners, owner):
    owner = owners.get(owner)
    used(owner, 7)
    names = [waiting(owner, f"case-{n}", minutes_ago=40 - n).name for n in range(3)]

    assert claimed_in_order(3) == names


def test_placement_holds_and_a_case_waiting_for_its_busy_group_holds_up_no_one(owners):
    alice, bob, _ = owners.values()
    used(alice, 5)
    host = make_host(name="alpha")
    busy = make_group(host, name="gpu_b", pueue_group="gpu_b")
    assert lock_free_group(holder_id=10_000, group_name="gpu_b") == busy
    pinned = waiting(bob, "bob-wants-gpu_b", minutes_ago=30, wanted_group="gpu_b")
    other_host = waiting(bob, "bob-wants-beta", minutes_ago=25, wanted_host="beta")
    make_group(host, name="gpu_a", pueue_group="gpu_a")
    beta = make_host(name="beta")
    make_group(beta, name="gpu_c", pueue_group="gpu_c")
    anywhere = waiting(alice, "alice-anywhere", minutes_ago=1)

    claimed = submission.claim_cases()

    assert [(case.name, case.gpu_group.name) for case in claimed] == [
        (other_host.name, "gpu_c"),
        (anywhere.name, "gpu_a"),
    ]
    assert Case.objects.get(pk=pinned.pk).status == S.SUBMITTED


def test_a_pass_reads_two_queries_to_choose_however_many_owners_wait():
    host = make_host()
    pool = [make_group(host) for _ in range(3)]
    for n in range(30):
        owner = User.objects.create_user(f"user{n}")
        used(owner, 1 + n % 7)
        for k in range(3):
            waiting(owner, f"{owner.username}-{k}", minutes_ago=100 - k)
    pool = [GpuGroup.objects.select_related("host").get(pk=group.pk) for group in pool]

    with CaptureQueriesContext(connection) as queries:
        _, chosen = queueing.next_cases(pool, 3 + submission.PLACED_LOOKAHEAD)

    assert len(queries) == 2, [q["sql"] for q in queries]
    assert [case.name for case in chosen[:4]] == ["user0-0", "user0-1", "user0-2", "user7-0"]


# -- the case list ---------------------------------------------------------------------------------


@pytest.fixture
def admin_page(client, plain_static):
    client.force_login(User.objects.create_superuser("root", "", "pw-root"))
    return client


def cells(response, field: str) -> list[str]:
    html = response.content.decode()
    found = re.findall(rf'<t[dh] class="field-{field}"[^>]*>(.*?)</t[dh]>', html, re.S)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in found]


def column(response, field: str) -> dict[str, str]:
    return dict(zip(cells(response, "name_display"), cells(response, field), strict=True))


def changelist(query: str = "") -> str:
    return reverse("admin:cases_case_changelist") + query


@pytest.mark.engine  # GPU time is computed in SQL, in each engine's own terms
def test_the_list_shows_each_waiting_case_its_place_and_why_as_the_pass_takes_them(owners, admin_page):
    alice, bob, carol = owners.values()
    used(alice, 3)
    used(bob, 1.2)
    used(carol, 2)
    host = make_host(name="alpha")
    make_group(host, name="gpu_a", pueue_group="gpu_a")
    busy = make_group(host, name="gpu_b", pueue_group="gpu_b")
    lock_free_group(holder_id=10_000, group_name=busy.name)
    for n, owner in enumerate((alice, bob, carol, alice, bob)):
        waiting(owner, f"{owner.username}-{n // 3}", minutes_ago=60 - n)
    waiting(carol, "carol-pinned", minutes_ago=70, wanted_group="gpu_b")
    make_case(S.RUNNING, name="running", owner=alice)

    page = admin_page.get(changelist("?status__in=submitted,running"))
    place, why = column(page, "position_display"), column(page, "why_display")

    assert place == {
        "bob-0": "#1",
        "bob-1": "#2",
        "carol-pinned": "#3 for gpu_b",
        "carol-0": "#4",
        "alice-0": "#5",
        "alice-1": "#6",
        "running": "-",
    }
    assert why["bob-0"] == "owner bob used 1.2 GPU h recently"
    assert why["alice-1"] == "owner alice used 3.0 GPU h recently"
    assert why["carol-pinned"] == "waits for gpu_b (busy)"
    assert why["running"] == ""
    by_place = admin_page.get(changelist("?status__exact=submitted&o=8"))
    assert cells(by_place, "name_display") == ["bob-0", "bob-1", "carol-pinned", "carol-0", "alice-0", "alice-1"]
    backwards = admin_page.get(changelist("?status__exact=submitted&o=-8"))
    assert cells(backwards, "name_display") == ["alice-1", "alice-0", "carol-0", "carol-pinned", "bob-1", "bob-0"]

    assert [case.name for case in submission.claim_cases()] == ["bob-0"]  # gpu_a is the one free group


def test_one_owner_waits_oldest_first(admin_page):
    make_group(make_host())
    for n in range(3):
        waiting(None, f"wait-{n}", minutes_ago=10 - n)
    page = admin_page.get(changelist())
    assert column(page, "position_display") == {"wait-2": "#3", "wait-1": "#2", "wait-0": "#1"}
    assert set(column(page, "why_display").values()) == {"oldest first"}


def test_the_places_cost_the_same_few_queries_for_a_page_of_any_queue(owners, admin_page):
    host = make_host()
    make_group(host)
    counts = []
    for n in (30, 300):
        existing = Case.objects.filter(status=S.SUBMITTED).count()
        Case.objects.bulk_create(
            Case(
                name=f"bulk{i}",
                source_path=f"/bulk/{i}",
                status=S.SUBMITTED,
                owner=list(owners.values())[i % 3],
            )
            for i in range(existing, n)
        )
        for owner in owners.values():
            used(owner, 1 + owner.pk)
        with CaptureQueriesContext(connection) as queries:
            page = admin_page.get(changelist("?status__exact=submitted"))
        assert f"#{n}<" in page.content.decode()
        counts.append(len(queries))
    assert counts[0] == counts[1] <= 12, counts


def test_the_live_cells_carry_the_place_and_why(owners, admin_page):
    make_group(make_host())
    used(owners["bob"], 1)
    first = waiting(owners["alice"], "alice-0", minutes_ago=5)
    second = waiting(owners["bob"], "bob-0", minutes_ago=9)
    url = reverse("console:live_cases") + f"?ids={first.pk},{second.pk}"
    fragments = admin_page.get(url).json()["fragments"]
    assert fragments[f"case-{first.pk}-position"].endswith(">#1</span>")
    assert fragments[f"case-{first.pk}-why"] == "owner alice used 0.0 GPU h recently"
    assert fragments[f"case-{second.pk}-why"] == "owner bob used 1.0 GPU h recently"

    page = admin_page.get(reverse("admin:cases_case_change", args=[second.pk])).content.decode()
    assert "owner bob used 1.0 GPU h recently" in page


# -- end to end ------------------------------------------------------------------------------------


@pytest.fixture
def one_group(sshd):
    box = Sandbox(groups={"gpu_a": 1})
    make_hpc_host(sshd, box, groups=("gpu_a",))
    yield box
    box.cleanup()


def test_two_owners_cases_take_turns_on_one_gpu_group(one_group, mqic_dirs, owners):
    """Alice's three cases are dropped before Bob's: in age order they would all go first. With a
    short half-life the owner who ran last has used more, so the one GPU group goes to the other."""
    mqic_dirs.MQIC_FAIR_SHARE_HALF_LIFE_HOURS = 0.0001  # 0.36 s: the last run dominates
    for owner in ("alice", "bob"):
        for n in range(3):
            drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, f"{owner}-{n}", "sleep 1; echo done > out.txt\n")
    assert len(intake.scan().registered) == 6
    for owner in ("alice", "bob"):
        Case.objects.filter(name__startswith=owner).update(owner=owners[owner])

    deadline = time.monotonic() + 120
    while Case.objects.exclude(status=S.COMPLETED).exists():
        assert time.monotonic() < deadline, list(Case.objects.values_list("name", "status"))
        monitoring.monitor_pass()
        submission.submit_pass()
        time.sleep(0.1)

    expected = ["alice-0", "bob-0", "alice-1", "bob-1", "alice-2", "bob-2"]
    attempts = Attempt.objects.order_by("started_at").values_list("case__name", flat=True)
    assert list(attempts) == expected
    names = dict(Case.objects.values_list("label", "name"))
    assert [names[add["label"]] for add in one_group.adds()] == expected
    assert all((Path(case.result_path) / "out.txt").exists() for case in Case.objects.all())
