import time

from django.core.management.base import BaseCommand

from cases.services import passes


class Command(BaseCommand):
    help = "Every few seconds, enqueue the passes that have work (the schedules run once a minute)."

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=3.0, help="Seconds between looks (default 3).")

    def handle(self, *args, every=3.0, **options):
        while True:
            with passes.database_may_be_away("tick"):
                if due := passes.enqueue_due():
                    self.stdout.write(f"enqueued {', '.join(due)}")
            time.sleep(every)
