"""From a host row to a live connection and pueue client; and the host's health line.

Connections are cached per process by the transport layer, so calling these in every
pass costs nothing after the first.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from .models import HpcHost
from .remote.local import LocalTransport
from .remote.pueue import PueueClient
from .remote.ssh import SshTarget, get_transport
from .remote.transport import Transport


def ssh_target(host: HpcHost) -> SshTarget:
    return SshTarget(
        hostname=host.hostname,
        port=host.port,
        username=host.username,
        key_filename=host.key_path or None,
        known_hosts=host.known_hosts_path or None,
        host_key=host.host_key or None,
        connect_timeout=settings.MQIC_SSH_CONNECT_TIMEOUT,
        command_timeout=settings.MQIC_SSH_COMMAND_TIMEOUT,
    )


def transport_for(host: HpcHost) -> Transport:
    if host.is_local:
        return LocalTransport()
    return get_transport(ssh_target(host))


def pueue_for(host: HpcHost) -> PueueClient:
    return PueueClient(transport_for(host), host.pueue_command)


def record_contact(host: HpcHost, error: Exception | None = None) -> None:
    """Keep the host's health line: last success, or the last error as the user should read it."""
    if error is None:
        HpcHost.objects.filter(pk=host.pk).update(last_contact_at=timezone.now(), last_error="")
    else:
        HpcHost.objects.filter(pk=host.pk).update(last_error=f"{timezone.now():%Y-%m-%d %H:%M:%S} {error}")
