"""Where a case wants to run: an optional file in its folder naming a host or a GPU group.

A case folder may hold ``MQIC_PLACEMENT_FILE`` (default ``placement.toml``), for instance::

    host = "cluster-a"        # any free GPU group of this host
    gpu_group = "gpu_b"       # exactly this GPU group (its MQIC name, as the admin lists it)

Without the file a case goes to any free GPU group of any enabled host. The file is read when
the case is registered, like the rest of the folder: opened without following links, at most
``MAX_BYTES``; a file that cannot be read, is not TOML, has other keys or names a host or group
MQIC does not know rejects the case with the reason (fix it and use "Re-check folder" or retry).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from resources.jobqueue import UnsafeFolder
from resources.models import GpuGroup, HpcHost

MAX_BYTES = 4096


@dataclass(frozen=True)
class Placement:
    host: str = ""
    gpu_group: str = ""


ANYWHERE = Placement()


def read_placement(root: Path) -> Placement:
    """The case's placement wish (empty without the file), or ``UnsafeFolder`` saying what is wrong."""
    name = settings.MQIC_PLACEMENT_FILE
    try:
        fd = os.open(Path(root, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return ANYWHERE
    except OSError as error:
        raise UnsafeFolder(f"{name} cannot be read: {error.strerror}") from error
    with os.fdopen(fd, "rb") as file:
        data = file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise UnsafeFolder(f"{name} is longer than {MAX_BYTES} bytes")
    try:
        wish = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise UnsafeFolder(f"{name} is not valid TOML: {error}") from error
    if set(wish) - {"host", "gpu_group"} or not all(isinstance(v, str) for v in wish.values()):
        raise UnsafeFolder(f'{name} may only say host = "..." and/or gpu_group = "..."')
    return checked(Placement(**wish), name)


def checked(wish: Placement, where: str) -> Placement:
    """The wish, if it names what exists: a known host, a known group (on that host, if both)."""
    if wish.host and not HpcHost.objects.filter(name=wish.host).exists():
        known = ", ".join(HpcHost.objects.values_list("name", flat=True)) or "none"
        raise UnsafeFolder(f"{where} names host {wish.host!r}, which MQIC does not know (hosts: {known})")
    if wish.gpu_group:
        group = GpuGroup.objects.filter(name=wish.gpu_group).select_related("host").first()
        if group is None:
            raise UnsafeFolder(f"{where} names GPU group {wish.gpu_group!r}, which MQIC does not know")
        if wish.host and group.host.name != wish.host:
            raise UnsafeFolder(
                f"{where}: GPU group {wish.gpu_group} is on host {group.host.name}, not {wish.host}"
            )
    return wish
