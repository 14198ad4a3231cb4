"""The operations console in a real browser: Chromium, driven by Playwright, against the live
server, the real sshd and the sandbox pueue. A failing test leaves a screenshot in test-artifacts/.
"""

import re
import tarfile
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from cases.models import Case, CaseEvent, CaseStatus, PassRun
from cases.services import intake, monitoring, submission
from cases.services.labels import label_prefix
from cases.services.transitions import transition
from resources.models import GpuGroup, HpcHost
from tests.factories import make_case
from tests.support.cases import drop_case
from tests.support.system import wait_for

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
    expect(console.locator(".messagelist")).to_contain_text(stopped)  # the name as it is, not "Sim"
    expect(console.locator("#timeline")).to_contain_text("cancelled by operator")
    task = sandbox.status()["tasks"][str(case.pueue_task_id)]
    assert task["status"]["Done"]["result"] == "Killed"
    assert GpuGroup.objects.get(pk=case.gpu_group_id).status == GpuGroup.Status.AVAILABLE

    console.click("input[value='Retry']")
    expect(console.locator(".messagelist")).to_contain_text("sim: back to submitted")
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
    expect(console.locator(".messagelist")).to_contain_text(stopped)
    expect(console.locator(f"tr[data-task-id='{task_id}']")).to_contain_text("killed")
    assert sandbox.status()["tasks"][str(task_id)]["status"]["Done"]["result"] == "Killed"


# -- the second round: live pages, timing, results, long names, host back-off -------------------


@pytest.fixture
def fast_live(settings):
    """The live pages ask every second (5 s by default).

    Name it before ``console`` in a test's arguments: the dashboard that ``console`` opens
    reads the interval when it is rendered.
    """
    settings.MQIC_LIVE_SECONDS = 1


def mark_page(page) -> None:
    """A value that only survives as long as the page is not reloaded."""
    page.evaluate("window.mqicNotReloaded = true")


def not_reloaded(page) -> bool:
    return page.evaluate("window.mqicNotReloaded === true")


def test_the_dashboard_updates_itself_without_a_reload(fast_live, console):
    mark_page(console)
    failed = console.locator("#overview-cases td[data-status='failed']")
    expect(failed).to_have_text("0")
    make_case(S.FAILED, name="broke-meanwhile")
    now = timezone.now()
    PassRun.objects.create(
        kind="monitor", actor="monitor", started_at=now, finished_at=now, outcome="failed", summary="failed: boom"
    )
    expect(failed).to_have_text("1")
    expect(console.locator("#overview-failed-passes")).to_contain_text("1 failed pass in the last 24 hours")
    expect(console.locator("#mqic-overview [data-live-updated]")).to_have_text(re.compile(r"updated \ds ago"))
    assert not_reloaded(console)


def test_the_case_list_updates_its_rows_in_place_and_keeps_the_selection(fast_live, console):
    waiting = make_case(S.SUBMITTED, name="wait-a")
    make_case(S.SUBMITTED, name="wait-b")
    open_admin(console, "admin:cases_case_changelist")
    mark_page(console)
    row = console.locator("#result_list tbody tr", has_text="wait-a")
    row.locator("input.action-select").check()
    expect(row.locator(".field-position_display")).to_have_text("#1")
    transition(waiting, S.SUBMITTED, S.CANCELLED, reason="cancelled meanwhile")
    expect(row.locator(".field-status_display")).to_have_text("cancelled")
    expect(row.locator(".field-position_display")).to_have_text("-")
    other = console.locator("#result_list tbody tr", has_text="wait-b")
    expect(other.locator(".field-position_display")).to_have_text("#1")
    expect(row.locator("input.action-select")).to_be_checked()
    expect(console.locator("[data-live-updated]")).to_have_text(re.compile(r"updated \ds ago"))
    assert not_reloaded(console)


def test_a_running_case_page_follows_it_to_its_end_and_its_log_follows(
    console, hpc, sandbox, mqic_dirs, fast_live
):
    script = "for i in $(seq 1 40); do echo line-$i; sleep 0.3; done\n"
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "sim", script)
    intake.scan()
    submission.submit_pass()
    case = Case.objects.get(name="sim")

    open_admin(console, "admin:cases_case_log", case.pk)
    mark_page(console)
    log = console.locator("#log-tail")
    expect(log).to_contain_text("line-1")
    expect(log).to_contain_text("line-12")  # more lines arrive while the page stays
    assert not_reloaded(console)

    open_admin(console, "admin:cases_case_change", case.pk)
    mark_page(console)
    expect(console.locator(".field-run_time_display .readonly")).to_contain_text("running")
    expect(console.locator("input[value='Cancel…']")).to_be_visible()
    wait_for(lambda: monitoring.monitor_pass().completed, 60, "the case to finish")
    expect(console.locator(".field-status_display .readonly")).to_have_text("completed")
    expect(console.locator("#timeline")).to_contain_text("completed")
    expect(console.locator("input[value='Cancel…']")).to_have_count(0)
    expect(console.locator("#attempt-rows")).to_contain_text("completed")
    assert not_reloaded(console)

    console.get_by_role("link", name="Results and job log").click()
    expect(console.locator("#result-files")).to_contain_text(".mqic_job.log")
    with console.expect_download() as download:
        console.click("#results-archive")
    with tarfile.open(download.value.path(), mode="r:gz") as archive:
        log_member = next(m for m in archive.getmembers() if m.name.endswith("/.mqic_job.log"))
        assert b"line-40" in archive.extractfile(log_member).read()


