"""Accounts of the test sshd with another login shell, as real sites have them.

An SSH exec request runs ``<login shell> -c <command>``, so every shell the remote account may
have is a remote MQIC must work with (``resources/remote/script.py``). ``ShellAccount`` is a fresh
Unix account whose login shell is bash, dash, zsh, tcsh or fish (Debian packages, installed when
missing), which logs in with the sshd's client key, whose rc files talk on stdout and stderr for
every command as site banners and ``module`` messages do, and whose HOME has a space in it. Its
pueued (real pueue, ``RealPueue(user=...)``) runs as the account. Root only (``useradd``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

SHELLS = {
    "bash": ("/bin/bash", "bash"),
    "dash": ("/bin/dash", "dash"),
    "zsh": ("/usr/bin/zsh", "zsh"),
    "tcsh": ("/usr/bin/tcsh", "tcsh"),
    "fish": ("/usr/bin/fish", "fish"),
}
"""Login shell: (its path, the Debian package that has it)."""
BANNER = "Welcome to the test cluster ({shell})"
MODULE_NOTE = "module: gcc/12 loaded ({shell})"

RC_FILES = {
    # sshd runs bash as a non-interactive shell that still reads ~/.bashrc (Debian's bash, like most).
    "bash": {".bashrc": 'echo "{banner}"; echo "{note}" >&2\n'},
    # dash -c reads no rc file: a quiet account, as many are.
    "dash": {},
    "zsh": {".zshenv": 'echo "{banner}"; echo "{note}" >&2\n'},
    "tcsh": {".tcshrc": 'echo "{banner}"\necho "{note}" > /dev/stderr\n'},
    "fish": {".config/fish/config.fish": 'echo "{banner}"; echo "{note}" >&2\n'},
}


def ensure_shell(shell: str) -> str:
    path, package = SHELLS[shell]
    if not Path(path).exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", package]
        if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
            subprocess.run(install, env=env, check=True, capture_output=True)
    return path


class ShellAccount:
    """A fresh account with ``shell`` as its login shell; ``close()`` removes it and its processes."""

    def __init__(self, shell: str, public_key: str):
        self.shell = shell
        self.name = f"mq{shell}{secrets.token_hex(3)}"
        self.top = Path(tempfile.mkdtemp(prefix="mqic-acct-"))
        self.top.chmod(0o755)
        self.home = self.top / "home of mqic"
        login_shell = ensure_shell(shell)
        subprocess.run(
            ["useradd", "--create-home", "--home-dir", str(self.home), "--shell", login_shell, self.name],
            check=True,
            capture_output=True,
        )
        # sshd without PAM refuses key logins to a locked account ("!" in the password field).
        subprocess.run(["usermod", "-p", "*", self.name], check=True, capture_output=True)
        self._write(".ssh/authorized_keys", public_key + "\n", mode=0o600)
        for name, text in RC_FILES[shell].items():
            self._write(name, text.format(banner=self.banner, note=self.note))

    @property
    def banner(self) -> str:
        return BANNER.format(shell=self.shell)

    @property
    def note(self) -> str:
        return MODULE_NOTE.format(shell=self.shell)

    def _write(self, name: str, text: str, mode: int = 0o644) -> None:
        path = self.home / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        subprocess.run(["chown", "-R", f"{self.name}:", str(self.home)], check=True)

    def close(self) -> None:
        subprocess.run(["pkill", "-KILL", "-u", self.name], capture_output=True, check=False)
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["userdel", self.name], capture_output=True, check=True)
        shutil.rmtree(self.top, ignore_errors=True)
