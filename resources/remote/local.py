"""The same ``Transport`` contract on this machine, for the embedded local sandbox.

Commands run through ``sh -c`` like a remote login shell would, and folders move through
the very same tar code and ``tar`` commands as over SSH, so the sandbox exercises the
real path rather than a shortcut (``shutil.copytree`` would accept what SSH refuses).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from . import tarstream
from .errors import BadOutput, OutcomeUnknown
from .transport import CommandResult, ProgressCallback

DEFAULT_TIMEOUT = 60.0
"""For ``run`` without a timeout, and for tar to finish once its stream has ended."""


class _ProgressWriter:
    """Counts bytes into a pipe for the upload progress callback."""

    def __init__(self, pipe: IO[bytes], progress: ProgressCallback | None):
        self._pipe = pipe
        self._progress = progress
        self.sent = 0

    def write(self, data: bytes) -> int:
        self._pipe.write(data)
        self.sent += len(data)
        if self._progress is not None:
            self._progress(self.sent)
        return len(data)


class LocalTransport:
    """``Transport`` via subprocesses; ``shell_env`` is added to this process's environment."""

    def __init__(self, shell_env: Mapping[str, str] | None = None):
        self.env = {**os.environ, **(shell_env or {})}

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float | None = None) -> CommandResult:
        """Run ``sh -c command``; past ``timeout`` its whole process group is killed."""
        limit = DEFAULT_TIMEOUT if timeout is None else timeout
        with self._spawn(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
            try:
                out, err = process.communicate(stdin or b"", timeout=limit)
            except subprocess.TimeoutExpired as error:
                _kill_group(process)
                raise OutcomeUnknown(f"local command {command!r} did not finish in {limit}s") from error
        return CommandResult(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def upload_dir(self, local_dir: Path, remote_dir: str, *, progress: ProgressCallback | None = None) -> None:
        """Copy ``local_dir`` into ``remote_dir`` through ``tar -x`` fed by our tar stream."""
        members = tarstream.case_members(local_dir)
        self._feed(
            tarstream.untar_command(remote_dir),
            lambda out: tarstream.write_tar(local_dir, out, members),
            progress,
        )

    def upload_tree(
        self, folders: list[tuple[Path, str]], remote_base: str, *, progress: ProgressCallback | None = None
    ) -> None:
        """Replace the folders ``remote_base/<name>`` with the local ones through one ``tar -x``."""
        if not folders:
            return
        self._feed(*tarstream.tree_upload(folders, remote_base), progress)

    def _feed(self, command: str, write, progress: ProgressCallback | None) -> None:
        """Run ``command`` with ``write(stream)`` producing its stdin; raise if it failed."""
        with tempfile.TemporaryFile() as err, self._spawn(command, stdout=err, stderr=err) as process:
            try:
                write(_ProgressWriter(process.stdin, progress))
                process.stdin.close()
            except BrokenPipeError:
                pass  # tar gave up early; its exit code and message say why
            except BaseException:
                _kill_group(process)
                raise
            self._finish(process, command, err)

    def download_dir(self, remote_dir: str, local_dir: Path, *, progress: ProgressCallback | None = None) -> None:
        """Replace ``local_dir`` with a copy of ``remote_dir``, unpacked beside it then swapped in."""
        command = tarstream.tar_command(remote_dir)
        with (
            tarstream.staged_dir(local_dir) as staging,
            tempfile.TemporaryFile() as err,
            self._spawn(command, stdout=subprocess.PIPE, stderr=err) as process,
        ):
            try:
                tarstream.extract_tar(tarstream.CountingReader(process.stdout, progress), staging)
            except (tarstream.UnsafeCaseFolder, BadOutput):
                while process.stdout.read(tarstream.CHUNK):  # let tar finish and tell its side
                    pass
                self._finish(process, command, err)  # a failed tar explains a broken stream best
                raise
            self._finish(process, command, err)

    def close(self) -> None:
        """Nothing to close: every command is its own process."""

    def _spawn(self, command: str, **streams) -> subprocess.Popen:
        return subprocess.Popen(
            ["sh", "-c", command],
            stdin=subprocess.PIPE,
            bufsize=0,  # our writes are already large; an unflushed pipe buffer could only fail later
            env=self.env,
            start_new_session=True,  # its own process group, so a timeout kills grandchildren too
            **streams,
        )

    def _finish(self, process: subprocess.Popen, command: str, err: IO[bytes]) -> None:
        """Wait for ``process`` and raise ``CommandFailed`` with its output if it failed."""
        try:
            code = process.wait(timeout=DEFAULT_TIMEOUT)
        except subprocess.TimeoutExpired as error:
            _kill_group(process)
            raise OutcomeUnknown(f"local command {command!r} did not finish") from error
        err.seek(0)
        CommandResult(code, "", err.read().decode(errors="replace")).check(command)


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
