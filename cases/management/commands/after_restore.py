from django.core.management.base import BaseCommand

from cases.services import passes, restore


class Command(BaseCommand):
    help = (
        "Run once after restoring the database from a backup, before the services start: every "
        "waiting case is held until each host was asked for a run of it that the backup does not "
        "know (then adopted, ended from its results, or failed when its evidence is gone), and a "
        "reconciliation pass does that now."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--no-pass",
            action="store_true",
            help="Only mark the waiting cases; the next reconcile pass checks them.",
        )

    def handle(self, *args, no_pass=False, **options):
        marked = restore.mark_restored()
        self.stdout.write(f"{marked} waiting case(s) held until every host was asked about them")
        if not no_pass:
            self.stdout.write(passes.run("reconcile", trigger="after_restore command").summary)
