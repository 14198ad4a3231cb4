"""Quotas and the hosts an owner may use: an owner never holds more GPU groups than
``MQIC_MAX_RUNNING_PER_USER`` (even when two workers claim for it at once) while the others' cases
take the free groups; a host's ``allowed_groups`` (user or Django group names, from the host file)
keeps everyone else's cases off it, and a case no host allows waits and says why."""

import json
import re
import subprocess
import sys
from unittest import mock

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from cases.models import HOLDS_GPU, Case, CaseStatus
from cases.services import queueing, submission
from cases.services.lifecycle import move_and_release
from resources.models import GpuGroup, HpcHost
from tests.factories import make_case, make_group, make_host
from tests.support.processes import REPO, django_env

S = CaseStatus
pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:No directory at")]


@pytest.fixture
def users():
    return {name: User.objects.create_user(name) for name in ("alice", "bob", "carol")}


def waiting(owner, name, **fields) -> Case:
    return make_case(name=name, owner=owner, **fields)


def holding(owner) -> int:
    return Case.objects.filter(owner=owner, status__in=HOLDS_GPU).count()


@pytest.fixture
def admin_page(client, plain_static):
    client.force_login(User.objects.create_superuser("root", "", "pw-root"))
    return client


def places(client) -> dict[str, tuple[str, str]]:
    """Each waiting case's place and why, as the case list shows them."""
    html = client.get(reverse("admin:cases_case_changelist") + "?status__exact=submitted").content.decode()

    def column(field):
        found = re.findall(rf'<t[dh] class="field-{field}"[^>]*>(.*?)</t[dh]>', html, re.S)
        return [re.sub(r"<[^>]+>", "", cell).strip() for cell in found]

    return {
        name: (place, why)
        for name, place, why in zip(*map(column, ("name_display", "position_display", "why_display")), strict=True)
    }


# -- quota -----------------------------------------------------------------------------------------


def test_an_owner_never_holds_more_than_its_quota_while_others_take_the_free_groups(users, settings, admin_page):
    settings.MQIC_MAX_RUNNING_PER_USER = 2
    alice, bob, _ = users.values()
    host = make_host()
    for n in range(5):
        make_group(host, name=f"g{n}", pueue_group=f"g{n}")
    for n in range(4):
        waiting(alice, f"alice-{n}")
    waiting(bob, "bob-0")

    claimed = [case.name for case in submission.claim_cases()]

    assert claimed == ["alice-0", "alice-1", "bob-0"]
    assert holding(alice) == 2
    assert places(admin_page)["alice-2"] == ("-", "over quota: 2 of 2 running")
    assert submission.claim_cases() == [], "two groups are free, and alice holds her quota"

    waiting(None, "operators-0")  # the operators' cases have no quota
    assert [case.name for case in submission.claim_cases()] == ["operators-0"]

    done = Case.objects.get(name="alice-0")
    assert move_and_release(done, S.SUBMITTING, S.FAILED, reason="ended")
    assert [case.name for case in submission.claim_cases()] == ["alice-2"]
    assert holding(alice) == 2


def test_a_peer_claiming_for_the_same_owner_meanwhile_does_not_take_it_over_its_quota(users, settings):
    settings.MQIC_MAX_RUNNING_PER_USER = 1
    alice, bob, _ = users.values()
    host = make_host()
    for n in range(3):
        make_group(host, name=f"g{n}", pueue_group=f"g{n}")
    first, second = waiting(alice, "alice-0"), waiting(alice, "alice-1")
    waiting(bob, "bob-0")
    real_next_cases = queueing.next_cases

    def read_then_a_peer_claims_for_alice(pool, count):
        chosen = real_next_cases(pool, count)
        assert submission.claim(second.pk) is not None  # another worker, after this one read the standings
        return chosen

    with mock.patch.object(queueing, "next_cases", read_then_a_peer_claims_for_alice):
        claimed = [case.name for case in submission.claim_cases()]

    assert claimed == ["bob-0"]
    first.refresh_from_db()
    assert (first.status, first.attempt_rows.count(), holding(alice)) == (S.SUBMITTED, 0, 1)
    assert not GpuGroup.objects.filter(holder_id=first.pk).exists()


