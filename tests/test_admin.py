"""The admin as the operations console, through Django's test client.

Permissions, actions that do or do not apply, bounded queries; the remote actions run
against the real sshd and sandbox pueue.
"""

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from cases.models import Case, CaseEvent, CaseStatus, PassRun
from cases.services import intake, submission
from cases.services.labels import label_prefix
from resources.models import GpuGroup, HpcHost
from resources.services import lock_free_group
from tests.factories import make_case, make_group, make_host
from tests.support.cases import drop_case
from tests.support.sshd import generate_key
from tests.support.users import user_with

S = CaseStatus
pytestmark = [pytest.mark.django_db, pytest.mark.filterwarnings("ignore:No directory at")]

ACTIONS = ("retry_cases", "cancel_cases", "mark_failed_cases")
OPERATOR_PERMISSIONS = [
    "cases.retry_case",
    "cases.cancel_case",
    "cases.mark_failed_case",
    "cases.reconcile_case",
    "cases.manage_orphans",
    "resources.view_remote_state",
    "resources.trust_host_key",
    "resources.enable_gpugroup",
    "resources.release_gpugroup",
    "resources.sync_gpugroups",
]
VIEW_PERMISSIONS = [
    "cases.view_case",
    "cases.view_all_cases",
    "cases.view_caseevent",
    "resources.view_hpchost",
    "resources.view_gpugroup",
]


@pytest.fixture(autouse=True)
def _static(plain_static):
    """Every page here renders without collectstatic."""


@pytest.fixture
def viewer(client):
    """Staff who may look at everything but hold no action permission."""
    client.force_login(user_with("viewer", VIEW_PERMISSIONS))
    return client


@pytest.fixture
def operator(client):
    user = user_with("operator", VIEW_PERMISSIONS + OPERATOR_PERMISSIONS)
    client.force_login(user)
    client.user = user
    return client


def changelist():
    return reverse("admin:cases_case_changelist")


def act(client, action: str, *cases: Case, confirm: bool = True, **extra):
    data = {"action": action, "_selected_action": [c.pk for c in cases], **extra}
    if confirm:
        data["confirmed"] = "yes"
    return client.post(changelist(), data, follow=True)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def custom_urls(host: HpcHost, case: Case) -> list[str]:
    return [
        reverse("admin:cases_case_reconcile"),
        reverse("admin:cases_case_log", args=[case.pk]),
        reverse("console:remote_state", args=[host.pk]),
        reverse("console:orphan", args=[host.pk, 1, "kill"]),
        reverse("console:orphan", args=[host.pk, 1, "adopt"]),
        reverse("admin:resources_hpchost_trust", args=[host.pk]),
    ]


# -- who may do what ------------------------------------------------------------------------


def test_anonymous_users_are_sent_to_the_login_page(client):
    host, case = make_host(), make_case()
    for url in [changelist(), reverse("admin:cases_case_change", args=[case.pk]), *custom_urls(host, case)]:
        for response in (client.get(url), client.post(url)):
            assert response.status_code == 302, url
            assert response["Location"].startswith(reverse("admin:login")), url


def test_staff_without_action_permissions_sees_no_actions_and_is_refused(viewer):
    host, case = make_host(), make_case(S.FAILED)
    page = viewer.get(changelist())
    assert page.status_code == 200
    html = page.content.decode()
    assert not any(action in html for action in ACTIONS)
    assert "Reconcile now" not in html
    case_page = viewer.get(reverse("admin:cases_case_change", args=[case.pk])).content.decode()
    assert "Retry" not in case_page and "Fetch the log tail" not in case_page
    assert "Remote state of" not in case_page
    for url in custom_urls(host, case):
        assert viewer.get(url).status_code == 403, url
        assert viewer.post(url).status_code == 403, url
    assert act(viewer, "retry_cases", case).status_code == 200
    assert Case.objects.get().status == S.FAILED and CaseEvent.objects.count() == 0
    make_group(host)
    hosts = viewer.get(reverse("admin:resources_hpchost_changelist")).content.decode()
    groups = viewer.get(reverse("admin:resources_gpugroup_changelist")).content.decode()
    assert "check_health" not in hosts and "sync_gpu_groups" not in hosts
    assert not any(a in groups for a in ("enable_groups", "disable_groups", "release_groups", "sync_hosts"))