def test_a_255_byte_name_wraps_and_the_list_fits_1400_px(console):
    name = "n" * 255
    case = make_case(S.FAILED, name=name, last_error="job failed with exit code 1 " + "e" * 300)
    for n in range(5):
        make_case(S.RUNNING, name=f"busy-{n}", running_at=timezone.now())
    open_admin(console, "admin:cases_case_change", case.pk)
    expect(console.locator("#timeline")).to_be_visible()
    assert console.evaluate("document.documentElement.scrollWidth") <= 1400
    box = console.locator("#timeline").bounding_box()
    assert box["x"] + box["width"] <= 1400
    open_admin(console, "admin:cases_case_changelist")
    cell = console.locator(".mqic-name", has_text="nnnn")
    expect(cell).to_have_attribute("title", name)
    assert console.evaluate("document.documentElement.scrollWidth") <= 1400
    results = console.locator("#changelist .results")
    assert results.evaluate("e => e.scrollWidth <= e.clientWidth"), "the case list needs a horizontal scroll"
    expect(console.locator(".field-error_display .mqic-clip").first).to_have_attribute(
        "title", re.compile("job failed with exit code 1")
    )


def test_a_host_backing_off_is_shown_and_retried_now_from_the_dashboard(console, hpc, sandbox):
    now = timezone.now()
    HpcHost.objects.filter(pk=hpc.pk).update(
        last_error=f"{now:%Y-%m-%d %H:%M:%S} connection refused",
        consecutive_failures=4,
        down_since=now,
        next_try_at=now + timedelta(minutes=10),
    )
    console.reload()
    host = console.locator("#overview-hosts tr[data-host='sshd']")
    expect(host).to_contain_text("backing off")
    expect(host).to_contain_text("4 failures in a row")
    host.locator("input[value='Check health now']").click()
    expect(console.locator(".messagelist")).to_contain_text("sshd answers: pueue 4.0.4")  # as written
    expect(console.locator("#overview-hosts tr[data-host='sshd']")).to_contain_text("ok")
    expect(console.locator("#recent-actions-module")).to_contain_text("sshd")


def test_what_a_newcomer_met_reads_right(console):
    """The full reason on a case's page, a long name clear of the History button, the log in a
    monospace font, GPU holders named on the dashboard, a pinned case saying which group it
    waits for, and /metrics shown as text in the browser."""
    from tests.factories import make_group

    name = "m" * 200
    why = "job failed with exit code 1: " + "the solver diverged at step 4711; " * 12
    failed = make_case(S.FAILED, name=name, last_error=why, log_tail="step 1\nstep 2\n")
    open_admin(console, "admin:cases_case_change", failed.pk)
    reason = console.locator(".field-error_display .mqic-clip")
    expect(reason).to_have_text(why.strip())
    assert reason.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), "the whole reason is visible"
    title, history = console.locator("#content h2").first, console.locator(".object-tools").first
    t, h = title.bounding_box(), history.bounding_box()
    overlap = t["x"] < h["x"] + h["width"] and h["x"] < t["x"] + t["width"]
    overlap = overlap and t["y"] < h["y"] + h["height"] and h["y"] < t["y"] + t["height"]
    assert not overlap, (t, h)

    group = make_group(name="gpu_b")
    holder = make_case(S.RUNNING, name="holding-it", gpu_group=group, running_at=timezone.now())
    GpuGroup.objects.filter(pk=group.pk).update(status="assigned", holder_id=holder.pk)
    make_case(S.SUBMITTED, name="pinned", wanted_group="gpu_b")
    open_admin(console, "admin:index")
    expect(console.locator("#overview-gpus")).to_contain_text("holding-it")
    open_admin(console, "admin:cases_case_changelist")
    row = console.locator("#result_list tbody tr", has_text="pinned")
    expect(row.locator(".field-position_display")).to_have_text("#1 for gpu_b")

    open_admin(console, "admin:cases_case_log", holder.pk)
    family = console.locator("#log-tail").evaluate("e => getComputedStyle(e).fontFamily")
    assert "mono" in family.lower(), family

    console.goto(console.base + "/metrics")
    expect(console.locator("body")).to_contain_text("mqic_cases")
