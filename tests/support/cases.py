"""Case folders as a user would drop them."""

from __future__ import annotations

from pathlib import Path

from cases.models import Case
from cases.services import intake, monitoring, submission


def drop_case(
    inbox: Path,
    name: str,
    script: str | None = "echo ok > out.txt\n",
    *,
    files: dict[str, bytes] | None = None,
    ready: bool = True,
) -> Path:
    """Write a case folder: its entry script (``None``: none), data files and the READY marker."""
    folder = inbox / name
    folder.mkdir(parents=True)
    if script is not None:
        (folder / "run.sh").write_text(script)
    for file_name, content in (files or {"input.dat": b"x" * 100}).items():
        (folder / file_name).write_bytes(content)
    if ready:
        (folder / "READY").touch()
    return folder


PARTIAL_JOB = "echo started; echo partial > partial.txt; sleep 30\n"
"""A job that leaves something behind early and then runs on: a case to cancel."""


def running_case(inbox: Path, name: str = "sim", script: str = PARTIAL_JOB):
    """Drop, register, submit and see one case running (its task as the last pass saw it)."""
    drop_case(inbox, name, script)
    intake.scan()
    submission.submit_pass()
    monitoring.monitor_pass()
    case = Case.objects.get(name=name)
    assert case.last_seen_task["status"] == "running"
    return case


def busy_case(inbox: Path, name: str = "busy", timeout: float = 30) -> tuple[Case, int]:
    """Drop, register and submit a case whose job outlives its task (``processes.BUSY``); once the
    job has started, the case and the job's pid."""
    from .processes import BUSY
    from .system import wait_for

    drop_case(inbox, name, BUSY)
    intake.scan()
    submission.submit_pass()
    case = Case.objects.get(name=name)
    pid_file = Path(case.remote_dir) / "job.pid"
    # The shell creates the file before it writes the pid into it.
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout, "the job to start")
    return case, int(pid_file.read_text())
