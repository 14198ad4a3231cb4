"""A worker process that runs the passes in a loop until nothing is left to do.

``python -m tests.support.drive <seconds>``: submit, monitor and reconcile until no case
is waiting, submitting or running, or the time is up. The crash tests run it with
``MQIC_CRASH_AT`` set, so that it SIGKILLs itself at a named point, then run it again.
"""

import os
import sys
import time

import django


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mqic_site.settings")
    django.setup()
    from cases.models import Case, CaseStatus
    from cases.services import monitoring, reconciliation, submission

    unfinished = [CaseStatus.SUBMITTED, CaseStatus.SUBMITTING, CaseStatus.RUNNING]
    deadline = time.monotonic() + float(sys.argv[1])
    rounds = 0
    while Case.objects.filter(status__in=unfinished).exists():
        if time.monotonic() > deadline:
            return 1
        submission.submit_pass()
        monitoring.monitor_pass()
        if rounds % 5 == 0:  # as scheduled: reconciliation runs less often than the other passes
            reconciliation.reconcile_pass()
        rounds += 1
        time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
