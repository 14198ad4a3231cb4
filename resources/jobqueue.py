"""A host's job queue: everything the case lifecycle may ask of the remote world, in one interface.

``cases`` never builds a pueue command, reads pueue's JSON or opens a transport: it gets a
``JobQueue`` from ``resources.contact.contact`` and uses the names exported here. The queue is
pueue on one host reached through one transport; every call reports its outcome to the contact
that handed the queue out, which keeps the host's health.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .connections import result_limits, upload_limits
from .remote.download import read_origin
from .remote.errors import BadOutput, CommandFailed, OutcomeUnknown, RemoteError
from .remote.manifest import FolderManifest, scan_folder
from .remote.manifest import UnsafeCaseFolder as UnsafeFolder
from .remote.pueue import AddResult, AddSpec, DaemonDown, PueueClient, PueueNotRun, TaskNotFound, UnknownGroup
from .remote.pueue_state import GroupStatus, PueueGroup, PueueState, PueueTask, TaskResult, TaskStatus
from .remote.transport import ProgressCallback, Transport, while_waiting
from .remote.untar import FolderResult

__all__ = [
    "TRACES",
    "AddResult",
    "AddSpec",
    "BadOutput",
    "CommandFailed",
    "DaemonDown",
    "FolderManifest",
    "FolderResult",
    "GroupStatus",
    "JobQueue",
    "OutcomeUnknown",
    "PueueGroup",
    "PueueNotRun",
    "PueueState",
    "PueueTask",
    "RemoteError",
    "Sweep",
    "TaskNotFound",
    "TaskResult",
    "TaskStatus",
    "Traces",
    "UnknownGroup",
    "UnsafeFolder",
    "list_folder",
    "read_origin",
    "while_waiting",
]


def list_folder(local_dir: Path) -> FolderManifest:
    """A local folder as it would be sent, or ``UnsafeFolder`` saying why it cannot be (a link
    out, a fifo, gone, past the upload caps). The one rule for what may leave this machine."""
    return scan_folder(local_dir, upload_limits())


TRACES = ".mqic-cleaned"
"""A folder of the base directory where each cleaned-up attempt leaves an empty file named after
its folder: proof, for a while, that the attempt ran and its results came home, even once its task
and folder are gone (a database restored from a backup would otherwise know nothing of it)."""


@dataclass(frozen=True)
class Traces:
    """What the host holds of one label's attempts: their folders, and the traces of the cleaned ones."""

    folders: frozenset[str] = frozenset()
    cleaned: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Sweep:
    """What ``end_processes`` found of one marked group of processes."""

    found: int
    left: int
    checked: bool = True
    """False when the host cannot tell (no /proc): nothing is known about its processes."""

    @property
    def gone(self) -> bool:
        return self.checked and self.left == 0


SWEEP_GRACE_SECONDS = 5


Observer = Callable[[RemoteError | None], None]
Gate = Callable[[], None]


def guarded(gate: Gate, observe: Observer, method, *args, **kwargs):
    """Run one remote call: refused while the host backs off, its outcome reported."""
    gate()
    try:
        result = method(*args, **kwargs)
    except RemoteError as error:
        observe(error)
        raise
    observe(None)
    return result


