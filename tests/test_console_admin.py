"""The operator console's second round, through Django's test client: timing columns, live
endpoints, attempts and history, Re-check folder, Recent actions, guarded deletes, host back-off,
the dashboard's failures; the remote parts against the real sshd and sandbox pueue."""

import re
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from cases.admin import CaseAdmin
from cases.models import Attempt, Case, CaseEvent, CaseStatus, PassRun
from cases.services import intake, monitoring, submission
from cases.services.jobs import JOB_LOG
from cases.services.labels import label_prefix
from resources.models import GpuGroup, HpcHost
from resources.services import lock_free_group
from tests.factories import make_case, make_group, make_host
from tests.support.cases import drop_case, running_case
from tests.support.users import user_with
from tests.test_admin import OPERATOR_PERMISSIONS, VIEW_PERMISSIONS, act, changelist, messages_of

S = CaseStatus
pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:No directory at")]
SECOND = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


@pytest.fixture(autouse=True)
def _static(plain_static):
    """Every page here renders without collectstatic."""


@pytest.fixture
def operator(client):
    permissions = [*VIEW_PERMISSIONS, *OPERATOR_PERMISSIONS, "console.view_results", "cases.view_passrun"]
    user = user_with("operator", permissions)
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def admin_client_(client):
    client.force_login(User.objects.create_superuser("root", "", "pw-root"))
    return client


def cells(response, field: str) -> list[str]:
    """The text of one column of the case list, row by row."""
    html = response.content.decode()
    found = re.findall(rf'<t[dh] class="field-{field}"[^>]*>(.*?)</t[dh]>', html, re.S)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in found]


# -- timing ----------------------------------------------------------------------------------


@pytest.mark.engine  # date arithmetic and a correlated count, in SQL
def test_the_list_shows_age_run_time_and_the_place_in_the_wait_and_sorts_by_them(operator):
    now = timezone.now()
    waiting = [make_case(S.SUBMITTED, name=f"wait-{n}") for n in range(3)]
    make_case(S.RUNNING, name="busy", running_at=now - timedelta(seconds=90))
    make_case(
        S.COMPLETED, name="done", running_at=now - timedelta(minutes=10), finished_at=now - timedelta(minutes=5)
    )
    # A case retried after a failure keeps its old end: it is not counted while it waits again.
    make_case(S.SUBMITTED, name="again", running_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=1))

    page = operator.get(changelist() + "?o=1")  # by name
    names = cells(page, "name_display")
    run_time = dict(zip(names, cells(page, "run_time_display"), strict=True))
    assert re.fullmatch(r"running 1m 3\ds", run_time["busy"])
    assert run_time["done"] == "5m 00s" and run_time["again"] == "-"
    position = dict(zip(names, cells(page, "position_display"), strict=True))
    assert [position[c.name] for c in waiting] == ["#1", "#2", "#3"]
    assert position["again"] == "#4" and position["busy"] == "-"
    assert all(re.fullmatch(r"\d+s", age) for age in cells(page, "age"))

    by_place = operator.get(changelist() + "?status__exact=submitted&o=-8")
    assert cells(by_place, "name_display") == ["again", "wait-2", "wait-1", "wait-0"]
    by_run_time = operator.get(changelist() + "?status__exact=running&o=7")
    assert cells(by_run_time, "name_display") == ["busy"]


@pytest.mark.engine  # date arithmetic and a correlated count, in SQL
def test_the_new_columns_cost_no_query_per_row(operator):
    counts = []
    for n in (20, 200):
        Case.objects.bulk_create(
            Case(name=f"bulk{i}", source_path=f"/bulk/{i}", status=S.SUBMITTED, last_error="late")
            for i in range(Case.objects.count(), n)
        )
        with CaptureQueriesContext(connection) as queries:
            page = operator.get(changelist() + "?status__exact=submitted")
        assert "#200" in page.content.decode() or n == 20
        counts.append(len(queries))
    assert counts[0] == counts[1] <= 12, counts


