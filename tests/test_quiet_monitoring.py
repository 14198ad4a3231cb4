"""A monitor pass over running cases whose tasks did not change: it reads what it must, writes
nothing, and still notices every change. The pass remembers, from one pass to the next, what it
read of each case's row and the task found equal to its stored snapshot (``monitoring.LastRead``):
these tests make sure that what it remembers never hides a change, of the task or of the row.

No SSH here: the host's ``pueue status`` is a state given by the test.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cases.models import Case, CaseStatus
from cases.services import monitoring
from resources import contact
from resources.remote.pueue import PueueClient
from resources.remote.pueue_state import GroupStatus, PueueGroup, PueueState, PueueTask, TaskStatus
from tests.factories import make_case, make_group

pytestmark = pytest.mark.django_db
PLUS2 = timezone(timedelta(hours=2))
CREATED = datetime(2025, 6, 1, 10, 0, 0, 123456, tzinfo=PLUS2)


def task(**changes) -> PueueTask:
    fields = {
        "id": 0,
        "label": "mqic_case_test_1",
        "group": "gpu1",
        "command": "./run.sh",
        "original_command": "./run.sh",
        "path": "/remote/cases/mqic_case_test_1.abc",
        "created_at": CREATED,
        "status": TaskStatus.QUEUED,
        "enqueued_at": CREATED,
    }
    return PueueTask(**(fields | changes))


class Remote:
    """The host's pueue: ``status()`` answers with ``self.state``."""

    def __init__(self):
        self.state = None

    def show(self, *tasks: PueueTask) -> None:
        self.state = PueueState(
            tasks=MappingProxyType({t.id: t for t in tasks}),
            groups=MappingProxyType({"gpu1": PueueGroup("gpu1", GroupStatus.RUNNING, 1)}),
            schema="4",
        )


@pytest.fixture
def remote():
    remote = Remote()

    class Replay(PueueClient):
        def status(self, group=None):
            return remote.state

    class NoConnection:
        def close(self):
            """Nothing to close."""

    with mock.patch.object(contact, "pueue_for", lambda host: Replay(transport=NoConnection(), command="pueue")):
        yield remote


@pytest.fixture
def running():
    first = task()
    return make_case(
        CaseStatus.RUNNING,
        label=first.label,
        gpu_group=make_group(name="gpu1", pueue_group="gpu1"),
        remote_dir=first.path,
        pueue_task_id=first.id,
        pueue_task_created_at=first.created_at,
        last_seen_task=first.snapshot(),
    )


def case_writes(pass_=monitoring.monitor_pass) -> int:
    with CaptureQueriesContext(connection) as queries:
        report = pass_()
    assert report.still_running == 1 and not report.host_errors, report
    return sum(q["sql"].startswith('UPDATE "cases_case"') for q in queries.captured_queries)


def stored(case: Case) -> dict:
    case.refresh_from_db()
    return case.last_seen_task


def test_watched_takes_the_pk_and_the_watched_fields_in_order():
    row = tuple(f"value {n}" for n in range(1 + len(monitoring.WATCHED_FIELDS)))

    watched = monitoring.Watched(row)

    assert [getattr(watched, name) for name in ("pk", *monitoring.WATCHED_FIELDS)] == list(row)


def watched_fields(case: monitoring.Watched) -> list:
    return [getattr(case, name) for name in ("pk", *monitoring.WATCHED_FIELDS)]


def test_running_cases_read_every_field_converted(running):
    expected = [running.pk, *(getattr(running, name) for name in monitoring.WATCHED_FIELDS)]
    assert expected[5:] == [CREATED, task().snapshot(), None]

    (first,) = monitoring.running_cases()  # read twice: new to the pass, then as read before
    (again,) = monitoring.running_cases()

    assert watched_fields(first) == watched_fields(again) == expected
    assert again.last_read is first.last_read


@pytest.mark.parametrize("by_id", [True, False])
def test_running_cases_read_a_changed_row_again(running, monkeypatch, by_id):
    if not by_id:
        monkeypatch.setattr(monitoring, "FRESH_BY_ID", 0)
    other = make_case(CaseStatus.RUNNING, gpu_group=running.gpu_group, label="other", pueue_task_id=1)
    monitoring.running_cases()
    later, missing = CREATED + timedelta(microseconds=1), datetime(2025, 6, 2, tzinfo=UTC)
    Case.objects.filter(pk=running.pk).update(pueue_task_created_at=later, task_missing_since=missing)
    Case.objects.filter(pk=other.pk).update(last_seen_task={"id": 1})

    read = {case.pk: case for case in monitoring.running_cases()}

    assert (read[running.pk].pueue_task_created_at, read[running.pk].task_missing_since) == (later, missing)
    assert read[running.pk].last_seen_task == task().snapshot()
    assert read[other.pk].last_seen_task == {"id": 1} and read[other.pk].pueue_task_created_at is None
    Case.objects.filter(pk=other.pk).update(status=CaseStatus.COMPLETED)
    assert [case.pk for case in monitoring.running_cases()] == [running.pk]


def test_quiet_passes_write_nothing_and_every_change_is_written(remote, running):
    remote.show(task())
    assert case_writes() == 0
    assert case_writes() == 0  # now compared with the task the first pass found equal

    started = task(status=TaskStatus.RUNNING, start=CREATED + timedelta(seconds=5))
    remote.show(started)
    assert case_writes() == 1
    assert stored(running) == started.snapshot()
    assert case_writes() == 0

    in_utc = dataclasses.replace(started, start=started.start.astimezone(UTC))  # same instant, other offset
    remote.show(in_utc)
    assert case_writes() == 1
    assert stored(running)["start"] == in_utc.start.isoformat() != started.start.isoformat()
    assert case_writes() == 0

    for change in ({"command": "./run.sh --again"}, {"path": "/elsewhere"}, {"status": TaskStatus.PAUSED}):
        changed = dataclasses.replace(in_utc, **change)
        remote.show(changed)
        assert case_writes() == 1
        assert stored(running) == changed.snapshot()


def test_a_stored_snapshot_changed_by_someone_else_is_read_again(remote, running):
    remote.show(task())
    assert case_writes() == 0
    assert case_writes() == 0

    Case.objects.filter(pk=running.pk).update(last_seen_task={"written": "elsewhere"})
    assert case_writes() == 1
    assert stored(running) == task().snapshot()

    Case.objects.filter(pk=running.pk).update(task_missing_since=CREATED)
    assert case_writes() == 1
    running.refresh_from_db()
    assert running.task_missing_since is None
    assert case_writes() == 0
