from django.core.management.base import BaseCommand

from cases.services.passes import setup_schedules


class Command(BaseCommand):
    help = "Create or update the django-q2 schedules of every pass (idempotent)."

    def handle(self, *args, **options):
        for schedule in setup_schedules():
            self.stdout.write(f"{schedule.name}: {schedule.func} every {schedule.minutes} min")
