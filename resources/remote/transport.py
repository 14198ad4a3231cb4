"""What the rest of MQIC needs from a connection to an HPC host.

Two implementations exist: ``ssh.SshTransport`` (paramiko, production) and
``local.LocalTransport`` (subprocess and the local filesystem, for the embedded sandbox).
Commands are shell strings that callers build with ``shlex.join``/``shlex.quote``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import CommandFailed
from .manifest import ScanLimits
from .untar import FolderResult, Limits

ProgressCallback = Callable[[int], None]
"""Called with the number of bytes sent so far during an upload."""

_still_waiting: ContextVar[Callable[[], None] | None] = ContextVar("mqic_still_waiting", default=None)


@contextmanager
def while_waiting(callback: Callable[[], None]) -> Iterator[None]:
    """Have ``callback`` called now and then, from this thread, while a command or transfer started
    in this block runs: a contact renews its connection slot with it, so that a transfer longer than
    the slot's lease is not taken for a dead holder. Blocks nest: an inner one's callback is
    called after those of the blocks around it."""
    outer = _still_waiting.get()

    def both() -> None:
        outer()
        callback()

    token = _still_waiting.set(callback if outer is None else both)
    try:
        yield
    finally:
        _still_waiting.reset(token)


def still_waiting() -> None:
    """What a transport calls while it waits for its command or transfer to end."""
    if (callback := _still_waiting.get()) is not None:
        callback()


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

    def upload_dir(
        self,
        local_dir: Path,
        remote_dir: str,
        *,
        progress: ProgressCallback | None = None,
        limits: ScanLimits | None = None,
    ) -> None:
        """Copy the contents of ``local_dir`` into ``remote_dir`` (created) as one streamed tar.

        Raise ``UnsafeCaseFolder`` if the folder is unsafe (before anything is sent) or
        changed while it was sent."""

    def upload_tree(
        self,
        folders: list[tuple[Path, str]],
        remote_base: str,
        *,
        progress: ProgressCallback | None = None,
        limits: ScanLimits | None = None,
    ) -> dict[str, str]:
        """Replace each ``remote_base/<name>`` with its local folder, all in ONE streamed tar.

        Returns ``{name: reason}`` for the folders that were unsafe (not sent) or changed
        while they were sent: those are that case's problem, not the batch's."""

    def download_folders(
        self,
        remote_base: str,
        routes: Mapping[str, Path],
        *,
        staging_keys: Mapping[str, str],
        limits: Limits,
        progress: ProgressCallback | None = None,
    ) -> dict[str, FolderResult]:
        """Bring ``remote_base/<name>`` home to ``routes[name]`` for every name, in ONE ``tar -c``.

        Each folder is unpacked beside its destination (staged under ``staging_keys[name]``)
        and swapped in only if it came through whole; see ``download.py`` and ``untar.py``."""

    def download_dir(
        self,
        remote_dir: str,
        local_dir: Path,
        *,
        staging_key: str | None = None,
        limits: Limits | None = None,
        progress: ProgressCallback | None = None,
    ) -> FolderResult:
        """Replace ``local_dir`` with ``remote_dir``: ``download_folders`` of one folder that
        raises ``FolderRefused`` (definite) or ``OutcomeUnknown`` when it did not come home."""

    def close(self) -> None: ...