def test_each_action_needs_its_own_permission(client):
    case = make_case(S.FAILED)
    client.force_login(user_with("retrier", [*VIEW_PERMISSIONS, "cases.retry_case"]))
    choices = [value for value, _ in client.get(changelist()).context["action_form"].fields["action"].choices]
    assert choices == ["", "retry_cases", "recheck_cases"]  # re-checking a folder is a retry too
    act(client, "cancel_cases", case)
    assert Case.objects.get().status == S.FAILED
    act(client, "retry_cases", case)
    assert Case.objects.get().status == S.SUBMITTED


def test_statuses_are_not_editable(operator):
    case = make_case(S.FAILED)
    url = reverse("admin:cases_case_change", args=[case.pk])
    page = operator.get(url)
    assert b'name="status"' not in page.content and b"_save" not in page.content
    assert operator.post(url, {"status": S.COMPLETED}).status_code == 403
    assert Case.objects.get().status == S.FAILED


# -- actions on cases -----------------------------------------------------------------------


def test_actions_that_do_not_apply_change_nothing(operator):
    done = make_case(S.COMPLETED)
    for action in ACTIONS:
        response = act(operator, action, done)
        assert any("does not apply to a completed case" in m for m in messages_of(response)), action
    done.refresh_from_db()
    assert done.status == S.COMPLETED and CaseEvent.objects.count() == 0


def test_retry_puts_a_failed_case_back_and_names_the_user(operator):
    case = make_case(S.FAILED, last_error="boom", attempts=3)
    response = act(operator, "retry_cases", case, confirm=False)
    assert messages_of(response) == [f"{case.name}: back to submitted"]
    case.refresh_from_db()
    assert (case.status, case.last_error, case.attempts) == (S.SUBMITTED, "", 3)
    event = case.events.get()
    assert (event.actor, event.user, event.from_status, event.to_status) == (
        "operator",
        operator.user,
        S.FAILED,
        S.SUBMITTED,
    )


def test_cancel_asks_first_then_cancels_a_waiting_case(operator):
    case = make_case(S.SUBMITTED)
    page = act(operator, "cancel_cases", case, confirm=False)
    assert page.templates[0].name == "admin/mqic/confirm_action.html"
    assert Case.objects.get().status == S.SUBMITTED
    act(operator, "cancel_cases", case)
    case.refresh_from_db()
    assert case.status == S.CANCELLED and case.events.get().actor == "operator"


def test_a_running_case_whose_task_id_is_unknown_is_not_cancelled(operator):
    case = make_case(S.RUNNING, gpu_group=make_group(), lease_generation=1)
    response = act(operator, "cancel_cases", case)
    assert any("pueue task id is unknown" in m for m in messages_of(response))
    assert Case.objects.get().status == S.RUNNING and CaseEvent.objects.count() == 0


def test_mark_failed_releases_the_gpu_group(operator):
    case = make_case(S.SUBMITTED)
    group = lock_free_group(case.pk, host=make_group().host)
    Case.objects.filter(pk=case.pk).update(
        status=S.SUBMITTING, gpu_group=group, lease_generation=group.lease_generation
    )
    next_url = reverse("admin:cases_case_change", args=[case.pk])
    response = act(operator, "mark_failed_cases", case, next=next_url)
    assert response.redirect_chain[-1][0] == next_url
    case.refresh_from_db()
    group.refresh_from_db()
    assert case.status == S.FAILED and "marked failed by operator" in case.last_error
    assert group.status == GpuGroup.Status.AVAILABLE and group.holder_id is None


def test_the_case_page_shows_the_timeline_and_only_the_buttons_that_apply(operator):
    case = make_case(S.FAILED, last_seen_task={"id": 7, "status": "done"})
    CaseEvent.objects.create(
        case=case, to_status=S.FAILED, reason="job failed with exit code 3", detail={"exit": 3}
    )
    html = operator.get(reverse("admin:cases_case_change", args=[case.pk])).content.decode()
    assert "job failed with exit code 3" in html and "&quot;exit&quot;: 3" in html
    assert 'value="Retry"' in html and 'value="Cancel…"' not in html and 'value="Mark failed…"' not in html