class JobQueue:
    """pueue on one host, and the folders its tasks work in."""

    def __init__(self, client: PueueClient, observe: Observer, gate: Gate):
        self._client = client
        self._observe = observe
        self._gate = gate

    @property
    def transport(self) -> Transport:
        return self._client.transport

    def _call(self, method, *args, **kwargs):
        return guarded(self._gate, self._observe, method, *args, **kwargs)

    # -- tasks ----------------------------------------------------------------------------------

    def state(self, group: str | None = None) -> PueueState:
        """Every task and group, as pueue sees them now (with ``group``: that group's tasks only)."""
        return self._call(self._client.status, group)

    def add_many(self, specs: Iterable[AddSpec]) -> list[AddResult]:
        """Add the tasks in one round trip; one result per spec, in order."""
        results = self._call(self._client.add_many, specs)
        if results and all(isinstance(r.error, DaemonDown) for r in results):
            self._observe(results[0].error)
        return results

    def stop(self, tasks: Iterable[PueueTask]) -> dict[str, list[int]]:
        """Kill the running ones and remove the waiting ones, always by explicit id.

        ``pueue kill`` only reaches running or paused tasks, and without ids it kills a whole group.
        """
        tasks = list(tasks)
        killed = [t.id for t in tasks if t.status in (TaskStatus.RUNNING, TaskStatus.PAUSED)]
        removed = [t.id for t in tasks if t.is_live and t.id not in killed]
        if killed:
            self._call(self._client.kill, killed)
        if removed:
            self._call(self._client.remove, removed)
        return {"killed": killed, "removed": removed}

    # -- groups ---------------------------------------------------------------------------------

    def groups(self) -> dict[str, PueueGroup]:
        return self._call(self._client.groups)

    def add_group(self, name: str) -> None:
        """Create a pueue group that runs one task at a time (a GPU group's)."""
        self._call(self._client.group_add, name, 1)

    def start_group(self, name: str) -> None:
        self._call(self._client.start_group, name)

    def version(self) -> str:
        return self._call(self._client.version)

    # -- the tasks' folders -------------------------------------------------------------------

    def upload(
        self,
        folders: list[tuple[FolderManifest, str]],
        remote_base: str,
        *,
        progress: ProgressCallback | None = None,
    ) -> dict[str, str]:
        """Replace each ``remote_base/<name>`` with its listed local folder, all in one stream.

        Returns the folders damaged on the way (name -> why): they must not be run.
        """
        return self._call(
            self.transport.upload_tree, folders, remote_base, progress=progress, limits=upload_limits()
        )

    def download(
        self,
        remote_base: str,
        routes: dict[str, Path],
        keys: dict[str, str],
        *,
        progress: ProgressCallback | None = None,
    ) -> dict[str, FolderResult]:
        """Bring the folders ``remote_base/<name>`` home into ``routes[name]``, all in one stream.

        Each folder gets its own result: unpacked and swapped in, refused with the reason (a
        link at the top, past the caps, missing on the host), or not reached (try again).
        ``keys`` name each folder's staging place beside its destination (short: a case id).
        """
        return self._call(
            self.transport.download_folders,
            remote_base,
            routes,
            staging_keys=keys,
            limits=result_limits(),
            progress=progress,
        )

    def tail(self, path: str, max_bytes: int) -> str | None:
        """The last ``max_bytes`` bytes of a file on the host (``None``: no such file), read there
        with ``tail -c``: however much a job printed, no more than that crosses the link or is held
        here (a followed log is asked for every few seconds by every open page)."""
        quoted = shlex.quote(path)
        script = f"if [ -f {quoted} ]; then echo file; tail -c {int(max_bytes)} -- {quoted}; else echo none; fi"
        result = self._call(self.transport.run, script)
        first, _, rest = result.check(script).stdout.partition("\n")
        if first not in ("file", "none") or len(rest) > max_bytes:
            error = BadOutput(f"unexpected answer reading the end of {path}: {result.stdout[:100]!r}")
            self._observe(error)
            raise error
        return rest if first == "file" else None

    def read_small_files(self, paths: list[str]) -> dict[str, str | None]:
        """The first line of each file (``None``: no such file), all in one round trip."""
        if not paths:
            return {}
        quoted = " ".join(shlex.quote(p) for p in paths)
        script = (
            f"for f in {quoted}; do if [ -f \"$f\" ]; then printf 'file %s\\n' "
            f'"$(head -c 64 "$f" | head -n 1)"; else echo none; fi; done'
        )
        result = self._call(self.transport.run, script)
        lines = result.check(script).stdout.splitlines()
        if len(lines) != len(paths):
            error = BadOutput(f"expected {len(paths)} lines reading small files, got {len(lines)}")
            self._observe(error)
            raise error
        return {
            path: line.removeprefix("file ") if line.startswith("file ") else None
            for path, line in zip(paths, lines, strict=True)
        }

    def end_processes(self, variable: str, values: list[str]) -> dict[str, Sweep]:
        """End every process on the host whose environment holds ``variable=value``, per value.

        pueue forgets the processes of the tasks it ran when its daemon dies: a restarted pueued
        calls them ``Killed`` while they go on. A task started with a marker variable in its
        environment can still be found (its children inherit the marker) and ended: SIGTERM,
        up to ``SWEEP_GRACE_SECONDS`` to go, then SIGKILL. One round trip for every value. Needs
        ``/proc`` (Linux); elsewhere the answer is "not checked".
        """
        if not values:
            return {}
        for value in values:
            if not value.isalnum():
                raise ValueError(f"not a marker value: {value!r}")
        script = _sweep_script(variable, values)
        lines = self._call(self.transport.run, script, timeout=SWEEP_GRACE_SECONDS * len(values) + 30)
        return _sweeps(script, lines, values)

    def tidy(self, tasks: list[int], remote_base: str, folders: list[str], *, keep_traces_days: float) -> None:
        """Remove these finished tasks from pueue and delete these folders of ``remote_base``, each
        leaving its trace (``TRACES``), in one round trip; ``CommandFailed`` unless all went
        through. Traces older than ``keep_traces_days`` go. Repeating it is harmless: a caller asks
        only for tasks the state still shows, and ``rm -rf`` of a missing folder does nothing."""
        for name in folders:
            _check_folder_name(name)
        removed = f"{self._client.remove_command(tasks)} >/dev/null; r=$?" if tasks else "r=0"
        names = " ".join(shlex.quote(name) for name in folders)
        traces = " ".join(shlex.quote(f"{TRACES}/{name}") for name in folders)
        deleted = (
            f"cd -- {shlex.quote(remote_base)} && rm -rf -- {names} && mkdir -p {TRACES} && touch -- {traces}"
            f"; d=$?; find {TRACES} -type f -mtime +{int(keep_traces_days)} -exec rm -f -- {{}} + 2>/dev/null"
            if folders
            else "d=0"
        )
        script = f'{removed}; {deleted}; [ "$r" -eq 0 ] && [ "$d" -eq 0 ]'
        self._call(self.transport.run, script).check(script)

    def traces(self, remote_base: str, labels: list[str]) -> dict[str, Traces]:
        """Per label, the attempt folders of ``remote_base`` named ``<label>.<token>`` and the
        traces of those cleaned up, in one round trip. An answer that does not cover every label is
        ``BadOutput``: "could not ask" never reads as "nothing there"."""
        if not labels:
            return {}
        for label in labels:
            _check_folder_name(label)
        quoted = " ".join(shlex.quote(label) for label in labels)
        script = (
            f"cd -- {shlex.quote(remote_base)} || exit 1\n"
            f"for l in {quoted}; do\n"
            '  for f in "$l".*; do [ -d "$f" ] && printf \'folder %s %s\\n\' "$l" "$f"; done\n'
            f'  for f in {TRACES}/"$l".*; do [ -f "$f" ] &&'
            f' printf \'cleaned %s %s\\n\' "$l" "${{f#{TRACES}/}}"; done\n'
            "  printf 'asked %s\\n' \"$l\"\n"
            "done\n"
        )
        result = self._call(self.transport.run, script)
        found: dict[str, dict[str, set[str]]] = {label: {"folder": set(), "cleaned": set()} for label in labels}
        asked = set()
        for line in result.check(script).stdout.splitlines():
            words = line.split(" ")
            if words[0] == "asked" and len(words) == 2:
                asked.add(words[1])
            elif (
                len(words) == 3
                and words[0] in ("folder", "cleaned")
                and words[1] in found
                and words[2].startswith(f"{words[1]}.")
            ):
                found[words[1]][words[0]].add(words[2])
        if asked != set(labels):
            error = BadOutput(f"the traces answered for {len(asked)} of {len(labels)} labels")
            self._observe(error)
            raise error
        return {label: Traces(frozenset(f["folder"]), frozenset(f["cleaned"])) for label, f in found.items()}


