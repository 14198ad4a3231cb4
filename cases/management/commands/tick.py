import logging
import time

from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections

from cases.services import passes

log = logging.getLogger("mqic.tick")


class Command(BaseCommand):
    help = "Every few seconds, enqueue the passes that have work (the schedules run once a minute)."

    def add_arguments(self, parser):
        parser.add_argument("--every", type=float, default=3.0, help="Seconds between looks (default 3).")

    def handle(self, *args, every=3.0, **options):
        while True:
            try:
                if due := passes.enqueue_due():
                    self.stdout.write(f"enqueued {', '.join(due)}")
            except DatabaseError as error:  # the database restarted or is away: look again later
                log.warning("tick: the database did not answer (%s); trying again", error)
            finally:
                close_old_connections()  # a connection broken by a restart is dropped, a new one made
            time.sleep(every)
