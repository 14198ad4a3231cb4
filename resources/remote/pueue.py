"""The pueue client: the only code in MQIC that knows pueue's command line.

It turns intentions ("queue this shell command under this label") into exactly quoted ``pueue``
invocations run through a ``Transport``, and turns pueue's answers into typed values
(``pueue_state``) or errors from the shared taxonomy:

* transport problems (``OutcomeUnknown``) pass through untouched: we do not know what happened;
* pueue ran and said no: ``CommandFailed``, or the subclasses below for the failures callers
  act on (``DaemonDown``, ``UnknownGroup``, ``TaskNotFound``);
* pueue said yes but printed something we cannot read: ``BadOutput`` (also "unknown").

Every command is built from ``shlex.quote``d words; option values never start with "-" (pueue's
parser, clap, would read them as options) and ``add`` ends its options with ``--`` so a command
can never be mistaken for one. Every command starts with the global ``--color never`` (clap takes
it only before the subcommand), and an error keeps only its meaningful lines (``_meaningful``):
pueue 4.x prints its errors through color-eyre, in colour even without a terminal, followed by a
source location and backtrace hints that are no use to an operator.
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .errors import BadOutput, CommandFailed, OutcomeUnknown, RemoteError
from .pueue_state import PueueGroup, PueueState, PueueTask, parse_groups, parse_log, parse_status
from .transport import CommandResult, Transport


class DaemonDown(CommandFailed):
    """pueue could not reach its daemon, so it did nothing (an ``add`` surely created no task)."""


class PueueNotRun(DaemonDown):
    """pueue itself could not run on the host: not found or not executable (the shell's exit 127 or
    126), or it refused its own configuration before sending any request. A certain answer: no task
    was created. A ``DaemonDown`` for everything that acts on it (the case waits again, the host's
    health shows the reason), told apart so that the message names the real problem."""


class UnknownGroup(CommandFailed):
    """The group does not exist: pueue never creates groups implicitly."""


class TaskNotFound(CommandFailed):
    """pueue answered, and has no task with that id (ids vanish after ``clean``/``remove``).

    pueue exits 0 here and simply leaves the task out, so ``exit_code`` is 0; it is still a
    definite answer, hence a ``CommandFailed``.
    """


@dataclass(frozen=True)
class AddSpec:
    """One task to add. ``command`` is a single shell string, run remotely exactly as given."""

    command: str
    label: str
    group: str
    workdir: str
    env: Mapping[str, str] | None = None
    """Extra environment variables; the task also captures the rest of the login environment."""


@dataclass(frozen=True)
class AddResult:
    """The outcome of one spec of ``add_many``: a task id, or the error that add would have raised."""

    spec: AddSpec
    task_id: int | None = None
    error: RemoteError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


_GLOBAL_OPTIONS = ("--color", "never")
_DAEMON_DOWN_HINTS = (
    "Did you start it?",
    "Did you start the daemon yet?",
    "Did you start the daemon at least once?",
    "Failed to initialize client.",
)
"""A socket nobody listens on, no config at all, a config whose daemon never ran (no shared secret
yet), or a handshake that failed: pueue sent no request. (Right after pueued is SIGKILLed the
handshake can fail with "Connection reset by peer".)"""
_NOT_RUN_HINTS = ("Failed to read configuration",)
"""pueue's refusal of a configuration file it cannot read, before it contacts any daemon."""
_NOT_RUN_EXITS = {126: "is not executable", 127: "was not found"}
"""What sh exits with when it cannot run the command at all."""
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_REPORT_END = re.compile(r"^(Location:|Backtrace omitted|.*BACKTRACE|.*SPANTRACE|Suggestion:|Note:)")
MAX_MESSAGE = 500
_UNKNOWN_GROUP = re.compile(r"Group .* doesn't exists?\. Use one of these")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VERSION = re.compile(r"^pueue\s+v?(\d+\.\d+\.\d+\S*)\s*$", re.MULTILINE)


