from django.core.management.base import BaseCommand

from cases import tasks
from cases.services.reconciliation import reconcile_pass


class Command(BaseCommand):
    help = "Reconcile the database with the remote pueue: stale submissions, GPU groups, orphan tasks."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Say what would change; change nothing.")

    def handle(self, *args, dry_run=False, **options):
        self.stdout.write(str(reconcile_pass(dry_run=True)) if dry_run else tasks.reconcile())
