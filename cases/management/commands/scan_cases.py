from django.core.management.base import BaseCommand

from cases.services import passes


class Command(BaseCommand):
    help = "Register new complete case folders from the inbox, once."

    def handle(self, *args, **options):
        self.stdout.write(passes.run("scan", trigger="scan_cases").summary)
