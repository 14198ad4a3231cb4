"""qcluster nodes for the scale-out tests: each ``manage.py qcluster`` in a session of its own, as a
systemd unit runs it on its machine, so that it can be killed whole (its sentinel, pusher, monitor
and workers with it) as a machine that dies is."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

from tests.support.processes import manage


class Node:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path):
        self.name, self.env, self.log_dir = name, env, log_dir
        self.logs: list[Path] = []
        self.process: subprocess.Popen | None = None

    def start(self) -> Node:
        log = self.log_dir / f"{self.name}-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "ab") as out:
            self.process = manage(
                "qcluster", env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def kill(self) -> None:
        """SIGKILL to the whole node at once: nothing of it gets to clean up."""
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def processed(self) -> int:
        """Tasks its workers took from the queue, by its logs (django-q2 logs each as "processing")."""
        pattern = re.compile(r"\bprocessing\b")
        return sum(len(pattern.findall(log.read_text(errors="replace"))) for log in self.logs if log.exists())
