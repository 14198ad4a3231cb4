"""A separate process that races its peers on the same rows; prints what it won as JSON.

Run as ``python -m tests.support.race_worker <case ids> <start time>``; every worker
sleeps until the shared start time so that they really collide.
"""

import json
import os
import sys
import time

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mqic_site.settings")
    django.setup()
    from cases.models import CaseStatus
    from cases.services.transitions import transition
    from resources.services import lock_free_group

    case_ids = [int(x) for x in sys.argv[1].split(",")]
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
    won_cases, won_groups = [], []
    for case_id in case_ids:
        if transition(case_id, CaseStatus.SUBMITTED, CaseStatus.SUBMITTING, reason=f"race {os.getpid()}"):
            won_cases.append(case_id)
        group = lock_free_group(holder_id=case_id + 1_000_000 * os.getpid())
        if group is not None:
            won_groups.append(group.pk)
    print(json.dumps({"cases": won_cases, "groups": won_groups}))


if __name__ == "__main__":
    main()
