"""The embedded default (SQLite) under many writers: never "database is locked" inside a pass.

The watcher, ``tick``, the qcluster workers and a thread per host all write to one SQLite file.
WAL, ``BEGIN IMMEDIATE`` and a busy timeout (``mqic_site/settings.py``) make writers queue; what is
left is a writer that waits for a lock its own pass holds, which no timeout can settle.
"""

import subprocess
import sys

import pytest

from cases.models import Case, CaseEvent, CaseStatus
from cases.services import intake, progress, submission
from tests.support.cases import drop_case
from tests.support.processes import REPO, django_env

S = CaseStatus


def test_upload_progress_is_written_by_the_passs_own_thread(hpc, sandbox, mqic_dirs, monkeypatch):
    """The fresh-clone failure: the SSH transport reports progress from a worker thread of its own,
    whose own connection then waited for the write lock that the pass's connection held (here the
    test's transaction holds it all along) and failed the pass with "database is locked"."""
    monkeypatch.setattr(progress, "INTERVAL_SECONDS", 0)
    written = []
    real_write = progress.UploadProgress.write

    def write(self):
        real_write(self)
        written.append(dict(self.written))

    monkeypatch.setattr(progress.UploadProgress, "write", write)
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "big", "sleep 5\n", files={"big.bin": b"\1" * 8_000_000})
    intake.scan()
    assert submission.submit_pass().started == ["big"]
    assert Case.objects.get(name="big").status == S.RUNNING
    assert any(w for w in written), "the percentages were written, by the pass's thread"


@pytest.mark.django_db(transaction=True)
def test_many_writer_processes_never_meet_a_locked_database(hpc):
    """Six processes write at once, each as a worker does (slots, a read then a write in one
    transaction, autocommit updates): every round of every one goes through."""
    case = Case.objects.create(name="hammered", source_path="/nonexistent", status=S.SUBMITTED)
    writers, rounds = 6, 150
    env = django_env()
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.hammer", str(case.pk), str(rounds)],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(writers)
    ]
    failures = [p.stderr.read()[-2000:] for p in started if p.wait(timeout=600) != 0]
    assert not failures, failures
    assert CaseEvent.objects.filter(case=case, reason__startswith="hammer round").count() == writers * rounds
