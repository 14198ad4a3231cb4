"""What a host row may say about how to reach it: no field is ever shell text.

The pueue command is run on the HPC host through a shell; each of its words is quoted, but the
first word chooses the program, so ``sh -c …`` would still be any command at all. It must be
pueue itself (a name or a path whose last part starts with ``pueue``), optionally followed by
pueue's own ``-c/--config`` or ``-p/--profile`` options. The base directory is where MQIC
creates and removes case folders: an absolute, normalised path, never ``/`` itself.
"""

from __future__ import annotations

import posixpath
import re
import shlex

from django.core.exceptions import ValidationError

_WORD = re.compile(r"[A-Za-z0-9_./+,=@%:~-]+")
_TILDE = "a '~' is not expanded: every word is quoted for the host's shell; write the absolute path"
_OPTIONS = {"-c", "--config", "-p", "--profile"}


def validate_pueue_command(value: str) -> None:
    try:
        words = shlex.split(value)
    except ValueError as error:
        raise ValidationError(f"not a command line: {error}") from error
    if not words:
        raise ValidationError("the pueue command is empty")
    for word in words:
        if not _WORD.fullmatch(word):
            raise ValidationError(
                f"{word!r} is not allowed: only letters, digits and . / _ + , = @ % : ~ - (no shell syntax)"
            )
    if any(word.startswith("~") for word in words):
        raise ValidationError(f"{_TILDE} (for example /home/mqic/.config/pueue/pueue.yml)")
    program, options = words[0], words[1:]
    if not posixpath.basename(program).startswith("pueue") or program.startswith("-"):
        raise ValidationError(f"the command must run pueue (a name or path ending in pueue…), not {program!r}")
    if len(options) % 2 or any(flag not in _OPTIONS for flag in options[::2]):
        raise ValidationError("after the program only pueue's -c/--config FILE and -p/--profile NAME are allowed")
    if any(value.startswith("-") for value in options[1::2]):
        raise ValidationError("an option value must not start with '-'")


def validate_remote_base_dir(value: str) -> None:
    if not value.startswith("/"):
        raise ValidationError("the remote base directory must be an absolute path")
    if posixpath.normpath(value) == "/":
        raise ValidationError("the remote base directory cannot be / itself: MQIC removes folders below it")
    if posixpath.normpath(value) != value.rstrip("/") or "\0" in value or "\n" in value:
        raise ValidationError("the remote base directory must be a normalised path (no '..', '//' or '.')")


_HOP = re.compile(
    r"(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]{0,63})@)?(?P<host>[A-Za-z0-9][A-Za-z0-9.-]{0,252})(?::(?P<port>[0-9]{1,5}))?"
)


def parse_proxy_jump(value: str) -> list[tuple[str | None, str, int]]:
    """OpenSSH ``ProxyJump``: ``[user@]host[:port]``, comma-separated for a chain of gateways, as
    ``(user or None, host, port)`` in the order they are passed; ``ValidationError`` if malformed."""
    hops = []
    for part in value.split(",") if value.strip() else []:
        found = _HOP.fullmatch(part.strip())
        port = int(found["port"]) if found and found["port"] else 22
        if found is None or not 0 < port < 65536:
            raise ValidationError(
                f"{part.strip()!r} is not a jump host: write [user@]host[:port], comma-separated"
            )
        hops.append((found["user"], found["host"], port))
    return hops


def validate_proxy_jump(value: str) -> None:
    parse_proxy_jump(value)


PUEUE_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def validate_pueue_group(value: str) -> None:
    """The one rule for a pueue group's name, wherever it comes from (the host file, the admin, or a
    host's own ``pueue group`` list, which a job on the host can change): letters, digits, ``_ . -``."""
    if not isinstance(value, str) or not PUEUE_GROUP_NAME.fullmatch(value):
        raise ValidationError(
            f"{value!r} is not a pueue group name MQIC accepts (letters, digits, _ . -; at most 64)"
        )


ALLOWED_NAME = re.compile(r"[\w.@+-]{1,150}")
MAX_ALLOWED_NAMES = 100


def validate_allowed_names(value: object) -> None:
    """Who may use a host: a list of at most ``MAX_ALLOWED_NAMES`` Django user or group names, each of
    the characters Django allows in a user name (letters, digits, ``_ . @ + -``; at most 150)."""
    if not isinstance(value, list) or len(value) > MAX_ALLOWED_NAMES:
        raise ValidationError(f"a list of at most {MAX_ALLOWED_NAMES} user or group names")
    for name in value:
        if not isinstance(name, str) or not ALLOWED_NAME.fullmatch(name):
            raise ValidationError(
                f"{name!r} is not a user or group name MQIC accepts (letters, digits, _ . @ + -; at most 150)"
            )
