"""What runs remotely for a case: its attempt's folder, the job wrapper and the files it leaves."""

from __future__ import annotations

import posixpath
import secrets
import shlex
from pathlib import Path

from django.conf import settings

from resources.jobqueue import TRACES, read_origin
from resources.models import HpcHost

# Every process of an attempt carries this in its environment (pueue hands the adding client's
# environment to the task, and children inherit it): a process pueue forgot can still be found.
ATTEMPT_VARIABLE = "MQIC_ATTEMPT"

# Written by the job wrapper in the attempt's remote folder when the entry script ends, so that
# completion stays provable after `pueue clean` has removed the task.
EXIT_MARKER = ".mqic_exit_code"
JOB_LOG = ".mqic_job.log"


def new_token() -> str:
    """A fresh attempt token: 64 random bits, enough that no job guesses another attempt's folder."""
    return secrets.token_hex(8)


def remote_dir(host: HpcHost, label: str, token: str) -> str:
    """The folder of one attempt: ``<base dir>/<label>.<token>``, one path component below the base."""
    return posixpath.join(host.base_dir, f"{label}.{token}")


def folder_name(remote_dir: str) -> str:
    return posixpath.basename(posixpath.normpath(remote_dir))


def token_of(remote_dir: str) -> str:
    """The attempt token in an attempt folder's name (see ``remote_dir``)."""
    return folder_name(remote_dir).rpartition(".")[2]


USERS_RESULTS = ".users"
"""The folder of the users' results in ``MQIC_RESULTS_DIR``: hidden, so no case is ever named so."""


def results_dir(case) -> Path:
    """Where a case's results come home: ``MQIC_RESULTS_DIR/<case name>``, and for a user's case (a
    per-user inbox) ``MQIC_RESULTS_DIR/.users/<user folder>/<case name>``, so that two users' cases
    of the same name never share a folder, nor a user's with an operators' case named like the user.
    The user folder's name comes from the case's source path, not from the user: results stay where
    they are when a user is renamed."""
    if case.owner_id is None:
        return Path(settings.MQIC_RESULTS_DIR) / case.name
    return Path(settings.MQIC_RESULTS_DIR) / USERS_RESULTS / Path(case.source_path).parent.name / case.name


def home_attempt(case) -> str | None:
    """The attempt folder (``<label>.<token>``) whose results are in the case's results folder,
    as the download marked them; ``None``: no results of this case's are home."""
    origin = read_origin(results_dir(case))
    return origin if origin and case.label and origin.startswith(f"{case.label}.") else None


def trace(remote_dir: str) -> str:
    """The trace a cleaned-up attempt leaves on its host (see ``resources.jobqueue.TRACES``)."""
    base, name = posixpath.split(posixpath.normpath(remote_dir))
    return posixpath.join(base, TRACES, name)


def exit_marker(remote_dir: str) -> str:
    return posixpath.join(remote_dir, EXIT_MARKER)


def job_command(entry_script: str, devices: str = "") -> str:
    """The shell line pueue runs (through ``sh -c``, in the attempt's folder).

    It runs the entry script with the group's devices, copies its output to the job log
    (pueue keeps a copy too) and writes the exit code to the marker by rename, so the
    marker is either absent or complete.
    """
    script = shlex.quote(f"./{entry_script}")
    marker, tmp, joblog = EXIT_MARKER, f"{EXIT_MARKER}.tmp", JOB_LOG
    devices_env = f"CUDA_VISIBLE_DEVICES={shlex.quote(devices)}; export CUDA_VISIBLE_DEVICES; " if devices else ""
    return (
        f"rm -f {marker} {tmp}; "
        f"{{ {devices_env}if [ -x {script} ]; then {script}; else sh {script}; fi; echo $? > {tmp}; }} 2>&1"
        f" | tee {joblog}; rc=$(cat {tmp} 2>/dev/null || echo 255); mv -f {tmp} {marker}; exit $rc"
    )


def marker_code(text: str | None) -> int | None:
    """The exit code an exit marker holds (``None``: no marker, or not a number)."""
    word = (text or "").strip()
    return int(word) if word.lstrip("-").isdigit() and len(word) < 12 else None
