"""A worker process that runs the passes in a loop until nothing is left to do.

``python -m tests.support.drive <seconds>``: submit, monitor and reconcile until no case
is waiting, submitting or running and no ended case awaits its remote cleanup, or the time is
up. The crash tests run it with ``MQIC_CRASH_AT`` set, so that it SIGKILLs itself at a named
point, then run it again.
"""

import os
import sys
import time

import django


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mqic_site.settings")
    django.setup()
    from cases.models import Attempt, Case, CaseStatus
    from cases.services import passes

    unfinished = [CaseStatus.SUBMITTED, CaseStatus.SUBMITTING, CaseStatus.RUNNING]
    deadline = time.monotonic() + float(sys.argv[1])
    rounds = 0
    ended = [CaseStatus.COMPLETED, CaseStatus.FAILED, CaseStatus.CANCELLED]
    untidy = Attempt.objects.filter(
        case__status__in=ended, cleaned_at__isnull=True, ended_at__isnull=False, kept=""
    )
    while Case.objects.filter(status__in=unfinished).exists() or untidy.exists():
        if time.monotonic() > deadline:
            return 1
        passes.run("submit", trigger="drive", follow_ups=False)
        passes.run("monitor", trigger="drive", follow_ups=False)
        if rounds % 5 == 0:  # as scheduled: reconciliation runs less often than the other passes
            passes.run("reconcile", trigger="drive", follow_ups=False)
        rounds += 1
        time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
