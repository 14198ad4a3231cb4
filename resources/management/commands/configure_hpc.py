from django.conf import settings
from django.core.management.base import BaseCommand

from resources.services import configure_from_settings


class Command(BaseCommand):
    help = "Create or update the HPC host and its GPU groups from the MQIC_* settings (idempotent)."

    def handle(self, *args, **options):
        host, groups = configure_from_settings(settings)
        where = "this machine (local sandbox)" if host.is_local else f"{host.username}@{host.hostname}:{host.port}"
        self.stdout.write(f"host {host.name}: {where}, base dir {host.base_dir}, pueue {host.pueue_command!r}")
        for group in groups:
            self.stdout.write(f"  GPU group {group.name} -> pueue group {group.pueue_group} ({group.status})")
