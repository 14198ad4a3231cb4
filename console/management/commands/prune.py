from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from cases.services import retention
from console.models import Notification


class Command(BaseCommand):
    help = (
        "Delete what the retention settings let go (MQIC_KEEP_*_DAYS): old pass records, the notes of "
        "long-ended cases, delivered notifications. Run it daily (deploy/systemd/mqic-prune.timer)."
    )

    def handle(self, *args, **options):
        gone = retention.prune()
        cutoff = timezone.now() - timedelta(days=settings.MQIC_KEEP_NOTIFICATIONS_DAYS)
        done = Notification.objects.filter(next_try_at__isnull=True, created_at__lt=cutoff)
        gone["delivered notifications"] = retention.delete_in_batches(done)
        self.stdout.write("pruned: " + ", ".join(f"{count} {what}" for what, count in gone.items()))
