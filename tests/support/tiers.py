"""The PostgreSQL tier: tests that only mean something on a database several nodes can share.

A test marked ``postgres`` runs MQIC as a deployment runs it on several machines (more than one
qcluster node, one database). SQLite is the embedded default of one machine, not such a database,
so on SQLite these tests are deselected, never skipped, and the run says so in its header and its
summary; ``make test`` runs them in its PostgreSQL pass (``make test-postgres``).
"""

from __future__ import annotations

import pytest
from django.conf import settings

WHY = "needs PostgreSQL (several qcluster nodes share one database): run with DATABASE_URL=postgres://..."


def on_sqlite() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"


def pytest_configure(config):
    config.addinivalue_line("markers", f"postgres: {WHY}; deselected on SQLite")
    config.stash[_DESELECTED] = []


def pytest_report_header(config):
    if on_sqlite():
        return "database: SQLite; tests marked postgres are deselected (make test-postgres runs them)"
    return f"database: {settings.DATABASES['default']['ENGINE'].rpartition('.')[2]}"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    if not on_sqlite():
        return
    deselected = [item for item in items if item.get_closest_marker("postgres")]
    if deselected:
        items[:] = [item for item in items if item not in deselected]
        config.hook.pytest_deselected(items=deselected)
        config.stash[_DESELECTED] = deselected


def pytest_terminal_summary(terminalreporter, config):
    deselected = config.stash.get(_DESELECTED, [])
    if deselected:
        terminalreporter.write_sep("=", "PostgreSQL tier", yellow=True)
        terminalreporter.write_line(f"{len(deselected)} test(s) not run on SQLite, by design: {WHY}")
        for item in deselected:
            terminalreporter.write_line(f"  {item.nodeid}")


_DESELECTED = pytest.StashKey[list]()
