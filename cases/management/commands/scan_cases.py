from django.core.management.base import BaseCommand

from cases import tasks


class Command(BaseCommand):
    help = "Register new complete case folders from the inbox, once."

    def handle(self, *args, **options):
        self.stdout.write(tasks.scan())