def test_sorting_by_age_ascending_puts_the_youngest_first(operator):
    now = timezone.now()
    for name, minutes in (("old", 30), ("young", 1), ("middle", 10)):
        Case.objects.filter(pk=make_case(name=name).pk).update(created_at=now - timedelta(minutes=minutes))
    age = 1 + CaseAdmin.list_display.index("age")
    assert cells(operator.get(changelist() + f"?o={age}"), "name_display") == ["young", "middle", "old"]
    assert cells(operator.get(changelist() + f"?o=-{age}"), "name_display") == ["old", "middle", "young"]


def test_times_are_shown_to_the_second(operator):
    case = make_case(S.COMPLETED, running_at=timezone.now(), finished_at=timezone.now())
    html = operator.get(reverse("admin:cases_case_change", args=[case.pk])).content.decode()
    assert f"{timezone.localtime(case.created_at):%Y-%m-%d %H:%M:%S}" in html
    assert len(SECOND.findall(html)) >= 4


# -- live endpoints --------------------------------------------------------------------------


def test_the_live_endpoints_render_the_cells_and_parts_that_change(operator):
    case = make_case(S.SUBMITTED, name="live-one")
    other = make_case(S.FAILED, name="live-two", last_error="job failed with exit code 2")
    cells_url = reverse("console:live_cases") + f"?ids={case.pk},{other.pk},junk"
    fragments = operator.get(cells_url).json()["fragments"]
    assert "submitted" in fragments[f"case-{case.pk}-status"]
    assert fragments[f"case-{case.pk}-position"].endswith(">#1</span>")
    assert "data-live" not in fragments[f"case-{case.pk}-position"]  # the inside of the live span only
    assert "job failed with exit code 2" in fragments[f"case-{other.pk}-error"]

    page = operator.get(reverse("console:live_case", args=[other.pk])).json()
    assert page["stop"] is False
    assert 'value="Retry"' in page["fragments"][f"case-{other.pk}-ops"]
    assert "No attempt yet" in page["fragments"][f"case-{other.pk}-attempts"]

    overview = operator.get(reverse("console:live_overview")).json()["fragments"]["overview"]
    assert 'data-status="failed">1<' in overview


def test_the_live_endpoints_need_the_view_permission_and_a_login(client):
    case = make_case()
    urls = [
        reverse("console:live_cases") + f"?ids={case.pk}",
        reverse("console:live_case", args=[case.pk]),
        reverse("console:live_overview"),
        reverse("console:live_log", args=[case.pk]),
    ]
    for url in urls:
        assert client.get(url).status_code == 302
    client.force_login(user_with("nobody", []))
    for url in urls:
        assert client.get(url).status_code == 403


# -- the case page -----------------------------------------------------------------------------


def test_a_rejected_case_is_rechecked_once_its_folder_is_fixed(operator, mqic_dirs):
    folder = drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "no-script", script=None)
    intake.scan()
    case = Case.objects.get()
    assert case.status == S.REJECTED
    page = operator.get(reverse("admin:cases_case_change", args=[case.pk])).content.decode()
    assert 'value="Re-check folder"' in page and 'id="recheck-hint"' in page
    assert 'value="Retry"' not in page
    recheck_until_fixed(operator, case, folder, "recheck_cases")


def test_retry_from_the_list_rechecks_a_rejected_case_like_the_page_does(operator, mqic_dirs):
    folder = drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "no-script", script=None)
    intake.scan()
    recheck_until_fixed(operator, Case.objects.get(), folder, "retry_cases")


def recheck_until_fixed(operator, case, folder, action):
    """``action`` on a rejected case: it stays rejected, saying why, until its folder is fixed."""
    reason = case.last_error
    response = act(operator, action, case)
    assert messages_of(response) == [f"no-script is still not a valid case: {reason}"]
    case.refresh_from_db()
    assert case.status == S.REJECTED and case.last_error == reason
    assert case.events.last().reason.startswith("folder re-checked by operator: still not a valid case")

    (folder / "run.sh").write_text("echo fixed\n")
    response = act(operator, action, case)
    assert messages_of(response) == ["no-script: folder valid now, back to submitted"]
    case.refresh_from_db()
    assert case.status == S.SUBMITTED and case.last_error == ""


