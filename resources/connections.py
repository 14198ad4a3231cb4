"""From a host row to a connection and pueue client.

Only ``resources.contact`` calls ``pueue_for``: every other contact with a host goes through it.
Each contact gets a connection of its own, opened at its first call and closed at its end.
"""

from __future__ import annotations

from django.conf import settings

from .models import HpcHost
from .remote.local import LocalTransport
from .remote.manifest import ScanLimits
from .remote.pueue import PueueClient
from .remote.ssh import Hop, SshTarget, SshTransport
from .remote.transport import Transport
from .remote.untar import Limits
from .validators import parse_proxy_jump


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
        max_output_bytes=settings.MQIC_REMOTE_OUTPUT_MAX_BYTES,
        jumps=tuple(Hop(hostname, port, user) for user, hostname, port in parse_proxy_jump(host.proxy_jump)),
    )


def transport_for(host: HpcHost) -> Transport:
    """A transport of its own, not the process's cached one for the address: a contact closes its
    connection when it ends, which must not cut another contact's command on the same address
    (two hosts on one login node in one pass, two threads of a web server)."""
    if host.is_local:
        return LocalTransport(max_output_bytes=settings.MQIC_REMOTE_OUTPUT_MAX_BYTES)
    return SshTransport(ssh_target(host))


def result_limits() -> Limits:
    """Caps on what one case's results may hold when they come back."""
    return Limits(max_bytes=settings.MQIC_RESULT_MAX_BYTES, max_members=settings.MQIC_RESULT_MAX_MEMBERS)


def upload_limits() -> ScanLimits:
    """Caps on what one case folder may hold to be uploaded."""
    return ScanLimits(max_bytes=settings.MQIC_UPLOAD_MAX_BYTES, max_members=settings.MQIC_UPLOAD_MAX_MEMBERS)


def pueue_for(host: HpcHost) -> PueueClient:
    return PueueClient(transport_for(host), host.pueue_command)