def test_reconcile_now_runs_the_pass_and_records_it(operator):
    finished = make_case(S.COMPLETED)
    group = make_group(make_host(enabled=False))  # a host the pass does not ask
    lock_free_group(finished.pk, host=group.host)
    assert operator.get(reverse("admin:cases_case_reconcile")).status_code == 200
    response = operator.post(reverse("admin:cases_case_reconcile"), follow=True)
    assert any(m.startswith("reconciled (by operator): ") for m in messages_of(response))
    assert GpuGroup.objects.get(pk=group.pk).status == GpuGroup.Status.AVAILABLE
    run = PassRun.objects.get(kind="reconcile")
    assert run.outcome == PassRun.Outcome.OK and run.actor == "operator"


def test_gpu_groups_are_disabled_and_enabled_only_when_free(operator):
    free, held = make_group(), make_group()
    lock_free_group(make_case().pk, host=held.host)
    url = reverse("admin:resources_gpugroup_changelist")
    response = operator.post(
        url, {"action": "disable_groups", "_selected_action": [free.pk, held.pk]}, follow=True
    )
    assert messages_of(response) == [
        f"GPU group {free.name} disabled",
        f"GPU group {held.name} is assigned: disabled does not apply",
    ]
    operator.post(url, {"action": "enable_groups", "_selected_action": [free.pk]})
    assert dict(GpuGroup.objects.values_list("name", "status")) == {free.name: "available", held.name: "assigned"}


def test_the_overview_tells_a_running_cluster_from_a_stopped_one():
    from django_q.models import Schedule

    from console.selectors import cluster_health

    schedule = Schedule.objects.create(func="cases.tasks.monitor", schedule_type=Schedule.MINUTES, minutes=1)
    Schedule.objects.filter(pk=schedule.pk).update(next_run=timezone.now() + timedelta(seconds=30))
    assert cluster_health().alive
    Schedule.objects.filter(pk=schedule.pk).update(next_run=timezone.now() - timedelta(minutes=10))
    health = cluster_health()
    assert not health.alive and "no cluster has run the schedules since" in health.detail


# -- the list at scale ----------------------------------------------------------------------


def test_the_case_list_costs_the_same_queries_for_20_or_200_cases(operator):
    hosts = [make_host() for _ in range(2)]
    groups = [make_group(host) for host in hosts for _ in range(2)]

    def make(n):
        Case.objects.bulk_create(
            Case(
                name=f"bulk{i}",
                source_path=f"/bulk/{i}",
                status=S.COMPLETED,
                label=f"lbl{i}",
                gpu_group=groups[i % 4],
                pueue_task_id=i,
            )
            for i in range(Case.objects.count(), n)
        )

    counts = []
    for n in (20, 200):
        make(n)
        operator.get(changelist())
        with CaptureQueriesContext(connection) as queries:
            page = operator.get(changelist() + "?status__exact=completed")
        assert page.context["cl"].result_count == n
        counts.append(len(queries))
    assert counts[0] == counts[1] <= 12, counts


def test_search_finds_name_label_and_task_id_and_filters_narrow(operator):
    group, other = make_group(), make_group()
    make_case(S.RUNNING, name="alpha", label="mqic_case_x_1", gpu_group=group, pueue_task_id=41)
    make_case(S.FAILED, name="beta", label="mqic_case_x_2", gpu_group=other)
    stuck = make_case(
        S.SUBMITTING, name="gamma", gpu_group=group, lease_expires_at=timezone.now() - timedelta(minutes=1)
    )

    def found(query):
        return {c.name for c in operator.get(changelist() + query).context["cl"].result_list}

    assert found("?q=alph") == {"alpha"}
    assert found("?q=x_2") == {"beta"}
    assert found("?q=41") == {"alpha"}
    assert found("?q=no+such") == set()
    assert found("?status__exact=failed") == {"beta"}
    assert found(f"?gpu_group__host__id__exact={group.host_id}") == {"alpha", "gamma"}
    assert found(f"?gpu_group__id__exact={other.pk}") == {"beta"}
    assert found("?lease=expired") == {stuck.name}


def test_the_index_shows_the_overview(operator):
    make_case(S.FAILED)
    stuck = make_case(S.SUBMITTING, lease_expires_at=timezone.now() - timedelta(minutes=5))
    make_group(make_host())
    Case.objects.filter(pk=stuck.pk).update(gpu_group=lock_free_group(stuck.pk))
    now = timezone.now()
    PassRun.objects.create(
        kind="monitor",
        actor="monitor",
        started_at=now,
        finished_at=now,
        outcome="ok",
        summary="completed 4, failed 0",
    )
    html = operator.get(reverse("admin:index")).content.decode()
    assert "1 case stuck past its lease" in html
    assert "completed 4, failed 0" in html
    assert "not running" in html and "no schedules set up" in html
    assert reverse("admin:django_q_schedule_changelist") in html
    assert "1 busy, 0 free" in html


