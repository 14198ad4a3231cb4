"""Case folders as tar streams for upload: one stream per transfer, whatever the transport.

A stream beats per-file copies by a wide margin on many small files (see
docs/sshd-on-loopback.md), and the same code serves SSH and the local sandbox. Each
folder is listed first (``manifest.scan_folder``), and the stream then sends only what
was listed: every entry is re-opened relative to its folder's descriptor without
following links and must still be the same file (dev, ino). A folder that changes while
it is sent does not break the stream of the others: the file being sent gets exactly the
size its header announced (padded with zeros), the folder's remaining entries are left
out, and the folder is reported as damaged so the caller retries or fails that case alone.
"""

from __future__ import annotations

import errno
import os
import shlex
import stat
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .manifest import DIR_FLAGS, Entry, FolderManifest, ScanLimits, UnsafeCaseFolder, scan_folder
from .transport import ProgressCallback
from .untar import shown

CHUNK = 1 << 20
"""Read and write size: big enough that one large file streams at disk/network speed."""

FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""``O_NONBLOCK``: a fifo swapped in for a listed file must not hang the upload on open."""
CASE_FOLDER_MODE = 0o700
"""Remote case folders are the owner's alone."""
_CHANGED = {errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENXIO}
"""What opening a listed entry fails with when it was removed or swapped for a link."""


def untar_command(remote_dir: str) -> str:
    """Shell command that creates ``remote_dir`` (mode 0700) and unpacks a tar stream from stdin into it."""
    quoted = shlex.quote(remote_dir)
    return f"mkdir -p -- {quoted} && chmod 700 -- {quoted} && tar -x -f - -C {quoted}"


def replace_command(remote_base: str, names: list[str]) -> str:
    """Shell command that replaces the folders ``names`` of ``remote_base`` with a tar stream's.

    Each name is a top-level folder of the stream; what an earlier upload left there is
    removed first, so a re-upload never mixes two attempts' files.
    """
    for name in names:
        if not name or "/" in name or name in {".", ".."}:
            raise ValueError(f"not a single folder name: {name!r}")
    base, quoted = shlex.quote(remote_base), " ".join(shlex.quote(n) for n in names)
    return f"mkdir -p -- {base} && cd -- {base} && rm -rf -- {quoted} && mkdir -m 700 -- {quoted} && tar -x -f -"


@dataclass
class TreeUpload:
    """A batch upload: the listed folders, the remote command, and each folder's problem.

    ``problems`` starts with the folders refused when listed (they are not in the stream)
    and ``write`` adds those damaged while sent.
    """

    folders: list[tuple[FolderManifest, str]]
    command: str | None
    problems: dict[str, str] = field(default_factory=dict)

    def write(self, out: BinaryIO) -> None:
        self.problems.update(write_folders(self.folders, out))


def tree_upload(
    folders: list[tuple[Path | FolderManifest, str]], remote_base: str, limits: ScanLimits
) -> TreeUpload:
    """List every folder (``name`` under ``remote_base``) before anything is sent; a folder the
    caller listed already (a ``FolderManifest``) is sent as listed."""
    listed, problems = [], {}
    for folder, name in folders:
        try:
            listed.append((folder if isinstance(folder, FolderManifest) else scan_folder(folder, limits), name))
        except UnsafeCaseFolder as error:
            problems[name] = str(error)
    command = replace_command(remote_base, [name for _m, name in listed]) if listed else None
    return TreeUpload(listed, command, problems)


def dir_upload(local_dir: Path, remote_dir: str, limits: ScanLimits) -> TreeUpload:
    """One folder into ``remote_dir``, merged into what is there (problem key ``""``).

    An unsafe folder raises ``UnsafeCaseFolder`` here, before anything is sent."""
    return TreeUpload([(scan_folder(local_dir, limits), "")], untar_command(remote_dir))


