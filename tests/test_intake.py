"""Intake: which folders become cases, which are rejected, and that rescans are free."""

import os
import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cases.models import Case, CaseStatus
from cases.services import intake
from cases.services.labels import label_prefix
from tests.support.cases import drop_case as make_folder

pytestmark = pytest.mark.django_db

HOSTILE_NAMES = [
    "with space",
    "quote'\"s",
    "$(touch pwned)",
    "`id`",
    "ünïcødé ✓",
    "-leading-dash",
    "semi;colon&",
]


@pytest.fixture
def inbox(mqic_dirs):
    return mqic_dirs.MQIC_NEW_CASES_DIR


def test_complete_folders_are_registered_once_with_label_and_event(inbox):
    for name in ["b", "a"]:
        make_folder(inbox, name)
    report = intake.scan(inbox)
    assert report.registered == ["a", "b"]
    case = Case.objects.get(name="a")
    assert case.status == CaseStatus.SUBMITTED
    assert case.source_path == str(inbox / "a")
    assert case.label == f"{label_prefix()}{case.pk}"
    assert case.events.get().to_status == CaseStatus.SUBMITTED
    assert intake.scan(inbox).registered == []
    assert Case.objects.count() == 2


def test_hostile_names_are_just_names(inbox):
    for name in HOSTILE_NAMES:
        make_folder(inbox, name)
    assert sorted(intake.scan(inbox).registered) == sorted(HOSTILE_NAMES)
    assert set(Case.objects.values_list("status", flat=True)) == {CaseStatus.SUBMITTED}


def test_a_half_copied_folder_waits_for_its_marker_or_quiet_period(inbox, settings):
    settings.MQIC_QUIET_SECONDS = 60
    folder = make_folder(inbox, "copying", ready=False)
    assert intake.scan(inbox).incomplete == ["copying"]
    assert not Case.objects.exists()
    mtime = folder.stat().st_mtime
    assert intake.scan(inbox, now=mtime + 61).registered == ["copying"]


def test_bad_folders_are_rejected_with_reasons_and_do_not_stop_the_others(inbox, tmp_path):
    make_folder(inbox, "good")
    make_folder(inbox, "no-script", script=None)
    escaping = make_folder(inbox, "escaping-link")
    (escaping / "secret").symlink_to(tmp_path)
    inside = make_folder(inbox, "inner-link")
    (inside / "alias.dat").symlink_to("input.dat")
    absolute = make_folder(inbox, "absolute-inner-link")
    (absolute / "alias.dat").symlink_to(absolute / "input.dat")  # inside today, but not once copied
    (inbox / "a-file.txt").write_text("not a folder")
    (inbox / "linked-folder").symlink_to(tmp_path)
    special = make_folder(inbox, "with-fifo")
    os.mkfifo(special / "pipe")
    bad_bytes = os.fsencode(inbox) + b"/bad-\xff-name"
    os.mkdir(bad_bytes)
    with open(bad_bytes + b"/run.sh", "w") as f:
        f.write("echo\n")
    open(bad_bytes + b"/READY", "w").close()

    report = intake.scan(inbox)
    reasons = dict(report.rejected)
    assert sorted(report.registered) == ["good", "inner-link"]
    assert "run.sh is missing" in reasons["no-script"]
    assert "symlink secret points outside the case folder" in reasons["escaping-link"]
    assert "alias.dat" in reasons["absolute-inner-link"], "the upload refuses absolute links: intake does too"
    assert reasons["a-file.txt"] == "not a folder"
    assert "symbolic link" in reasons["linked-folder"]
    bad = Case.objects.get(name="bad-\\xff-name")
    assert bad.status == CaseStatus.REJECTED and "not valid UTF-8" in bad.last_error
    assert reasons["with-fifo"].startswith("pipe is a special file")
    assert Case.objects.filter(status=CaseStatus.REJECTED).count() == len(report.rejected)
    assert intake.scan(inbox).rejected == []


def test_a_rescan_with_nothing_new_writes_nothing(inbox):
    for n in range(20):
        make_folder(inbox, f"case{n}")
    intake.scan(inbox)
    with CaptureQueriesContext(connection) as queries:
        report = intake.scan(inbox)
    assert report.registered == [] and report.rejected == []
    assert [q["sql"].split()[0] for q in queries] == ["SELECT"]


@pytest.mark.django_db(transaction=True)
def test_two_scanners_at_once_never_duplicate(inbox):
    for n in range(30):
        make_folder(inbox, f"case{n}")
    results = []

    def scan():
        try:
            results.append(intake.scan(inbox).registered)
        finally:
            connection.close()

    threads = [threading.Thread(target=scan) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(name for r in results for name in r) == sorted(f"case{n}" for n in range(30))
    assert Case.objects.count() == 30


def test_a_folder_name_with_control_characters_is_rejected_with_the_reason(tmp_path, settings, db):
    """A newline in a name silently dropped the case's notification mail (a header is one line)."""
    from cases.models import Case, CaseStatus
    from cases.services import intake

    settings.MQIC_NEW_CASES_DIR = tmp_path
    for name in ("two\nlines", "right\u202eto-left"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.sh").write_text("echo hi\n")
    intake.scan()
    rejected = Case.objects.filter(status=CaseStatus.REJECTED)
    assert rejected.count() == 2
    assert all("control characters" in case.last_error for case in rejected)
