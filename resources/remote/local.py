"""The same ``Transport`` contract on this machine, for the embedded local sandbox.

Commands run as framed scripts of ``sh`` exactly as over SSH (``script``), and folders move
through the very same tar code and ``tar`` commands as over SSH, so the sandbox exercises the
real path rather than a shortcut (``shutil.copytree`` would accept what SSH refuses).
Output is read within the same caps as over SSH; where SSH drops its connection, the
command's process group is killed.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import IO

from . import download, tarstream
from .errors import BadOutput, OutcomeUnknown
from .script import OVERHEAD, Framed, Unwrapped
from .transport import CommandResult, ProgressCallback
from .untar import Extraction

DEFAULT_TIMEOUT = 60.0
"""For ``run`` without a timeout, and for tar to finish once its stream has ended."""
STDERR_MAX_BYTES = 4 << 20
"""Error output is for people and logs; more than this is not read."""
READ_SIZE = 1 << 16
PIPE_CHUNK = 1 << 16


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


class LocalTransport(tarstream.Uploads, download.Downloads):
    """``Transport`` via subprocesses, in a minimal environment (``minimal_env``) plus ``shell_env``.

    ``max_output_bytes`` caps a command's stdout as ``SshTarget.max_output_bytes`` does.
    """

    def __init__(self, shell_env: Mapping[str, str] | None = None, max_output_bytes: int = 256 << 20):
        self.env = {**minimal_env(), **(shell_env or {})}
        self.max_output_bytes = max_output_bytes

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float | None = None) -> CommandResult:
        """Run ``command`` through ``sh -s``; past ``timeout`` its whole process group is killed, and
        so it is when its output passes the caps (``BadOutput``)."""
        limit = DEFAULT_TIMEOUT if timeout is None else timeout
        framed = Framed(command)
        with self._spawn(framed, bool(stdin), stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
            try:
                feed = framed.script + (stdin or b"")
                out, err = _communicate(process, feed, time.monotonic() + limit, self.max_output_bytes + OVERHEAD)
            except subprocess.TimeoutExpired as error:
                _kill_group(process)
                raise OutcomeUnknown(f"local command {command!r} did not finish in {limit}s") from error
            except _TooMuch as error:
                _kill_group(process)
                raise BadOutput(f"{error} of local command {command!r} exceeded {error.limit} bytes") from None
        out_text, err_text = out.decode(errors="replace"), err.decode(errors="replace")
        return framed.result(process.returncode, out_text, err_text, max_stdout=self.max_output_bytes)

    def _send_tar(self, command: str, write, progress: ProgressCallback | None) -> None:
        """Run ``command`` with ``write(stream)`` producing its stdin; raise if it failed."""
        framed = Framed(command)
        with (
            tempfile.TemporaryFile() as err,
            self._spawn(framed, True, stdout=subprocess.DEVNULL, stderr=err) as process,
        ):
            try:
                process.stdin.write(framed.script)
                write(_ProgressWriter(process.stdin, progress))
                process.stdin.close()
            except BrokenPipeError:
                pass  # tar gave up early; its exit code and message say why
            except BaseException:
                _kill_group(process)
                raise
            self._wait(process, command, err, framed).check(command)

    def _stream_tar(
        self, command: str, consume: Callable[[IO[bytes]], Extraction]
    ) -> tuple[Extraction, CommandResult | None]:
        """``download.StreamTar``: a stream left unread to its end is not drained, tar is killed."""
        framed = Framed(command)
        with (
            tempfile.TemporaryFile() as err,
            self._spawn(framed, False, stdout=subprocess.PIPE, stderr=err) as process,
        ):
            process.stdin.write(framed.script)
            process.stdin.close()
            try:
                extraction = consume(Unwrapped(process.stdout, framed))
            except BaseException:
                _kill_group(process)
                raise
            if not extraction.exhausted:
                _kill_group(process)
                return extraction, None
            return extraction, self._wait(process, command, err, framed)

    def close(self) -> None:
        """Nothing to close: every command is its own process."""

    def _spawn(self, framed: Framed, data_follows: bool, **streams) -> subprocess.Popen:
        """The login line run by ``sh -c``, as a login shell would run it; the caller feeds the script."""
        return subprocess.Popen(
            ["sh", "-c", framed.login_command(data_follows=data_follows)],
            stdin=subprocess.PIPE,
            bufsize=0,  # our writes are already large; an unflushed pipe buffer could only fail later
            env=self.env,
            start_new_session=True,  # its own process group, so a timeout kills grandchildren too
            **streams,
        )

    def _wait(self, process: subprocess.Popen, command: str, err: IO[bytes], framed: Framed) -> CommandResult:
        """Wait for ``process``: its framed exit code and (the start of) what it wrote to ``err``;
        stdout, a stream, was consumed (or, for an upload, shares the file of ``err``)."""
        try:
            code = process.wait(timeout=DEFAULT_TIMEOUT)
        except subprocess.TimeoutExpired as error:
            _kill_group(process)
            raise OutcomeUnknown(f"local command {command!r} did not finish") from error
        err.seek(0)
        return framed.result(code, None, err.read(STDERR_MAX_BYTES + OVERHEAD).decode(errors="replace"))


KEPT = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR")
"""What a local command (and so a job: pueue copies its caller's environment into each task) gets
of MQIC's own environment. Never the rest: it holds the database URL, the secret key, the mail
password and the metrics token, none of which a job may read."""


def minimal_env() -> dict[str, str]:
    """A login-like environment, as a job on a remote host gets from its account."""
    env = {name: os.environ[name] for name in KEPT if name in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["SHELL"] = "/bin/sh"
    return env


class _TooMuch(Exception):
    """A stream of a local command passed its cap: the command is killed, not read on."""

    def __init__(self, what: str, limit: int):
        super().__init__(what)
        self.limit = limit


def _communicate(process: subprocess.Popen, stdin: bytes, deadline: float, out_limit: int) -> tuple[bytes, bytes]:
    """``Popen.communicate`` with caps: feed ``stdin``, read stdout and stderr side by side,
    raise ``_TooMuch`` as soon as one passes its cap and ``TimeoutExpired`` at ``deadline``."""
    caps = {process.stdout: ("output", out_limit), process.stderr: ("error output", STDERR_MAX_BYTES + OVERHEAD)}
    got: dict[IO[bytes], bytearray] = {pipe: bytearray() for pipe in caps}
    pending = memoryview(stdin)
    with selectors.DefaultSelector() as selector:
        for pipe in caps:
            selector.register(pipe, selectors.EVENT_READ)
        if pending:
            os.set_blocking(process.stdin.fileno(), False)
            selector.register(process.stdin, selectors.EVENT_WRITE)
        else:
            process.stdin.close()
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(process.args, 0)
            for key, _events in selector.select(remaining):
                if key.fileobj is process.stdin:
                    pending = _write_some(process.stdin, pending)
                    if not pending:
                        selector.unregister(process.stdin)
                        process.stdin.close()
                    continue
                data = os.read(key.fd, READ_SIZE)
                if not data:
                    selector.unregister(key.fileobj)
                    continue
                what, cap = caps[key.fileobj]
                if len(got[key.fileobj]) + len(data) > cap:
                    raise _TooMuch(what, cap)
                got[key.fileobj] += data
    remaining = max(0.0, deadline - time.monotonic())
    process.wait(timeout=remaining)
    return bytes(got[process.stdout]), bytes(got[process.stderr])


def _write_some(pipe: IO[bytes], pending: memoryview) -> memoryview:
    """Write what the pipe takes now; a command that stops reading its stdin gets no more."""
    try:
        return pending[os.write(pipe.fileno(), pending[:PIPE_CHUNK]) :]
    except BrokenPipeError:
        return memoryview(b"")


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
