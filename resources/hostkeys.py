"""Trusting a host's SSH key: fetched from the host, shown as a fingerprint, stored on the row.

A changed key is refused unless the caller says ``replace`` (after checking the new
fingerprint with the host's administrators): it may be a man in the middle.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from .models import HpcHost
from .remote.errors import ChangedHostKey
from .remote.ssh import fingerprint, scan_host_key


@dataclass(frozen=True)
class OfferedKey:
    key_type: str
    base64: str
    fingerprint: str

    @property
    def line(self) -> str:
        return f"{self.key_type} {self.base64}"


def offered_key(host: HpcHost) -> OfferedKey:
    """The key the host offers now (raises ``OutcomeUnknown`` when it cannot be reached)."""
    return OfferedKey(*scan_host_key(host.hostname, host.port, timeout=settings.MQIC_SSH_CONNECT_TIMEOUT))


def trust(host: HpcHost, key: OfferedKey, *, replace: bool = False) -> bool:
    """Store ``key`` as the host's trusted key; return whether anything changed."""
    if host.host_key == key.line:
        return False
    if host.host_key and not replace:
        old_type, old_base64 = host.host_key.split()[:2]
        raise ChangedHostKey(
            f"HOST KEY CHANGED for {host.name}: it offers {key.key_type} {key.fingerprint}, but the trusted "
            f"key is {old_type} {fingerprint(old_type, old_base64)}. Replace it only once the host's "
            "administrators confirm the new fingerprint.",
            hostname=host.hostname,
            port=host.port,
            key_type=key.key_type,
            fingerprint=key.fingerprint,
        )
    HpcHost.objects.filter(pk=host.pk).update(host_key=key.line, last_error="")
    return True