def _check_folder_name(name: str) -> None:
    if not name or "/" in name or name in {".", ".."} or "\n" in name or " " in name:
        raise ValueError(f"not a folder name of the base directory: {name!r}")


def _sweep_script(variable: str, values: list[str]) -> str:
    """POSIX sh: pids go one per line through pipes, never through a variable split into words."""
    tries = SWEEP_GRACE_SECONDS * 10
    return (
        'marked() { grep -l -a -F -e "$1" /proc/[0-9]*/environ 2>/dev/null'
        " | sed -n 's|^/proc/\\([0-9]*\\)/environ$|\\1|p'; }\n"
        'signal_all() { marked "$2" | while read -r pid; do kill "-$1" "$pid" 2>/dev/null; done; }\n'
        "for v in " + " ".join(shlex.quote(v) for v in values) + "; do\n"
        '  if [ ! -r /proc/self/environ ]; then echo "sweep $v unchecked"; continue; fi\n'
        f'  m={shlex.quote(variable)}=$v; found=$(marked "$m" | wc -l)\n'
        '  signal_all TERM "$m"\n'
        f'  i=0; while [ $i -lt {tries} ] && [ -n "$(marked "$m")" ]; do sleep 0.1; i=$((i+1)); done\n'
        '  if [ -n "$(marked "$m")" ]; then signal_all KILL "$m"; sleep 0.5; fi\n'
        '  echo "sweep $v found $found left $(marked "$m" | wc -l)"\n'
        "done\n"
    )


def _sweeps(script: str, result, values: list[str]) -> dict[str, Sweep]:
    found = {}
    for line in result.check(script).stdout.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "sweep" and words[2] == "unchecked":
            found[words[1]] = Sweep(0, 0, checked=False)
        elif len(words) == 6 and words[0] == "sweep" and words[3].isdigit() and words[5].isdigit():
            found[words[1]] = Sweep(int(words[3]), int(words[5]))
    if set(found) != set(values):
        raise BadOutput(f"the process sweep answered for {sorted(found)}, not for {sorted(values)}")
    return found
