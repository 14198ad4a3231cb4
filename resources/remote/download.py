"""Bringing folders home: one ``tar -c`` of many folders, each unpacked beside its
destination and swapped in only when it came through whole.

The transports only run the command and hand its stdout to ``untar.extract_folders``
(``StreamTar``); everything else is here, so SSH and the local sandbox behave the same:

* GNU tar exits 2 when a named folder is missing but still streams the others, so a
  missing folder is that folder's problem ("missing on the host"), and so is any complaint
  of tar's that names a path inside one folder. A complaint naming no folder fails them all.
* Each destination is staged as ``.mqic-<key>.incoming`` beside it, ``key`` being short
  and given by the caller (a case id), so the name fits the 255-byte limit whatever the
  destination's own name. A failed folder leaves the previous results untouched and its
  staging removed.
* Every folder swapped in carries ``ORIGIN``, written here, naming the remote folder it came
  from (a job's own file of that name is replaced): whoever finds results at home later, e.g.
  after the database was restored from a backup, can tell which attempt they belong to.
* Staging and replaced folders are removed by ``remove_tree``: by descriptor, one level at a
  time and without recursion, so a folder of any depth goes (``shutil.rmtree`` recurses and
  raises ``RecursionError`` a few thousand levels down, even with ``ignore_errors``).
* A problem of one folder stays with that folder's result, whatever it is: the others of
  the batch are unpacked and swapped in all the same.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import re
import shlex
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from .errors import FolderRefused, OutcomeUnknown
from .tarstream import CountingReader
from .transport import CommandResult, ProgressCallback
from .untar import Extraction, FolderResult, Limits, Readable, extract_folders, shown

StreamTar = Callable[[str, Callable[[Readable], Extraction]], tuple[Extraction, CommandResult | None]]
"""Run a command and feed its stdout to the consumer; the command's result, or None when the
consumer left the stream unread to its end and the command was stopped instead."""

KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_GENERIC_COMPLAINTS = ("Exiting with failure status due to previous errors",)
ORIGIN = ".mqic_origin"


def tar_command(remote_base: str, names: list[str]) -> str:
    """Shell command that writes the folders ``names`` of ``remote_base`` to stdout as one tar stream."""
    return f"tar -c -f - -C {shlex.quote(remote_base)} -- {' '.join(shlex.quote(n) for n in names)}"


def staging_key_for(local_dir: Path) -> str:
    """A key for callers that have no id of their own: derived from the destination's name."""
    return hashlib.sha256(os.fsencode(Path(local_dir).name)).hexdigest()[:16]


