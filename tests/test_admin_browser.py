"""The operations console in a real browser: Chromium, driven by Playwright, against the live
server, the real sshd and the sandbox pueue. A failing test leaves a screenshot in test-artifacts/.
"""

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from playwright.sync_api import expect

from cases.models import Case, CaseEvent, CaseStatus
from cases.services import intake, submission
from cases.services.labels import label_prefix
from resources.models import GpuGroup
from tests.factories import make_case
from tests.support.cases import drop_case

pytest_plugins = ["tests.support.browser"]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.filterwarnings("ignore:No directory at")]
S = CaseStatus
PASSWORD = "operator-password"


@pytest.fixture(autouse=True)
def plain_static(settings):
    """No collectstatic in tests: the live server serves the apps' static files as they are."""
    settings.STORAGES = settings.STORAGES | {
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    }


@pytest.fixture
def console(live_server, page):
    """The browser, logged in through the login form as an operator holding every permission."""
    User.objects.create_superuser("operator", "", PASSWORD)
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#mqic-overview")).to_be_visible()
    page.base = live_server.url
    return page


def open_admin(page, url_name: str, *args):
    page.goto(page.base + reverse(url_name, args=args))


def test_log_in_filter_the_list_and_read_a_case_timeline(console):
    for n in range(3):
        make_case(S.COMPLETED, name=f"done-{n}")
    failed = make_case(S.FAILED, name="broken-run")
    CaseEvent.objects.create(
        case=failed,
        from_status=S.RUNNING,
        to_status=S.FAILED,
        reason="job failed with exit code 7",
        detail={"exit_code": 7},
    )
    expect(console.locator("#overview-cases")).to_contain_text("failed")

    open_admin(console, "admin:cases_case_changelist")
    expect(console.locator("#result_list tbody tr")).to_have_count(4)
    console.locator("#changelist-filter a", has_text="failed").first.click()
    expect(console.locator("#result_list tbody tr")).to_have_count(1)
    console.get_by_role("link", name="broken-run").click()
    timeline = console.locator("#timeline")
    expect(timeline).to_contain_text("job failed with exit code 7")
    timeline.locator("summary").click()
    expect(timeline.locator("pre")).to_contain_text('"exit_code": 7')
    expect(console.locator("input[value='Retry']")).to_be_visible()
    expect(console.locator("input[value='Cancel…']")).to_have_count(0)


def test_cancel_kills_the_remote_task_and_retry_puts_the_case_back(console, hpc, sandbox, mqic_dirs):
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "sim", "echo started; sleep 30\n")
    intake.scan()
    submission.submit_pass()
    case = Case.objects.get(name="sim")
    assert case.status == S.RUNNING

    open_admin(console, "admin:cases_case_change", case.pk)
    console.click("input[value='Cancel…']")
    expect(console.locator("#content-main")).to_contain_text("killed by id")
    console.click("input[value='Yes, cancel cases']")
    stopped = f"sim cancelled; pueue tasks [{case.pueue_task_id}] on sshd stopped"
    expect(console.locator(".messagelist")).to_contain_text(stopped, ignore_case=True)
    expect(console.locator("#timeline")).to_contain_text("cancelled by operator")
    task = sandbox.status()["tasks"][str(case.pueue_task_id)]
    assert task["status"]["Done"]["result"] == "Killed"
    assert GpuGroup.objects.get(pk=case.gpu_group_id).status == GpuGroup.Status.AVAILABLE

    console.click("input[value='Retry']")
    expect(console.locator(".messagelist")).to_contain_text("sim: back to submitted", ignore_case=True)
    expect(console.locator("#timeline")).to_contain_text("retried by operator")
    assert Case.objects.get(pk=case.pk).status == S.SUBMITTED


def test_the_remote_state_page_kills_an_orphan(console, hpc, sandbox):
    label = f"{label_prefix()}4242"
    task_id = int(sandbox.cli("add", "-p", "-l", label, "-g", "gpu_b", "--", "sleep 30").stdout.split()[-1])

    open_admin(console, "admin:resources_hpchost_changelist")
    console.get_by_role("link", name="remote state").click()
    expect(console.locator("#pueue-groups")).to_contain_text("gpu_a")
    row = console.locator(f"tr[data-task-id='{task_id}']")
    expect(row).to_contain_text("orphan")
    row.get_by_role("link", name="Kill…").click()
    console.click(f"input[value='Yes, kill task {task_id}']")
    stopped = f"orphan task {task_id} ({label}) on sshd stopped"
    expect(console.locator(".messagelist")).to_contain_text(stopped, ignore_case=True)
    expect(console.locator(f"tr[data-task-id='{task_id}']")).to_contain_text("killed")
    assert sandbox.status()["tasks"][str(task_id)]["status"]["Done"]["result"] == "Killed"
