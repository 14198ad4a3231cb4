"""The operator console's second round in a real browser (Chromium, driven by Playwright, against
the live server; the remote parts against the real sshd and the sandbox pueue): Re-check folder,
the dashboard's alarms, the case list's timing columns, guarded deletes, notifications, a cancelled
task as history, and the results page behind its permission. A failing test leaves a screenshot
in test-artifacts/.
"""

import re
from datetime import date, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from cases.models import Case, CaseStatus, GpuUsage
from cases.services import intake, monitoring
from console import delivery, notifications
from resources.models import GpuGroup, HpcHost
from resources.services import lock_free_group
from tests.factories import make_case, make_group, make_host
from tests.support.cases import drop_case, running_case
from tests.support.users import scientist, user_with

pytest_plugins = ["tests.support.browser"]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.filterwarnings("ignore:No directory at")]
S = CaseStatus
SECOND = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


@pytest.fixture(autouse=True)
def _static(plain_static):
    """No collectstatic in tests: the live server serves the apps' static files as they are."""


def open_admin(page, url_name: str, *args):
    page.goto(page.base + reverse(url_name, args=args))


def expect_names(page, names: list[str]) -> None:
    """The case list shows these cases, in this order."""
    expect(page.locator("#result_list tbody .mqic-name")).to_have_text(names)


def sort_by(page, column: str) -> None:
    """Click a column's header, as an operator sorts the case list (a second click reverses it)."""
    with page.expect_navigation():
        page.locator(f"#result_list th.column-{column} .text a").click()


def test_a_rejected_case_is_rechecked_from_its_page_once_its_folder_is_fixed(console, mqic_dirs):
    folder = drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "no-script", script=None)
    intake.scan()
    case = Case.objects.get()
    assert case.status == S.REJECTED

    open_admin(console, "admin:cases_case_change", case.pk)
    hint = console.locator("#recheck-hint")
    expect(hint).to_contain_text(f"This folder is not a valid case: {case.last_error}")
    expect(hint).to_contain_text("then press Re-check folder")
    expect(console.locator("input[value='Retry']")).to_have_count(0)
    expect(console.locator(".field-label .readonly")).to_have_text("-")  # no remote label: it never ran

    (folder / "run.sh").write_text("echo fixed\n")
    console.click("input[value='Re-check folder']")
    expect(console.locator(".messagelist")).to_contain_text("no-script: folder valid now, back to submitted")
    expect(console.locator(".field-status_display .readonly")).to_have_text("submitted")
    expect(console.locator("#timeline")).to_contain_text("folder re-checked by operator: a valid case now")
    expect(console.locator("#recheck-hint")).to_have_count(0)
    assert Case.objects.get().status == S.SUBMITTED


