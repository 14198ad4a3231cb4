"""django-q2 entry points: one line each, through the pass runner.

Every pass is safe to run twice at once (all state changes are compare-and-swap), so a
schedule fired twice, or a pass enqueued by the watcher beside a scheduled one, is harmless.
The returned text is what django-q2 shows as the task's result.
"""

from .services import passes


def scan(trigger: str = "schedule") -> str:
    return passes.run("scan", trigger=trigger).summary


def submit(trigger: str = "schedule") -> str:
    return passes.run("submit", trigger=trigger).summary


def monitor(trigger: str = "schedule") -> str:
    return passes.run("monitor", trigger=trigger).summary


def reconcile(trigger: str = "schedule") -> str:
    return passes.run("reconcile", trigger=trigger).summary