def test_a_rejected_case_gets_no_remote_label(mqic_dirs):
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "no-script", script=None)
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "valid")
    intake.scan()
    rejected, valid = Case.objects.get(name="no-script"), Case.objects.get(name="valid")
    assert rejected.status == S.REJECTED and rejected.label is None
    assert valid.status == S.SUBMITTED and valid.label == f"{label_prefix()}{valid.pk}"


def test_reconcile_now_goes_to_recent_actions(operator):
    operator.post(reverse("admin:cases_case_reconcile"))
    run = PassRun.objects.get(kind="reconcile")
    entry = LogEntry.objects.get()
    assert entry.user == operator.user and entry.get_edited_object() == run
    assert entry.get_change_message().startswith("reconciled (by operator): ")
    dashboard = operator.get(reverse("admin:index")).content.decode()
    assert reverse("admin:cases_passrun_change", args=[run.pk]) in dashboard  # Recent actions links the pass


def test_actions_go_to_recent_actions_and_names_are_shown_as_they_are(operator):
    case = make_case(S.FAILED, name="sim-lower")
    response = act(operator, "retry_cases", case)
    assert messages_of(response) == ["sim-lower: back to submitted"]
    assert '<li class="success">sim-lower: back to submitted</li>' in response.content.decode()
    entry = LogEntry.objects.get()
    assert (entry.object_id, entry.get_change_message()) == (str(case.pk), "sim-lower: back to submitted")
    assert entry.user == operator.user
    assert "sim-lower" in operator.get(reverse("admin:index")).content.decode()  # Recent actions

    act(operator, "cancel_cases", make_case(S.COMPLETED))  # does not apply: nothing logged
    assert LogEntry.objects.count() == 1


def test_no_view_site_link_and_the_root_leads_to_the_console(operator):
    assert "View site" not in operator.get(reverse("admin:index")).content.decode()
    response = operator.get("/")
    assert response.status_code == 302 and response["Location"] == reverse("admin:index")


def test_the_case_page_shows_its_attempts_and_a_cancelled_task_as_history(operator, hpc, sandbox, mqic_dirs):
    case = running_case(mqic_dirs.MQIC_NEW_CASES_DIR)
    page = operator.get(reverse("admin:cases_case_change", args=[case.pk])).content.decode()
    assert "<strong>current</strong>" in page and "History:" not in page
    assert "&quot;status&quot;: &quot;running&quot;" in page
    assert 'value="Cancel…"' in page and "Follow the log" in page

    act(operator, "cancel_cases", case)
    monitoring.monitor_pass()  # brings home what the cancelled job left, then cleans up remotely
    attempt = Attempt.objects.get()
    assert attempt.results_at is not None and attempt.cleaned_at is not None
    page = operator.get(reverse("admin:cases_case_change", args=[case.pk])).content.decode()
    assert f"History: task {case.pueue_task_id} as last seen before the case became cancelled" in page
    assert attempt.remote_dir in page and "cancelled: cancelled by operator" in page
    cleaned = f"{timezone.localtime(attempt.cleaned_at):%Y-%m-%d %H:%M:%S}"
    assert f"{cleaned}: pueue task {case.pueue_task_id} removed, folder deleted" in page
    assert "Follow the log" not in page and 'value="Retry"' in page

    results = operator.get(reverse("console:results", args=[case.pk])).content.decode()
    assert "partial.txt" in results and JOB_LOG in results


