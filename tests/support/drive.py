"""A worker process that runs the passes in a loop until nothing is left to do.

``python -m tests.support.drive <stall seconds>``: submit, monitor and reconcile until no case
is waiting, submitting or running and no ended case awaits its remote cleanup. It gives up (exit 1)
only when nothing has moved for that long (no event written, no attempt cleaned up): a loaded
machine makes the work slower, not stuck, so the bound is on progress, not on the whole run
(which is capped at ``TOTAL_CAP`` times the stall bound, as a last resort). The crash tests run
it with ``MQIC_CRASH_AT`` set, so that it SIGKILLs itself at a named point, then run it again.
"""

import os
import sys
import time

import django

TOTAL_CAP = 10


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mqic_site.settings")
    django.setup()
    from cases.models import Attempt, Case, CaseEvent, CaseStatus
    from cases.services import passes

    unfinished = [CaseStatus.SUBMITTED, CaseStatus.SUBMITTING, CaseStatus.RUNNING]
    stall = float(sys.argv[1])
    cap = time.monotonic() + TOTAL_CAP * stall
    rounds = 0
    ended = [CaseStatus.COMPLETED, CaseStatus.FAILED, CaseStatus.CANCELLED]
    untidy = Attempt.objects.filter(
        case__status__in=ended, cleaned_at__isnull=True, ended_at__isnull=False, kept=""
    )
    seen, moved = None, time.monotonic()
    while Case.objects.filter(status__in=unfinished).exists() or untidy.exists():
        now = (CaseEvent.objects.count(), Attempt.objects.filter(cleaned_at__isnull=False).count())
        if now != seen:
            seen, moved = now, time.monotonic()
        if time.monotonic() - moved > stall or time.monotonic() > cap:
            print(f"drive: nothing moved for {stall:.0f}s or past the cap; giving up", file=sys.stderr)
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
