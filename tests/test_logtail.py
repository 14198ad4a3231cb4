"""A job log's tail is read from its end, within a memory bound, whatever its size."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from cases.services.jobs import JOB_LOG
from cases.services.logtail import tail_lines
from cases.services.monitoring import LOG_TAIL_MAX_BYTES, log_tail
from tests.support.processes import REPO, django_env

MB = 1 << 20


def traced_peak(call):
    """What ``call()`` returns, and the most memory Python allocated during it."""
    tracemalloc.start()
    try:
        result = call()
        _size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.fixture(scope="module")
def big_log(tmp_path_factory) -> Path:
    """200 MB of numbered lines."""
    path = tmp_path_factory.mktemp("log") / "job.log"
    block = b"".join(
        b"line %07d of the job's output, a little padding to make it longer\n" % i for i in range(14_000)
    )
    with open(path, "wb") as log:
        for _ in range(200 * MB // len(block) + 1):
            log.write(block)
        log.write("last line: déjà vu ✓\n".encode())
    assert path.stat().st_size > 200 * MB
    return path


def test_the_tail_of_a_200_mb_log_is_right_and_costs_little_memory(big_log):
    tail, peak = traced_peak(lambda: tail_lines(big_log, 50, LOG_TAIL_MAX_BYTES))

    lines = tail.split("\n")
    assert len(lines) == 50
    assert lines[-1] == "last line: déjà vu ✓"
    assert lines[-2] == "line 0013999 of the job's output, a little padding to make it longer"
    assert lines[0] == "line 0013951 of the job's output, a little padding to make it longer"
    assert peak < 2 * MB


def test_a_200_mb_line_comes_back_cut_to_the_byte_bound(tmp_path):
    path = tmp_path / "one_line.log"
    with open(path, "wb") as log:
        log.truncate(200 * MB)  # sparse: no newline anywhere
        log.seek(0, 2)
        log.write(b"the end")

    tail, peak = traced_peak(lambda: tail_lines(path, 50, 64 * 1024))

    assert tail.endswith("the end") and len(tail.encode()) == 64 * 1024
    assert peak < 2 * MB


def test_short_logs_and_edge_cases(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"one\ntwo\r\nthree\n\xff broken utf-8\n")

    assert tail_lines(path, 2, 1024) == "three\n\ufffd broken utf-8"
    assert tail_lines(path, 10, 1024) == "one\ntwo\nthree\n\ufffd broken utf-8"
    assert tail_lines(path, 0, 1024) == ""
    path.write_bytes(b"")
    assert tail_lines(path, 5, 1024) == ""


def test_log_tail_of_results_without_a_log_is_empty(tmp_path):
    assert log_tail(tmp_path) == ""


RSS_SCRIPT = """
import resource, sys
import django
django.setup()
from pathlib import Path
from cases.services.monitoring import log_tail
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tail = log_tail(Path(sys.argv[1]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(after - before, len(tail.splitlines()))
"""


def test_a_200_mb_log_adds_little_to_the_resident_memory_of_the_process_reading_it(big_log, tmp_path):
    """Measured as the operating system sees it (the peak resident set of a fresh process, in KiB),
    not only what Python allocates: reading the whole log would add over 200 MB."""
    os.link(big_log, tmp_path / JOB_LOG)  # a case's results folder holding the big log
    done = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(tmp_path)],
        cwd=REPO,
        env=django_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    added_kib, lines = map(int, done.stdout.split())
    assert lines == 50
    assert added_kib * 1024 < 64 * MB, f"the tail added {added_kib} KiB of resident memory"


def test_following_a_log_reads_a_bounded_end_whatever_the_job_prints(hpc, sandbox, mqic_dirs):
    """One look at a followed log of a job that printed 60 lines of 1 MB each: the old way read
    pueue's log of 200 lines whole (up to 256 MB per look, per open page, every few seconds); now
    ``tail -c`` on the host sends the last MB at most."""
    from cases.models import Case
    from cases.services import intake, submission
    from cases.services.logs import TAIL_MAX_BYTES, fetch_log_tail
    from tests.support.cases import drop_case
    from tests.support.system import wait_for

    script = (
        "i=0; while [ $i -lt 60 ]; do head -c 1048576 /dev/zero | tr '\\0' x; echo; i=$((i+1)); done; sleep 30\n"
    )
    drop_case(mqic_dirs.MQIC_NEW_CASES_DIR, "loud", script)
    intake.scan()
    submission.submit_pass()
    case = Case.objects.select_related("gpu_group__host").get(name="loud")
    log = Path(case.remote_dir) / JOB_LOG
    wait_for(lambda: log.exists() and log.stat().st_size >= 60 * (MB + 1), 60, "the job's output")
    tail, peak = traced_peak(lambda: fetch_log_tail(case, lines=200))
    assert not tail.error and tail.text.endswith("x" * 1000)
    assert len(tail.text) <= TAIL_MAX_BYTES
    assert peak < 8 * MB, f"one look held {peak / MB:.0f} MB"
