"""One of several writer processes that hammer the database the way MQIC's processes do at once.

``python -m tests.support.hammer <case id> <rounds>``: each round takes and frees a connection slot
of host ``sshd`` (``resources.contact``), reads a case and writes an event in one transaction (a
write that follows a read: the case SQLite fails at once without ``BEGIN IMMEDIATE``), and writes
upload progress on its own (autocommit). Exit 0 once every round went through; any "database is
locked" ends the process with a traceback and a non-zero exit.
"""

import os
import sys

import django


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mqic_site.settings")
    django.setup()
    from django.db import transaction

    from cases.models import Case
    from cases.services.transitions import record_event
    from resources.contact import take_slot
    from resources.models import HostSlot, HpcHost

    case_id, rounds = int(sys.argv[1]), int(sys.argv[2])
    host = HpcHost.objects.get(name="sshd")
    for n in range(rounds):
        slot = take_slot(host)
        if slot is not None:
            HostSlot.objects.filter(host=host, number=slot).update(holder="")
        with transaction.atomic():
            case = Case.objects.get(pk=case_id)
            record_event(case.pk, f"hammer round {n} of process {os.getpid()}")
        Case.objects.filter(pk=case_id).update(upload_percent=n % 100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
