"""Every migration, applied forward from the state before it, to a database holding rows of every
model of MQIC's apps as that state knows them (django-test-migrations' ``migrator``): nothing is
lost, and the migrations that change data do what they say. An upgrade runs exactly these steps
on an installation's database (``docs/upgrading.md``)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import models
from django.db.migrations.loader import MigrationLoader
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)
APPS = ("resources", "cases", "console")
ORDER = ["HpcHost", "GpuGroup", "HostSlot", "Case", "CaseEvent", "Attempt", "GpuUsage", "PassRun", "Notification"]
"""Models in the order their rows can be made (what a row points at comes first)."""
_n = itertools.count(1)


def every_migration() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(app, migration, the state before it: its dependencies within MQIC's apps), in order."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    found = []
    for key in loader.graph.leaf_nodes():
        if key[0] not in APPS:
            continue
        for app, name in loader.graph.forwards_plan(key):
            if app in APPS and (app, name) not in [(a, n) for a, n, _ in found]:
                before = [dep for dep in loader.graph.node_map[(app, name)].parents]
                found.append((app, name, sorted(d.key for d in before if d.key[0] in APPS)))
    return found


def value_for(field: models.Field, made: dict):
    """A plausible value for a required field, as an installation's rows hold them."""
    if isinstance(field, models.ForeignKey):
        return made.get(field.related_model._meta.model_name)
    if field.choices:
        return field.choices[0][0]
    if isinstance(field, models.BooleanField):
        return False
    if isinstance(field, models.IntegerField | models.PositiveIntegerField | models.PositiveSmallIntegerField):
        return next(_n) % 1000 + 1
    if isinstance(field, models.DateTimeField):
        return timezone.now()
    if isinstance(field, models.DateField):
        return timezone.now().date()
    if isinstance(field, models.JSONField):
        return {"seen": "before the migration"}
    if isinstance(field, models.CharField | models.TextField | models.SlugField):
        text = f"v{next(_n)}"
        if "dir" in field.name or "path" in field.name:
            text = f"/data/mqic/{text}"
        return text[: field.max_length] if field.max_length else text
    return None


def fill(state) -> dict[str, int]:
    """One row of every model of MQIC's apps that ``state`` has; returns the row counts."""
    made: dict = {}
    for model_name in ORDER:
        model = next(
            (state.apps.get_model(app, model_name) for app in APPS if _has(state, app, model_name)),
            None,
        )
        if model is None:
            continue
        values = {}
        for field in model._meta.concrete_fields:
            if field.primary_key or field.has_default() or getattr(field, "auto_now_add", False):
                continue
            if field.null and not isinstance(field, models.ForeignKey):
                continue
            value = value_for(field, made)
            if value is not None or not field.null:
                values[field.name] = value
        made[model._meta.model_name] = model.objects.create(**values)
    return {name: type(row).objects.count() for name, row in made.items()}


def _has(state, app: str, model_name: str) -> bool:
    try:
        state.apps.get_model(app, model_name)
    except LookupError:
        return False
    return True


MIGRATIONS = [m for m in every_migration() if m[2]]
"""The first migration of an app creates its tables: no state before it holds rows of it."""


@pytest.mark.parametrize(("app", "name", "before"), MIGRATIONS, ids=[f"{a}.{n}" for a, n, _ in MIGRATIONS])
def test_each_migration_keeps_every_row(migrator, app, name, before):
    old = migrator.apply_initial_migration(before)
    counts = fill(old)
    new = migrator.apply_tested_migration((app, name))
    for model_name, count in counts.items():
        model = next(new.apps.get_model(a, model_name) for a in APPS if _has(new, a, model_name))
        assert model.objects.count() == count, f"{model_name} rows after {app}.{name}"


def test_a_host_named_local_becomes_a_local_transport(migrator):
    old = migrator.apply_initial_migration(("resources", "0002_operator_permissions"))
    host = old.apps.get_model("resources", "HpcHost")
    host.objects.create(name="demo", hostname="local", base_dir="/data/x")
    host.objects.create(name="real", hostname="login.example.org", base_dir="/data/y")
    new = migrator.apply_tested_migration(("resources", "0003_transport_and_health"))
    transports = dict(new.apps.get_model("resources", "HpcHost").objects.values_list("name", "transport"))
    assert transports == {"demo": "local", "real": "ssh"}


def test_notifications_sent_before_the_outbox_are_not_sent_again(migrator):
    old = migrator.apply_initial_migration(("console", "0001_notifications_and_results"))
    sent = timezone.now()
    old.apps.get_model("console", "Notification").objects.create(
        key="case_failed:1:2", event="case_failed", subject="case x failed", reason="r", url="u", mailed_at=sent
    )
    new = migrator.apply_tested_migration(("console", "0002_notification_outbox"))
    row = new.apps.get_model("console", "Notification").objects.get()
    assert (row.next_try_at, row.mail_state, row.webhook_state, row.mailed_at) == (None, "off", "off", sent)


def test_attempts_before_their_results_were_kept_read_as_unknown(migrator):
    old = migrator.apply_initial_migration(
        [("cases", "0007_attempt_kept"), ("resources", "0006_gpugroup_retired")]
    )
    case = old.apps.get_model("cases", "Case").objects.create(name="c", source_path="/in/c", status="completed")
    old.apps.get_model("cases", "Attempt").objects.create(
        case=case, token="t1", remote_dir="/data/c.t1", started_at=timezone.now()
    )
    new = migrator.apply_tested_migration(("cases", "0008_attempt_results"))
    attempt = new.apps.get_model("cases", "Attempt").objects.get()
    assert (attempt.exit_code, attempt.log_tail, attempt.result_path) == (None, "", "")


