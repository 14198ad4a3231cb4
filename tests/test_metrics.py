"""``/metrics``: OpenMetrics read by prometheus_client's own parser, behind a bearer token or a
staff session; the numbers are those of the database."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from cases.models import Attempt, Case, CaseStatus, PassRun
from cases.services.accounting import end_attempts
from cases.services.retention import prune
from resources.models import GpuGroup
from resources.services import lock_free_group
from tests.factories import make_case, make_group, make_host
from tests.support.users import user_with

S = CaseStatus
TOKEN = "metrics-token-for-the-test-0123456789"
pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def token(settings):
    settings.MQIC_METRICS_TOKEN = TOKEN


PROMETHEUS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def scrape(client, **headers):
    """A scrape as Prometheus makes it (it asks for OpenMetrics)."""
    return client.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT, **headers})


def samples(response) -> dict[tuple, float]:
    """``{(name, (label, value), ...): value}`` of every sample, parsed as Prometheus would."""
    assert response["Content-Type"].startswith("application/openmetrics-text")
    found = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found[(sample.name, *sorted(sample.labels.items()))] = sample.value
    return found


def test_without_the_token_or_a_staff_session_nothing_is_shown(client):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = scrape(client, **headers)
        assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
        assert b"mqic_" not in response.content
    client.force_login(User.objects.create_user("someone", password="pw-someone"))  # not staff
    assert scrape(client).status_code == 401


def test_the_token_or_an_operators_session_reads_the_metrics(client):
    assert scrape(client, Authorization=f"Bearer {TOKEN}").status_code == 200
    client.force_login(user_with("staff", ["cases.view_case"]))
    assert scrape(client).status_code == 401, "a user who sees only their own cases never reads every count"
    client.force_login(user_with("operator", ["cases.view_all_cases"]))
    assert scrape(client).status_code == 200


def test_no_token_set_means_staff_sessions_only(client, settings):
    settings.MQIC_METRICS_TOKEN = ""
    assert scrape(client, Authorization="Bearer ").status_code == 401


@pytest.mark.engine  # date arithmetic and a correlated count, in SQL
def test_cases_groups_passes_and_hosts_are_counted(client):
    for status, n in ((S.SUBMITTED, 3), (S.COMPLETED, 2), (S.FAILED, 1)):
        for _ in range(n):
            make_case(status)
    up = make_host(name="up-host", last_contact_at=timezone.now() - timedelta(seconds=30))
    make_host(
        name="down-host",
        last_contact_at=timezone.now() - timedelta(minutes=10),
        consecutive_failures=4,
        last_error="refused",
        next_try_at=timezone.now() + timedelta(minutes=1),
    )
    held = make_case(S.RUNNING, lease_expires_at=timezone.now() - timedelta(minutes=1))
    make_group(up), make_group(up), make_group(up, status=GpuGroup.Status.DISABLED)
    assert lock_free_group(held.pk) is not None
    now = timezone.now()
    PassRun.objects.create(
        kind="monitor",
        actor="m",
        started_at=now - timedelta(seconds=2.5),
        finished_at=now,
        outcome="ok",
        summary="",
    )
    PassRun.objects.create(
        kind="submit", actor="s", started_at=now, finished_at=now, outcome="failed", summary="boom"
    )

    with CaptureQueriesContext(connection) as queries:
        found = samples(scrape(client, Authorization=f"Bearer {TOKEN}"))
    assert len(queries) <= 12  # a handful of aggregate queries, whatever the number of cases

    assert found[("mqic_cases", ("status", "submitted"))] == 3
    assert found[("mqic_cases", ("status", "running"))] == 1
    assert found[("mqic_cases", ("status", "cancelled"))] == 0
    assert found[("mqic_cases_stuck",)] == 1
    assert found[("mqic_gpu_groups", ("state", "busy"))] == 1
    assert found[("mqic_gpu_groups", ("state", "free"))] == 1
    assert found[("mqic_gpu_groups", ("state", "disabled"))] == 1
    assert found[("mqic_pass_last_duration_seconds", ("kind", "monitor"))] == pytest.approx(2.5)
    assert found[("mqic_pass_last_failed", ("kind", "submit"))] == 1
    assert found[("mqic_pass_last_failed", ("kind", "monitor"))] == 0
    assert found[("mqic_pass_runs_last_hour", ("kind", "submit"), ("outcome", "failed"))] == 1
    assert found[("mqic_host_up", ("host", "up-host"))] == 1
    assert found[("mqic_host_up", ("host", "down-host"))] == 0
    assert found[("mqic_host_consecutive_failures", ("host", "down-host"))] == 4
    assert 29 <= found[("mqic_host_last_contact_age_seconds", ("host", "up-host"))] < 600
    assert all(name.startswith("mqic_") for name, *_ in found)


def test_the_release_is_in_metrics_and_in_the_admin(admin_client, plain_static, settings):
    import tomllib

    from mqic_site.settings import BASE_DIR

    version = tomllib.loads((BASE_DIR / "pyproject.toml").read_text())["project"]["version"]
    assert version == settings.MQIC_VERSION
    text = admin_client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text").content.decode()
    assert f'mqic_build_info{{version="{version}"}} 1.0' in text
    assert f"MQIC {version} operations" in admin_client.get("/admin/").content.decode()


def test_a_browser_is_shown_the_metrics_as_text_not_a_download(admin_client):
    shown = admin_client.get("/metrics", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert shown["Content-Type"] == "text/plain; charset=utf-8" and b"mqic_cases" in shown.content


def ended_attempt(group, owner, hours: float) -> None:
    """An attempt of ``hours`` on ``group`` for a case of ``owner``, ended through the accounting service."""
    now = timezone.now()
    case = make_case(S.RUNNING, owner=owner, gpu_group=group)
    started_at = now - timedelta(hours=hours)
    Attempt.objects.create(case=case, token=f"t{case.pk}", remote_dir="/d", gpu_group=group, started_at=started_at)
    end_attempts(case.pk, now, outcome="completed")


def gpu_seconds(found: dict) -> dict[tuple[str, str], float]:
    return {
        (labels["owner"], labels["host"]): value
        for (name, *pairs), value in found.items()
        if name == "mqic_gpu_seconds_total" and (labels := dict(pairs))
    }


def test_gpu_seconds_are_a_counter_per_owner_and_host_with_names_escaped(client):
    alice = User.objects.create_user("alice")
    odd = User.objects.create_user('ev"il\\na\nme} x="1')  # staff type usernames: any text reaches the label
    one = make_group(make_host(name="cluster-a"), devices="0")
    two = make_group(make_host(name="cluster-b"), devices="0,1")
    ended_attempt(one, alice, 1)
    ended_attempt(one, alice, 2)
    ended_attempt(two, alice, 1)
    ended_attempt(two, odd, 0.5)
    ended_attempt(one, None, 1)

    response = scrape(client, Authorization=f"Bearer {TOKEN}")
    text = response.content.decode()
    assert "# TYPE mqic_gpu_seconds counter" in text and "# UNIT mqic_gpu_seconds seconds" in text
    assert r'owner="ev\"il\\na\nme} x=\"1"' in text, "quote, backslash and newline escaped"
    assert gpu_seconds(samples(response)) == {
        ("alice", "cluster-a"): 3 * 3600,
        ("alice", "cluster-b"): 2 * 3600,
        ('ev"il\\na\nme} x="1', "cluster-b"): 3600,
        ("(none)", "cluster-a"): 3600,
    }


def test_gpu_seconds_never_go_down_when_cases_are_deleted_or_pruned(client):
    group = make_group(devices="0,1")
    alice = User.objects.create_user("alice")
    ended_attempt(group, alice, 1)
    ended_attempt(group, None, 1)
    before = gpu_seconds(samples(scrape(client, Authorization=f"Bearer {TOKEN}")))
    assert before == {("alice", group.host.name): 2 * 3600, ("(none)", group.host.name): 2 * 3600}

    Case.objects.update(finished_at=timezone.now() - timedelta(days=1000))
    prune(now=timezone.now() + timedelta(days=1000))
    Case.objects.all().delete()  # an operator deletes old cases: their attempts go with them
    assert not Attempt.objects.exists()
    assert gpu_seconds(samples(scrape(client, Authorization=f"Bearer {TOKEN}"))) == before

    ended_attempt(group, alice, 1)
    after = gpu_seconds(samples(scrape(client, Authorization=f"Bearer {TOKEN}")))
    assert after == {("alice", group.host.name): 4 * 3600, ("(none)", group.host.name): 2 * 3600}
