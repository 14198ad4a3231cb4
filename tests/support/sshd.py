"""A real OpenSSH server on 127.0.0.1 for tests, in a temporary folder of its own.

Recipe and costs: docs/sshd-on-loopback.md. The server runs in the
foreground (``sshd -D``) as our child, so stopping it can reap it even where PID 1 does
not reap orphans. A missing sshd is installed with apt-get rather than skipped: the
transport tests are worthless without a real server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from resources.remote.ssh import SshTarget

SSHD = Path("/usr/sbin/sshd")
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0


def ensure_sshd_installed() -> None:
    """Install openssh-server if absent (CI may start on a fresh Debian machine)."""
    if SSHD.exists():
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"{SSHD} is missing and only root can apt-get install openssh-server")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "openssh-server"]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(install, env=env, check=True)


def generate_key(path: Path) -> str:
    """Create an ed25519 key pair at ``path`` (no passphrase); return the public "type base64" text."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mqic-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    key_type, blob = path.with_name(path.name + ".pub").read_text().split()[:2]
    return f"{key_type} {blob}"


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (Linux /proc): sshd forks one process per connection."""
    children = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The fields after the ")" that closes the command name are: state, ppid, ...
            ppid = int(stat_file.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                children.append(int(stat_file.parent.name))
    return children


def _terminate(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


class SshServer:
    """One sshd with its own host key, client key, known_hosts and PATH for remote commands.

    ``path_dirs`` are put in front of the remote PATH with sshd_config ``SetEnv``, which
    OpenSSH applies after its default environment. The login shell's rc files may still
    prepend their own entries (root's bashrc here adds pyenv), so what is guaranteed is
    that these directories come before the system directories.
    """

    def __init__(self, path_dirs: list[Path] | None = None, options: dict[str, str] | None = None):
        """``options``: sshd_config keywords that replace the defaults (a site's limits, such as
        ``MaxSessions 1``)."""
        self.path_dirs = [Path(d) for d in path_dirs or []]
        self.options = {"MaxStartups": "200", "MaxSessions": "200", **(options or {})}
        self.username = getpass.getuser()
        self.workdir: Path | None = None
        self.port = 0
        self.host_key = ""
        self._process: subprocess.Popen | None = None

    # -- files -----------------------------------------------------------------------

    @property
    def client_key(self) -> Path:
        return self._path("client_key")

    @property
    def known_hosts(self) -> Path:
        return self._path("known_hosts")

    @property
    def log(self) -> Path:
        return self._path("sshd.log")

    def _path(self, name: str) -> Path:
        if self.workdir is None:
            raise RuntimeError("SshServer is not started")
        return self.workdir / name

    def remote_path(self) -> str:
        """The PATH remote commands get: our directories, then the usual system ones."""
        system = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        return ":".join([*(str(d) for d in self.path_dirs), system])

    def _write_config(self) -> Path:
        lines = [
            f"Port {self.port}",
            f"ListenAddress {LOOPBACK}",
            f"HostKey {self._path('host_key')}",
            # Another account reads its own (sshd opens the file as the account: ours is root's).
            f"AuthorizedKeysFile {self._path('authorized_keys')} .ssh/authorized_keys",
            f"PidFile {self._path('sshd.pid')}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            *(f"{keyword} {value}" for keyword, value in self.options.items()),
            "Subsystem sftp internal-sftp",
            f'SetEnv "PATH={self.remote_path()}"',
        ]
        config = self._path("sshd_config")
        config.write_text("\n".join(lines) + "\n")
        return config

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> SshServer:
        ensure_sshd_installed()
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="mqic-sshd-"))
        self.host_key = generate_key(self._path("host_key"))
        client_public = generate_key(self.client_key)
        self._path("authorized_keys").write_text(client_public + "\n")
        for _attempt in range(3):  # another process may grab the free port before sshd binds it
            self.port = free_port()
            self.known_hosts.write_text(f"[{LOOPBACK}]:{self.port} {self.host_key}\n")
            if self._launch():
                return self
        raise RuntimeError(f"sshd did not start; log:\n{self.log.read_text()}")

    def restart(self) -> SshServer:
        """Start again after ``stop()`` with the same port and keys, as a rebooted host would."""
        if not self._launch():
            raise RuntimeError(f"sshd did not restart on port {self.port}; log:\n{self.log.read_text()}")
        return self

    def _launch(self) -> bool:
        """Start sshd in the foreground; True once it answers with an SSH banner."""
        config = self._write_config()
        self._process = subprocess.Popen([str(SSHD), "-D", "-f", str(config), "-E", str(self.log)])
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            if self._answers_banner():
                return True
            time.sleep(0.02)
        self.stop()
        return False

    def _answers_banner(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1) as sock:
                return sock.recv(8).startswith(b"SSH-")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill sshd by the pid in its PidFile, and the sessions it forked, as when a host goes down.

        Killing the listener alone would leave open connections working, which is not what
        a test of a stopped server means. Sessions go first, so that the listener reaps them.
        """
        if self._process is None:
            return
        pid_file = self._path("sshd.pid")
        pid = int(pid_file.read_text()) if pid_file.exists() else self._process.pid
        sessions = _children(pid)
        _terminate(sessions)
        deadline = time.monotonic() + START_TIMEOUT
        while any(Path(f"/proc/{session}").exists() for session in sessions) and time.monotonic() < deadline:
            time.sleep(0.01)
        _terminate([pid])
        self._process.wait(timeout=START_TIMEOUT)
        self._process = None

    def cleanup(self) -> None:
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.cleanup()

    def target(self, **overrides) -> SshTarget:
        """An SshTarget that logs in to this server with the generated key; fields overridable."""
        target = SshTarget(
            hostname=LOOPBACK,
            port=self.port,
            username=self.username,
            key_filename=str(self.client_key),
            known_hosts=str(self.known_hosts),
            host_key=None,
            connect_timeout=5.0,
            command_timeout=30.0,
            keepalive_interval=5.0,
        )
        return dataclasses.replace(target, **overrides)
