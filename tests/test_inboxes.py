"""Per-user inboxes (``MQIC_INBOX_PER_USER``): a case folder in ``<inbox>/<username>/`` is that
user's case; one under a name no active user has, or dropped by another account than the one that
owns the user folder, is rejected with the reason, in nobody's name, once; the watcher sees the user
folders; two users' cases of the same name keep their results apart. Off, nothing changes."""

import os
import threading

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cases.management.commands.bootstrap_demo import Command as Bootstrap
from cases.models import Case, CaseStatus
from cases.services import intake, operations, watcher
from cases.services.jobs import results_dir
from tests.support.cases import drop_case
from tests.support.system import wait_for
from tests.support.users import scientist
from tests.test_pipeline import run_until_quiet

S = CaseStatus
pytestmark = pytest.mark.django_db
OTHER_UID = 54321
"""An account that owns no user folder (the tests run as root, which may hand files to any uid)."""


@pytest.fixture
def inbox(mqic_dirs, settings):
    settings.MQIC_INBOX_PER_USER = True
    return mqic_dirs.MQIC_NEW_CASES_DIR


def test_a_case_folder_in_a_user_folder_is_that_users_case(inbox, mqic_dirs):
    alice, bob = scientist("alice"), scientist("bob")
    drop_case(inbox / "alice", "sim")
    drop_case(inbox / "bob", "sim")
    drop_case(inbox / "bob", "other")
    assert intake.scan(inbox).registered == ["sim", "other", "sim"]  # user folders by name, then their cases
    owned = {(c.owner.username, c.name): c for c in Case.objects.select_related("owner")}
    assert set(owned) == {("alice", "sim"), ("bob", "sim"), ("bob", "other")}
    assert {c.status for c in owned.values()} == {S.SUBMITTED}
    assert owned["alice", "sim"].source_path == str(inbox / "alice" / "sim")
    assert owned["alice", "sim"].owner == alice and owned["bob", "other"].owner == bob
    results = mqic_dirs.MQIC_RESULTS_DIR / ".users"
    assert results_dir(owned["alice", "sim"]) == results / "alice" / "sim"
    assert results_dir(owned["bob", "sim"]) == results / "bob" / "sim"
    assert intake.scan(inbox).registered == []


def test_a_folder_of_no_active_user_is_rejected_once_naming_the_user_until_the_user_exists(inbox):
    User.objects.create_user("dora", is_active=False)
    drop_case(inbox / "carol", "a")
    drop_case(inbox / "carol", "b")
    drop_case(inbox / "dora", "c")
    report = intake.scan(inbox)
    assert [name for name, _ in report.rejected] == ["a", "b", "c"]
    cases = {c.name: c for c in Case.objects.all()}
    assert {c.status for c in cases.values()} == {S.REJECTED}
    assert {c.owner_id for c in cases.values()} == {None}, "the operators' cases: nobody's name was shown"
    assert cases["a"].last_error.startswith("no active user is named 'carol'")
    assert cases["c"].last_error.startswith("no active user is named 'dora'")
    assert cases["a"].events.get().reason == cases["a"].last_error

    with CaptureQueriesContext(connection) as queries:
        again = intake.scan(inbox)
    assert (again.rejected, again.registered) == ([], [])
    assert len(queries) == 1, "a rescan reads the known folders, and looks up no user"
    assert Case.objects.count() == 3

    carol = scientist("carol")
    operator = User.objects.create_superuser("root", "", "pw")
    outcome = operations.recheck(cases["a"], operator)
    assert outcome.changed, outcome.message
    cases["a"].refresh_from_db()
    assert (cases["a"].status, cases["a"].owner) == (S.SUBMITTED, carol)
    assert cases["a"].events.last().actor == "root"


def test_a_case_folder_another_account_dropped_is_not_taken_in_the_users_name(inbox, settings):
    alice = scientist("alice")
    mine = drop_case(inbox / "alice", "mine")
    planted = drop_case(inbox / "alice", "planted")
    os.chown(planted, OTHER_UID, -1)
    report = intake.scan(inbox)
    assert report.registered == ["mine"]
    assert [name for name, _ in report.rejected] == ["planted"]
    case = Case.objects.get(name="planted")
    assert (case.status, case.owner_id) == (S.REJECTED, None)
    uid = os.lstat(inbox / "alice").st_uid
    assert case.last_error.startswith(f"the case folder belongs to uid {OTHER_UID}, but the user folder 'alice'")
    assert f"to uid {uid}" in case.last_error
    assert Case.objects.get(name="mine").owner == alice and mine.stat().st_uid == uid

    outcome = operations.recheck(case, User.objects.create_superuser("root", "", "pw"))
    assert not outcome.changed and "belongs to uid" in outcome.message, "the re-check applies the same rule"

    settings.MQIC_INBOX_CHECK_OWNER = False  # a single-account set-up
    os.chown(drop_case(inbox / "alice", "copied-by-a-service"), OTHER_UID, -1)
    assert intake.scan(inbox).registered == ["copied-by-a-service"]
    assert Case.objects.get(name="copied-by-a-service").owner == alice