def test_the_log_follows_a_running_case_and_stops_once_it_ended(operator, hpc, sandbox, mqic_dirs):
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "sim", "echo first line; sleep 30\n")
    intake.scan()
    submission.submit_pass()
    case = Case.objects.get()
    page = operator.get(reverse("admin:cases_case_log", args=[case.pk])).content.decode()
    assert reverse("console:live_log", args=[case.pk]) in page and "first line" in page
    answer = operator.get(reverse("console:live_log", args=[case.pk])).json()
    assert "first line" in answer["fragments"]["log-tail"] and answer["stop"] is False
    Case.objects.filter(pk=case.pk).update(status=S.CANCELLED)
    assert operator.get(reverse("console:live_log", args=[case.pk])).json()["stop"] is True


# -- guarded deletes -----------------------------------------------------------------------------


def test_a_host_that_cases_ran_on_is_not_deleted_and_the_reason_is_said(admin_client_):
    host = make_host()
    group = make_group(host)
    make_case(S.COMPLETED, gpu_group=group)
    url = reverse("admin:resources_hpchost_delete", args=[host.pk])
    for response in (admin_client_.get(url, follow=True), admin_client_.post(url, {"post": "yes"}, follow=True)):
        assert messages_of(response) == [
            f"{host.name} cannot be deleted: 1 case ran on its GPU groups and keep pointing at them. "
            "Disable the host (untick enabled) to stop using it."
        ]
    assert HpcHost.objects.filter(pk=host.pk).exists()
    bare = make_host()
    admin_client_.post(reverse("admin:resources_hpchost_delete", args=[bare.pk]), {"post": "yes"})
    assert not HpcHost.objects.filter(pk=bare.pk).exists()
    hosts = admin_client_.get(reverse("admin:resources_hpchost_changelist")).context["action_form"]
    assert "delete_selected" not in [value for value, _ in hosts.fields["action"].choices]


def test_a_gpu_group_never_shows_its_holder_as_a_field_nor_deletes_while_used(admin_client_):
    group = make_group()
    case = make_case(S.RUNNING)
    assert lock_free_group(case.pk).pk == group.pk
    Case.objects.filter(pk=case.pk).update(gpu_group=group)
    form = admin_client_.get(reverse("admin:resources_gpugroup_change", args=[group.pk])).context["adminform"]
    assert "holder_id" not in form.form.fields and "status" not in form.form.fields
    assert admin_client_.get(reverse("admin:resources_gpugroup_delete", args=[group.pk])).status_code == 403
    admin_client_.post(
        reverse("admin:resources_gpugroup_change", args=[group.pk]),
        {"name": group.name, "devices": "", "holder_id": "999"},
    )
    assert GpuGroup.objects.get(pk=group.pk).holder_id == case.pk


def test_a_case_is_deleted_only_once_finished_and_cleaned_up(admin_client_):
    case = make_case(S.COMPLETED)
    Attempt.objects.create(case=case, token="t1", remote_dir="/x/t1", started_at=timezone.now())
    running = make_case(S.RUNNING)
    for target in (case, running):
        assert admin_client_.get(reverse("admin:cases_case_delete", args=[target.pk])).status_code == 403
    Attempt.objects.filter(case=case).update(ended_at=timezone.now(), cleaned_at=timezone.now())
    assert admin_client_.get(reverse("admin:cases_case_delete", args=[case.pk])).status_code == 200


# -- hosts and the dashboard ---------------------------------------------------------------------