def write_folders(folders: list[tuple[FolderManifest, str]], out: BinaryIO) -> dict[str, str]:
    """Listed folders ``(manifest, name)`` in one tar stream, each under its top-level ``name``
    (``""``: at the top); return ``{name: why it is damaged}`` for those that changed.

    Small pieces (headers, small files) are gathered into 1 MB writes and big files go
    straight from disk to ``out`` in 1 MB reads: tarfile's own stream writer copies every
    byte twice more, which took a third of the Python time of a 200 MB upload. Owners are
    left out so files belong to whoever unpacks them; setuid, setgid and sticky bits too.
    """
    stream = _Gather(out)
    damaged = {}
    for manifest, name in folders:
        problem = _write_folder(manifest, name, stream)
        if problem is not None:
            damaged[name] = problem
    stream.write(bytes(2 * tarfile.BLOCKSIZE))  # end-of-archive marker
    stream.flush()
    return damaged


class _Changed(Exception):
    """The folder is not what was listed any more; the message says how."""


def _write_folder(manifest: FolderManifest, name: str, stream: _Gather) -> str | None:
    if name:
        stream.write(_header(_info(name, tarfile.DIRTYPE, CASE_FOLDER_MODE, int(time.time()))))
    open_dirs: list[tuple[tuple[str, ...], int]] = []
    try:
        identity = (manifest.dev, manifest.ino, stat.S_IFDIR)
        root = _open_listed(manifest.path, None, DIR_FLAGS, "the case folder", identity)
        open_dirs.append(((), root))
        for entry in manifest.entries:
            while open_dirs[-1][0] != entry.parts[:-1]:
                os.close(open_dirs.pop()[1])
            parent = open_dirs[-1][1]
            member = f"{name}/{entry.relative}" if name else entry.relative
            if entry.kind == "dir":
                fd = _open_entry(entry, parent, DIR_FLAGS)
                open_dirs.append((entry.parts, fd))
                stream.write(_header(_info(member, tarfile.DIRTYPE, entry.mode, entry.mtime)))
            elif entry.kind == "file":
                _send_file(entry, parent, member, stream)
            else:
                _check_link(entry, parent)
                stream.write(_header(_info(member, tarfile.SYMTYPE, entry.mode, entry.mtime, entry.target)))
    except _Changed as changed:
        return str(changed)
    finally:
        for _parts, fd in open_dirs:
            os.close(fd)
    return None


def _open_listed(path, parent: int | None, flags: int, what: str, identity: tuple[int, int, int]) -> int:
    """Open ``path`` (relative to ``parent``, with no-follow ``flags``); it must be the listed
    file: same (dev, ino), and same kind, since a freed inode number is soon given again."""
    try:
        fd = os.open(path, flags, dir_fd=parent)
    except OSError as error:
        raise _Changed(_reason(what, error)) from error
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino, stat.S_IFMT(st.st_mode)) != identity:
        os.close(fd)
        raise _Changed(f"{what} changed while it was being sent")
    return fd


def _open_entry(entry: Entry, parent: int, flags: int) -> int:
    identity = (entry.dev, entry.ino, stat.S_IFMT(entry.mode))
    return _open_listed(entry.parts[-1], parent, flags, shown(entry.relative), identity)


def _reason(what: str, error: OSError) -> str:
    if error.errno in _CHANGED:
        return f"{what} changed while it was being sent"
    return f"{what} could not be read: {error.strerror}"


def _check_link(entry: Entry, parent: int) -> None:
    what = shown(entry.relative)
    try:
        same = entry.same_file(os.stat(entry.parts[-1], dir_fd=parent, follow_symlinks=False))
        same = same and os.readlink(entry.parts[-1], dir_fd=parent) == entry.target
    except OSError as error:
        raise _Changed(_reason(what, error)) from error
    if not same:
        raise _Changed(f"{what} changed while it was being sent")


