"""The HPC hosts a deployment declares: a TOML file, or the single-host ``MQIC_HPC_*`` short form.

``MQIC_HPC_CONFIG`` names a TOML file with one table per host::

    [hosts.cluster-a]
    hostname = "login1.cluster-a.example"   # required for ssh
    port = 22
    user = "mqic"
    key = "/etc/mqic/id_ed25519"
    known_hosts = "/etc/mqic/known_hosts"
    base_dir = "/scratch/mqic/cases"          # required
    pueue = "pueue"                           # pueue itself, maybe with -c CONFIG
    proxy_jump = "mqic@gw.example:22"         # optional: jump host(s), as OpenSSH ProxyJump
    gpu_groups = ["gpu_a", { name = "gpu_b", devices = "2,3" }]   # required
    transport = "ssh"                         # or "local": this machine (the demo)
    allowed_groups = ["lab-a", "alice"]       # optional: the Django groups and users whose cases may
                                              # run here (the operators' always may); absent: everyone

The keys mean what the ``MQIC_HPC_*`` variables mean. ``apply`` makes the rows match and is safe
to repeat; the file is the truth for the groups of the hosts it names. A group no longer listed
is retired: never handed out again, disabled at once if free or else when its case releases it,
and never deleted (old cases point at it). Listed again, it is back in service. A listed group
gets the devices the file gives it (none included) and otherwise keeps the status an operator
gave it. A host the file no longer names is left as it is (it may have been added in the admin).
Everything is checked before anything is written, and every mistake, in every host, is reported
with the host and key it is in.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from .models import GpuGroup, HpcHost
from .services import group_name_for, reinstate_group, retire_groups
from .validators import (
    PUEUE_GROUP_NAME,
    validate_allowed_names,
    validate_proxy_jump,
    validate_pueue_command,
    validate_remote_base_dir,
)

LOCAL_NEEDS_OPT_IN = (
    'transport = "local" runs the jobs on this machine, as the user MQIC runs as, next to its '
    "database, secret key and results: it is for the demo. Set MQIC_ALLOW_LOCAL_TRANSPORT=true to "
    "mean it"
)


class ConfigError(ValueError):
    """The deployment's host configuration is wrong; the message says where and why."""


@dataclass(frozen=True)
class GroupConfig:
    pueue_group: str
    devices: str = ""


@dataclass(frozen=True)
class HostConfig:
    name: str
    base_dir: str
    gpu_groups: tuple[GroupConfig, ...]
    transport: str = HpcHost.Transport.SSH
    hostname: str = "localhost"
    port: int = 22
    user: str = ""
    key: str = ""
    known_hosts: str = ""
    pueue: str = "pueue"
    proxy_jump: str = ""
    allowed_groups: tuple[str, ...] = ()


_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_DEVICES = re.compile(r"[0-9]+(,[0-9]+)*|")
_KEYS = {
    "hostname",
    "port",
    "user",
    "key",
    "known_hosts",
    "base_dir",
    "pueue",
    "gpu_groups",
    "transport",
    "proxy_jump",
    "allowed_groups",
}


def from_settings(settings) -> list[HostConfig]:
    """The hosts the settings declare: the file of ``MQIC_HPC_CONFIG``, else the short form."""
    if settings.MQIC_HPC_CONFIG:
        return read_file(Path(settings.MQIC_HPC_CONFIG))
    return [
        check_host(
            settings.MQIC_HPC_NAME,
            {
                "transport": settings.MQIC_HPC_TRANSPORT,
                "hostname": settings.MQIC_HPC_HOST,
                "port": settings.MQIC_HPC_PORT,
                "user": settings.MQIC_HPC_USER,
                "key": settings.MQIC_HPC_KEY,
                "known_hosts": settings.MQIC_HPC_KNOWN_HOSTS,
                "base_dir": settings.MQIC_HPC_BASE_DIR,
                "pueue": settings.MQIC_PUEUE,
                "gpu_groups": settings.MQIC_GPU_GROUPS,
                "proxy_jump": settings.MQIC_HPC_PROXY_JUMP,
            },
            where="the MQIC_HPC_* settings",
        )
    ]


def read_file(path: Path) -> list[HostConfig]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"MQIC_HPC_CONFIG: cannot read {path}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from error
    hosts = data.get("hosts")
    if set(data) - {"hosts"} or not isinstance(hosts, dict) or not hosts:
        raise ConfigError(f"{path}: expected one [hosts.<name>] table per host and nothing else")
    found, problems = [], []
    for name, table in hosts.items():
        try:
            found.append(check_host(name, table, where=f"{path}: [hosts.{name}]"))
        except ConfigError as error:
            problems.append(str(error))  # and go on: every host's mistakes are reported at once
    if problems:
        raise ConfigError("\n".join(problems))
    return found