def test_the_dashboard_alarms_and_the_case_list_timing_sorted_by_its_headers(console):
    now = timezone.now()
    created = {}

    def case(name, status, age_minutes, **fields):
        made = make_case(status, name=name, **fields)
        Case.objects.filter(pk=made.pk).update(created_at=now - timedelta(minutes=age_minutes))
        created[name] = made
        return made

    case("short", S.COMPLETED, 300, running_at=now - timedelta(minutes=10), finished_at=now - timedelta(minutes=9))
    case("long", S.COMPLETED, 240, running_at=now - timedelta(minutes=60), finished_at=now - timedelta(minutes=20))
    case("busy", S.RUNNING, 180, running_at=now - timedelta(seconds=75))
    case("troubled", S.RUNNING, 120, error_count=2, last_error="unexpected KeyError while finishing")
    stuck = case("stuck", S.SUBMITTING, 90, lease_expires_at=now - timedelta(minutes=1))
    make_group()
    Case.objects.filter(pk=stuck.pk).update(gpu_group=lock_free_group(stuck.pk))
    case("wait-first", S.SUBMITTED, 60)
    case("wait-second", S.SUBMITTED, 30)

    console.reload()
    expect(console.locator("#overview-stuck")).to_contain_text("1 case stuck past its lease")
    troubled = console.locator("#overview-troubled")
    expect(troubled).to_contain_text("1 case not finished, with errors")
    expect(troubled).to_contain_text("troubled: unexpected KeyError while finishing")
    expect(console.locator("#mqic-overview")).not_to_contain_text("None stuck")
    expect(console.get_by_role("link", name="View site")).to_have_count(0)
    console.locator("#overview-troubled a").click()
    expect(console.locator("#result_list tbody tr")).to_have_count(1)
    expect(console.locator("#result_list tbody")).to_contain_text("troubled")
    console.goto(console.base + "/admin/")
    console.locator("#overview-stuck a").click()
    expect_names(console, ["stuck"])

    open_admin(console, "admin:cases_case_changelist")
    busy = console.locator("#result_list tbody tr", has_text="busy")
    expect(busy.locator(".field-run_time_display")).to_have_text(re.compile(r"^running 1m \d\ds$"))
    sort_by(console, "age")
    expect_names(console, ["wait-second", "wait-first", "stuck", "troubled", "busy", "long", "short"])
    sort_by(console, "age")
    expect_names(console, ["short", "long", "busy", "troubled", "stuck", "wait-first", "wait-second"])

    console.goto(console.base + reverse("admin:cases_case_changelist") + "?status__exact=completed")
    sort_by(console, "run_time_display")
    expect_names(console, ["short", "long"])
    sort_by(console, "run_time_display")
    expect_names(console, ["long", "short"])
    expect(console.locator("#result_list tbody tr").first.locator(".field-run_time_display")).to_have_text(
        "40m 00s"
    )

    console.goto(console.base + reverse("admin:cases_case_changelist") + "?status__exact=submitted")
    expect_names(console, ["wait-second", "wait-first"])  # the newest first, as by default
    sort_by(console, "position_display")
    expect_names(console, ["wait-first", "wait-second"])
    expect(console.locator(".field-position_display")).to_have_text(["#1", "#2"])

    console.get_by_role("link", name="wait-first").click()
    for field in ("created_at", "updated_at"):
        expect(console.locator(f".field-{field} .readonly")).to_have_text(SECOND)
    open_admin(console, "admin:cases_case_change", created["long"].pk)
    running_at = timezone.localtime(now - timedelta(minutes=60))
    expect(console.locator(".field-running_at .readonly")).to_have_text(f"{running_at:%Y-%m-%d %H:%M:%S}")
    expect(console.locator(".field-finished_at .readonly")).to_have_text(SECOND)
    expect(console.locator(".field-run_time_display .readonly")).to_have_text("40m 00s")