class PueueClient:
    """Drives pueue on one host through a ``Transport``.

    ``command`` is how pueue is invoked there, possibly several words (``pueue --config /x``);
    it is split with ``shlex.split`` and every word is re-quoted.
    """

    def __init__(self, transport: Transport, command: str = "pueue", *, timeout: float | None = None):
        self.transport = transport
        self._pueue = shlex.split(command)
        if not self._pueue:
            raise ValueError("empty pueue command")
        self._timeout = timeout

    # --- adding tasks ---------------------------------------------------------------------------

    def add(
        self,
        command: str,
        *,
        label: str,
        group: str,
        workdir: str,
        env: Mapping[str, str] | None = None,
    ) -> int:
        """Queue ``command`` (one shell string) and return the new task's id.

        ``DaemonDown``/``UnknownGroup``: no task was created. ``OutcomeUnknown`` or ``BadOutput``:
        a task may exist; look for it by label before adding again. Another ``CommandFailed`` is
        usually a refusal (e.g. a missing workdir), but pueue also exits 1 when its daemon dies
        after reading the request, so it proves nothing either.
        """
        shell_command = self._add_command(AddSpec(command, label, group, workdir, env))
        result = self.transport.run(shell_command, timeout=self._timeout)
        return _added_task_id(shell_command, result)

    def add_many(self, specs: Iterable[AddSpec]) -> list[AddResult]:
        """Add several tasks in ONE round trip; one ``AddResult`` per spec, in order.

        The adds run in ``ADD_LANES`` lanes side by side, in one ``sh`` script (the transport feeds
        every command to ``sh`` on stdin: no command-line length limit). Each add's output
        and exit code is framed by marker lines carrying a fresh random tag, which no task data can
        forge. A spec whose frame is missing (the script was cut short) gets ``OutcomeUnknown``. A
        transport failure raises ``OutcomeUnknown`` for the whole batch: callers must look up the
        labels.
        """
        specs = list(specs)
        commands = [self._add_command(spec) for spec in specs]
        if not commands:
            return []
        tag = f"MQIC-PUEUE-{secrets.token_hex(16)}"
        script = _batch_script(tag, commands)
        result = self.transport.run(script, timeout=self._timeout)
        stdout_frames = _frames(tag, result.stdout)
        stderr_frames = _frames(tag, result.stderr)
        return [
            _batch_result(index, spec, command, result, stdout_frames, stderr_frames)
            for index, (spec, command) in enumerate(zip(specs, commands, strict=True))
        ]

    def _add_command(self, spec: AddSpec) -> str:
        """``[NAME=value ...] pueue add -l L -g G -w W -p -- COMMAND`` with COMMAND as ONE word.

        pueue joins the words after ``--`` with spaces and runs the result with ``sh -c``; passing
        the whole shell string as a single word makes that join a no-op, so the task runs
        ``sh -c COMMAND`` with exactly the caller's string.
        """
        if not spec.command.strip():
            raise ValueError("empty command")
        words = [
            *self._pueue,
            *_GLOBAL_OPTIONS,
            "add",
            *_option("-l", spec.label, "label", allow_empty=True),
            *_option("-g", spec.group, "group"),
            *_option("-w", spec.workdir, "workdir"),
            "-p",
            "--",
            _no_nul(spec.command, "command"),
        ]
        return _env_prefix(spec.env) + shlex.join(words)

    # --- reading state --------------------------------------------------------------------------

    def status(self, group: str | None = None) -> PueueState:
        """The daemon's state. With ``group`` only that group's tasks (groups are all listed)."""
        options = _option("-g", group, "group") if group is not None else []
        return parse_status(self._run(["status", "--json", *options]).stdout)

    def find_tasks_by_label(self, label: str) -> list[PueueTask]:
        """Every task carrying ``label``, oldest first (labels are not unique in pueue)."""
        return self.status().find_by_label(label)

    def log(self, task_id: int, lines: int = 50) -> str:
        """The last ``lines`` lines of a task's output (stdout and stderr share one log)."""
        _check_count(task_id, "task id", minimum=0)
        _check_count(lines, "lines", minimum=1)
        result = self._run(["log", "--json", "--lines", str(lines), str(task_id)])
        entry = parse_log(result.stdout).get(task_id)
        if entry is None:
            raise TaskNotFound(
                f"pueue has no task {task_id}",
                command=self._shell(["log", str(task_id)]),
                exit_code=result.exit_code,
                stdout=result.stdout,
                stderr=result.stderr,
            )
        return entry.output

    def groups(self) -> dict[str, PueueGroup]:
        return parse_groups(self._run(["group", "--json"]).stdout)

    def version(self) -> str:
        """The pueue client's version, e.g. "4.0.4" (from ``pueue --version``)."""
        result = self._run(["--version"])
        versions = _VERSION.findall(result.stdout)
        if not versions:
            raise BadOutput(f"unexpected `pueue --version` output: {result.stdout[:200]!r}")
        return versions[-1]

    # --- acting on tasks and groups -------------------------------------------------------------

    def kill(self, ids: Iterable[int], signal: str | None = None) -> None:
        """Kill these tasks, or send them ``signal`` (a name pueue knows, e.g. "sigterm").

        Refuses an empty list: ``pueue kill`` without ids kills the whole default group. pueue
        exits 0 if at least one id was running; read ``status`` to learn what became of each.
        """
        ids = list(ids)
        if not ids:
            raise ValueError("refusing to kill without task ids: `pueue kill` alone kills a whole group")
        for task_id in ids:
            _check_count(task_id, "task id", minimum=0)
        options = _option("-s", signal, "signal") if signal is not None else []
        self._run(["kill", *options, *(str(task_id) for task_id in ids)])

    def remove(self, ids: Iterable[int]) -> None:
        """Remove queued, stashed or finished tasks (``kill`` only reaches running ones)."""
        self._run(_remove_words(ids))

    def remove_command(self, ids: Iterable[int]) -> str:
        """The shell line of ``remove`` for these ids, for a caller that batches it with other commands."""
        return self._shell(_remove_words(ids))

    def group_add(self, name: str, parallel: int = 1) -> None:
        """Create a group. pueue 3.x creates it asynchronously: it may not be listed immediately."""
        _check_count(parallel, "parallel", minimum=1)
        self._run(["group", "add", "-p", str(parallel), _option_value(name, "group")])

    def start_group(self, name: str) -> None:
        """Resume a paused group (after a daemon restart every group with queued tasks is paused)."""
        self._run(["start", *_option("-g", name, "group")])

    # --- plumbing -------------------------------------------------------------------------------

    def _shell(self, words: Sequence[str]) -> str:
        return shlex.join([*self._pueue, *_GLOBAL_OPTIONS, *words])

    def _run(self, words: Sequence[str]) -> CommandResult:
        """Run pueue with ``words``; a non-zero exit becomes the matching ``CommandFailed``."""
        command = self._shell(words)
        result = self.transport.run(command, timeout=self._timeout)
        if result.exit_code != 0:
            raise _failure(command, result)
        return result