@pytest.mark.engine  # the owner's row lock (PostgreSQL) or the write lock taken at BEGIN (SQLite)
@pytest.mark.django_db(transaction=True)
def test_claims_racing_for_one_owner_in_several_processes_never_exceed_its_quota(users, tmp_path):
    alice = users["alice"]
    host = make_host()
    pairs = [(waiting(alice, f"alice-{n}").pk, make_group(host).pk) for n in range(6)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.quota_race_worker", str(case), str(group), str(tmp_path), "6"],
            cwd=REPO,
            env=django_env(MQIC_MAX_RUNNING_PER_USER="1"),
            stdout=subprocess.PIPE,
            text=True,
        )
        for case, group in pairs
    ]
    results = [json.loads(worker.communicate(timeout=120)[0]) for worker in workers]

    assert all(worker.returncode == 0 for worker in workers)
    assert sorted(result["outcome"] for result in results) == ["claimed"] + ["over quota"] * 5
    assert holding(alice) == 1 and GpuGroup.objects.filter(status="assigned").count() == 1


# -- the hosts an owner may use --------------------------------------------------------------------


@pytest.fixture
def two_tenants(users):
    """alpha: alice's only; beta: the Django group lab-b's (bob)."""
    Group.objects.create(name="lab-b").user_set.add(users["bob"])
    alpha = make_host(name="alpha", allowed_groups=["alice"])
    beta = make_host(name="beta", allowed_groups=["lab-b"])
    make_group(alpha, name="gpu_a", pueue_group="gpu_a")
    make_group(beta, name="gpu_b", pueue_group="gpu_b")
    return users


def test_a_host_takes_only_the_cases_of_the_users_and_groups_it_names(two_tenants, admin_page):
    alice, bob, carol = two_tenants.values()
    waiting(carol, "carol-0")
    waiting(bob, "bob-0")
    waiting(alice, "alice-0", wanted_host="beta")
    waiting(alice, "alice-1")
    waiting(None, "operators-0")

    claimed = {case.name: case.gpu_group.host.name for case in submission.claim_cases()}

    assert claimed == {"bob-0": "beta", "alice-1": "alpha"}
    shown = places(admin_page)
    assert shown["carol-0"] == ("-", "no host allows owner carol")
    assert shown["alice-0"] == ("-", "beta does not allow owner alice")
    assert shown["operators-0"] == ("#1", "oldest first")
    hosts = admin_page.get(reverse("admin:resources_hpchost_changelist")).content.decode()
    assert "alice (and the operators&#x27; cases)" in hosts and "lab-b (and the operators&#x27; cases)" in hosts


def test_a_case_is_never_placed_on_a_host_its_owner_may_not_use_and_the_operators_go_anywhere(two_tenants):
    alice = two_tenants["alice"]
    GpuGroup.objects.filter(name="gpu_a").update(status=GpuGroup.Status.DISABLED)  # only beta is free
    mine = waiting(alice, "alice-0")

    assert submission.claim(mine.pk) is None
    assert submission.claim_cases() == []
    operators = waiting(None, "operators-0")
    assert [case.pk for case in submission.claim_cases()] == [operators.pk]
    assert Case.objects.get(pk=mine.pk).status == S.SUBMITTED


def test_who_may_use_a_host_comes_from_the_host_file_checked(settings, tmp_path):
    path = tmp_path / "hosts.toml"
    settings.MQIC_HPC_CONFIG = str(path)
    host = '[hosts.alpha]\nhostname = "login.alpha.example"\nbase_dir = "/scratch/mqic"\ngpu_groups = ["gpu_a"]\n'
    path.write_text(host + 'allowed_groups = ["lab-a", "alice.smith@example.org"]\n')
    call_command("configure_hpc", offline=True)
    assert HpcHost.objects.get(name="alpha").allowed_groups == ["lab-a", "alice.smith@example.org"]

    for bad, why in [
        ('"lab-a"', "a list of at most 100"),
        ('["lab a"]', "'lab a' is not a user or group name"),
        ('["x;rm"]', "'x;rm' is not a user or group name"),
        (f'["{"x" * 151}"]', "is not a user or group name"),
        (str([f"g{n}" for n in range(101)]).replace("'", '"'), "a list of at most 100"),
        ("[1]", "1 is not a user or group name"),
    ]:
        path.write_text(host + f"allowed_groups = {bad}\n")
        with pytest.raises(CommandError, match=re.escape("[hosts.alpha]: allowed_groups: ")) as raised:
            call_command("configure_hpc", offline=True)
        assert why in str(raised.value)
    assert HpcHost.objects.get(name="alpha").allowed_groups == ["lab-a", "alice.smith@example.org"]

    path.write_text(host)
    call_command("configure_hpc", offline=True)
    assert HpcHost.objects.get(name="alpha").allowed_groups == [], "absent: everyone"