def test_a_host_backing_off_shows_why_since_when_and_retry_now_ends_it(operator, hpc, sandbox):
    now = timezone.now()
    HpcHost.objects.filter(pk=hpc.pk).update(
        last_error=f"{now:%Y-%m-%d %H:%M:%S} connection refused",
        consecutive_failures=5,
        down_since=now - timedelta(minutes=3),
        next_try_at=now + timedelta(minutes=5),
    )
    hpc.refresh_from_db()
    page = operator.get(reverse("admin:resources_hpchost_change", args=[hpc.pk])).content.decode()
    assert "backing off" in page and "5 failures in a row" in page
    assert f"down since {timezone.localtime(hpc.down_since):%Y-%m-%d %H:%M:%S}" in page
    assert f"next try {timezone.localtime(hpc.next_try_at):%Y-%m-%d %H:%M:%S}" in page
    assert 'value="Check health now"' in page
    dashboard = operator.get(reverse("admin:index")).content.decode()
    assert "1 host not answering" in dashboard and 'value="Check health now"' in dashboard

    back = reverse("admin:resources_hpchost_change", args=[hpc.pk])
    response = operator.post(
        reverse("admin:resources_hpchost_changelist"),
        {"action": "check_health", "_selected_action": [hpc.pk], "next": back},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == back
    assert messages_of(response) == ["sshd answers: pueue 4.0.4"]
    hpc.refresh_from_db()
    assert hpc.next_try_at is None and hpc.consecutive_failures == 0 and hpc.last_error == ""
    assert LogEntry.objects.get().get_change_message() == "sshd answers: pueue 4.0.4"


def test_the_dashboard_shows_failed_passes_stuck_and_troubled_cases(operator):
    now = timezone.now()
    failed = PassRun.objects.create(
        kind="monitor",
        actor="monitor (schedule)",
        started_at=now,
        finished_at=now,
        outcome="failed",
        summary="failed: OperationalError: database is locked",
        error="Traceback ...",
    )
    make_case(S.RUNNING, name="troubled", error_count=2, last_error="unexpected KeyError while finishing")
    stuck = make_case(S.SUBMITTING, lease_expires_at=now - timedelta(minutes=1))
    make_group()
    Case.objects.filter(pk=stuck.pk).update(gpu_group=lock_free_group(stuck.pk))
    html = operator.get(reverse("admin:index")).content.decode()
    assert "1 failed pass in the last 24 hours" in html
    assert reverse("admin:cases_passrun_change", args=[failed.pk]) in html
    assert "database is locked" in html
    assert "1 case not finished, with errors" in html and "unexpected KeyError while finishing" in html
    assert "1 case stuck past its lease" in html
    assert "None stuck" not in html
    run_page = operator.get(reverse("admin:cases_passrun_change", args=[failed.pk])).content.decode()
    assert "Traceback ..." in run_page
    assert CaseEvent.objects.count() == 0


def test_a_local_host_from_the_configuration_is_disabled_in_the_admin_and_raises_no_alarm(
    admin_client, admin_user, settings
):
    """The README has the demo's second host disabled in the admin: its form asked for a host name
    that a local host has none of; a disabled host then kept the red "not answering" line and its
    free groups were counted."""
    from console.selectors import metric_values, overview
    from resources.config import apply, check_host
    from resources.models import HpcHost

    settings.MQIC_ALLOW_LOCAL_TRANSPORT = True
    table = {"transport": "local", "base_dir": "/tmp/mqic-hpc2", "gpu_groups": ["gpu_a", "gpu_b"]}
    apply([check_host("hpc2", table, where="test")])
    host = HpcHost.objects.get(name="hpc2")
    HpcHost.objects.filter(pk=host.pk).update(last_error="no answer", consecutive_failures=3)
    data = {"name": "hpc2", "hostname": "", "port": 22, "username": "", "key_path": "", "known_hosts_path": ""}
    data |= {"proxy_jump": "", "base_dir": host.base_dir, "pueue_command": host.pueue_command}
    answer = admin_client.post(reverse("admin:resources_hpchost_change", args=[host.pk]), data)
    assert answer.status_code == 302, answer.content.decode()[-3000:]
    assert not HpcHost.objects.get(pk=host.pk).enabled
    seen = overview(admin_user)
    assert seen.hosts_down == 0 and seen.free == 0, "no alarm, no free group"
    assert metric_values().groups["free"] == 0
    listing = admin_client.get(reverse("admin:resources_hpchost_changelist")).content.decode()
    assert "this machine (local)" in listing and "localhost:22" not in listing
