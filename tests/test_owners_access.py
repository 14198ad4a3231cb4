"""Scientists see their own cases, and nothing of anyone else's, through every URL that shows a case
(Django's test client): the list, its counts, search and filters, the case page and its history, the
followed log, the results page, each file (by path and by token) and the archive, the live fragments,
the dashboard, the events, the actions with a tampered selection, /metrics. Another owner's case is
a 404, as one that does not exist. Operators see every case, with its owner."""

from __future__ import annotations

import base64

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from cases.models import Case, CaseEvent, CaseStatus
from cases.services import intake, submission
from cases.services.jobs import JOB_LOG, results_dir
from cases.services.transitions import record_event
from resources.services import lock_free_group
from tests.factories import make_case, make_group
from tests.support.cases import drop_case
from tests.support.users import scientist, user_with
from tests.test_admin import changelist

S = CaseStatus
pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:No directory at")]


@pytest.fixture(autouse=True)
def _static(plain_static):
    """Pages render without collectstatic."""


def owned(owner: User | None, name: str, status: str = S.COMPLETED, **fields) -> Case:
    """A case of ``owner`` from its user folder, with a results folder holding ``out.txt``."""
    folder = owner.username if owner else "shared"
    case = make_case(status, name=name, owner=owner, source_path=f"/inbox/{folder}/{name}", **fields)
    results = results_dir(case)
    results.mkdir(parents=True)
    (results / "out.txt").write_text(f"the result of {name}\n")
    (results / JOB_LOG).write_text(f"the log of {name}\n")
    return case


@pytest.fixture
def world(mqic_dirs):
    """Alice's and Bob's cases, and one of the operators' (no owner)."""
    alice, bob = scientist("alice", "alice@example.org"), scientist("bob", "bob@example.org")
    return {
        "alice": alice,
        "bob": bob,
        "hers": owned(alice, "alice-sim"),
        "his": owned(bob, "bob-sim", pueue_task_id=4242, label="mqic_case_bob"),
        "ops": owned(None, "ops-sim"),
    }


@pytest.fixture
def as_alice(client, world):
    client.force_login(world["alice"])
    return client


def rows(response) -> list[str]:
    return sorted(case.name for case in response.context["cl"].result_list)


def case_urls(case: Case) -> dict[str, str]:
    token = base64.urlsafe_b64encode(b"out.txt").decode().rstrip("=")
    return {
        "page": reverse("admin:cases_case_change", args=[case.pk]),
        "history": reverse("admin:cases_case_history", args=[case.pk]),
        "log": reverse("admin:cases_case_log", args=[case.pk]),
        "live log": reverse("console:live_log", args=[case.pk]),
        "live case": reverse("console:live_case", args=[case.pk]),
        "results": reverse("console:results", args=[case.pk]),
        "file": reverse("console:result_file", args=[case.pk, "out.txt"]),
        "job log": reverse("console:result_file", args=[case.pk, JOB_LOG]),
        "file by token": reverse("console:result_raw", args=[case.pk, token]),
        "archive": reverse("console:results_archive", args=[case.pk]),
    }


def test_the_list_its_counts_search_and_filters_hold_only_her_cases(as_alice, world):
    assert rows(as_alice.get(changelist())) == ["alice-sim"]
    assert as_alice.get(changelist()).context["cl"].result_count == 1
    assert rows(as_alice.get(changelist() + "?status__exact=completed")) == ["alice-sim"]
    for term in ("bob-sim", "4242", "mqic_case_bob", "bob"):
        assert rows(as_alice.get(changelist(), {"q": term})) == [], term
    page = as_alice.get(changelist()).content.decode()
    assert "bob" not in page and "ops-sim" not in page
    assert "column-owner_display" not in page and "By owner" not in page


def test_every_page_of_another_owners_case_is_a_404_and_of_her_own_is_shown(as_alice, world):
    for case in (world["his"], world["ops"]):
        for what, url in case_urls(case).items():
            if what in ("log", "live log"):
                continue  # a case that does not run: below, with a running one
            answer = as_alice.get(url)
            assert answer.status_code == 404, (case.name, what)
            assert case.name.encode() not in b"".join(getattr(answer, "streaming_content", [answer.content]))
    missing = Case.objects.order_by("-pk").first().pk + 1
    assert as_alice.get(reverse("admin:cases_case_change", args=[missing])).status_code == 404, "same as missing"

    mine = case_urls(world["hers"])
    assert as_alice.get(mine["page"]).status_code == 200
    assert as_alice.get(mine["history"]).status_code == 200
    assert "alice-sim" in as_alice.get(mine["results"]).content.decode()
    for what in ("file", "file by token"):
        assert b"".join(as_alice.get(mine[what]).streaming_content) == b"the result of alice-sim\n", what
    assert b"".join(as_alice.get(mine["job log"]).streaming_content) == b"the log of alice-sim\n"
    assert as_alice.get(mine["archive"]).status_code == 200
    assert as_alice.get(mine["live case"]).json()["fragments"]


