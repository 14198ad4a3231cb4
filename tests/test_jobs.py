"""The job wrapper that runs remotely, executed here by a real ``sh``."""

import subprocess
from datetime import timedelta

import pytest
from django.utils import timezone

from cases.models import Attempt
from cases.services.jobs import EXIT_MARKER, JOB_LOG, job_command
from cases.services.matching import is_attempt_task, is_case_task
from resources.remote.pueue_state import PueueTask, TaskStatus
from tests.factories import make_case


def run_job(folder, script, devices=""):
    (folder / "run.sh").write_text(script)
    return subprocess.run(["sh", "-c", job_command("run.sh", devices)], cwd=folder, capture_output=True, text=True)


def test_the_wrapper_keeps_exit_code_output_and_log(tmp_path):
    done = run_job(tmp_path, "echo out; echo err >&2; exit 3\n")
    assert done.returncode == 3
    assert (tmp_path / EXIT_MARKER).read_text().strip() == "3"
    assert (tmp_path / JOB_LOG).read_text().splitlines() == ["out", "err"]
    assert "out" in done.stdout  # pueue's own log gets a copy


def test_the_wrapper_passes_the_gpu_devices_and_runs_executable_scripts(tmp_path):
    (tmp_path / "run.sh").write_text('#!/bin/sh\necho "gpus=$CUDA_VISIBLE_DEVICES"\n')
    (tmp_path / "run.sh").chmod(0o755)
    done = subprocess.run(["sh", "-c", job_command("run.sh", "0,1")], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0
    assert (tmp_path / JOB_LOG).read_text() == "gpus=0,1\n"
    assert (tmp_path / EXIT_MARKER).read_text().strip() == "0"


def test_a_rerun_starts_without_the_old_marker(tmp_path):
    run_job(tmp_path, "exit 1\n")
    (tmp_path / "run.sh").write_text(f"test -e {EXIT_MARKER} && echo stale; exit 0\n")
    subprocess.run(["sh", "-c", job_command("run.sh")], cwd=tmp_path, check=True)
    assert (tmp_path / JOB_LOG).read_text() == ""
    assert (tmp_path / EXIT_MARKER).read_text().strip() == "0"


def task(**fields):
    defaults = dict(
        id=1,
        label="L",
        group="gpu_a",
        command="c",
        original_command="c",
        path="/r/L",
        created_at=timezone.now(),
        status=TaskStatus.RUNNING,
    )
    return PueueTask(**(defaults | fields))


@pytest.mark.django_db
def test_a_label_alone_is_no_proof_of_ownership(settings):
    settings.MQIC_CLOCK_SKEW_SECONDS = 60
    started = timezone.now()
    case = make_case(label="L", remote_dir="/r/L.t2", submitting_at=started)
    Attempt.objects.create(case=case, token="t1", remote_dir="/r/L.t1", started_at=started - timedelta(hours=2))
    assert is_attempt_task(task(path="/r/L.t2", created_at=started - timedelta(seconds=30)), case)
    assert not is_attempt_task(task(path="/r/L.t2", label="other"), case)
    assert not is_attempt_task(task(path="/elsewhere/L.t2"), case)
    old = task(path="/r/L.t2", created_at=started - timedelta(hours=1))
    assert not is_attempt_task(old, case)
    assert is_case_task(old, case)
    earlier = task(path="/r/L.t1/", created_at=started - timedelta(hours=2))
    assert not is_attempt_task(earlier, case) and is_case_task(earlier, case)
    assert not is_case_task(task(path="/r/L.forged"), case), "a folder with no known token proves nothing"
