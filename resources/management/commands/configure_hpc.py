from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from resources import config, operations


class Command(BaseCommand):
    help = (
        "Create or update the HPC hosts and their GPU groups from MQIC_HPC_CONFIG (a TOML file), "
        "or from the MQIC_HPC_* settings; idempotent. Then contact each host and report what it "
        "needs: reachable, host key trusted, pueue and pueued, each GPU group's pueue group."
    )

    def add_arguments(self, parser):
        parser.add_argument("--offline", action="store_true", help="Write the configuration; contact no host.")
        parser.add_argument(
            "--create-groups",
            action="store_true",
            help="Create the pueue groups that are missing on a host (pueue group add NAME --parallel 1).",
        )

    def handle(self, *args, offline=False, create_groups=False, **options):
        try:
            applied = config.apply(config.from_settings(settings))
        except config.ConfigError as error:
            raise CommandError(str(error)) from error
        for host, groups in applied:
            self.stdout.write(
                f"host {host.name}: {host.address}, base dir {host.base_dir}, pueue {host.pueue_command!r}"
            )
            for group in groups:
                self.stdout.write(f"  GPU group {group.name} -> pueue group {group.pueue_group}")
            if offline:
                continue
            findings = operations.check_site(host, create_groups=create_groups)
            for finding in findings:
                self.stdout.write(f"  {'ok' if finding.ok else 'NOT READY'}: {finding.text}")
            if all(finding.ok for finding in findings):
                self.stdout.write(f"  {host.name} is ready")