def test_the_live_fragments_and_the_dashboard_count_only_her_cases(as_alice, world):
    make_group()
    running = owned(world["bob"], "bob-running", S.SUBMITTED)
    Case.objects.filter(pk=running.pk).update(status=S.RUNNING, gpu_group=lock_free_group(running.pk))
    ids = ",".join(str(world[k].pk) for k in ("hers", "his", "ops"))
    fragments = as_alice.get(reverse("console:live_cases") + f"?ids={ids}").json()["fragments"]
    assert {key.split("-")[1] for key in fragments} == {str(world["hers"].pk)}

    for page in (
        as_alice.get(reverse("console:live_overview")).json()["fragments"]["overview"],
        as_alice.get(reverse("admin:index")).content.decode(),
    ):
        assert 'data-status="completed">1<' in page, "hers only, not 3"
        assert 'data-status="running">0<' in page
        assert "bob-running" not in page, "a GPU group's holder is named only to who may see it"
        assert "GPU groups: 1 busy, 0 free" in page
        assert 'id="overview-passes"' not in page and 'id="overview-hosts"' not in page


def test_actions_on_a_tampered_selection_never_touch_another_owners_case(as_alice, world):
    waiting = owned(world["bob"], "bob-waiting", S.SUBMITTED)
    failed = owned(world["bob"], "bob-failed", S.FAILED)
    mine = owned(world["alice"], "alice-waiting", S.SUBMITTED)
    mine_failed = owned(world["alice"], "alice-failed", S.FAILED)
    for action, target in (("cancel_cases", waiting), ("retry_cases", failed), ("recheck_cases", failed)):
        data = {"action": action, "_selected_action": [target.pk], "confirmed": "yes"}
        as_alice.post(changelist(), data, follow=True)
        target.refresh_from_db()
        assert target.status in (S.SUBMITTED, S.FAILED) and target.events.count() == 0, action
    everything = {
        "action": "retry_cases",
        "select_across": "1",
        "_selected_action": [failed.pk],
        "confirmed": "yes",
    }
    as_alice.post(changelist(), everything, follow=True)
    assert Case.objects.get(pk=failed.pk).status == S.FAILED
    assert Case.objects.get(pk=mine_failed.pk).status == S.SUBMITTED, "all her cases: hers only"
    assert not CaseEvent.objects.exclude(case__owner=world["alice"]).exists()

    as_alice.post(changelist(), {"action": "cancel_cases", "_selected_action": [mine.pk], "confirmed": "yes"})
    mine.refresh_from_db()
    assert mine.status == S.CANCELLED
    assert mine.events.last().actor == "alice" and mine.events.last().user == world["alice"]
    assert Case.objects.get(pk=waiting.pk).status == S.SUBMITTED


def test_events_of_other_owners_stay_theirs_and_operators_see_every_case_with_its_owner(client, world):
    record_event(world["his"].pk, "a note on bob's case", user=world["bob"])
    record_event(world["hers"].pk, "a note on alice's case", user=world["alice"])
    client.force_login(world["alice"])
    assert client.get(reverse("admin:cases_caseevent_changelist")).status_code == 403, "no such permission"
    auditor = user_with("auditor", ["cases.view_caseevent"])  # not an operator: owns nothing, sees nothing
    auditor_case = owned(auditor, "auditor-sim")
    record_event(auditor_case.pk, "a note on the auditor's case", user=auditor)
    client.force_login(auditor)
    page = client.get(reverse("admin:cases_caseevent_changelist")).content.decode()
    assert "a note on the auditor&#x27;s case" in page and "bob" not in page and "alice" not in page

    client.force_login(user_with("operator", ["cases.view_case", "cases.view_all_cases"]))
    listing = client.get(changelist())
    assert rows(listing) == ["alice-sim", "auditor-sim", "bob-sim", "ops-sim"]
    html = listing.content.decode()
    assert "column-owner_display" in html and "By owner" in html
    assert rows(client.get(changelist(), {"owner": world["bob"].pk})) == ["bob-sim"]
    assert rows(client.get(changelist(), {"owner": "none"})) == ["ops-sim"]
    assert rows(client.get(changelist(), {"q": "bob"})) == ["bob-sim"], "operators search by owner too"
    for what, url in case_urls(world["his"]).items():
        if what not in ("log", "live log", "results", "file", "job log", "file by token", "archive"):
            assert client.get(url).status_code == 200, what


def test_metrics_passes_and_notifications_are_the_operators_only(client, world):
    client.force_login(world["alice"])
    assert client.get("/metrics").status_code == 401
    curious = ["cases.view_case", "cases.view_passrun", "console.view_notification"]
    client.force_login(user_with("curious", curious))
    for page in ("admin:cases_passrun_changelist", "admin:console_notification_changelist"):
        assert client.get(reverse(page)).status_code == 403, "they may name any owner's folders and cases"


@pytest.fixture
def her_running_case(hpc, sandbox, mqic_dirs, settings, world):
    settings.MQIC_INBOX_PER_USER = True
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR / "alice", "alice-runs", "echo started by alice; sleep 30\n")
    intake.scan()
    submission.submit_pass()
    case = Case.objects.get(name="alice-runs")
    assert (case.status, case.owner) == (S.RUNNING, world["alice"])
    return case


def test_she_follows_her_running_cases_log_and_nobody_else_does(client, world, her_running_case):
    urls = case_urls(her_running_case)
    client.force_login(world["alice"])
    page = client.get(urls["page"]).content.decode()
    assert urls["log"] in page, "the case page offers her the log"
    assert "started by alice" in client.get(urls["log"]).context["tail"].text
    assert "started by alice" in client.get(urls["live log"]).json()["fragments"]["log-tail"]
    client.force_login(world["bob"])
    for what in ("page", "log", "live log", "live case"):
        assert client.get(urls[what]).status_code == 404, what
    client.force_login(user_with("viewer", ["cases.view_case", "cases.view_all_cases"]))
    assert client.get(urls["log"]).status_code == 403, "seeing a case is not reading its output"
