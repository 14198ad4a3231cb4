"""Everything ``make run`` needs before its processes start; safe to run again."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from resources.remote.local import LocalTransport
from resources.remote.pueue import PueueClient
from resources.sandbox import pueue_sandbox

DEMO_SCRIPT = """#!/bin/sh
# A stand-in simulation: pretend to work, then write a result.
echo "simulating $(basename "$PWD") on GPUs ${CUDA_VISIBLE_DEVICES:-none}"
sleep 5
echo "energy = -42.0" > result.txt
"""


class Command(BaseCommand):
    help = "Prepare the embedded default: database, static files, local sandbox HPC, schedules, demo cases, admin."

    def handle(self, *args, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("createcachetable", verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        if settings.MQIC_HPC_HOST == "local":
            self.start_sandbox()
        call_command("configure_hpc", stdout=self.stdout)
        call_command("setup_schedules", stdout=self.stdout)
        self.drop_demo_cases()
        self.stdout.write(self.admin_login())

    def start_sandbox(self):
        """The local stand-in for the remote HPC: a pueue sandbox daemon with one group per GPU group."""
        state = settings.MQIC_SANDBOX_DIR / "state"
        pueue_sandbox.install(settings.MQIC_SANDBOX_DIR / "bin", state)
        if not pueue_sandbox.StateDir(str(state)).daemon_alive():
            pueue_sandbox.start_daemon(state)
        pueue = PueueClient(LocalTransport(), settings.MQIC_PUEUE)
        for group in set(settings.MQIC_GPU_GROUPS) - set(pueue.groups()):
            pueue.group_add(group, parallel=1)
        self.stdout.write(f"sandbox HPC (pueue stand-in) running, state in {state}")

    def drop_demo_cases(self):
        inbox = settings.MQIC_NEW_CASES_DIR
        inbox.mkdir(parents=True, exist_ok=True)
        if any(inbox.iterdir()):
            return
        for name in ("demo-1", "demo-2"):
            folder = inbox / name
            folder.mkdir()
            (folder / settings.MQIC_ENTRY_SCRIPT).write_text(DEMO_SCRIPT)
            (folder / settings.MQIC_READY_MARKER).touch()
        self.stdout.write(f"dropped demo cases demo-1 and demo-2 into {inbox}")

    def admin_login(self) -> str:
        users = get_user_model().objects
        password_file = settings.BASE_DIR / "var" / "admin-password.txt"
        if not users.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            users.create_superuser("admin", "", password)
            password_file.write_text(password + "\n")
        url = f"http://127.0.0.1:{settings.MQIC_PORT}/admin/"
        if password_file.exists():
            return f"log in at {url} as admin, password {password_file.read_text().strip()}"
        return f"log in at {url} with your superuser (python manage.py createsuperuser makes one)"
