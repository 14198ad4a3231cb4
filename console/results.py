"""A case's results folder as the results page serves it: listed, one file opened, or all streamed.

The folder holds what a job wrote, brought home: untrusted. Every path is opened one component at
a time below the folder's own descriptor with ``O_NOFOLLOW``, so a link (even one swapped in
after the listing) is never followed out of it; links and special files are listed, never served.
Files are read in chunks, and the archive is a tar written as it is sent (``tar_stream``): no
whole file is ever held in memory. Both walk the folder with ``_tree``: no recursion, one
descriptor per level, and no deeper than ``MAX_DEPTH`` levels, the depth results are unpacked to.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from django.conf import settings

from cases.models import Case
from cases.services.jobs import JOB_LOG, results_dir
from resources.remote.untar import MAX_DEPTH, shown

CHUNK = 256 << 10
LISTED_MAX = 5000
"""The page lists at most this many entries (the archive holds them all)."""
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0)


class NotServed(Exception):
    """The path is not a regular file inside the results folder (gone, a link, a fifo, outside)."""


@dataclass(frozen=True)
class Entry:
    path: str
    """Relative to the results folder, with ``/``; a name that is not UTF-8 keeps its bytes as
    surrogates (``os.fsdecode``), for opening it, never for showing it."""
    kind: str
    """"file", "folder", "link" or "other" (links and others are listed, never served)."""
    size: int
    modified: datetime

    @property
    def shown(self) -> str:
        """The path as text a page can hold: odd bytes as ``\\xNN``, controls escaped."""
        return shown(self.path, limit=10_000)

    @property
    def plain(self) -> bool:
        """Whether the path is text as it is (valid UTF-8, printable): then it can be its own URL."""
        return self.shown == self.path

    @property
    def token(self) -> str:
        """The path's bytes in base64url: how a page names any file, whatever bytes its name has."""
        return base64.urlsafe_b64encode(os.fsencode(self.path)).decode().rstrip("=")


