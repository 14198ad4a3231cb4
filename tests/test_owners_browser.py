"""A scientist at the console in a real browser (Chromium, driven by Playwright, against the live
server): they log in through the admin's form, see only their own case in the list and on the
dashboard, read its results, and get a 404 for another owner's case page, log and result file. A
failing test leaves a screenshot in test-artifacts/."""

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from cases.models import CaseStatus
from cases.services.jobs import results_dir
from tests.factories import make_case
from tests.support.users import scientist

pytest_plugins = ["tests.support.browser"]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.filterwarnings("ignore:No directory at")]
S = CaseStatus


@pytest.fixture(autouse=True)
def _static(plain_static):
    """No collectstatic in tests: the live server serves the apps' static files as they are."""


def case_of(owner, name: str, status: str):
    folder = owner.username if owner else "shared"
    case = make_case(status, name=name, owner=owner, source_path=f"/inbox/{folder}/{name}")
    results = results_dir(case)
    results.mkdir(parents=True)
    (results / "out.txt").write_text(f"the result of {name}\n")
    return case


def test_a_scientist_sees_only_their_own_case_and_a_404_for_anyone_elses(log_in_as, mqic_dirs):
    alice, bob = scientist("alice"), scientist("bob")
    hers = case_of(alice, "alice-sim", S.COMPLETED)
    his = case_of(bob, "bob-sim", S.FAILED)
    case_of(None, "operators-sim", S.RUNNING)

    page = log_in_as("alice", "pw-alice")
    overview = page.locator("#mqic-overview")
    expect(overview.locator(".mqic-count[data-status='completed']")).to_have_text("1")
    expect(overview.locator(".mqic-count[data-status='failed']")).to_have_text("0")
    expect(overview.locator(".mqic-count[data-status='running']")).to_have_text("0")
    expect(page.locator("#overview-passes")).to_have_count(0)

    page.goto(page.base + reverse("admin:cases_case_changelist"))
    expect(page.locator("#result_list tbody .mqic-name")).to_have_text(["alice-sim"])
    expect(page.locator("body")).not_to_contain_text("bob-sim")
    expect(page.locator("body")).not_to_contain_text("operators-sim")

    page.locator("#result_list tbody .mqic-name", has_text="alice-sim").click()
    expect(page.locator(".field-name_full .readonly")).to_have_text("alice-sim")
    page.get_by_role("link", name="Results and job log").click()
    with page.expect_download() as download:
        page.locator("#result-files tr[data-path='out.txt'] a").click()
    assert download.value.path().read_bytes() == b"the result of alice-sim\n"

    for url in (
        reverse("admin:cases_case_change", args=[his.pk]),
        reverse("admin:cases_case_log", args=[his.pk]),
        reverse("console:result_file", args=[his.pk, "out.txt"]),
    ):
        answer = page.goto(page.base + url)
        assert answer.status == 404, url
        expect(page.locator("body")).not_to_contain_text("bob-sim")
    assert page.request.get(page.base + reverse("console:result_file", args=[hers.pk, "out.txt"])).ok
