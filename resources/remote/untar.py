"""MQIC's own tar extractor for results coming back from a host: every byte is untrusted.

A job controls what its folder holds, so the stream ``tar -c`` sends back is hostile input.
tarfile's ``extractall(filter="data")`` is not relied on: on Python 3.11.7 a chain of long
directory names and symlinks past PATH_MAX gets a member written outside the destination
(CVE-2025-4517), and Debian's Python 3.11.2 has no ``filter`` at all. This module reads
the stream itself, with ``tarfile.TarInfo.frombuf`` parsing one header block at a time
(extended headers are parsed here, bounded), and writes nothing it has not checked:

* Only regular files and directories are created. Symbolic links, hard links, devices,
  fifos and unknown member types are never created: they are skipped and reported as
  ``(name, kind)`` in ``FolderResult.skipped``, so the caller can list them in a case
  event. Results are data to read; a link in them is only a way to point out of them.
* A name must be relative, without ``..``, without NUL, and must not be empty or ``.``
  only once normalised, nor nested more than ``MAX_DEPTH`` folders deep (the rule uploads
  follow too). Names are decoded as UTF-8 with ``surrogateescape``, so any bytes
  round-trip to the same file name.
* Writing never goes through a path string: each destination is opened with
  ``O_DIRECTORY|O_NOFOLLOW`` and every folder below it is created with ``mkdir(dir_fd=)``
  and entered with ``open(O_DIRECTORY|O_NOFOLLOW, dir_fd=)``; files are created with
  ``O_CREAT|O_EXCL|O_NOFOLLOW``. Modes lose setuid/setgid/sticky and group/other write;
  the owner always keeps read and write (and search on folders) so results can be removed.
* Caps per destination folder (``Limits``): a member whose announced size would pass the
  byte cap is refused at its header, before any of its data is read. Every member counts
  toward the member cap, and so does every folder created only as the way to a member
  (``c/a/b/f`` alone creates two): one short header cannot make thousands of entries.

One stream may carry several top-level folders (``tar -C base -- a b c``), each routed by
its first path component to its own destination; members under any other top-level name
are ignored and counted. A folder whose part is refused (a bad name, a cap, a top-level
entry that is a link) fails with its reason and its later members are read past, while the
other folders go on. Only an unreadable stream (garbage, truncation, a sparse member that
``tar -c`` without ``-S`` never writes) or refused data too large to read past (a 1 TB
member is not skipped by reading it) ends the whole stream: folders finished before keep
their result, the one being written fails with the reason, and those not reached yet are
reported as such (``reached=False``: nothing is known about them, try again later).
``Extraction.exhausted`` then says whether the stream was read to its end; when it was
not, the caller must close it rather than drain it.

Standard library only, and no Django: it runs on any Python >= 3.11.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

LOCAL_FULL = {errno.ENOSPC, errno.EDQUOT}
"""Errors of writing here that say this machine is full, not that the results are wrong."""
CHUNK = 1 << 20
"""Read size from the stream: big enough that one large file streams at network speed."""

BLOCK = tarfile.BLOCKSIZE
META_MAX = 64 << 10
"""Largest extended header (pax or GNU long name) accepted: real ones hold a few names."""
META_IN_A_ROW = 8
TRAILER_MAX = 1 << 20
"""Bytes read after the end-of-archive marker to reach the stream's end (GNU tar pads to
10 KiB); a stream that goes on past this is left unread."""
MAX_DEPTH = 100
"""Folders nested deeper than this are refused, going out (``manifest``) and coming back
(here): uploads hold one descriptor per level, and a results folder thousands of levels
deep is more than the tools that list, archive and remove it should have to walk."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_REGULAR = {tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE}
_META = {
    tarfile.XHDTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
}
_NOT_CREATED = {
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "fifo",
}
"""Member types that carry no data in the stream and are skipped."""


class Readable(Protocol):
    def read(self, size: int) -> bytes: ...