def _failure(command: str, result: CommandResult) -> CommandFailed:
    """Classify a non-zero pueue exit by its message (3.x prints some errors on stdout).

    The error carries the meaningful lines only, in its message and in ``stdout``/``stderr``.
    """
    result = CommandResult(result.exit_code, _meaningful(result.stdout), _meaningful(result.stderr))
    output = f"{result.stdout}\n{result.stderr}"
    if result.exit_code in _NOT_RUN_EXITS:
        words = shlex.split(command)
        program = next(w for w in words if not _ENV_NAME.fullmatch(w.partition("=")[0]) or "=" not in w)
        why = f"{program} {_NOT_RUN_EXITS[result.exit_code]} on the host (check the host's pueue command)"
        said = CommandResult(result.exit_code, "", f"{why}: {result.stderr}")
        return said.failure(command, PueueNotRun, what="pueue")
    if any(hint in output for hint in _NOT_RUN_HINTS):
        kind: type[CommandFailed] = PueueNotRun
    elif any(hint in output for hint in _DAEMON_DOWN_HINTS):
        kind = DaemonDown
    elif _UNKNOWN_GROUP.search(output):
        kind = UnknownGroup
    else:
        kind = CommandFailed
    return result.failure(command, kind, what="pueue")


def _meaningful(text: str) -> str:
    """An error without escape codes, the "Error:" header, blank lines and the location/backtrace
    block; the numbered cause lines stay ("0: Failed to initialize client.", ...). A text longer than
    ``MAX_MESSAGE`` keeps its first line (the outermost context) and its tail (the root cause)."""
    lines = []
    for line in _ANSI.sub("", text).splitlines():
        line = line.strip()
        if _REPORT_END.match(line):
            break
        if line and line != "Error:":
            lines.append(line)
    clean = "\n".join(lines)
    if len(clean) <= MAX_MESSAGE:
        return clean
    head = lines[0][: MAX_MESSAGE // 2]
    return f"{head}\n...\n{clean[-(MAX_MESSAGE - len(head) - 5) :]}"


def _added_task_id(command: str, result: CommandResult) -> int:
    """The id printed by ``add -p``: the last non-empty stdout line (3.x may warn first)."""
    if result.exit_code != 0:
        raise _failure(command, result)
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if not lines or not lines[-1].isdigit():
        raise BadOutput(f"pueue add printed no task id: {result.stdout[-200:]!r}")
    return int(lines[-1])


def _option(flag: str, value: str, what: str, *, allow_empty: bool = False) -> list[str]:
    return [flag, _option_value(value, what, allow_empty=allow_empty)]


def _option_value(value: str, what: str, *, allow_empty: bool = False) -> str:
    """Refuse values pueue's parser would misread: a leading "-" is taken for an option."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    if not value and not allow_empty:
        raise ValueError(f"empty {what}")
    if value.startswith("-"):
        raise ValueError(f"{what} must not start with '-': {value!r}")
    return _no_nul(value, what)


def _no_nul(value: str, what: str) -> str:
    if "\0" in value:
        raise ValueError(f"{what} contains a NUL character, which no command line can carry")
    return value


def _remove_words(ids: Iterable[int]) -> list[str]:
    ids = list(ids)
    if not ids:
        raise ValueError("no task ids to remove")
    for task_id in ids:
        _check_count(task_id, "task id", minimum=0)
    return ["remove", *(str(task_id) for task_id in ids)]


def _check_count(value: int, what: str, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")


def _env_prefix(env: Mapping[str, str] | None) -> str:
    """``NAME='value' `` assignments for the add: pueue captures its caller's environment."""
    if not env:
        return ""
    assignments = []
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise ValueError(f"invalid environment variable name {name!r}")
        if not isinstance(value, str):
            raise TypeError(f"environment variable {name} must be a string, not {type(value).__name__}")
        assignments.append(f"{name}={shlex.quote(_no_nul(value, name))}")
    return " ".join(assignments) + " "


ADD_LANES = 8
"""How many adds of a batch run side by side. Each ``pueue add`` is a client process that mostly
starts up and waits on the daemon, so a few at once overlap that wait on a multi-core login node;
pueued handles messages one at a time under its state lock, so more lanes gain nothing. The
order of the adds does not matter: a pass adds at most one task per pueue group."""


def _batch_script(tag: str, commands: Sequence[str]) -> str:
    """A ``sh`` script running the adds in ``ADD_LANES`` lanes, each add between marker lines.

    A lane runs its share of the adds one after another (add i goes to lane i mod ADD_LANES), each
    writing its framed stdout and stderr to files of its own in a private temporary directory.
    Once every lane is done the frames are printed in order, so they never interleave; a script
    cut short prints none, and every add of it is then unknown. The newline printed before each
    end marker guarantees it starts a line even if pueue's output did not end with one; ``_frames``
    removes it again. ``</dev/null`` keeps an add from reading the transport's stdin.
    """
    lines = ["dir=$(mktemp -d) || exit 1", "trap 'rm -rf \"$dir\"' EXIT"]
    for lane in range(min(ADD_LANES, len(commands))):
        lines.append("{")
        for index in range(lane, len(commands), ADD_LANES):
            begin, end = f"'{tag} {index} begin'", f"'{tag} {index} end'"
            lines.append(
                f"    {{ printf '%s\\n' {begin}; printf '%s\\n' {begin} >&2; {commands[index]} </dev/null; "
                f"code=$?; printf '\\n%s %s\\n' {end} \"$code\"; printf '\\n%s\\n' {end} >&2; }}"
                f' >"$dir/{index}.out" 2>"$dir/{index}.err"'
            )
        lines.append("} &")
    outs, errs = (" ".join(f'"$dir/{index}.{kind}"' for index in range(len(commands))) for kind in ("out", "err"))
    lines += ["wait", f"cat {outs}", f"cat {errs} >&2"]  # one cat each: a process per file costs ms
    return "\n".join(lines) + "\n"


def _frames(tag: str, text: str) -> dict[int, tuple[str, int | None]]:
    """Index -> (output between the markers, exit code if the end marker carries one)."""
    pattern = re.compile(rf"^{tag} (\d+) begin\n(.*?)\n{tag} \1 end(?: (\d+))?$", re.MULTILINE | re.DOTALL)
    return {
        int(match[1]): (match[2], int(match[3]) if match[3] is not None else None)
        for match in pattern.finditer(text)
    }


def _batch_result(
    index: int,
    spec: AddSpec,
    command: str,
    script: CommandResult,
    stdout_frames: dict[int, tuple[str, int | None]],
    stderr_frames: dict[int, tuple[str, int | None]],
) -> AddResult:
    frame = stdout_frames.get(index)
    if frame is None or frame[1] is None:
        detail = (script.stderr.strip() or script.stdout.strip())[-300:]
        return AddResult(
            spec,
            error=OutcomeUnknown(
                f"no result for add #{index} (label {spec.label!r}): the batch script exited "
                f"{script.exit_code} before reporting it: {detail}"
            ),
        )
    stdout, exit_code = frame
    stderr = stderr_frames.get(index, ("", None))[0]
    try:
        task_id = _added_task_id(command, CommandResult(exit_code, stdout, stderr))
    except (CommandFailed, BadOutput) as exc:
        return AddResult(spec, error=exc)
    return AddResult(spec, task_id=task_id)