def _send_file(entry: Entry, parent: int, member: str, stream: _Gather) -> None:
    """Header and exactly ``entry.size`` bytes, zero-padded if the file shrank or failed."""
    fd = _open_entry(entry, parent, FILE_FLAGS)
    problem = None
    try:
        stream.write(_header(_info(member, tarfile.REGTYPE, entry.mode, entry.mtime, size=entry.size)))
        remaining = entry.size
        while remaining:
            try:
                chunk = os.read(fd, min(CHUNK, remaining))
            except OSError as error:
                problem, chunk = _reason(shown(entry.relative), error), b""
            if not chunk:
                problem = problem or f"{shown(entry.relative)} shrank while it was being sent"
                _pad(stream, remaining)
                break
            stream.write(chunk)
            remaining -= len(chunk)
        stream.write(bytes(-entry.size % tarfile.BLOCKSIZE))
        if problem is None and os.fstat(fd).st_size != entry.size:
            problem = f"{shown(entry.relative)} changed while it was being sent"
    finally:
        os.close(fd)
    if problem is not None:
        raise _Changed(problem)


def _pad(stream: _Gather, size: int) -> None:
    zeros = memoryview(bytes(min(size, CHUNK)))
    while size:
        stream.write(zeros[: min(size, CHUNK)])
        size -= min(size, CHUNK)


def _info(name: str, kind: bytes, mode: int, mtime: int, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, stat.S_IMODE(mode) & 0o777, mtime
    info.linkname, info.size = linkname, size
    return info


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class _Gather:
    """Gathers small writes into ``CHUNK``-sized ones; big writes go straight through.

    Unlike ``io.BufferedWriter`` it writes nothing more once an error has been raised, so a
    local failure is not followed (and masked) by a flush into a broken channel.
    """

    def __init__(self, out: BinaryIO):
        self._out = out
        self._pending = bytearray()

    def write(self, data: bytes) -> None:
        if len(self._pending) + len(data) < CHUNK:
            self._pending += data
            return
        self.flush()
        if len(data) >= CHUNK:
            self._out.write(data)
        else:
            self._pending += data

    def flush(self) -> None:
        if self._pending:
            self._out.write(bytes(self._pending))
            self._pending.clear()


class CountingReader:
    """A ``read(n)`` stream that reports the bytes read so far (download progress)."""

    def __init__(self, stream, progress: ProgressCallback | None):
        self._stream, self._progress, self.received = stream, progress, 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.received += len(data)
        if self._progress is not None and data:
            self._progress(self.received)
        return data


class Uploads:
    """``upload_dir`` and ``upload_tree`` of a transport that can run a command fed by a tar writer
    (``_send_tar``): both transports send folders the same way, they differ only in how tar runs.

    A folder is listed before anything is sent, so an unsafe one changes nothing remotely.
    """

    def _send_tar(self, command: str, write: Callable[[BinaryIO], None], progress: ProgressCallback | None):
        raise NotImplementedError

    def upload_dir(
        self,
        local_dir: Path,
        remote_dir: str,
        *,
        progress: ProgressCallback | None = None,
        limits: ScanLimits | None = None,
    ) -> None:
        """Copy ``local_dir`` into ``remote_dir`` (created) as one tar stream; ``UnsafeCaseFolder``
        if it is unsafe, or changed while it was sent."""
        upload = dir_upload(local_dir, remote_dir, limits or ScanLimits())
        self._send_tar(upload.command, upload.write, progress)
        if upload.problems:
            raise UnsafeCaseFolder(upload.problems[""])

    def upload_tree(
        self,
        folders: list[tuple[Path | FolderManifest, str]],
        remote_base: str,
        *,
        progress: ProgressCallback | None = None,
        limits: ScanLimits | None = None,
    ) -> dict[str, str]:
        """Replace the folders ``remote_base/<name>`` with the local ones, all in one tar stream;
        return the folders that were unsafe or changed while sent (see ``Transport``)."""
        upload = tree_upload(folders, remote_base, limits or ScanLimits())
        if upload.command is not None:
            self._send_tar(upload.command, upload.write, progress)
        return upload.problems