@dataclass(frozen=True)
class Limits:
    """Caps per destination folder (settings ``MQIC_RESULT_MAX_BYTES``/``_MEMBERS``)."""

    max_bytes: int = 10 << 30
    max_members: int = 100_000


@dataclass
class FolderResult:
    """What became of one folder of the stream.

    ``reached`` is False when the stream ended before this folder: nothing definite is
    known and the caller should try again. ``error`` says why a reached folder failed;
    the caller must then not use what was written.
    """

    files: int = 0
    bytes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    reached: bool = False
    missing: bool = False
    """The host does not have the folder at all (an error too, but nothing there to keep)."""
    local: bool = False
    """This machine could not take it (its disk or quota is full): no fault of the results, nothing
    definite about them; try again once there is room."""

    @property
    def ok(self) -> bool:
        return self.reached and self.error is None


@dataclass
class Extraction:
    folders: dict[str, FolderResult]
    ignored: int = 0
    """Members under a top-level name nobody asked for (read past, nothing written)."""
    stopped: str | None = None
    """Why the stream was given up before its end-of-archive marker, if it was."""
    exhausted: bool = False
    """Whether the stream was read to its very end; if not, close it instead of draining it."""


def extract_folders(stream: Readable, routes: Mapping[str, Path], limits: Limits) -> Extraction:
    """Unpack ``stream`` (a ``read(n)`` object): top-level folder ``name`` goes into the
    existing, empty folder ``routes[name]``. Never raises for what the stream holds; errors
    of ``stream.read`` itself (a lost connection) propagate."""
    for name in routes:
        if not name or "/" in name or "\0" in name or name in {".", ".."}:
            raise ValueError(f"not a single folder name: {name!r}")
    run = _Run(routes, limits)
    source = _Source(stream)
    try:
        run.read(source)
    finally:
        run.close()
    return Extraction(run.results, run.ignored, run.stopped, source.exhausted)