# -- against the real sshd and sandbox pueue -------------------------------------------------


@pytest.fixture
def running(hpc, sandbox, mqic_dirs):
    """A case running ``sleep 30`` in the sandbox, submitted the way the pipeline does it."""
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "sim", "echo started; sleep 30\n")
    intake.scan()
    submission.submit_pass()
    case = Case.objects.select_related("gpu_group").get(name="sim")
    assert case.status == S.RUNNING
    return case


def task_of(sandbox, task_id: int) -> dict:
    return sandbox.status()["tasks"][str(task_id)]


def test_cancel_kills_the_running_task_by_id_and_releases_the_gpu(operator, running, sandbox):
    response = act(operator, "cancel_cases", running)
    assert messages_of(response) == [f"sim cancelled; pueue tasks [{running.pueue_task_id}] on sshd stopped"]
    running.refresh_from_db()
    assert running.status == S.CANCELLED
    assert GpuGroup.objects.get(pk=running.gpu_group_id).status == GpuGroup.Status.AVAILABLE
    assert task_of(sandbox, running.pueue_task_id)["status"]["Done"]["result"] == "Killed"
    assert [e.actor for e in running.events.order_by("pk")][-2:] == ["operator", "operator"]


def test_cancel_of_a_submission_releases_the_gpu_and_finds_no_task(operator, hpc, mqic_dirs):
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "early")
    intake.scan()
    case = submission.claim(Case.objects.get().pk)
    response = act(operator, "cancel_cases", case)
    assert messages_of(response) == [
        "early cancelled; no live task of it on sshd; a task its submission adds later shows as an orphan on sshd"
    ]
    case.refresh_from_db()
    assert case.status == S.CANCELLED and case.lease_expires_at is None
    assert GpuGroup.objects.filter(status=GpuGroup.Status.ASSIGNED).count() == 0


def test_a_kill_that_cannot_be_done_is_recorded_and_said(operator, running, sandbox):
    sandbox.stop()
    response = act(operator, "cancel_cases", running)
    assert any("sim cancelled, but cancel: could not kill the task on sshd" in m for m in messages_of(response))
    running.refresh_from_db()
    assert running.status == S.CANCELLED
    assert "could not kill" in running.events.last().reason


def test_the_log_tail_is_fetched_on_demand(operator, running):
    page = operator.get(reverse("admin:cases_case_log", args=[running.pk]))
    assert page.context["tail"].error == ""
    assert "started" in page.context["tail"].text


def test_release_is_refused_while_a_task_runs_in_the_group(operator, running, sandbox):
    group = running.gpu_group
    data = {"action": "release_groups", "_selected_action": [group.pk], "confirmed": "yes"}
    url = reverse("admin:resources_gpugroup_changelist")
    response = operator.post(url, data, follow=True)
    assert any("still holds live tasks" in m for m in messages_of(response))
    assert GpuGroup.objects.get(pk=group.pk).status == GpuGroup.Status.ASSIGNED
    sandbox.cli("kill", str(running.pueue_task_id))
    response = operator.post(url, data, follow=True)
    assert any("released" in m for m in messages_of(response))
    assert GpuGroup.objects.get(pk=group.pk).status == GpuGroup.Status.AVAILABLE


def test_sync_creates_missing_groups_disabled_and_the_health_check_reads_the_version(operator, hpc, sandbox):
    sandbox.cli("group", "add", "gpu_c")
    url = reverse("admin:resources_hpchost_changelist")
    operator.post(url, {"action": "sync_gpu_groups", "_selected_action": [hpc.pk]})
    assert GpuGroup.objects.get(pueue_group="gpu_c").status == GpuGroup.Status.DISABLED
    assert GpuGroup.objects.get(pueue_group="default").status == GpuGroup.Status.DISABLED
    operator.post(url, {"action": "check_health", "_selected_action": [hpc.pk]})
    hpc.refresh_from_db()
    assert hpc.pueue_version == "4.0.4" and hpc.last_contact_at is not None
    hosts = operator.get(url).content.decode()
    assert "4.0.4" in hosts and f"{hpc.last_contact_at:%Y-%m-%d %H:%M:%S}" in hosts
    groups = operator.get(reverse("admin:resources_gpugroup_changelist")).content.decode()
    assert "gpu_c" in groups and "disabled" in groups


