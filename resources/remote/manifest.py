"""What a case folder holds, listed by file descriptor before anything is sent.

Anyone who can write into the inbox can change a case folder while MQIC reads it: swap
a folder it has checked for a symlink, and a walk by path would follow the link and send
files that person cannot read. So the walk never follows anything: the case folder is
opened with ``O_DIRECTORY|O_NOFOLLOW`` and each folder below it relative to its parent's
descriptor, and every entry is recorded with its (dev, ino, size, mode). The upload
(``tarstream.write_folders``) re-opens each entry the same way and sends it only if it is
still the very file that was listed here.

Regular files and folders are sent. A symlink is sent as a symlink only if its target is
relative and, resolved through the folder's own links, stays inside the folder; anything
else (a link out, a fifo, a socket, a device) makes the folder unsafe, as does passing the
upload caps (``ScanLimits``; settings ``MQIC_UPLOAD_MAX_BYTES`` and ``_MEMBERS``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .untar import MAX_DEPTH, shown

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_LINK_HOPS = 40
"""As the kernel's limit on symlinks followed while resolving one path."""


class UnsafeCaseFolder(ValueError):
    """The case folder holds something that must not be copied (a link out, a special file)."""


@dataclass(frozen=True)
class ScanLimits:
    max_bytes: int = 50 << 30
    max_members: int = 1_000_000


@dataclass(frozen=True)
class Entry:
    """One thing below the case folder, as it was when listed."""

    parts: tuple[str, ...]
    """Path components relative to the case folder."""
    kind: str
    """``"dir"``, ``"file"`` or ``"link"``."""
    dev: int
    ino: int
    size: int
    mode: int
    mtime: int
    target: str = ""
    """The link's target, for ``"link"``."""

    @property
    def relative(self) -> str:
        return "/".join(self.parts)

    def same_file(self, st: os.stat_result) -> bool:
        return (st.st_dev, st.st_ino) == (self.dev, self.ino)


@dataclass(frozen=True)
class FolderManifest:
    path: Path
    dev: int
    ino: int
    entries: tuple[Entry, ...]
    """Parents before children, each folder's subtree right after it (depth first)."""
    size: int
    """Bytes of all regular files."""


def scan_folder(path: Path, limits: ScanLimits) -> FolderManifest:
    """List ``path`` without following anything, or raise ``UnsafeCaseFolder`` saying why."""
    try:
        root = os.open(path, DIR_FLAGS)
    except OSError as error:
        raise UnsafeCaseFolder(
            f"case folder {shown(str(path))} cannot be opened as a folder: {error.strerror}"
        ) from error
    try:
        st = os.fstat(root)
        walk = _Walk(limits, st.st_uid)
        walk.folder(root, ())
    finally:
        os.close(root)
    _check_links(walk.entries)
    return FolderManifest(Path(path), st.st_dev, st.st_ino, tuple(walk.entries), walk.size)


class _Walk:
    def __init__(self, limits: ScanLimits, owner: int):
        self.limits = limits
        self.owner = owner
        """The case folder's owner: a hard link to someone else's file is not theirs to send."""
        self.entries: list[Entry] = []
        self.size = 0

    def folder(self, fd: int, parts: tuple[str, ...]) -> None:
        if len(parts) > MAX_DEPTH:
            raise UnsafeCaseFolder(f"{shown('/'.join(parts))} is nested more than {MAX_DEPTH} folders deep")
        with _reading(parts), os.scandir(fd) as listing:
            names = sorted(entry.name for entry in listing)
        for name in names:
            with _reading((*parts, name)):
                entry = self._entry(fd, (*parts, name), os.stat(name, dir_fd=fd, follow_symlinks=False))
                if entry.kind != "dir":
                    continue
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            try:
                if not entry.same_file(os.fstat(child)):
                    raise UnsafeCaseFolder(f"{shown(entry.relative)} changed while the folder was listed")
                self.folder(child, entry.parts)
            finally:
                os.close(child)

    def _entry(self, fd: int, parts: tuple[str, ...], st: os.stat_result) -> Entry:
        relative = "/".join(parts)
        if stat.S_ISDIR(st.st_mode):
            kind, target = "dir", ""
        elif stat.S_ISREG(st.st_mode):
            kind, target = "file", ""
            if not os.access(parts[-1], os.R_OK, dir_fd=fd):
                raise UnsafeCaseFolder(f"{shown(relative)} is not readable by MQIC")
            if st.st_nlink > 1 and st.st_uid != self.owner:
                raise UnsafeCaseFolder(
                    f"{shown(relative)} is a hard link to a file of another user (uid {st.st_uid}, the case "
                    f"folder's owner is uid {self.owner}); copy the file in instead"
                )
            self.size += st.st_size
            if self.size > self.limits.max_bytes:
                raise UnsafeCaseFolder(
                    f"the case folder holds more than MQIC_UPLOAD_MAX_BYTES ({self.limits.max_bytes} bytes)"
                )
        elif stat.S_ISLNK(st.st_mode):
            kind, target = "link", os.readlink(parts[-1], dir_fd=fd)
        else:
            raise UnsafeCaseFolder(
                f"{shown(relative)} is a special file (fifo, socket or device); only files can be sent"
            )
        entry = Entry(parts, kind, st.st_dev, st.st_ino, st.st_size, st.st_mode, int(st.st_mtime), target)
        self.entries.append(entry)
        if len(self.entries) > self.limits.max_members:
            raise UnsafeCaseFolder(
                f"the case folder holds more than MQIC_UPLOAD_MAX_MEMBERS ({self.limits.max_members} entries)"
            )
        return entry


@contextmanager
def _reading(parts: tuple[str, ...]) -> Iterator[None]:
    """Turn an ``OSError`` while listing ``parts`` into the folder's reason to be unsafe."""
    try:
        yield
    except OSError as error:
        where = shown("/".join(parts)) if parts else "the case folder"
        raise UnsafeCaseFolder(f"cannot read {where}: {error.strerror}") from error


def _check_links(entries: list[Entry]) -> None:
    links = {entry.parts: entry.target for entry in entries if entry.kind == "link"}
    for parts, target in links.items():
        if not _resolves_inside(links, parts[:-1], target):
            raise UnsafeCaseFolder(
                f"symlink {shown('/'.join(parts))} points outside the case folder (to {shown(target)}) "
                "or into a loop of links; "
                "copy the file into the folder instead of linking to it"
            )


def _resolves_inside(links: dict[tuple[str, ...], str], start: tuple[str, ...], target: str) -> bool:
    """Resolve ``target`` from folder ``start`` as the kernel would, through the folder's own
    links: a textual check alone misses ``x -> y/..`` with ``y -> .``, which leads out."""
    if target.startswith("/"):
        return False
    where, pending, hops = list(start), target.split("/")[::-1], 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not where:
                return False
            where.pop()
            continue
        where.append(part)
        link = links.get(tuple(where))
        if link is not None:
            hops += 1
            if hops > MAX_LINK_HOPS or link.startswith("/"):
                return False
            where.pop()
            pending.extend(link.split("/")[::-1])
    return True