def shown(name: str, limit: int = 200) -> str:
    """A member name as text that can be stored and read: odd bytes and controls escaped."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Stop(Exception):
    """The stream cannot be read on: the reason ends every folder not finished yet."""


class _OverCap(Exception):
    """Creating a folder on the way to a member passed the member cap: the message says so."""


class _Source:
    """Exact reads over the stream, through a buffer of one ``CHUNK``."""

    def __init__(self, stream: Readable):
        self._stream = stream
        self._buffer = memoryview(b"")
        self.exhausted = False

    def take(self, size: int) -> memoryview:
        """Up to ``size`` bytes (at least one); empty only at the end of the stream."""
        if not self._buffer:
            data = self._stream.read(CHUNK)
            if not data:
                self.exhausted = True
                return memoryview(b"")
            self._buffer = memoryview(data)
        piece, self._buffer = self._buffer[:size], self._buffer[size:]
        return piece

    def exact(self, size: int, what: str) -> bytes:
        parts = []
        while size:
            piece = self.take(size)
            if not piece:
                raise _Stop(f"the stream ended in the middle of {what} (truncated)")
            parts.append(piece)
            size -= len(piece)
        return b"".join(parts)

    def skip(self, size: int, what: str) -> None:
        while size:
            piece = self.take(min(size, CHUNK))
            if not piece:
                raise _Stop(f"the stream ended in the middle of {what} (truncated)")
            size -= len(piece)

    def read_trailer(self) -> None:
        """Read what follows the end-of-archive marker, up to ``TRAILER_MAX`` bytes."""
        left = TRAILER_MAX
        while left > 0 and (piece := self.take(left)):
            left -= len(piece)


@dataclass
class _Member:
    name: str
    type: bytes
    size: int
    """Bytes of data that follow the header in the stream (0 for links, folders, ...)."""
    mode: int
    mtime: float


def _next_member(source: _Source) -> _Member | None:
    """The next member with its extended headers applied; None at the end-of-archive marker."""
    extended: dict[str, str] = {}
    for _ in range(META_IN_A_ROW + 1):
        if not (first := source.take(BLOCK)):
            raise _Stop("the stream ended before its end-of-archive marker (truncated)")
        block = bytes(first) + source.exact(BLOCK - len(first), "a header")
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.EOFHeaderError:
            return None
        except tarfile.HeaderError as error:
            raise _Stop(f"the stream holds an unreadable tar header ({error})") from None
        if info.size < 0:
            raise _Stop("the stream holds a tar header with a negative size")
        if info.type not in _META:
            return _member_of(info, extended)
        if info.size > META_MAX:
            raise _Stop(f"the stream holds an extended tar header of {info.size} bytes")
        payload = source.exact(info.size, "an extended header")
        source.skip(-info.size % BLOCK, "an extended header")
        if info.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
            extended.update(_pax_records(payload))
        elif info.type == tarfile.GNUTYPE_LONGNAME:
            extended["path"] = payload.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        # Global pax headers and GNU long link names change nothing that is written.
    raise _Stop("the stream holds too many extended tar headers in a row")


def _member_of(info: tarfile.TarInfo, extended: dict[str, str]) -> _Member:
    if info.type == tarfile.GNUTYPE_SPARSE or any(key.startswith("GNU.sparse.") for key in extended):
        raise _Stop(f"the stream holds a sparse member ({shown(info.name)}), which tar -c never writes")
    try:
        size = int(extended["size"]) if "size" in extended else info.size
        mtime = float(extended["mtime"]) if "mtime" in extended else float(info.mtime)
    except ValueError:
        raise _Stop("the stream holds a pax header with a bad size or mtime") from None
    if size < 0:
        raise _Stop("the stream holds a pax header with a negative size")
    carries_data = info.type in _REGULAR or (info.type not in _NOT_CREATED and info.type != tarfile.DIRTYPE)
    return _Member(extended.get("path", info.name), info.type, size if carries_data else 0, info.mode, mtime)


def _pax_records(payload: bytes) -> dict[str, str]:
    """``"<length> <key>=<value>\\n"`` records, checked field by field."""
    records, pos = {}, 0
    while pos < len(payload) and payload[pos] != 0:
        space = payload.find(b" ", pos, pos + 20)
        digits = payload[pos:space]
        if space < 0 or not digits.isdigit():
            raise _Stop("the stream holds a malformed pax header")
        end = pos + int(digits)
        if end > len(payload) or end <= space + 1 or payload[end - 1] != ord("\n"):
            raise _Stop("the stream holds a malformed pax header")
        key, equals, value = payload[space + 1 : end - 1].partition(b"=")
        if not equals:
            raise _Stop("the stream holds a malformed pax header")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return records


def _route(name: str, is_folder: bool) -> tuple[str, tuple[str, ...], str | None]:
    """(top-level name, the parts below it, why the name is refused or None)."""
    top, _, rest = name.partition("/")
    parts = tuple(part for part in rest.split("/") if part not in ("", "."))
    if "\0" in name:
        return top, parts, f"refused {shown(name)!r}: the name holds a NUL byte"
    if ".." in parts:
        return top, parts, f"refused {shown(name)!r}: the name climbs out with '..'"
    if len(parts if is_folder else parts[:-1]) > MAX_DEPTH:
        return top, parts, f"refused {shown(name)!r}: nested more than {MAX_DEPTH} folders deep (MAX_DEPTH)"
    return top, parts, None


class _Folder:
    """One destination being written: its result, caps and open directory descriptors."""

    def __init__(self, name: str, dest: Path, max_members: int):
        self.name = name
        self.dest = dest
        self.result = FolderResult()
        self.members = 0
        self.max_members = max_members
        self.done = False
        self._root: int | None = None
        self._cached: tuple[tuple[str, ...], int] | None = None

    def fail(self, reason: str, error: BaseException | None = None) -> None:
        if self.result.error is None:
            self.result.error = reason
            self.result.local = isinstance(error, OSError) and error.errno in LOCAL_FULL
        self.close()

    @property
    def failed(self) -> bool:
        return self.result.error is not None

    def start(self) -> None:
        self.result.reached = True
        try:
            self._root = os.open(self.dest, _DIR_FLAGS)
        except OSError as error:
            self.fail(f"could not open the local folder for {shown(self.name)}: {error.strerror}")

    def count(self) -> str | None:
        """Count one more entry; past the member cap, the reason to refuse the folder."""
        self.members += 1
        if self.members > self.max_members:
            return f"results exceed MQIC_RESULT_MAX_MEMBERS ({self.max_members} members)"
        return None

    def directory(self, parts: tuple[str, ...], mode: int | None = None) -> int:
        """The descriptor of folder ``parts`` (created as needed); the last one stays cached.

        ``mode`` is the folder member's own mode when ``parts`` is that member, whose header
        was counted already; without it, ``parts`` is only the way to a file. Each folder
        created on the way counts toward the member cap (``_OverCap`` past it)."""
        if not parts:
            return self._root
        if self._cached is not None and self._cached[0] == parts:
            return self._cached[1]
        self._uncache()
        fd = self._root
        for depth, part in enumerate(parts):
            own = depth == len(parts) - 1 and mode is not None
            try:
                try:
                    os.mkdir(part, _dir_mode(mode) if own else 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
                else:
                    if not own and (over := self.count()) is not None:
                        raise _OverCap(over)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            finally:
                if fd != self._root:
                    os.close(fd)
            fd = child
        self._cached = (parts, fd)
        return fd

    def create_file(self, parts: tuple[str, ...], mode: int) -> int:
        return os.open(parts[-1], _FILE_FLAGS, _file_mode(mode), dir_fd=self.directory(parts[:-1]))

    def _uncache(self) -> None:
        if self._cached is not None:
            os.close(self._cached[1])
            self._cached = None

    def close(self) -> None:
        self._uncache()
        if self._root is not None:
            os.close(self._root)
            self._root = None


def _dir_mode(mode: int) -> int:
    return (mode & 0o755) | 0o700


def _file_mode(mode: int) -> int:
    return (mode & 0o755) | 0o600


class _Run:
    """One pass over a stream: the folders, which one is being written, what was read past."""

    def __init__(self, routes: Mapping[str, Path], limits: Limits):
        self.limits = limits
        self.folders = {name: _Folder(name, Path(dest), limits.max_members) for name, dest in routes.items()}
        self.current: _Folder | None = None
        self.ignored = 0
        self.stopped: str | None = None
        self._discard_bytes = limits.max_bytes
        self._discard_members = limits.max_members

    @property
    def results(self) -> dict[str, FolderResult]:
        return {name: folder.result for name, folder in self.folders.items()}

    def read(self, source: _Source) -> None:
        try:
            while (member := _next_member(source)) is not None:
                self._member(member, source)
        except _Stop as stop:
            self._stop(str(stop))
            return
        self._finish_current()
        source.read_trailer()
        for folder in self.folders.values():
            if not folder.result.reached:
                folder.result.reached = folder.result.missing = True
                folder.result.error = "missing on the host"

    def _stop(self, reason: str) -> None:
        self.stopped = reason
        if self.current is not None:
            self.current.fail(reason)
        self._finish_current()
        for folder in self.folders.values():
            if not folder.result.reached:
                folder.result.error = f"not reached: {reason}"

    def _finish_current(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current.done = True
            self.current = None

    def close(self) -> None:
        for folder in self.folders.values():
            folder.close()

    def _member(self, member: _Member, source: _Source) -> None:
        top, parts, refused = _route(member.name, member.type == tarfile.DIRTYPE)
        folder = self.folders.get(top)
        if folder is not self.current:
            self._finish_current()
            if folder is not None and folder.done:
                folder.fail(f"members of {shown(top)} came in two separate runs of the stream")
            elif folder is not None:
                folder.start()
            self.current = folder
        if folder is None:
            self.ignored += 1
            self._read_past(member, source, "a member under an unexpected top-level name")
            return
        refused = folder.count() or refused
        if refused is not None:
            folder.fail(refused)
        elif not parts:
            self._top_entry(folder, member)
        if folder.failed:
            self._read_past(member, source, f"a refused member of {shown(top)}")
            return
        if not parts:
            return
        if member.type in _REGULAR:
            self._file(folder, member, parts, source)
        elif member.type == tarfile.DIRTYPE:
            self._directory(folder, member, parts)
        else:
            kind = _NOT_CREATED.get(member.type, f"member of type {member.type!r}")
            folder.result.skipped.append((shown(member.name), kind))
            self._read_past(member, source, f"a skipped {kind}")

    def _top_entry(self, folder: _Folder, member: _Member) -> None:
        if member.type == tarfile.SYMTYPE:
            folder.fail(f"{shown(folder.name)} is a symbolic link on the host, not a folder; refused")
        elif member.type != tarfile.DIRTYPE:
            folder.fail(f"{shown(folder.name)} is not a folder on the host")

    def _directory(self, folder: _Folder, member: _Member, parts: tuple[str, ...]) -> None:
        try:
            folder.directory(parts, member.mode)
        except _OverCap as over:
            folder.fail(str(over))
        except (OSError, ValueError) as error:
            folder.fail(f"could not create folder {shown(member.name)!r}: {_why(error)}", error)

    def _file(self, folder: _Folder, member: _Member, parts: tuple[str, ...], source: _Source) -> None:
        result = folder.result
        if result.bytes + member.size > self.limits.max_bytes:
            folder.fail(
                f"results exceed MQIC_RESULT_MAX_BYTES ({self.limits.max_bytes} bytes): "
                f"{shown(member.name)!r} announces {member.size} bytes"
            )
            self._read_past(member, source, f"an over-cap member of {shown(folder.name)}")
            return
        fd, problem = None, None
        try:
            fd = folder.create_file(parts, member.mode)
        except _OverCap as over:
            folder.fail(str(over))
            self._read_past(member, source, f"a refused member of {shown(folder.name)}")
            return
        except (OSError, ValueError) as error:
            problem = error
        try:
            problem = _copy(source, member, fd, problem)
            if problem is None:
                _set_mtime(fd, member.mtime)
        finally:
            if fd is not None:
                os.close(fd)
        if problem is not None:
            folder.fail(f"could not write {shown(member.name)!r}: {_why(problem)}", problem)
        else:
            result.files += 1
            result.bytes += member.size

    def _read_past(self, member: _Member, source: _Source, what: str) -> None:
        """Read and drop a refused member's data, within a budget of one folder's caps."""
        self._discard_members -= 1
        if member.size > self._discard_bytes or self._discard_members < 0:
            raise _Stop(f"the stream was abandoned at {what} ({shown(member.name)!r}, {member.size} bytes)")
        self._discard_bytes -= member.size
        source.skip(member.size + (-member.size % BLOCK), shown(member.name))


def _copy(source: _Source, member: _Member, fd: int | None, problem: Exception | None) -> Exception | None:
    """Read the member's data and padding from the stream, writing it to ``fd`` until a write fails."""
    remaining = member.size
    while remaining:
        piece = source.take(min(remaining, CHUNK))
        if not piece:
            raise _Stop(f"the stream ended in the middle of {shown(member.name)!r} (truncated)")
        remaining -= len(piece)
        if problem is None:
            try:
                while piece:
                    piece = piece[os.write(fd, piece) :]
            except OSError as error:
                problem = error
    source.skip(-member.size % BLOCK, shown(member.name))
    return problem


def _set_mtime(fd: int, mtime: float) -> None:
    # A time the filesystem cannot hold: the file keeps the time it was written.
    with contextlib.suppress(OSError, OverflowError, ValueError):
        os.utime(fd, (mtime, mtime))


def _why(error: Exception) -> str:
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)
