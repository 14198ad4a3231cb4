"""Everything ``make run`` needs before its processes start; safe to run again.

The local HPC itself is started before, by ``python -m sandbox.demo up``.
"""

import os
import secrets
import stat
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

DEMO_SCRIPT = """#!/bin/sh
# A stand-in simulation: pretend to work, then write a result.
echo "simulating $(basename "$PWD") on GPUs ${CUDA_VISIBLE_DEVICES:-none}"
sleep 5
echo "energy = -42.0" > result.txt
"""


class Command(BaseCommand):
    help = "Prepare the embedded default: database, static files, HPC rows, schedules, demo cases, admin."

    def handle(self, *args, **options):
        settings.MQIC_VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        call_command("createcachetable", verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        call_command("configure_hpc", stdout=self.stdout)
        call_command("setup_schedules", stdout=self.stdout)
        login = self.admin_login()
        self.drop_demo_cases()
        self.stdout.write(login)
        keep_private(settings.MQIC_VAR_DIR)

    def drop_demo_cases(self):
        """Two cases, into an empty inbox; a per-user inbox (``MQIC_INBOX_PER_USER``) takes them in a
        user folder: the first superuser's, whose cases they then are."""
        inbox = settings.MQIC_NEW_CASES_DIR
        inbox.mkdir(parents=True, exist_ok=True)
        if any(inbox.iterdir()):
            return
        into = inbox
        if settings.MQIC_INBOX_PER_USER:
            owner = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
            into = inbox / owner.get_username()
        for name in ("demo-1", "demo-2"):
            folder = into / name
            folder.mkdir(parents=True)
            (folder / settings.MQIC_ENTRY_SCRIPT).write_text(DEMO_SCRIPT)
            (folder / settings.MQIC_READY_MARKER).touch()
        self.stdout.write(f"dropped demo cases demo-1 and demo-2 into {into}")

    def admin_login(self) -> str:
        """Make the ``admin`` superuser once; its password is shown that once, then kept in var/."""
        users = get_user_model().objects
        password_file = settings.MQIC_VAR_DIR / "admin-password.txt"
        url = f"http://127.0.0.1:{settings.MQIC_PORT}/admin/"
        if not users.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            users.create_superuser("admin", "", password)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
            return f"log in at {url} as admin, password {password} (kept in {password_file}, readable by you only)"
        if password_file.exists():
            return f"log in at {url} as admin; the password is in {password_file}"
        return f"log in at {url} with your superuser (python manage.py createsuperuser makes one)"


def keep_private(folder: Path) -> None:
    """Nobody but the owner may read the installation's files: folders 0700, files 0600 (0700 if
    executable). Links are left alone: they are not followed."""
    for parent, _dirs, files in os.walk(folder):
        Path(parent).chmod(0o700)
        for path in (Path(parent, name) for name in files):
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode):
                path.chmod(stat.S_IMODE(mode) & 0o700 | 0o600)
