"""Trusting a host's SSH key: the key it offers now, against every key MQIC already trusts for it.

A host's trusted key lives in ONE place: its known_hosts file when the host names one (the file
is written, so that ``ssh`` and MQIC agree), else the host row. A key the host offers that
differs from a trusted one, in either place, is a MISMATCH: perhaps a man in the middle, perhaps
a reinstalled host. It is never trusted in one click; replacing it is an explicit step
(``replace``) taken after comparing both fingerprints with the host's administrators. A row
and a file that hold different keys are a mismatch too: MQIC refuses to connect until one is
fixed, rather than letting either win silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from .contact import contact
from .models import HpcHost
from .remote.errors import ChangedHostKey
from .remote.ssh import fingerprint
from .validators import parse_proxy_jump


@dataclass(frozen=True)
class OfferedKey:
    key_type: str
    base64: str
    fingerprint: str

    @property
    def line(self) -> str:
        return f"{self.key_type} {self.base64}"


@dataclass(frozen=True)
class KeyCheck:
    """The key a host offers now, against the keys trusted for it on its row and in its file."""

    offered: OfferedKey
    row: str = ""
    """The fingerprint trusted on the host row ("" when none)."""
    file: list[str] = field(default_factory=list)
    """The fingerprints the host's known_hosts file holds for it."""

    @property
    def trusted(self) -> list[str]:
        return [fp for fp in [self.row, *self.file] if fp]

    @property
    def state(self) -> str:
        """ "new" (nothing trusted yet), "trusted" (the offered key, and the row and file agree) or
        "mismatch" (another key is trusted: maybe a man in the middle)."""
        if not self.trusted:
            return "new"
        agree = not (self.row and self.file and self.row not in self.file)
        return "trusted" if agree and self.offered.fingerprint in self.trusted else "mismatch"

    def describe(self, host: HpcHost) -> str:
        where = []
        if self.file:
            where.append(f"its known_hosts file {host.known_hosts_path} holds {', '.join(self.file)}")
        if self.row:
            where.append(f"its row holds {self.row}")
        return (
            f"HOST KEY MISMATCH for {host.name}: it offers {self.offered.key_type} {self.offered.fingerprint}, "
            f"but {' and '.join(where)}. Someone may be intercepting the connection, or the host was "
            "reinstalled. Replace the trusted key only once the host's administrators confirm the new fingerprint."
        )


@dataclass(frozen=True)
class JumpHost:
    """A jump host of ``host``, as the functions here see a host: its key lives in the host's
    known_hosts file (``proxy_jump`` needs one), never on a row."""

    name: str
    hostname: str
    port: int
    known_hosts_path: str
    host_key: str = ""
    pk: None = None


def jump_hosts(host: HpcHost) -> list[JumpHost]:
    """The host's jump hosts, in the order a connection passes them."""
    return [
        JumpHost(f"{host.name} (jump host {n + 1}: {hostname}:{port})", hostname, port, host.known_hosts_path)
        for n, (_user, hostname, port) in enumerate(parse_proxy_jump(host.proxy_jump))
    ]


def offered_key(host: HpcHost, hop: int | None = None) -> OfferedKey:
    """The key the host (or its jump host number ``hop``, from 0) offers now, asked through the
    contact seam, through the jump hosts before it; forced, since an operator asks (back-off or
    not). Raises the ``RemoteError`` when it cannot be reached."""
    with contact(host, force=True) as link:
        key = OfferedKey(*link.offered_key(hop))
    if link.failed:
        raise link.error
    return key


def check(host: HpcHost, key: OfferedKey) -> KeyCheck:
    return KeyCheck(key, row=row_fingerprint(host), file=file_fingerprints(host))


def row_fingerprint(host: HpcHost) -> str:
    """The fingerprint of the key stored on the row, "" when none (or it cannot be read)."""
    try:
        key_type, key_base64 = host.host_key.split()[:2]
        return fingerprint(key_type, key_base64)
    except ValueError:
        return ""


def file_fingerprints(host: HpcHost) -> list[str]:
    """The fingerprints the host's known_hosts file holds for it (none without a file)."""
    return [fingerprint(e.key.get_name(), e.key.get_base64()) for e in _entries(host) if _names(e, host)]


def trust(host: HpcHost, key: OfferedKey, *, replace: bool = False) -> bool:
    """Trust ``key`` for ``host``; return whether anything changed. A mismatch needs ``replace``."""
    found = check(host, key)
    if found.state == "trusted":
        return False
    if found.state == "mismatch" and not replace:
        raise ChangedHostKey(
            found.describe(host),
            hostname=host.hostname,
            port=host.port,
            key_type=key.key_type,
            fingerprint=key.fingerprint,
        )
    if host.known_hosts_path:
        _write_file(host, key)
        HpcHost.objects.filter(pk=host.pk).update(host_key="", last_error="")
    else:
        HpcHost.objects.filter(pk=host.pk).update(host_key=key.line, last_error="")
    return True


def host_key_name(host: HpcHost) -> str:
    """The host as known_hosts names it: ``[host]:port`` unless the port is 22."""
    return host.hostname if host.port == 22 else f"[{host.hostname}]:{host.port}"


def _entries(host: HpcHost) -> list[paramiko.hostkeys.HostKeyEntry]:
    path = Path(host.known_hosts_path) if host.known_hosts_path else None
    if path is None or not path.exists():
        return []
    entries = (paramiko.hostkeys.HostKeyEntry.from_line(line) for line in path.read_text().splitlines())
    return [e for e in entries if e is not None]


def _names(entry: paramiko.hostkeys.HostKeyEntry, host: HpcHost) -> bool:
    """Whether a known_hosts entry is for this host (plain or hashed names)."""
    name = host_key_name(host)
    for pattern in entry.hostnames:
        if pattern == name:
            return True
        if pattern.startswith("|1|") and paramiko.HostKeys.hash_host(name, pattern) == pattern:
            return True
    return False


def _write_file(host: HpcHost, key: OfferedKey) -> None:
    """The host's lines in its known_hosts file become this one key; other hosts' lines stay."""
    path = Path(host.known_hosts_path)
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [
        line
        for line in lines
        if (entry := paramiko.hostkeys.HostKeyEntry.from_line(line)) is None or not _names(entry, host)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([*kept, f"{host_key_name(host)} {key.line}"]) + "\n")