class Staging:
    """``.mqic-<key>.incoming`` beside ``dest``, swapped in by two renames (``dest`` aside to
    ``.mqic-<key>.outgoing``, incoming to ``dest``), so for an instant ``dest`` does not exist.

    The names are fixed per key, so the next attempt finds what a crash left: a swap cut
    between its renames is finished first (the incoming folder was complete), other
    leftovers are removed, and a retry ends with the same result. Two downloads into one
    folder at once are not supported.
    """

    def __init__(self, dest: Path, key: str):
        if not KEY.fullmatch(key):
            raise ValueError(f"not a short staging key: {key!r}")
        self.dest = Path(dest)
        self.incoming = self.dest.with_name(f".mqic-{key}.incoming")
        self.outgoing = self.dest.with_name(f".mqic-{key}.outgoing")

    def prepare(self) -> Path:
        if self.outgoing.exists() and self.incoming.exists() and not os.path.lexists(self.dest):
            self.incoming.rename(self.dest)
        for leftover in (self.incoming, self.outgoing):
            remove_tree(leftover)
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.incoming.mkdir(mode=0o700)
        return self.incoming

    def commit(self) -> None:
        """Swap the incoming folder in; if that fails, the previous results are put back.
        The previous results are left as the outgoing folder, for ``discard``."""
        moved = os.path.lexists(self.dest)
        if moved:
            self.dest.rename(self.outgoing)
        try:
            self.incoming.rename(self.dest)
        except BaseException:
            if moved:
                self.outgoing.rename(self.dest)
            raise

    def discard(self) -> None:
        """Remove what is left, as far as possible: anything that stays is removed by the
        next ``prepare``, which says why if it still cannot be."""
        for leftover in (self.incoming, self.outgoing):
            with contextlib.suppress(Exception):
                remove_tree(leftover)


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything below it, never following a link (a link at ``path``
    itself is removed, not what it points to); nothing there is fine.

    No recursion and one descriptor at a time, so any depth works: the walk goes down by
    ``open(O_NOFOLLOW)`` below the current folder and back up through its ``..``, which must
    be the very folder it came from (a folder moved meanwhile stops it with an ``OSError``).
    """
    path = Path(path)
    try:
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        try:
            st = os.stat(path.name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            _remove_folder(parent, path.name)
        else:
            os.unlink(path.name, dir_fd=parent)
    finally:
        os.close(parent)


def _remove_folder(top: int, name: str) -> None:
    """Empty and remove folder ``name`` of ``top``, depth first, without recursion."""
    trail: list[tuple[str, tuple[int, int]]] = []  # each folder entered: its name, its parent's identity
    fd, down = os.dup(top), name
    try:
        while True:
            if down is not None:
                child = os.open(down, _DIR_FLAGS, dir_fd=fd)
                trail.append((down, _identity(fd)))
                os.close(fd)
                fd = child
            down = _clear_files(fd)
            if down is not None:
                continue
            entered, parent = trail.pop()
            up = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = up
            if _identity(fd) != parent:
                raise OSError(errno.ESTALE, "a folder was moved while it was being removed", entered)
            os.rmdir(entered, dir_fd=fd)
            if not trail:
                return
    finally:
        os.close(fd)


def _clear_files(fd: int) -> str | None:
    """Unlink what folder ``fd`` holds up to its first sub-folder, and return that one's name;
    None once the folder is empty."""
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                return entry.name
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.name, dir_fd=fd)
    return None


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def fetch(
    stream_tar: StreamTar,
    remote_base: str,
    routes: Mapping[str, Path],
    *,
    staging_keys: Mapping[str, str],
    limits: Limits,
    progress: ProgressCallback | None = None,
) -> dict[str, FolderResult]:
    """Download the folders ``routes`` names from ``remote_base`` into their destinations.

    Every folder gets a result; only an unknown outcome (a lost connection) raises, and
    then no destination has changed.
    """
    if len(set(staging_keys.values())) != len(staging_keys):
        raise ValueError("two folders share a staging key")
    results: dict[str, FolderResult] = {}
    staged: dict[str, Staging] = {}
    try:
        for name, dest in routes.items():
            staging = Staging(dest, staging_keys[name])
            try:
                staging.prepare()
            except OSError as error:  # perhaps passing (a full disk): the next pass tries again
                results[name] = FolderResult(error=f"not reached: local folder could not be prepared: {error}")
                continue
            except Exception as error:  # it would happen again: this folder is refused
                why = f"the local folder could not be prepared: {_unexpected(error)}"
                results[name] = FolderResult(error=why, reached=True)
                continue
            staged[name] = staging
        if staged:
            results.update(_download(stream_tar, remote_base, staged, limits, progress))
        for name, staging in staged.items():
            if results[name].ok:
                _commit(staging, results[name], name)
    finally:
        for staging in staged.values():
            staging.discard()
    return {name: results[name] for name in routes}


def _download(
    stream_tar: StreamTar,
    remote_base: str,
    staged: dict[str, Staging],
    limits: Limits,
    progress: ProgressCallback | None,
) -> dict[str, FolderResult]:
    command = tar_command(remote_base, list(staged))
    routes = {name: staging.incoming for name, staging in staged.items()}
    extraction, result = stream_tar(
        command, lambda stdout: extract_folders(CountingReader(stdout, progress), routes, limits)
    )
    if result is not None and result.exit_code != 0:
        _blame(extraction, result)
    return extraction.folders


def _blame(extraction: Extraction, result: CommandResult) -> None:
    """Give tar's complaints to the folders they name; one naming none fails every folder."""
    general = []
    for line in result.stderr.splitlines():
        complaint = line.removeprefix("tar: ")
        if not line.startswith("tar: ") or complaint in _GENERIC_COMPLAINTS:
            continue
        owner = next((n for n in extraction.folders if complaint.startswith((f"{n}/", f"{n}:"))), None)
        if owner is None:
            general.append(complaint)
        elif extraction.folders[owner].error is None:
            extraction.folders[owner].error = f"tar on the host: {shown(complaint, 300)}"
    if general or not result.stderr.strip():
        why = f"tar on the host exited {result.exit_code}: {shown(general[0] if general else '(no message)', 300)}"
        for folder in extraction.folders.values():
            if folder.error is None:
                folder.error = why
            elif not folder.reached:
                folder.error += f" ({why})"


