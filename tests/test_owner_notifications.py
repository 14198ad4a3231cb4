"""A case's owner hears of their own case (a real SMTP server and HTTP receiver on 127.0.0.1): its
failure and stuck lease always, its completion when they chose it in their notification choices,
never another owner's case; the recipients are fixed on the outbox row, so a retry mails the same
people; a completion is the owner's alone. The choices are edited by each user, their own row only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from cases.models import Case, CaseStatus, PassRun
from cases.services.lifecycle import fail, move_and_release
from console.models import Notification, NotificationPreference
from resources.services import lock_free_group
from tests.factories import make_case, make_group
from tests.support.notify import delivered, free_port
from tests.support.users import scientist

S = CaseStatus
pytestmark = [pytest.mark.django_db(transaction=True)]
OPERATORS = ["ops@example.org", "oncall@example.org"]


def running_case(name: str, owner: User | None) -> Case:
    make_group()
    case = make_case(S.SUBMITTED, name=name, owner=owner, source_path=f"/inbox/x/{name}")
    locked = lock_free_group(case.pk)
    Case.objects.filter(pk=case.pk).update(status=S.RUNNING, gpu_group=locked, lease_generation=1)
    return Case.objects.get(pk=case.pk)


def complete(case: Case) -> None:
    assert move_and_release(case, S.RUNNING, S.COMPLETED, reason="job finished with exit code 0", exit_code=0)


def mailed(box) -> list[tuple[list[str], str]]:
    """(recipients, subject) of every message the SMTP server was given."""
    return [(sorted(recipients), mail["Subject"]) for recipients, mail in box.messages]


@pytest.fixture
def people():
    return scientist("alice", "alice@example.org"), scientist("bob", "bob@example.org")


def choose_completions(user: User) -> None:
    NotificationPreference.objects.create(user=user, mail_on_completion=True)


def test_the_owner_gets_their_cases_failure_beside_the_operators(notify, people):
    box, receiver = notify
    alice, bob = people
    choose_completions(bob)
    assert fail(running_case("alice-sim", alice), "job failed with exit code 3")
    delivered()
    assert mailed(box) == [(sorted([*OPERATORS, "alice@example.org"]), "[MQIC] case alice-sim failed")]
    assert Notification.objects.get().mail_to == [*OPERATORS, "alice@example.org"], "fixed on the row"
    assert [p["event"] for p in receiver.posts] == ["case_failed"]


def test_a_completion_is_mailed_to_its_owner_only_when_chosen_and_to_nobody_else(notify, people):
    box, receiver = notify
    alice, bob = people
    choose_completions(bob)  # bob wants his completions: never alice's
    complete(running_case("not-chosen", alice))
    delivered()
    assert mailed(box) == [] and not Notification.objects.exists(), "nobody is told of it: no row"

    choose_completions(alice)
    complete(running_case("chosen", alice))
    delivered()
    assert mailed(box) == [(["alice@example.org"], "[MQIC] case chosen completed")]
    row = Notification.objects.get()
    assert (row.event, row.mail_to, row.webhook_state) == ("case_completed", ["alice@example.org"], "off")
    assert receiver.posts == [], "the operators' webhook hears of failures, not of completions"
    assert "job finished with exit code 0" in box.messages[0][1].get_payload()

    complete(running_case("operators-case", None))
    delivered()
    assert len(box.messages) == 1, "a case nobody owns completes in silence, as before"


def test_another_owners_cases_never_mail_them(notify, people):
    box, _receiver = notify
    alice, bob = people
    choose_completions(alice)
    choose_completions(bob)
    assert fail(running_case("bob-failed", bob), "job failed with exit code 1")
    complete(running_case("bob-done", bob))
    assert fail(running_case("nobodys", None), "job failed with exit code 2")
    delivered()
    assert len(box.messages) == 3
    assert all("alice@example.org" not in recipients for recipients, _subject in mailed(box))
    assert ["bob@example.org"] in [recipients for recipients, _ in mailed(box)]


def test_a_retry_mails_the_people_the_row_was_written_for(notify, people, settings):
    box, _receiver = notify
    alice, _bob = people
    port = settings.EMAIL_PORT
    settings.EMAIL_PORT = free_port()  # the mail server is away
    assert fail(running_case("alice-sim", alice), "job failed with exit code 3")
    delivered()
    row = Notification.objects.get()
    assert row.mail_state == "pending" and box.messages == []

    User.objects.filter(pk=alice.pk).update(email="alice.new@example.org")
    settings.MQIC_NOTIFY_EMAILS = ["someone-else@example.org"]
    settings.EMAIL_PORT = port
    assert delivered(now=row.next_try_at) == 1
    assert mailed(box) == [(sorted([*OPERATORS, "alice@example.org"]), "[MQIC] case alice-sim failed")]


def test_an_owner_is_mailed_without_operators_addresses_and_never_at_a_bad_or_closed_address(
    notify, people, settings
):
    box, _receiver = notify
    alice, bob = people
    settings.MQIC_NOTIFY_EMAILS, settings.MQIC_NOTIFY_WEBHOOK = [], ""
    assert fail(running_case("alice-sim", alice), "job failed with exit code 3")
    User.objects.filter(pk=bob.pk).update(email="bob@example.org\nBcc: everyone@example.org")
    assert fail(running_case("bob-sim", User.objects.get(pk=bob.pk)), "job failed with exit code 1")
    carol = scientist("carol", "carol@example.org")
    User.objects.filter(pk=carol.pk).update(is_active=False)
    assert fail(running_case("carol-sim", User.objects.get(pk=carol.pk)), "job failed with exit code 4")
    delivered()
    assert mailed(box) == [(["alice@example.org"], "[MQIC] case alice-sim failed")]
    assert Notification.objects.count() == 1, "no row for what nobody may be told"


def test_the_owner_hears_that_their_case_is_stuck(notify, people):
    box, _receiver = notify
    alice, _bob = people
    case = running_case("alice-stuck", alice)
    now = timezone.now()
    Case.objects.filter(pk=case.pk).update(status=S.SUBMITTING, lease_expires_at=now - timedelta(minutes=2))
    PassRun.objects.create(kind="monitor", actor="monitor", started_at=now, finished_at=now, outcome="ok")
    delivered()
    assert mailed(box) == [(sorted([*OPERATORS, "alice@example.org"]), "[MQIC] case alice-stuck is stuck")]


def test_each_user_edits_their_own_notification_choices_only(client, people, plain_static):
    alice, bob = people
    theirs = NotificationPreference.objects.create(user=bob, mail_on_completion=True)
    client.force_login(alice)
    add = reverse("admin:console_notificationpreference_add")
    form = client.get(add)
    assert form.status_code == 200 and 'name="user"' not in form.content.decode()
    assert "the e-mail address of your user" in form.content.decode()
    client.post(add, {"mail_on_completion": "on", "user": bob.pk})
    mine = NotificationPreference.objects.get(user=alice)
    assert mine.mail_on_completion, "made for whoever adds it, whatever the form was given"
    assert client.get(add).status_code == 403, "one row each: she edits hers"

    listing = client.get(reverse("admin:console_notificationpreference_changelist"))
    assert [row.user for row in listing.context["cl"].result_list] == [alice]
    assert "alice@example.org" in listing.content.decode()
    change = reverse("admin:console_notificationpreference_change", args=[theirs.pk])
    assert client.get(change).status_code == 302, "not hers: the admin says it does not exist"
    client.post(change, {"mail_on_completion": ""})
    assert NotificationPreference.objects.get(pk=theirs.pk).mail_on_completion, "bob's row is untouched"
    client.post(reverse("admin:console_notificationpreference_change", args=[mine.pk]), {"mail_on_completion": ""})
    assert not NotificationPreference.objects.get(pk=mine.pk).mail_on_completion
