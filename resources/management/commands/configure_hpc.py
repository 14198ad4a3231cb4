from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from resources import config


class Command(BaseCommand):
    help = (
        "Create or update the HPC hosts and their GPU groups from MQIC_HPC_CONFIG (a TOML file), "
        "or from the MQIC_HPC_* settings; idempotent."
    )

    def handle(self, *args, **options):
        try:
            applied = config.apply(config.from_settings(settings))
        except config.ConfigError as error:
            raise CommandError(str(error)) from error
        for host, groups in applied:
            where = "this machine (local)" if host.is_local else f"{host.username}@{host.hostname}:{host.port}"
            self.stdout.write(f"host {host.name}: {where}, base dir {host.base_dir}, pueue {host.pueue_command!r}")
            for group in groups:
                self.stdout.write(f"  GPU group {group.name} -> pueue group {group.pueue_group} ({group.status})")
