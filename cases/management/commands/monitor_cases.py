from django.core.management.base import BaseCommand

from cases.services import passes


class Command(BaseCommand):
    help = "Run one monitoring pass: finish cases whose pueue tasks ended, fetch results."

    def handle(self, *args, **options):
        self.stdout.write(passes.run("monitor", trigger="monitor_cases").summary)
