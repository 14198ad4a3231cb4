from django.conf import settings
from django.core.management.base import BaseCommand

from cases.services.watcher import watch


class Command(BaseCommand):
    help = "Watch the inbox and register case folders as soon as they are complete."

    def add_arguments(self, parser):
        parser.add_argument(
            "--polling", action="store_true", help="Poll instead of inotify (network filesystems)."
        )

    def handle(self, *args, polling=False, **options):
        inbox = settings.MQIC_NEW_CASES_DIR
        inbox.mkdir(parents=True, exist_ok=True)
        self.stdout.write(f"watching {inbox} ({'polling' if polling else 'native'} observer)")
        watch(inbox, polling=polling, say=self.stdout.write)
