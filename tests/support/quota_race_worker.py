"""A separate process that claims one case of an owner on one GPU group, at the same moment as its
peers claim other cases of the same owner; prints ``{"outcome": ...}`` as JSON.

Run as ``python -m tests.support.quota_race_worker <case id> <group id> <barrier dir> <workers>``
with ``MQIC_MAX_RUNNING_PER_USER`` set: each worker, once Django is set up and its rows are read,
marks itself ready in the barrier folder and waits for all the others, so that the claims collide.
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
    from cases.models import Case
    from cases.services import submission
    from cases.services.queueing import OverQuota
    from resources.models import GpuGroup

    case = Case.objects.get(pk=int(sys.argv[1]))
    group = GpuGroup.objects.select_related("host").get(pk=int(sys.argv[2]))
    barrier, workers = Path(sys.argv[3]), int(sys.argv[4])
    (barrier / str(os.getpid())).touch()
    while len(list(barrier.iterdir())) < workers:
        time.sleep(0.005)
    try:
        outcome = {True: "claimed", None: "group taken", False: "case taken"}[
            submission.claim_on(group, case, None)
        ]
    except OverQuota:
        outcome = "over quota"
    print(json.dumps({"outcome": outcome}))


if __name__ == "__main__":
    main()
