"""The error taxonomy that every caller of the remote side relies on.

Recovery is only safe if "we could not ask" is never mistaken for "the answer was no".
So every failure is one of two kinds:

* ``OutcomeUnknown``: we do not know what happened on the remote side (connection
  refused or lost, timeout, authentication or host-key problem). A command may or may
  not have run. Callers must change nothing and try again later.
* ``CommandFailed``: the command ran to completion and exited non-zero; its output is
  attached. The remote side told us something definite.

``BadOutput`` is a command that exited 0 but printed something we cannot understand;
it is definite about nothing and so is also treated as unknown by callers.
"""


class RemoteError(Exception):
    """Base class for everything that goes wrong talking to an HPC host."""


class OutcomeUnknown(RemoteError):
    """We could not learn whether the remote command ran, or what it did."""


class HostKeyError(OutcomeUnknown):
    """The host's key is not the one we trust; we refused to talk to it."""

    def __init__(self, message: str, *, hostname: str, port: int, key_type: str, fingerprint: str):
        super().__init__(message)
        self.hostname = hostname
        self.port = port
        self.key_type = key_type
        self.fingerprint = fingerprint


class UnknownHostKey(HostKeyError):
    """The host offered a key we have never trusted."""


class ChangedHostKey(HostKeyError):
    """The host offered a key different from the trusted one: possibly an attack."""


class BadOutput(OutcomeUnknown):
    """The command succeeded but its output could not be parsed."""


class FolderRefused(RemoteError):
    """A folder did not come home: missing on the host, or its content refused (over a
    cap, an unsafe name, a top-level link). Definite: asking again gives the same answer."""


class CommandFailed(RemoteError):
    """The command ran and exited non-zero."""

    def __init__(self, message: str, *, command: str, exit_code: int, stdout: str = "", stderr: str = ""):
        super().__init__(message)
        self.command = command
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