def test_a_host_with_cases_is_not_deleted_and_notifications_are_listed(console, settings):
    host = make_host(name="old-cluster")
    make_case(S.COMPLETED, name="ran-there", gpu_group=make_group(host))
    open_admin(console, "admin:resources_hpchost_change", host.pk)
    console.locator("a.deletelink").click()
    expect(console.locator(".messagelist .error")).to_have_text(
        "old-cluster cannot be deleted: 1 case ran on its GPU groups and keep pointing at them. "
        "Disable the host (untick enabled) to stop using it."
    )
    assert console.url.endswith(reverse("admin:resources_hpchost_change", args=[host.pk]))
    assert HpcHost.objects.filter(pk=host.pk).exists()

    settings.MQIC_NOTIFY_EMAILS = ["ops@example.org"]
    settings.MQIC_NOTIFY_WEBHOOK = "ftp://not-a-webhook"
    HpcHost.objects.filter(pk=host.pk).update(down_since=timezone.now(), consecutive_failures=3)
    host.refresh_from_db()
    notifications.announce(notifications.host_down(host, "connection refused"))
    delivery.deliver_due()  # what the cluster's delivery task does
    open_admin(console, "admin:console_notification_changelist")
    row = console.locator("#result_list tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator(".field-event")).to_have_text("host_down")
    expect(row.locator(".field-subject")).to_have_text("host old-cluster is down")
    expect(row.locator(".field-delivery")).to_have_text(
        "mail sent; webhook given up: MQIC_NOTIFY_WEBHOOK must be an https URL "
        "(http only with MQIC_NOTIFY_ALLOW_HTTP=true)"
    )
    row.locator("th a").click()
    expect(console.locator(".field-reason .readonly")).to_have_text(
        "3 failed contacts in a row: connection refused"
    )
    expect(console.locator("#notification_form input[name='_save']")).to_have_count(0)  # read-only


def test_a_cancelled_task_is_history_and_its_results_download_only_with_the_permission(
    console, log_in_as, hpc, sandbox, mqic_dirs
):
    case = running_case(mqic_dirs.MQIC_NEW_CASES_DIR)

    open_admin(console, "admin:cases_case_change", case.pk)
    snapshot = console.locator(".field-last_seen_task_display .readonly")
    expect(snapshot.locator("pre")).to_contain_text('"status": "running"')
    expect(snapshot.locator(".mqic-history")).to_have_count(0)
    console.click("input[value='Cancel…']")
    console.click("input[value='Yes, cancel cases']")
    expect(console.locator(".messagelist")).to_contain_text("sim cancelled")
    monitoring.monitor_pass()  # brings home what the cancelled job left
    console.reload()
    expect(snapshot.locator(".mqic-history")).to_have_text(
        f"History: task {case.pueue_task_id} as last seen before the case became cancelled "
        "(not its state now; see the attempts below)."
    )
    expect(snapshot.locator("pre")).not_to_be_visible()  # folded away under "the snapshot"

    console.get_by_role("link", name="Results and job log").click()
    with console.expect_download() as download:
        console.locator("#result-files tr[data-path='partial.txt'] a").click()
    assert download.value.suggested_filename == "partial.txt"
    assert download.value.path().read_bytes() == b"partial\n"

    user_with("viewer", ["cases.view_case", "cases.view_all_cases"])  # an operator without console.view_results
    viewer = log_in_as("viewer", "pw-viewer")
    open_admin(viewer, "admin:cases_case_change", case.pk)
    expect(viewer.locator(".field-status_display .readonly")).to_have_text("cancelled")
    expect(viewer.get_by_role("link", name="Results and job log")).to_have_count(0)
    assert viewer.goto(viewer.base + reverse("console:results", args=[case.pk])).status == 403
    file_url = viewer.base + reverse("console:result_file", args=[case.pk, "partial.txt"])
    assert viewer.request.get(file_url).status == 403


HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"


def test_a_hostile_group_name_is_text_on_every_page_and_no_script_runs(console, settings):
    """A job on the host could name a pueue group with HTML, and "Sync GPU groups" took the name as
    it was: the case list's live "where" cell then ran it in every operator's browser. Now a name
    from any source goes through one rule, every live fragment is escaped, and the policy forbids
    inline script: a name that got into the database anyway (here written straight into it) is
    shown as text, on the list and after its live update."""
    settings.MQIC_LIVE_SECONDS = 1
    group = make_group(name="gpu-x")
    GpuGroup.objects.filter(pk=group.pk).update(name=HOSTILE)
    make_case(S.RUNNING, name="victim", gpu_group=group, pueue_task_id=3)
    console.goto(console.base + reverse("admin:cases_case_changelist"))
    with console.expect_response(lambda r: "/live/cases/" in r.url):
        pass
    console.wait_for_timeout(1500)  # a second live update, swapped in with innerHTML
    assert console.title() != "pwned"
    expect(console.locator("#result_list")).to_contain_text(HOSTILE)
    assert "script-src 'self'" in console.request.get(console.base + "/admin/").headers["content-security-policy"]


def test_gpu_accounting_is_reached_from_the_index_with_its_lines_and_their_csv(console, log_in_as):
    alice = scientist("alice")
    host = make_host(name="cluster-a")
    GpuUsage.objects.create(owner=alice, host=host, month=date(2026, 2, 1), gpu_seconds=7200)
    GpuUsage.objects.create(owner=None, host=host, month=date(2026, 3, 1), gpu_seconds=900)

    console.goto(console.base + reverse("admin:index"))
    console.get_by_role("link", name="GPU accounting").click()
    expect(console.locator("h1")).to_have_text("GPU accounting")
    lines = console.locator("#gpu-accounting tbody tr")
    expect(lines).to_have_count(2)
    expect(lines.nth(0).locator("td")).to_have_text(["2026-03", "(none)", "cluster-a", "0.25", "900"])
    expect(lines.nth(1).locator("td")).to_have_text(["2026-02", "alice", "cluster-a", "2.00", "7200"])
    expect(console.locator("#accounting-total th")).to_have_text(["total", "2.25", "8100"])
    with console.expect_download() as download:
        console.get_by_role("link", name="Download CSV").click()
    assert download.value.suggested_filename == "gpu-accounting.csv"
    assert download.value.path().read_text().splitlines() == [
        "owner,host,month,gpu_seconds,gpu_hours",
        "(none),cluster-a,2026-03,900,0.2500",
        "alice,cluster-a,2026-02,7200,2.0000",
    ]

    mine = log_in_as("alice", "pw-alice")  # a scientist: their own line only
    mine.get_by_role("link", name="GPU accounting").click()
    expect(mine.locator("#gpu-accounting tbody tr")).to_have_count(1)
    expect(mine.locator("#gpu-accounting")).not_to_contain_text("(none)")
    expect(mine.locator("#accounting-total th")).to_have_text(["total", "2.00", "7200"])