def test_what_lies_directly_in_a_per_user_inbox_and_is_no_folder_is_rejected_once(inbox, tmp_path):
    scientist("alice")
    (inbox / "notes.txt").write_text("a file is no user folder")
    elsewhere = tmp_path / "elsewhere"
    drop_case(elsewhere / "alice-cases", "sim")
    (inbox / "linked").symlink_to(elsewhere / "alice-cases")
    drop_case(inbox / ".hidden", "sim")  # a user folder being set up: ignored, as hidden case folders
    drop_case(inbox / "alice", ".copying")
    (inbox / "alice" / "link").symlink_to(elsewhere / "alice-cases" / "sim")

    report = intake.scan(inbox)
    rejected = dict(report.rejected)
    assert set(rejected) == {"notes.txt", "linked", "link"} and report.registered == []
    assert rejected["notes.txt"].startswith("a per-user inbox holds one folder per user and nothing else")
    assert "symbolic link, which is never followed" in rejected["linked"]
    assert "symbolic link" in rejected["link"]
    owners = dict(Case.objects.values_list("name", "owner__username"))
    assert owners == {"notes.txt": None, "linked": None, "link": "alice"}, "a bad case folder of alice is hers"
    assert intake.scan(inbox).rejected == []


def test_without_per_user_inboxes_a_folder_named_like_a_user_is_just_a_case(mqic_dirs):
    scientist("alice")
    inbox = mqic_dirs.MQIC_NEW_CASES_DIR
    drop_case(inbox, "alice")
    assert intake.scan(inbox).registered == ["alice"]
    case = Case.objects.get()
    assert case.owner_id is None and results_dir(case) == mqic_dirs.MQIC_RESULTS_DIR / "alice"


@pytest.mark.django_db(transaction=True)  # the watcher's thread writes through its own connection
@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
def test_the_watcher_sees_a_case_dropped_into_a_user_folder_made_after_it_started(inbox, settings, polling):
    """Only a change wakes the watcher here (no quiet period ends): the marker written two folders
    down, in folders that did not exist when it started, must be seen."""
    settings.MQIC_QUIET_SECONDS = 3600
    alice = scientist("alice")
    stop = threading.Event()
    thread = threading.Thread(target=watcher.watch, args=(inbox,), kwargs={"polling": polling, "stop": stop})
    thread.start()
    try:
        drop_case(inbox / "alice", "sim")
        wait_for(lambda: Case.objects.filter(name="sim").exists(), 30, "the watcher to register alice's case")
    finally:
        stop.set()
        (inbox / ".wake-up").touch()  # a change, so that the watcher sees it is told to stop
        thread.join(30)
    assert not thread.is_alive()
    assert Case.objects.get(name="sim").owner == alice


def test_two_users_cases_of_the_same_name_run_and_keep_their_results_apart(inbox, hpc, sandbox, mqic_dirs):
    for name in ("alice", "bob"):
        scientist(name)
        drop_case(inbox / name, "sim", f"echo {name} > out.txt\n")
    assert intake.scan(inbox).registered == ["sim", "sim"]
    run_until_quiet()
    for case in Case.objects.select_related("owner"):
        assert case.status == S.COMPLETED, (case.owner, case.last_error)
        folder = mqic_dirs.MQIC_RESULTS_DIR / ".users" / case.owner.username / "sim"
        assert case.result_path == str(folder)
        assert (folder / "out.txt").read_text() == f"{case.owner.username}\n"


def test_the_demo_drops_its_cases_into_the_admins_folder_of_a_per_user_inbox(inbox, settings, tmp_path):
    settings.MQIC_VAR_DIR = tmp_path / "var"
    settings.MQIC_VAR_DIR.mkdir()
    bootstrap = Bootstrap()
    bootstrap.admin_login()
    bootstrap.drop_demo_cases()
    assert sorted(intake.scan(inbox).registered) == ["demo-1", "demo-2"]
    assert set(Case.objects.values_list("owner__username", flat=True)) == {"admin"}