def _commit(staging: Staging, result: FolderResult, origin: str) -> None:
    try:
        _mark_origin(staging.incoming, origin)
        staging.commit()
    except OSError as error:
        result.error = f"the downloaded folder could not be put in place: {error}"
    except Exception as error:
        result.error = f"the downloaded folder could not be put in place: {_unexpected(error)}"


def _mark_origin(folder: Path, origin: str) -> None:
    """Write ``ORIGIN`` in ``folder``, in place of whatever the job left under that name."""
    remove_tree(folder / ORIGIN)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with open(os.open(folder / ORIGIN, flags, 0o600), "w", encoding="utf-8") as out:
        out.write(f"{origin}\n")


def read_origin(folder: Path) -> str | None:
    """The remote folder name ``folder``'s results came from (``None``: no results, or not MQIC's)."""
    try:
        with open(os.open(Path(folder) / ORIGIN, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb") as found:
            text = found.read(300).decode("utf-8", errors="replace").strip()
    except OSError:
        return None
    return text if text and "/" not in text and "\n" not in text else None


def _unexpected(error: Exception) -> str:
    return shown(f"{type(error).__name__}: {error}", 300)


def fetch_one(
    stream_tar: StreamTar,
    remote_dir: str,
    local_dir: Path,
    *,
    staging_key: str | None,
    limits: Limits,
    progress: ProgressCallback | None,
) -> FolderResult:
    """``fetch`` of one folder, raising when it did not come home (see ``Transport.download_dir``)."""
    remote_base, name = posixpath.split(remote_dir.rstrip("/"))
    if not name or name in {".", ".."}:
        raise ValueError(f"not a folder to download: {remote_dir!r}")
    keys = {name: staging_key or staging_key_for(local_dir)}
    routes = {name: Path(local_dir)}
    results = fetch(stream_tar, remote_base or "/", routes, staging_keys=keys, limits=limits, progress=progress)
    result = results[name]
    if not result.reached:
        raise OutcomeUnknown(f"{remote_dir}: {result.error}")
    if result.error is not None:
        raise FolderRefused(f"{remote_dir}: {result.error}")
    return result


class Downloads:
    """``download_folders`` and ``download_dir`` of a transport that has ``_stream_tar`` (a ``StreamTar``):
    both transports bring folders home the same way, they differ only in how they run tar."""

    _stream_tar: StreamTar

    def download_folders(
        self,
        remote_base: str,
        routes: Mapping[str, Path],
        *,
        staging_keys: Mapping[str, str],
        limits: Limits,
        progress: ProgressCallback | None = None,
    ) -> dict[str, FolderResult]:
        """Every ``remote_base/<name>`` into ``routes[name]`` through one ``tar -c`` (see ``Transport``)."""
        if not routes:
            return {}
        return fetch(
            self._stream_tar, remote_base, routes, staging_keys=staging_keys, limits=limits, progress=progress
        )

    def download_dir(
        self,
        remote_dir: str,
        local_dir: Path,
        *,
        staging_key: str | None = None,
        limits: Limits | None = None,
        progress: ProgressCallback | None = None,
    ) -> FolderResult:
        """Replace ``local_dir`` with ``remote_dir``, unpacked beside it and then swapped in."""
        return fetch_one(
            self._stream_tar,
            remote_dir,
            local_dir,
            staging_key=staging_key,
            limits=limits or Limits(),
            progress=progress,
        )
