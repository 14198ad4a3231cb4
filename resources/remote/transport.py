"""What the rest of MQIC needs from a connection to an HPC host.

Two implementations exist: ``ssh.SshTransport`` (paramiko, production) and
``local.LocalTransport`` (subprocess and the local filesystem, for the embedded sandbox).
Commands are shell strings that callers build with ``shlex.join``/``shlex.quote``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import CommandFailed

ProgressCallback = Callable[[int], None]
"""Called with the number of bytes sent so far during an upload."""


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str

    def check(self, command: str) -> CommandResult:
        """Return self, or raise ``CommandFailed`` if the command exited non-zero."""
        if self.exit_code != 0:
            raise self.failure(command)
        return self

    def failure(
        self, command: str, kind: type[CommandFailed] = CommandFailed, what: str = "remote command"
    ) -> CommandFailed:
        """The error for this non-zero exit, carrying the output (its tail in the message)."""
        detail = (self.stderr.strip() or self.stdout.strip())[-500:]
        return kind(
            f"{what} exited {self.exit_code}: {detail}",
            command=command,
            exit_code=self.exit_code,
            stdout=self.stdout,
            stderr=self.stderr,
        )


class Transport(Protocol):
    def run(self, command: str, *, stdin: bytes | None = None, timeout: float | None = None) -> CommandResult:
        """Run a shell command remotely; raise ``OutcomeUnknown`` if we cannot tell what happened."""

    def upload_dir(self, local_dir: Path, remote_dir: str, *, progress: ProgressCallback | None = None) -> None:
        """Copy the contents of ``local_dir`` into ``remote_dir`` (created) as one streamed tar."""

    def upload_tree(
        self, folders: list[tuple[Path, str]], remote_base: str, *, progress: ProgressCallback | None = None
    ) -> None:
        """Replace each ``remote_base/<name>`` with its local folder, all in ONE streamed tar."""

    def download_dir(self, remote_dir: str, local_dir: Path, *, progress: ProgressCallback | None = None) -> None:
        """Replace ``local_dir`` with the contents of ``remote_dir`` (streamed tar, swapped in)."""

    def close(self) -> None: ...
