"""Immediate pick-up: a watchdog observer triggers a scan when the inbox changes.

Events only say "something changed"; the scan decides what is complete and new, so a
burst of events costs one scan, and a missed event is caught by the scheduled scan.
A folder still inside its quiet period is looked at again when that period ends. The watch is
recursive: a per-user inbox's user folders, even those made after it started, are watched too.
"""

from __future__ import annotations

import threading
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from . import passes


class _Poke(FileSystemEventHandler):
    def __init__(self, changed: threading.Event):
        self.changed = changed

    def on_any_event(self, event):
        self.changed.set()


def watch(inbox: Path, *, polling: bool = False, say=print, stop: threading.Event | None = None) -> None:
    changed, stop = threading.Event(), stop or threading.Event()
    observer = (PollingObserver if polling else Observer)()
    observer.schedule(_Poke(changed), str(inbox), recursive=True)
    observer.start()
    changed.set()  # look once at start
    try:
        while not stop.is_set():
            # Wake on a change, or when a folder in its quiet period may have become complete.
            changed.wait(timeout=max(1.0, settings.MQIC_QUIET_SECONDS))
            changed.clear()
            close_old_connections()
            scanned = False
            with passes.database_may_be_away("watcher"):
                run = passes.run("scan", trigger="watcher", inbox=inbox)
                scanned = True
                if run.report.registered or run.report.rejected:
                    say(run.summary)
            if not scanned:  # the database is away: look again in a moment, whatever changed
                changed.set()
                stop.wait(1.0)
    finally:
        observer.stop()
        observer.join()