def path_of(token: str) -> str:
    """The path an ``Entry.token`` names (``NotServed`` for one that names none)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, binascii.Error) as error:
        raise NotServed("not a file of this case") from error
    return os.fsdecode(raw)


@dataclass
class Listing:
    exists: bool
    entries: list[Entry]
    total_bytes: int = 0
    truncated: bool = False
    """Not all is listed: past ``LISTED_MAX`` entries, or folders nested past ``MAX_DEPTH``."""

    @property
    def job_log(self) -> Entry | None:
        return next((e for e in self.entries if e.path == JOB_LOG and e.kind == "file"), None)


def open_root(case: Case) -> int:
    """A descriptor of the case's results folder, opened one component at a time below
    ``MQIC_RESULTS_DIR`` (a user's case lies two folders deeper), never through a link."""
    parts = results_dir(case).relative_to(settings.MQIC_RESULTS_DIR).parts
    if case.name in {"", ".", ".."} or "/" in case.name or ".." in parts:
        raise NotServed("the case name is no folder name")
    try:
        dir_fd = os.open(settings.MQIC_RESULTS_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as error:
        raise NotServed(f"no results folder: {error.strerror}") from error
    try:
        for part in parts:
            child = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = child
    except OSError as error:
        os.close(dir_fd)
        raise NotServed(f"no results folder: {error.strerror}") from error
    return dir_fd


def has_folder(case: Case) -> bool:
    try:
        os.close(open_root(case))
    except NotServed:
        return False
    return True


def listing(case: Case) -> Listing:
    try:
        root = open_root(case)
    except NotServed:
        return Listing(False, [])
    found = Listing(True, [])
    try:
        _walk(root, found)
    finally:
        os.close(root)
    found.entries.sort(key=lambda e: e.path)
    return found


def _walk(root: int, found: Listing) -> None:
    walk = _tree(root)
    try:
        for item in walk:
            if len(found.entries) >= LISTED_MAX:
                found.truncated = True
                return
            kind = _kind(item.info.st_mode)
            size = item.info.st_size if kind == "file" else 0
            found.entries.append(Entry(item.path, kind, size, _mtime(item.info)))
            found.total_bytes += size
            found.truncated |= item.too_deep
    finally:
        walk.close()


class _Found(NamedTuple):
    dir_fd: int
    """The folder holding it, open while the walk stays there."""
    name: str
    path: str
    info: os.stat_result
    too_deep: bool
    """A folder nested past ``MAX_DEPTH``: listed, not entered."""


def _tree(root: int) -> Iterator[_Found]:
    """Every entry below ``root`` (not followed through links), depth first, by name, parents
    before their children. No recursion, and one descriptor per level for at most ``MAX_DEPTH``
    levels: a hostile folder thousands of levels deep costs neither the stack nor descriptors.
    What vanishes or cannot be opened meanwhile is passed over. Close it to release the descriptors."""
    stack = [(root, "", iter(_names(root)))]
    try:
        while stack:
            dir_fd, prefix, names = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                if dir_fd != root:
                    os.close(dir_fd)
                continue
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                continue
            is_folder = stat.S_ISDIR(info.st_mode)
            too_deep = is_folder and len(stack) > MAX_DEPTH
            yield _Found(dir_fd, name, prefix + name, info, too_deep)
            if is_folder and not too_deep:
                with contextlib.suppress(OSError):
                    stack.append(_level(dir_fd, name, prefix))
    finally:
        for dir_fd, _prefix, _names_left in stack:
            if dir_fd != root:
                os.close(dir_fd)


def _level(dir_fd: int, name: str, prefix: str) -> tuple[int, str, Iterator[str]]:
    """Folder ``name`` of ``dir_fd``, opened (never through a link) and listed."""
    child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        return child, f"{prefix}{name}/", iter(_names(child))
    except BaseException:
        os.close(child)
        raise


def _names(dir_fd: int) -> list[str]:
    with os.scandir(dir_fd) as entries:
        return sorted(entry.name for entry in entries)


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    return "link" if stat.S_ISLNK(mode) else "other"


def _mtime(info: os.stat_result) -> datetime:
    return datetime.fromtimestamp(info.st_mtime, tz=UTC)


def open_file(case: Case, relative: str):
    """The regular file at ``relative`` in the results folder, open for reading (a binary file object).

    Each component is opened below the previous one with ``O_NOFOLLOW``: no ``..``, no absolute
    path, no link anywhere on the way; the last must be a regular file.
    """
    parts = relative.split("/")
    if not relative or any(p in {"", ".", ".."} for p in parts):
        raise NotServed("not a path inside the results folder")
    dir_fd = open_root(case)
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as error:
                raise NotServed(f"{part}: {error.strerror}") from error
            os.close(dir_fd)
            dir_fd = child
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as error:
            raise NotServed(f"{relative}: {error.strerror}") from error
    finally:
        os.close(dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotServed(f"{relative} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


# -- the whole folder as a .tar.gz, made while it is sent ---------------------------------------


def tar_stream(case: Case, top: str) -> Iterator[bytes]:
    """The results folder as a gzip-compressed tar under ``top/``, chunk by chunk.

    Each member's header is written from the ``fstat`` of the descriptor that is then read, so a
    file that grows meanwhile is cut at the size in its header and one that shrank is padded:
    the archive stays well formed. Links and special files are left out.
    """
    gzip = zlib.compressobj(1, zlib.DEFLATED, 31)
    for block in _tar_blocks(case, top):
        if out := gzip.compress(block):
            yield out
    yield gzip.flush()


def _tar_blocks(case: Case, top: str) -> Iterator[bytes]:
    root = open_root(case)
    walk = _tree(root)
    try:
        yield _header(top, tarfile.DIRTYPE, 0, 0o755, datetime.now(tz=UTC).timestamp())
        for item in walk:
            member = f"{top}/{item.path}"
            if stat.S_ISDIR(item.info.st_mode):
                yield _header(member, tarfile.DIRTYPE, 0, 0o755, item.info.st_mtime)
            elif stat.S_ISREG(item.info.st_mode):
                yield from _tar_file(item.dir_fd, item.name, member)
    finally:
        walk.close()
        os.close(root)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def _tar_file(dir_fd: int, name: str, member: str) -> Iterator[bytes]:
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return
        size = info.st_size
        yield _header(member, tarfile.REGTYPE, size, 0o644, info.st_mtime)
        left = size
        while left:
            chunk = file.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
        yield b"\0" * left  # it shrank meanwhile: the header's size holds
        if size % tarfile.BLOCKSIZE:
            yield b"\0" * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE)


def _header(name: str, kind: bytes, size: int, mode: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, mode, int(mtime)
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")
