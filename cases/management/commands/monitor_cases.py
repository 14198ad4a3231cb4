from django.core.management.base import BaseCommand

from cases import tasks


class Command(BaseCommand):
    help = "Run one monitoring pass: finish cases whose pueue tasks ended, fetch results."

    def handle(self, *args, **options):
        self.stdout.write(tasks.monitor())
