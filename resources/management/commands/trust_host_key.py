from django.core.management.base import BaseCommand, CommandError

from resources import hostkeys
from resources.models import HpcHost
from resources.remote.errors import ChangedHostKey, OutcomeUnknown


class Command(BaseCommand):
    help = (
        "Fetch an HPC host's SSH key, show its fingerprint and trust it; for a host reached through "
        "jump hosts (proxy_jump), each jump host's key first, in order."
    )

    def add_arguments(self, parser):
        parser.add_argument("host", nargs="?", help="Host name (default: the only host).")
        parser.add_argument("--replace", action="store_true", help="Replace a different, trusted key.")
        parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

    def handle(self, *args, host=None, replace=False, yes=False, **options):
        row = self.pick(host)
        if row.is_local:
            self.stdout.write(f"{row.name} runs on this machine: no SSH key is involved")
            return
        for hop, jump_host in enumerate(hostkeys.jump_hosts(row)):
            self.trust(row, jump_host, hop, replace=replace, yes=yes)
        self.trust(row, row, None, replace=replace, yes=yes)

    def trust(self, row, seen, hop, *, replace, yes):
        """Show and trust the key of the host, or of its jump host number ``hop`` (``seen``)."""
        try:
            key = hostkeys.offered_key(row, hop)
        except OutcomeUnknown as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"{seen.name} ({seen.hostname}:{seen.port}) offers {key.key_type} {key.fingerprint}")
        found = hostkeys.check(seen, key)
        if found.state == "trusted":
            self.stdout.write(f"{seen.name}: this key is already trusted")
            return
        if found.state == "mismatch":
            self.stdout.write(found.describe(seen))
            if not replace:
                raise CommandError(f"MISMATCH: not trusted. Run again with --replace to trust {key.fingerprint}.")
        if not yes and input("Trust this key? Compare it with the host's administrators first. [y/N] ") != "y":
            raise CommandError("not trusted")
        try:
            hostkeys.trust(seen, key, replace=replace)
        except ChangedHostKey as error:
            raise CommandError(f"{error} Run again with --replace to trust the new key.") from error
        self.stdout.write(f"trusted the key of {seen.name}")

    @staticmethod
    def pick(name):
        hosts = HpcHost.objects.filter(name=name) if name else HpcHost.objects.all()
        if len(hosts) != 1:
            raise CommandError(f"no HPC host named {name!r}" if name else "name the host: there are several")
        return hosts[0]