def test_attempts_ended_before_gpu_accounting_get_their_gpu_seconds_and_the_ledger_its_totals(migrator, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    old = migrator.apply_initial_migration(("cases", "0013_gpu_accounting"))
    user = old.apps.get_model("auth", "User").objects.create(username="alice")
    host = old.apps.get_model("resources", "HpcHost").objects.create(name="a", hostname="h", base_dir="/d")
    group = old.apps.get_model("resources", "GpuGroup")
    one = group.objects.create(host=host, name="one", pueue_group="one", devices="")
    two = group.objects.create(host=host, name="two", pueue_group="two", devices="0, 1")
    case = old.apps.get_model("cases", "Case")
    mine = case.objects.create(name="m", source_path="/in/m", status="completed", owner=user)
    ops = case.objects.create(name="o", source_path="/in/o", status="running")
    attempt = old.apps.get_model("cases", "Attempt")
    jan_end = datetime(2026, 1, 31, 23, 30, tzinfo=UTC)  # February in Berlin
    made = [
        (mine, two, jan_end - timedelta(hours=1), jan_end),
        (mine, one, jan_end - timedelta(days=20), jan_end - timedelta(days=19, seconds=0.4)),
        (ops, one, jan_end - timedelta(hours=3), jan_end - timedelta(hours=2)),
        (ops, None, jan_end - timedelta(hours=3), jan_end),  # held no GPU group
        (ops, two, timezone.now(), None),  # still running: recorded when it ends
    ]
    for n, (of, on, started_at, ended_at) in enumerate(made):
        attempt.objects.create(
            case=of, token=f"t{n}", remote_dir=f"/d/t{n}", gpu_group=on, started_at=started_at, ended_at=ended_at
        )

    new = migrator.apply_tested_migration(("cases", "0014_gpu_seconds_of_ended_attempts"))
    seconds = dict(new.apps.get_model("cases", "Attempt").objects.values_list("token", "gpu_seconds"))
    assert seconds == {"t0": 2 * 3600, "t1": 24 * 3600, "t2": 3600, "t3": 0, "t4": None}
    ledger = new.apps.get_model("cases", "GpuUsage").objects
    usage = ledger.values_list("owner_id", "host_id", "month", "gpu_seconds")
    assert sorted(usage, key=str) == sorted(
        [
            (user.pk, host.pk, date(2026, 2, 1), 2 * 3600),
            (user.pk, host.pk, date(2026, 1, 1), 24 * 3600),
            (None, host.pk, date(2026, 1, 1), 3600),  # 22:30 in Berlin
        ],
        key=str,
    )


def permission(state, app_label: str, model: str, codename: str):
    """The permission as ``migrate`` would have made it by then (data migrations hand them out)."""
    kind, _ = state.apps.get_model("contenttypes", "ContentType").objects.get_or_create(
        app_label=app_label, model=model
    )
    found, _ = state.apps.get_model("auth", "Permission").objects.get_or_create(
        content_type=kind, codename=codename, defaults={"name": codename}
    )
    return found


def codenames(holder) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in holder.permissions.all()}


def test_whoever_saw_cases_keeps_seeing_every_case_and_scientists_get_exactly_an_owners_permissions(
    migrator,
):
    old = migrator.apply_initial_migration(("cases", "0009_case_owner"))
    view = permission(old, "cases", "case", "view_case")
    groups, users = old.apps.get_model("auth", "Group").objects, old.apps.get_model("auth", "User").objects
    groups.create(name="operators").permissions.add(view)
    groups.create(name="hosts only")
    users.create(username="eve").user_permissions.add(view)
    users.create(username="nobody")

    new = migrator.apply_tested_migration(
        [
            ("cases", "0010_operators_keep_seeing_every_case"),
            ("console", "0005_scientists_choose_their_notifications"),
        ]
    )
    Group, User = new.apps.get_model("auth", "Group"), new.apps.get_model("auth", "User")
    assert "cases.view_all_cases" in codenames(Group.objects.get(name="operators"))
    assert codenames(Group.objects.get(name="hosts only")) == set()
    seeing_all = User.objects.filter(user_permissions__codename="view_all_cases")
    assert list(seeing_all.values_list("username", flat=True)) == ["eve"]
    assert codenames(Group.objects.get(name="scientists")) == {
        "cases.view_case",
        "cases.retry_case",
        "cases.cancel_case",
        "console.view_results",
        "console.view_notificationpreference",
        "console.add_notificationpreference",
        "console.change_notificationpreference",
    }, "what a case owner needs, and no operator permission"


def test_notifications_pending_before_the_recipients_were_kept_go_to_the_operators(migrator, settings):
    old = migrator.apply_initial_migration(("console", "0003_scientists_group"))
    rows = old.apps.get_model("console", "Notification").objects
    for key, state in (("pending", "pending"), ("sent", "sent"), ("off", "off")):
        rows.create(key=key, event="case_failed", subject="s", reason="r", url="u", mail_state=state)
    settings.MQIC_NOTIFY_EMAILS = ["ops@example.org"]
    new = migrator.apply_tested_migration(("console", "0004_notification_recipients_and_choices"))
    mail_to = dict(new.apps.get_model("console", "Notification").objects.values_list("key", "mail_to"))
    assert mail_to == {"pending": ["ops@example.org"], "sent": [], "off": []}
