"""A separate process that races its peers on the same rows; prints what it won as JSON.

Run as ``python -m tests.support.race_worker <case ids> <barrier dir> <workers>``: each
worker, once Django is set up, marks itself ready in the barrier folder and waits for all
the others, so that they really collide however slow the machine is; each starts at a place
of its own in the list and pauses between rows, so the collisions are spread over all rows.
"""

import json
import os
import sys
import time
from pathlib import Path

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mqic_site.settings")
    django.setup()
    from cases.models import CaseStatus
    from cases.services.transitions import transition
    from resources.services import lock_free_group

    case_ids = [int(x) for x in sys.argv[1].split(",")]
    barrier, workers = Path(sys.argv[2]), int(sys.argv[3])
    (barrier / str(os.getpid())).touch()
    while len(ready := sorted(entry.name for entry in barrier.iterdir())) < workers:
        time.sleep(0.005)
    # Each worker starts at its own place in the list and pauses between rows, so that a worker the
    # scheduler runs first cannot take every row before its peers wake from the barrier.
    start = ready.index(str(os.getpid())) * len(case_ids) // workers
    won_cases, won_groups = [], []
    for case_id in case_ids[start:] + case_ids[:start]:
        time.sleep(0.002)
        if transition(case_id, CaseStatus.SUBMITTED, CaseStatus.SUBMITTING, reason=f"race {os.getpid()}"):
            won_cases.append(case_id)
        group = lock_free_group(holder_id=case_id + 1_000_000 * os.getpid())
        if group is not None:
            won_groups.append(group.pk)
    print(json.dumps({"cases": won_cases, "groups": won_groups}))


if __name__ == "__main__":
    main()
