"""Case folders as tar streams: one stream per transfer, whatever the transport.

A stream beats per-file copies by a wide margin on many small files (see
/work/shared/notes/sshd-on-loopback.md), and the same code serves SSH and the local sandbox.
Writing refuses anything that could smuggle data from outside the case folder (a symlink
leading out, a device or fifo); extracting uses tarfile's ``data`` filter so a hostile or
broken archive cannot write outside the destination either.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import BadOutput
from .transport import ProgressCallback

CHUNK = 1 << 20
"""Read and write size: big enough that one large file streams at disk/network speed."""


class UnsafeCaseFolder(ValueError):
    """The case folder holds something that must not be copied (a link out, a special file)."""


def untar_command(remote_dir: str) -> str:
    """Shell command that creates ``remote_dir`` and unpacks a tar stream from stdin into it."""
    quoted = shlex.quote(remote_dir)
    return f"mkdir -p -- {quoted} && tar -x -f - -C {quoted}"


def replace_command(remote_base: str, names: list[str]) -> str:
    """Shell command that replaces the folders ``names`` of ``remote_base`` with a tar stream's.

    Each name is a top-level folder of the stream; what an earlier upload left there is
    removed first, so a re-upload never mixes two attempts' files.
    """
    for name in names:
        if not name or "/" in name or name in {".", ".."}:
            raise ValueError(f"not a single folder name: {name!r}")
    base, quoted = shlex.quote(remote_base), " ".join(shlex.quote(n) for n in names)
    return f"mkdir -p -- {base} && cd -- {base} && rm -rf -- {quoted} && tar -x -f -"


def tree_upload(folders: list[tuple[Path, str]], remote_base: str) -> tuple[str, Callable[[BinaryIO], None]]:
    """The remote command and the stream writer that replace ``remote_base/<name>`` folders.

    Every folder is checked here, before anything is sent.
    """
    checked = [(Path(d), case_members(d), name) for d, name in folders]
    command = replace_command(remote_base, [name for _d, name in folders])
    return command, lambda out: write_folders(checked, out)


def tar_command(remote_dir: str) -> str:
    """Shell command that writes the contents of ``remote_dir`` to stdout as a tar stream."""
    return f"tar -c -f - -C {shlex.quote(remote_dir)} ."


def case_members(local_dir: Path) -> list[Path]:
    """Every entry below ``local_dir``, checked, parents before children.

    Called before anything is sent, so an unsafe folder fails without touching the remote side.
    """
    root = Path(os.path.realpath(local_dir))
    if not root.is_dir():
        raise UnsafeCaseFolder(f"case folder {local_dir} is not a directory")
    members = []
    for parent, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*dirnames, *sorted(filenames)]:
            path = Path(parent, name)
            _check_member(root, path)
            members.append(path)
    return members


def _check_member(root: Path, path: Path) -> None:
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        target = os.path.realpath(path)
        if os.path.commonpath([root, target]) != str(root):
            raise UnsafeCaseFolder(
                f"symlink {path} points outside the case folder (to {target}); "
                "copy the file into the folder instead of linking to it"
            )
    elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UnsafeCaseFolder(f"{path} is a special file (fifo, socket or device); only files can be sent")


def write_tar(local_dir: Path, out: BinaryIO, members: list[Path] | None = None) -> None:
    """Write the contents of ``local_dir`` to ``out`` as a tar stream (pax format, relative names).

    ``members`` is the checked list from ``case_members``; it is computed when not given.
    Small pieces (headers, small files) are gathered into 1 MB writes and big files go
    straight from disk to ``out`` in 1 MB reads: tarfile's own stream writer copies every
    byte twice more, which took a third of the Python time of a 200 MB upload. Links stay links,
    rewritten as the relative path to what they resolve to so they still point inside once
    the folder lives elsewhere. Owners are left out so files belong to whoever unpacks them.
    """
    write_folders([(local_dir, case_members(local_dir) if members is None else members, "")], out)


def write_folders(folders: list[tuple[Path, list[Path], str]], out: BinaryIO) -> None:
    """Several checked folders ``(local_dir, members, name)`` in one tar stream, each under
    its top-level ``name`` (``""``: at the top), so a batch of cases costs one transfer."""
    stream = _Gather(out)
    for local_dir, members, name in folders:
        root = Path(os.path.realpath(local_dir))
        if name:
            stream.write(_header(_folder_info(name)))
        for path in members:
            info = _tar_info(root, path, name)
            stream.write(_header(info))
            if info.isreg():
                _write_data(path, info.size, stream)
    stream.write(bytes(2 * tarfile.BLOCKSIZE))  # end-of-archive marker
    stream.flush()


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _folder_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
    return info


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


def _tar_info(root: Path, path: Path, prefix: str = "") -> tarfile.TarInfo:
    st = path.lstat()
    relative = path.relative_to(root).as_posix()
    info = tarfile.TarInfo(f"{prefix}/{relative}" if prefix else relative)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    if stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.path.relpath(os.path.realpath(path), start=path.parent)
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    else:
        info.size = st.st_size
    return info


def _write_data(path: Path, size: int, stream: _Gather) -> None:
    """Exactly ``size`` bytes of the file (the size its header announced), then block padding."""
    remaining = size
    with open(path, "rb", buffering=0) as data:
        while remaining:
            chunk = data.read(min(CHUNK, remaining))
            if not chunk:
                raise OSError(f"{path} shrank while it was being sent")
            stream.write(chunk)
            remaining -= len(chunk)
    stream.write(bytes(-size % tarfile.BLOCKSIZE))


class CountingReader:
    """A ``read(n)`` stream that reports the bytes read so far (download progress)."""

    def __init__(self, stream: BinaryIO, progress: ProgressCallback | None):
        self._stream, self._progress, self.received = stream, progress, 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.received += len(data)
        if self._progress is not None and data:
            self._progress(self.received)
        return data


def extract_tar(stream: BinaryIO, dest: Path) -> None:
    """Unpack a tar stream read from ``stream`` into the existing folder ``dest``.

    The ``data`` filter refuses absolute paths, ``..``, links leading out and special
    files; such an archive raises ``UnsafeCaseFolder``. A stream that is not a complete
    tar archive raises ``BadOutput``; the caller prefers tar's own failure when it has one.
    """
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK, copybufsize=CHUNK) as tar:
            tar.extractall(dest, filter="data")
    except tarfile.FilterError as error:
        raise UnsafeCaseFolder(f"refused to unpack {error.tarinfo.name!r}: {error}") from error
    except tarfile.TarError as error:
        raise BadOutput(f"the tar stream could not be read: {error}") from error


@contextmanager
def staged_dir(local_dir: Path) -> Iterator[Path]:
    """Yield an empty folder beside ``local_dir`` that replaces it when the block succeeds.

    The swap is two renames (``local_dir`` to ``.name.outgoing``, ``.name.incoming`` to
    ``local_dir``), so for an instant ``local_dir`` does not exist. The staging names are
    fixed, so the next attempt finds what a crash left: a swap cut between its renames is
    finished first (the incoming folder was complete), other leftovers are removed, and a
    retry ends with the same result. Two downloads into one folder at once are not supported.
    """
    local_dir = Path(local_dir)
    incoming = local_dir.with_name(f".{local_dir.name}.incoming")
    outgoing = local_dir.with_name(f".{local_dir.name}.outgoing")
    if outgoing.exists() and incoming.exists() and not local_dir.exists():
        incoming.rename(local_dir)
    for leftover in (incoming, outgoing):
        shutil.rmtree(leftover, ignore_errors=True)
    local_dir.parent.mkdir(parents=True, exist_ok=True)
    incoming.mkdir()
    try:
        yield incoming
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    if local_dir.exists():
        local_dir.rename(outgoing)
    incoming.rename(local_dir)
    shutil.rmtree(outgoing, ignore_errors=True)
