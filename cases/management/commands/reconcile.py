from django.core.management.base import BaseCommand

from cases.services import passes


class Command(BaseCommand):
    help = "Reconcile the database with the remote pueue: stale submissions, GPU groups, orphan tasks."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Say what would change; change nothing.")

    def handle(self, *args, dry_run=False, **options):
        self.stdout.write(passes.run("reconcile", trigger="reconcile command", dry_run=dry_run).summary)
