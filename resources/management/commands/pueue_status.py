import json

from django.core.management.base import BaseCommand, CommandError

from resources.contact import contact
from resources.models import HpcHost


class Command(BaseCommand):
    help = "Print the live pueue state of each enabled host (or one with --host)."

    def add_arguments(self, parser):
        parser.add_argument("--host", help="Name of the HPC host (default: every enabled host).")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args, host=None, **options):
        hosts = HpcHost.objects.filter(name=host) if host else HpcHost.objects.filter(enabled=True)
        if not hosts:
            raise CommandError(f"no HPC host named {host!r}" if host else "no enabled HPC host; run configure_hpc")
        states, failed = {}, False
        for row in hosts:
            with contact(row, force=True) as link:
                states[row.name] = link.queue.state()
            if link.failed:
                self.stderr.write(f"{row.name}: {link.error}")
                failed = True
        self.stdout.write(self.as_json(states) if options["json"] else self.as_table(states))
        if failed:
            raise CommandError("some hosts did not answer")

    @staticmethod
    def as_json(states) -> str:
        return json.dumps(
            {
                name: {
                    "groups": {
                        g.name: {"status": g.status.value, "parallel": g.parallel_tasks} for g in s.groups.values()
                    },
                    "tasks": [t.snapshot() for t in s.tasks.values()],
                }
                for name, s in states.items()
            },
            indent=2,
        )

    @staticmethod
    def as_table(states) -> str:
        lines = []
        for name, state in states.items():
            groups = ", ".join(f"{g.name} ({g.status.value}, {g.parallel_tasks})" for g in state.groups.values())
            lines += [f"{name}: groups {groups}", f"  {'id':>5}  {'status':<10} {'group':<12} {'start':<19} label"]
            for task in state.tasks.values():
                status = task.result.value if task.result else task.status.value
                start = f"{task.start:%Y-%m-%d %H:%M:%S}" if task.start else "-"
                lines.append(f"  {task.id:>5}  {status:<10} {task.group:<12} {start:<19} {task.label or ''}")
        return "\n".join(lines)
