"""How every command reaches a host: POSIX ``sh`` reads it on stdin, framed by a fresh tag.

An SSH exec request is run by the account's login shell, which is the site's choice: bash, dash,
zsh, tcsh, fish... Each reads a command line its own way (tcsh has no ``r=$?``, fish exits 0 on a
line it cannot parse, zsh does not split ``$p``). So the login shell is only ever given a line that
every shell runs alike, and the real command travels on stdin as a script for ``sh``
(``Framed.login_command``): ``sh -s`` when the command reads nothing, and for a command that streams
data in (an upload) ``sh -c 'eval "$(dd bs=1 count=N)"'``, which reads exactly the script's N bytes
and leaves the data that follows to the command (``sh -s`` would not: dash reads its input in
blocks, the data with it). Both lines are single words or single-quoted text without a backslash,
``!`` or newline, which bash, dash, zsh, tcsh and fish all hand on unchanged.

Nothing printed outside MQIC's frame is data: rc files that greet on stdout or stderr, ``module``
messages, a shell that failed to start. The command runs between marker lines carrying a random
tag made for this one command (``Framed``): stdout is what lies between ``<tag> begin`` and
``<tag> end <code>``, stderr likewise, and the exit code is the one the frame carries, never the
login shell's. No frame, or one cut short, is "outcome unknown" (``OutcomeUnknown``): silence is
never success. Both transports (SSH and local) run commands only through this module.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

from .errors import BadOutput, OutcomeUnknown
from .transport import CommandResult

PREAMBLE_MAX = 1 << 20
"""What a login environment may print before the frame begins; more is not read on."""
OVERHEAD = PREAMBLE_MAX + 4096
"""What a transport reads of a stream beyond the command's own cap: the preamble and the frame."""
FUNCTION = "mqic_command"


@dataclass(frozen=True)
class Framed:
    """One command and the tag that frames its answer."""

    command: str
    tag: str = field(default_factory=lambda: f"MQIC-{secrets.token_hex(16)}")

    @property
    def script(self) -> bytes:
        """The script ``sh -s`` reads. The command is the body of a function, so that the whole of it
        is read before the last line runs it, and a subshell, so that an ``exit`` in it still comes
        back to the end marker; the last line ends with ``exit``, so that nothing after it (the
        rest of an upload's data, if the command left any) is ever read as a command."""
        begin, end = f"'{self.tag} begin'", f"'{self.tag} end'"
        call = (
            f"printf '%s\\n' {begin}; printf '%s\\n' {begin} >&2; {FUNCTION}; mqic_code=$?; "
            f"printf '\\n%s %s\\n' {end} \"$mqic_code\"; printf '\\n%s %s\\n' {end} \"$mqic_code\" >&2; "
            'exit "$mqic_code"'
        )
        return f"{FUNCTION}() (\n{self.command}\n)\n{call}\n".encode()

    def login_command(self, *, data_follows: bool) -> str:
        """What the login shell runs; the script comes first on stdin, then the data, if any."""
        if not data_follows:
            return "sh -s"
        return f"sh -c 'eval \"$(dd bs=1 count={len(self.script)} 2>/dev/null)\"'"

    @property
    def begin(self) -> bytes:
        return f"{self.tag} begin\n".encode()

    def result(
        self, exit_status: int, stdout: str | None, stderr: str, *, max_stdout: int | None = None
    ) -> CommandResult:
        """The command's own result, from inside its frames. ``stdout=None`` for a command whose
        stdout was consumed as a stream (it went through ``Unwrapped``): the exit code then comes
        from the stderr frame alone. Output past ``max_stdout`` is ``BadOutput``."""
        err = _between(self.tag, stderr)
        out = _between(self.tag, stdout) if stdout is not None else ("", err[1] if err else None)
        if err is None or out is None or err[1] is None or out[1] is None or err[1] != out[1]:
            said = (stderr.strip() or (stdout or "").strip())[-300:]
            raise OutcomeUnknown(
                f"no framed answer from the host's sh (the connection exited {exit_status}); "
                f"the command's outcome is unknown. What the host said: {said!r}"
            )
        if max_stdout is not None and len(out[0]) > max_stdout:
            raise BadOutput(f"output of {self.command[:200]!r} exceeded {max_stdout} bytes")
        return CommandResult(exit_code=out[1], stdout=out[0], stderr=err[0])


def _between(tag: str, text: str) -> tuple[str, int | None] | None:
    """(what the command printed, its exit code) from one stream; None without a begin marker,
    code None when the end marker is missing (the command was cut short)."""
    begin = f"{tag} begin\n"
    start = text.find(begin)
    if start < 0:
        return None
    body = text[start + len(begin) :]
    end = re.search(rf"\n{re.escape(tag)} end (\d+)\n", body)
    if end is None:
        return body, None
    return body[: end.start()], int(end[1])


class Unwrapped:
    """``read(n)`` over a command's stdout from just after its begin marker, for a consumer of a
    stream (a tar download). What a login environment printed before it is read past, up to
    ``PREAMBLE_MAX``; the end marker that follows the stream is left to the consumer, which reads
    past what follows an archive's end anyway."""

    def __init__(self, stream, framed: Framed):
        self._stream = stream
        self._begin = framed.begin
        self._pending: bytes | None = None

    def read(self, size: int) -> bytes:
        if self._pending is None:
            self._pending = self._skip_preamble()
        if self._pending:
            piece, self._pending = self._pending[:size], self._pending[size:]
            return piece
        return self._stream.read(size)

    def _skip_preamble(self) -> bytes:
        seen = b""
        while (at := seen.find(self._begin)) < 0:
            if len(seen) > PREAMBLE_MAX:
                raise BadOutput(f"no frame within the first {PREAMBLE_MAX} bytes of a stream from the host")
            chunk = self._stream.read(1 << 16)
            if not chunk:
                raise OutcomeUnknown("the host's sh printed no frame before its stream ended")
            seen += chunk
        return seen[at + len(self._begin) :]