def test_a_new_host_key_is_trusted_and_a_changed_one_blocked_loudly(operator, hpc, sshd, tmp_path):
    HpcHost.objects.update(known_hosts_path="")  # no file: the key is kept on the row
    url = reverse("admin:resources_hpchost_trust", args=[hpc.pk])
    check = operator.get(url).context["check"]
    assert check.state == "new"
    operator.post(url, {"fingerprint": check.offered.fingerprint})
    assert HpcHost.objects.get().host_key == sshd.host_key
    assert "now trusting" in LogEntry.objects.get().get_change_message()  # in "Recent actions" too

    HpcHost.objects.update(host_key=generate_key(tmp_path / "old"))
    page = operator.get(url)
    assert page.context["check"].state == "mismatch" and b"HOST KEY MISMATCH" in page.content
    response = operator.post(url, {"fingerprint": check.offered.fingerprint}, follow=True)
    assert any("HOST KEY MISMATCH" in m for m in messages_of(response))
    assert HpcHost.objects.get().host_key != sshd.host_key
    operator.post(url, {"fingerprint": check.offered.fingerprint, "replace": "replace"})
    assert HpcHost.objects.get().host_key == sshd.host_key


def test_an_orphan_is_listed_and_killed_by_id(operator, hpc, sandbox):
    label = f"{label_prefix()}999"
    task_id = int(sandbox.cli("add", "-p", "-l", label, "-g", "gpu_b", "--", "sleep 30").stdout.split()[-1])
    page = operator.get(reverse("console:remote_state", args=[hpc.pk]))
    rows = {row.task.id: row for row in page.context["state"].tasks}
    assert rows[task_id].role == "orphan"
    kill = reverse("console:orphan", args=[hpc.pk, task_id, "kill"])
    response = operator.post(kill, {"created_at": "2000-01-01T00:00:00+00:00"}, follow=True)
    assert any("no longer the orphan shown" in m for m in messages_of(response))
    assert "Done" not in task_of(sandbox, task_id)["status"]
    operator.post(kill, {"created_at": rows[task_id].task.created_at.isoformat()})
    assert task_of(sandbox, task_id)["status"]["Done"]["result"] == "Killed"


def test_an_orphan_of_a_cancelled_case_is_adopted(operator, running, sandbox):
    Case.objects.filter(pk=running.pk).update(status=S.CANCELLED)
    GpuGroup.objects.filter(pk=running.gpu_group_id).update(status="available", holder_id=None)
    page = operator.get(reverse("console:remote_state", args=[running.gpu_group.host_id]))
    row = next(r for r in page.context["state"].tasks if r.task.id == running.pueue_task_id)
    assert row.role == "orphan" and row.case_name == "sim"
    adopt = reverse("console:orphan", args=[running.gpu_group.host_id, row.task.id, "adopt"])
    operator.post(adopt, {"created_at": row.task.created_at.isoformat()})
    running.refresh_from_db()
    assert running.status == S.RUNNING and running.pueue_task_id == row.task.id
    group = GpuGroup.objects.get(pk=running.gpu_group_id)
    assert (group.holder_id, group.lease_generation) == (running.pk, running.lease_generation)
    assert [e.to_status for e in running.events.filter(actor="operator")] == [S.SUBMITTED, S.SUBMITTING, S.RUNNING]


def test_a_cancelled_case_says_who_cancelled_it_and_why(admin_client, plain_static):
    from tests.factories import make_case

    case = make_case(S.SUBMITTED, name="wrong-input")
    data = {"action": "cancel_cases", "_selected_action": [case.pk], "confirmed": "yes"}
    data["why"] = "wrong input file,\nresubmitted as v2"
    admin_client.post(reverse("admin:cases_case_changelist"), data)
    case.refresh_from_db()
    assert case.status == S.CANCELLED
    assert case.last_error == "cancelled by admin: wrong input file, resubmitted as v2"
    assert case.events.last().reason == case.last_error
    page = admin_client.get(reverse("admin:cases_case_change", args=[case.pk])).content.decode()
    assert "resubmitted as v2" in page
