from django.core.management.base import BaseCommand

from cases.services.schedules import setup_schedules


class Command(BaseCommand):
    help = "Create or update the django-q2 schedules for scan, submit, monitor and reconcile (idempotent)."

    def handle(self, *args, **options):
        for schedule in setup_schedules():
            self.stdout.write(f"{schedule.name}: {schedule.func} every {schedule.minutes} min")