def check_host(name: str, table: object, *, where: str) -> HostConfig:
    """One host's settings as a ``HostConfig``, or a ``ConfigError`` listing every mistake."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of settings")
    problems = [f"unknown key {key!r}" for key in sorted(set(table) - _KEYS)]
    if not _NAME.fullmatch(name):
        problems.append("the host name must be lower-case letters, digits, - and _ (at most 64)")
    text = {key: table.get(key, default) for key, default in _TEXT_DEFAULTS.items()}
    problems += [f"{key} must be a string" for key, value in text.items() if not isinstance(value, str)]
    port = table.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        problems.append("port must be a number from 1 to 65535")
    if text["transport"] not in HpcHost.Transport.values:
        problems.append(f"transport must be one of {', '.join(HpcHost.Transport.values)}")
    if text["transport"] == HpcHost.Transport.SSH and not text["hostname"]:
        problems.append("hostname is required for the ssh transport")
    if text["transport"] == HpcHost.Transport.LOCAL and not settings.MQIC_ALLOW_LOCAL_TRANSPORT:
        problems.append(LOCAL_NEEDS_OPT_IN)
    if text["proxy_jump"] and not text["known_hosts"]:
        problems.append("proxy_jump needs known_hosts: the jump hosts' keys are verified against it")
    checks = (
        ("base_dir", validate_remote_base_dir),
        ("pueue", validate_pueue_command),
        ("proxy_jump", validate_proxy_jump),
    )
    for key, validator in checks:
        if isinstance(text[key], str):
            try:
                validator(text[key])
            except ValidationError as error:
                problems.append(f"{key}: {' '.join(error.messages)}")
    groups = _groups(table.get("gpu_groups"), problems)
    allowed = table.get("allowed_groups", [])
    try:
        validate_allowed_names(allowed)
    except ValidationError as error:
        problems.append(f"allowed_groups: {' '.join(error.messages)}")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    return HostConfig(name=name, port=port, gpu_groups=groups, allowed_groups=tuple(allowed), **text)


_TEXT_DEFAULTS = {
    "transport": HpcHost.Transport.SSH,
    "hostname": "",
    "user": "",
    "key": "",
    "known_hosts": "",
    "base_dir": "",
    "pueue": "pueue",
    "proxy_jump": "",
}


def _groups(value: object, problems: list[str]) -> tuple[GroupConfig, ...]:
    if not isinstance(value, list) or not value:
        problems.append("gpu_groups must be a non-empty list of pueue group names")
        return ()
    groups = []
    for item in value:
        entry = {"name": item} if isinstance(item, str) else item
        if (
            not isinstance(entry, dict)
            or set(entry) - {"name", "devices"}
            or not isinstance(entry.get("name"), str)
        ):
            problems.append(f"gpu_groups: {item!r} is neither a name nor {{ name = ..., devices = ... }}")
            continue
        devices = entry.get("devices", "")
        if not PUEUE_GROUP_NAME.fullmatch(entry["name"]):
            problems.append(f"gpu_groups: {entry['name']!r} is not a pueue group name (letters, digits, _ . -)")
        elif not isinstance(devices, str) or not _DEVICES.fullmatch(devices):
            problems.append(f'gpu_groups: devices of {entry["name"]} must look like "0,1"')
        else:
            groups.append(GroupConfig(entry["name"], devices))
    names = [g.pueue_group for g in groups]
    problems += [f"gpu_groups: {n} is listed twice" for n in sorted({n for n in names if names.count(n) > 1})]
    return tuple(groups)


def apply(hosts: list[HostConfig]) -> list[tuple[HpcHost, list[GpuGroup]]]:
    """Make the host and group rows match the configuration (idempotent), in one transaction: a
    mistake only the database shows (a GPU group name already taken) undoes all of it."""
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise ConfigError(f"a host is declared twice: {sorted({n for n in names if names.count(n) > 1})}")
    problems: list[str] = []
    with transaction.atomic():
        applied = [_apply_host(config, problems) for config in hosts]
        if problems:
            raise ConfigError("\n".join(problems))
    return applied


def _apply_host(config: HostConfig, problems: list[str]) -> tuple[HpcHost, list[GpuGroup]]:
    host, _ = HpcHost.objects.update_or_create(
        name=config.name,
        defaults={
            "transport": config.transport,
            "hostname": config.hostname,
            "port": config.port,
            "username": config.user,
            "key_path": config.key,
            "known_hosts_path": config.known_hosts,
            "proxy_jump": config.proxy_jump,
            "base_dir": config.base_dir,
            "pueue_command": config.pueue,
            "allowed_groups": list(config.allowed_groups),
        },
    )
    groups = [_apply_group(host, wanted, problems) for wanted in config.gpu_groups]
    stale = host.gpu_groups.exclude(pueue_group__in=[g.pueue_group for g in config.gpu_groups])
    retire_groups(list(stale.values_list("pk", flat=True)))
    return host, [group for group in groups if group is not None]


def _apply_group(host: HpcHost, wanted: GroupConfig, problems: list[str]) -> GpuGroup | None:
    """The row of one listed group: made, or brought in line (its devices; back in service if it
    had been dropped). ``None``, with the problem noted, when its name is taken."""
    group = host.gpu_groups.filter(pueue_group=wanted.pueue_group).first()
    if group is None:
        name = group_name_for(host, wanted.pueue_group)
        if problem := _name_problem(name):
            problems.append(
                f"host {host.name}: gpu_groups: {wanted.pueue_group} would be GPU group {name}, {problem}"
            )
            return None
        return GpuGroup.objects.create(
            host=host, pueue_group=wanted.pueue_group, name=name, devices=wanted.devices
        )
    if group.retired:
        reinstate_group(group.pk)
    if group.devices != wanted.devices:
        GpuGroup.objects.filter(pk=group.pk).update(devices=wanted.devices)
    group.refresh_from_db()
    return group


def _name_problem(name: str) -> str:
    """Why a new GPU group cannot be called ``name`` (names are global), or ``""``."""
    limit = GpuGroup._meta.get_field("name").max_length
    if len(name) > limit:
        return f"a name longer than {limit} characters: shorten the host or pueue group name"
    taken = GpuGroup.objects.filter(name=name).select_related("host").first()
    if taken is not None:
        return f"a name pueue group {taken.pueue_group} of host {taken.host.name} already has"
    return ""
