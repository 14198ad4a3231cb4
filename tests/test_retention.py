"""``manage.py prune``: what may go after a while goes; a case's summary stays whole."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from cases.models import Attempt, CaseEvent, CaseStatus, PassRun
from cases.services.transitions import record_event
from console.models import Notification
from tests.factories import make_case

S = CaseStatus
pytestmark = pytest.mark.django_db


def test_prune_keeps_each_cases_summary_and_lets_old_records_go():
    now = timezone.now()
    long_ago = now - timedelta(days=200)
    old = make_case(S.COMPLETED, name="old", finished_at=long_ago)
    recent = make_case(S.COMPLETED, name="recent", finished_at=now - timedelta(days=3))
    running = make_case(S.RUNNING, name="still running")
    for case in (old, recent, running):
        record_event(case.pk, "results: 2 links were not created")  # a note
        record_event(case.pk, "job finished with exit code 0", old=S.RUNNING, new=S.COMPLETED)
    Attempt.objects.create(case=old, token="t-old", remote_dir="/d/old.t", started_at=long_ago, exit_code=0)
    CaseEvent.objects.update(created_at=long_ago)
    for started in (long_ago, now):
        PassRun.objects.create(kind="monitor", actor="x", started_at=started, finished_at=started, outcome="ok")
    for key, next_try in (("sent-old", None), ("pending-old", now)):
        Notification.objects.create(
            key=key, event="case_failed", subject="s", reason="r", url="u", next_try_at=next_try
        )
    Notification.objects.update(created_at=long_ago)
    Notification.objects.create(key="sent-new", event="case_failed", subject="s", reason="r", url="u")

    out = StringIO()
    call_command("prune", stdout=out)

    assert "1 pass records, 1 notes of ended cases, 1 delivered notifications" in out.getvalue()
    assert not CaseEvent.objects.filter(case=old, to_status="").exists(), "the old case's notes went"
    assert CaseEvent.objects.filter(case=old, to_status=S.COMPLETED).exists(), "its status changes stay"
    assert CaseEvent.objects.filter(case__in=[recent, running], to_status="").count() == 2
    assert Attempt.objects.filter(case=old).exists()
    assert PassRun.objects.count() == 1
    assert set(Notification.objects.values_list("key", flat=True)) == {"pending-old", "sent-new"}
