from django.core.management.base import BaseCommand

from cases.services import passes


class Command(BaseCommand):
    help = "Run one submission pass: lock GPU groups, upload, add to pueue."

    def handle(self, *args, **options):
        self.stdout.write(passes.run("submit", trigger="submit_cases").summary)
