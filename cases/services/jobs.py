"""What runs remotely for a case, and how we recognise its task afterwards."""

from __future__ import annotations

import posixpath
import shlex
from datetime import timedelta

from django.conf import settings

from resources.models import HpcHost
from resources.remote.errors import BadOutput
from resources.remote.pueue_state import PueueTask

from ..models import Case

# Written by the job wrapper in the remote case folder when the entry script ends, so that
# completion stays provable after `pueue clean` has removed the task.
EXIT_MARKER = ".mqic_exit_code"
JOB_LOG = ".mqic_job.log"


def remote_dir(host: HpcHost, label: str) -> str:
    return posixpath.join(host.base_dir, label)


def job_command(entry_script: str, devices: str = "") -> str:
    """The shell line pueue runs (through ``sh -c``, in the case folder).

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


def is_our_task(task: PueueTask, case: Case, *, any_attempt: bool = False) -> bool:
    """Whether ``task`` belongs to this case (this attempt, unless ``any_attempt``).

    The label alone is not proof: labels are not unique, and a restored database may
    reuse one. The task must work in this case's folder and, for this attempt, be created
    after the attempt began (allowing for clock skew between the hosts).
    """
    if task.label != case.label or not case.remote_dir or case.submitting_at is None:
        return False
    if posixpath.normpath(task.path) != posixpath.normpath(case.remote_dir):
        return False
    skew = timedelta(seconds=settings.MQIC_CLOCK_SKEW_SECONDS)
    return any_attempt or task.created_at >= case.submitting_at - skew


def read_exit_markers(transport, cases: list[Case]) -> dict[int, int | None]:
    """The exit code each case's job left in its folder (``None``: no marker), in one round trip."""
    dirs = " ".join(shlex.quote(c.remote_dir) for c in cases)
    script = (
        f"for d in {dirs}; do if [ -f \"$d\"/{EXIT_MARKER} ]; then printf 'code %s\\n' "
        f'"$(cat "$d"/{EXIT_MARKER})"; else echo none; fi; done'
    )
    lines = transport.run(script).check(script).stdout.splitlines()
    if len(lines) != len(cases):
        raise BadOutput(f"expected {len(cases)} exit-marker lines, got {len(lines)}")
    return {case.pk: _marker_code(line) for case, line in zip(cases, lines, strict=True)}


def _marker_code(line: str) -> int | None:
    word = line.removeprefix("code ").strip()
    return int(word) if line.startswith("code ") and word.lstrip("-").isdigit() else None
