#!/usr/bin/env python3
"""SANDBOX stand-in for pueue -- for MQIC's tests and local demo ONLY, never production.

This single standard-library file (Python 3.9+, copyable onto any host) plays the "remote HPC"
queue: a daemon (the pueued analogue) and a CLI that answers like ``pueue`` 4.0.4 or 3.4.1 where a
client depends on it (docs/pueue-formats.md), byte for byte where MQIC reads it, error reports
included. It runs wherever Python does, starts tasks at once (pueued ticks every 300 ms), and has
fault hooks and evidence files real pueue lacks; it adds no convenience a client could come to
need: tests/test_pueue_conformance.py runs MQIC's client against it and against real pueue side
by side, and any difference is a bug here.

Usage
    pueue_sandbox.py daemon [--state-dir D] [--version 4.0.4|3.4.1] [-d]
        Run the daemon; ``-d`` detaches it and returns once it answers requests.
    pueue_sandbox.py install --bin-dir B --state-dir D [--version V]
        Write ``B/pueue``, a shell wrapper running this file against state dir D.
    pueue_sandbox.py [--color auto|always|never] [SUBCOMMAND ...]   (normally via the wrapper)
        add [-l LABEL] [-g GROUP] [-w DIR] [-p] -- COMMAND...
        status [--json] [-g GROUP]             (no subcommand at all = status)
        kill [IDS...] [-g GROUP] [-s SIGNAL]   (no ids: the whole default group!)
        log [IDS...] [--json] [--lines N | --full] [-g GROUP]
        clean [-s] [-g GROUP] | remove IDS... | group [--json] | group add NAME [-p N]
        parallel N [-g GROUP] | start [-g GROUP] | pause [-g GROUP] [-w] | shutdown | --version
    Python API for tests: ``install(bin_dir, state_dir, version)``, ``start_daemon(state_dir,
    version)``, ``stop_daemon(state_dir)`` (stop also kills any task process group left behind),
    ``crash_daemon(state_dir)`` (SIGKILL the daemon alone, for restart tests), ``configure(state_dir)``
    (the config alone, as on a host whose pueue was set up but whose daemon never ran).

Versions
    ``--version`` of the daemon (else env PUEUE_SANDBOX_VERSION, else 4.0.4) picks the JSON
    schema of ``status``/``log``/``group``. The CLI takes its version from PUEUE_SANDBOX_VERSION
    (the wrapper bakes it in): it decides ``--version``, where failures go (4.x stderr, 3.x stdout)
    and how the client's own errors look: 4.x prints color-eyre's report, ANSI colours, Location
    and backtrace hint included whatever ``--color`` says, as real pueue 4.0.4 does; 3.x anyhow's
    "Error: ... Caused by:". A wrapper and a daemon of different versions behave like a mismatched
    real pair.

State dir (``--state-dir``, else env PUEUE_SANDBOX_DIR, else ~/.local/share/pueue-sandbox)
    pueue.yml       written by the first daemon start; without it the CLI answers "Couldn't find
                    a configuration file. Did you start the daemon yet?", like pueue.
    shared_secret   written by the first daemon start too; a config without it (``configure``)
                    makes the CLI answer "I/O error at path ".../shared_secret" while opening
                    secret file. Did you start the daemon at least once?", like pueue.
    pueue.socket    the daemon's unix socket: one JSON request and one JSON response per
                    connection. No socket or nobody listening = "Did you start it?", ending with
                    "No such file or directory" after a clean stop (the daemon removes it) and
                    "Connection refused" after a SIGKILL (the file stays), like pueue.
    state.json      tasks and groups (internal format, written atomically by rename).
    daemon.pid      the daemon's pid, written once it listens; daemon.lock (flock) proves it lives.
    daemon.log      the detached daemon's stdout and stderr.
    task_logs/ID.log  a task's stdout and stderr, truncated at each start, removed by clean/remove.
    adds.jsonl      evidence: one line per successful add, appended by the daemon before it
                    answers: {"time", "id", "label", "group", "path", "command"}.
    events.jsonl    evidence: one line per task start and end: {"time" (RFC 3339), "time_ns"
                    (int), "event": "start"|"end", "id", "created_at", "label", "group",
                    "worker_id", and "result" on "end"}. Ids are reused, so a task is
                    (id, created_at). Tasks of one group must never overlap beyond its limit.
    faults/         fault hooks for failure tests, plain files whose presence arms them:
        hang_before_add  ``add`` hangs (an hour) before contacting the daemon: nothing is added.
        hang_after_add   ``add`` creates and records the task, then hangs (an hour) without
                         printing: the caller cannot learn the id it just created.

How tasks run (as in pueue)
    ``sh -c COMMAND`` in the task's path, its own process group, stdin a pipe nobody writes,
    environment = the client's at ``add`` time (minus this sandbox's own PUEUE_SANDBOX_*
    variables) plus PUEUE_GROUP and PUEUE_WORKER_ID. Exit 0 -> Success, n -> {"Failed": n},
    a signal -> Killed, spawn error (e.g. missing path) -> {"FailedToSpawn": msg}. Groups start
    queued tasks by id up to ``parallel_tasks`` (0 = unlimited); paused groups start nothing.
    ``pause -g G`` also SIGSTOPs G's running tasks unless ``--wait``; ``start -g G`` resumes.
    On a daemon start, Running/Paused tasks of the saved state become Done/Killed (their
    processes are NOT killed, like pueue) and each group still holding queued tasks is paused.

Left out on purpose: stash/enqueue/restart/edit/follow/wait/send/env/reset/switch, dependencies,
priorities, delays, ``--all``, task ids for ``start``/``pause``, the status query language,
TCP/TLS, callbacks, 3.x's asynchronous ``group add`` and pueue #562's version-mismatch warning.
These are usage errors (exit 2) or simply absent.
"""

from __future__ import annotations

# Only what a client call needs is imported here: every `pueue add` starts this module, and
# pueue's compiled client starts in a few ms. The daemon's and the parser's modules (argparse,
# datetime, selectors, subprocess, ...) are imported inside the functions that use them.
import collections
import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import sys
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (2 ms of every start)

if TYPE_CHECKING:
    import argparse
    import pathlib
    import subprocess

VERSIONS = ("4.0.4", "3.4.1")
DEFAULT_VERSION = "4.0.4"
DEFAULT_STATE_DIR = "~/.local/share/pueue-sandbox"
SANDBOX_ENV = ("PUEUE_SANDBOX_DIR", "PUEUE_SANDBOX_VERSION")
DEFAULT_GROUP = "default"
DEFAULT_LOG_LINES = 15
MAX_SOCKET_PATH = 100  # sun_path holds 104 bytes on macOS, 108 on Linux
READY_TIMEOUT = 30.0
HANG_SECONDS = 3600
ACTIVE = ("Running", "Paused")
COLORS = ("auto", "always", "never")

# pueue's Signal enum accepts these spellings (case-insensitive); the numbers are Linux's.
SIGNALS = {
    "int": signal.SIGINT,
    "2": signal.SIGINT,
    "kill": signal.SIGKILL,
    "9": signal.SIGKILL,
    "term": signal.SIGTERM,
    "15": signal.SIGTERM,
    "cont": signal.SIGCONT,
    "18": signal.SIGCONT,
    "stop": signal.SIGSTOP,
    "19": signal.SIGSTOP,
}

# Rust's io::ErrorKind for the errors a spawn can hit, to word FailedToSpawn like pueue.
IO_ERROR_KINDS = {
    errno.ENOENT: "NotFound",
    errno.EACCES: "PermissionDenied",
    errno.EPERM: "PermissionDenied",
    errno.ENOTDIR: "NotADirectory",
}

WRAPPER = """#!/bin/sh
# SANDBOX stand-in for pueue: tests and the demo only, never production.
# Written by `pueue_sandbox.py install`; it talks to the sandbox daemon of this state dir.
# The installing interpreter imports the module from its cached bytecode (no `python3` shim, no
# compiling of a script, no site): every `pueue add` pays this start-up, compiled pueue does not.
PUEUE_SANDBOX_DIR={state_dir}
PUEUE_SANDBOX_VERSION={version}
export PUEUE_SANDBOX_DIR PUEUE_SANDBOX_VERSION
exec {python} -I -S -c 'import sys; sys.path.insert(0, sys.argv.pop(1)); import pueue_sandbox; \
sys.exit(pueue_sandbox.main())' {module_dir} "$@"
"""


class UsageError(Exception):
    """A command line pueue's clap parser would reject (exit 2)."""


class ClientError(Exception):
    """A failure the pueue client reports itself on stderr (exit 1): its chain of causes, outermost
    first, and the place in pueue's source that 4.x's color-eyre report names."""

    def __init__(self, *causes: str, location: str) -> None:
        super().__init__(*causes)
        self.causes = causes
        self.location = location

    def report(self, version: str) -> str:
        """4.x: color-eyre's report, in colour even with ``--color never`` (pueue installs it that
        way), with its Location and backtrace hint. 3.x: anyhow's ``Error: ... Caused by:``."""
        if version.startswith("3."):
            first, *rest = self.causes
            caused = "".join(f"\n    {n}: " + cause.replace("\n", "\n       ") for n, cause in enumerate(rest))
            return f"Error: {first}" + (f"\n\nCaused by:{caused}" if rest else "")
        lines = ["Error: "]
        for n, cause in enumerate(self.causes):
            lines += [f"   {n}: {part}" for part in f"\x1b[91m{cause}\x1b[0m".split("\n")]
        path, line = self.location.split(":")
        return "\n".join(
            [
                *lines,
                "",
                "Location:",
                f"   \x1b[35m{path}\x1b[0m:\x1b[35m{line}\x1b[0m",
                "",
                "Backtrace omitted. Run with RUST_BACKTRACE=1 environment variable to display it.",
                "Run with RUST_BACKTRACE=full to include source snippets.",
            ]
        )


# ---------------------------------------------------------------------------- state dir


class StateDir:
    """The files of one sandbox instance (layout in the module docstring)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        root = root or os.environ.get("PUEUE_SANDBOX_DIR") or DEFAULT_STATE_DIR
        self.root = os.path.abspath(os.path.expanduser(os.fspath(root)))
        self.config = self._path("pueue.yml")
        self.secret = self._path("shared_secret")
        self.socket = self._path("pueue.socket")
        self.state = self._path("state.json")
        self.pid = self._path("daemon.pid")
        self.lock = self._path("daemon.lock")
        self.daemon_log = self._path("daemon.log")
        self.adds = self._path("adds.jsonl")
        self.events = self._path("events.jsonl")
        self.logs = self._path("task_logs")
        self.faults = self._path("faults")

    def _path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def log(self, task_id: int) -> str:
        return os.path.join(self.logs, f"{task_id}.log")

    def fault(self, name: str) -> bool:
        return os.path.exists(os.path.join(self.faults, name))

    def read_pid(self) -> int | None:
        try:
            with open(self.pid) as file:
                return int(file.read())
        except (OSError, ValueError):
            return None

    def daemon_alive(self) -> bool:
        """Whether a daemon holds the lock: unlike the pid file, this cannot be stale."""
        try:
            fd = os.open(self.lock, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


# ---------------------------------------------------------------------------- formats


def rfc3339(ns: int) -> str:
    """A local time as chrono/serde write it: 0, 3, 6 or 9 fraction digits, then ``Z`` for a zero
    offset (as on a UTC host) or ``+HH:MM``."""
    import datetime

    seconds, nanos = divmod(ns, 1_000_000_000)
    local = datetime.datetime.fromtimestamp(seconds).astimezone()
    offset = local.strftime("%z")
    zone = "Z" if offset == "+0000" else f"{offset[:3]}:{offset[3:]}"
    return f"{local:%Y-%m-%dT%H:%M:%S}{_fraction(nanos)}{zone}"


def _fraction(nanos: int) -> str:
    """chrono's ``%.f``: the shortest of none, millis, micros or nanos that is exact."""
    if nanos == 0:
        return ""
    if nanos % 1_000_000 == 0:
        return f".{nanos // 1_000_000:03d}"
    if nanos % 1_000 == 0:
        return f".{nanos // 1_000:06d}"
    return f".{nanos:09d}"


def compact_json(value: object) -> str:
    """serde_json's compact form: no spaces, non-ASCII kept as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def rust_debug_str(text: str) -> str:
    """Rust's ``{:?}`` of a string or path: double-quoted with escapes, unicode kept."""
    return json.dumps(text, ensure_ascii=False)


def rust_io_display(err: OSError) -> str:
    """Rust's ``Display`` of an OS ``io::Error``."""
    return f"{os.strerror(err.errno)} (os error {err.errno})"


def rust_io_debug(err: OSError) -> str:
    """Rust's ``Debug`` of an OS ``io::Error``, as it appears in FailedToSpawn."""
    kind = IO_ERROR_KINDS.get(err.errno, "Uncategorized")
    return f"Os {{ code: {err.errno}, kind: {kind}, message: {rust_debug_str(os.strerror(err.errno))} }}"


def render_task(task: dict, version: str, envs: dict | None = None) -> dict:
    """A task exactly as ``status --json`` of ``version`` serializes it (key order included)."""
    head = {"id": task["id"], "created_at": task["created_at"]}
    if version.startswith("3."):
        head["enqueued_at"] = task["enqueued_at"]
    body = {
        "original_command": task["command"],
        "command": task["command"],
        "path": task["path"],
        "envs": task["envs"] if envs is None else envs,
        "group": task["group"],
        "dependencies": [],
        "priority": 0,
        "label": task["label"],
    }
    if version.startswith("3."):
        status = {"Done": task["result"]} if task["status"] == "Done" else task["status"]
        tail = {"status": status, "prev_status": "Locked", "start": task["start"], "end": task["end"]}
    else:
        tail = {"status": _status_v4(task)}
    return {**head, **body, **tail}


def _status_v4(task: dict) -> dict:
    """4.x keeps the times inside the externally tagged status."""
    times = {"enqueued_at": task["enqueued_at"]}
    if task["status"] != "Queued":
        times["start"] = task["start"]
    if task["status"] == "Done":
        times.update(end=task["end"], result=task["result"])
    return {task["status"]: times}


def read_log_output(path: str, lines: int | None) -> str:
    """A task's output as ``pueue log --json`` reads it from the local log file."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as err:
        detail = f"I/O error at path {rust_debug_str(path)} while getting log file handle:\n"
        return f"(Pueue error) Failed to get log file handle: {detail}{rust_io_display(err)}"
    if lines is None:
        try:
            return data.decode()
        except UnicodeDecodeError:
            return (
                "(Pueue error) Failed to read local log output file: Error { kind: InvalidData, "
                'message: "stream did not contain valid UTF-8" }'
            )
    return "\n".join(_decode_line(line) for line in _last_lines(data, lines))


def _last_lines(data: bytes, amount: int) -> list[bytes]:
    """The last ``amount`` lines like Rust's ``lines()``: no empty line after a final newline."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line.removesuffix(b"\r") for line in lines[len(lines) - amount :]] if amount else []


def _decode_line(line: bytes) -> str:
    try:
        return line.decode()
    except UnicodeDecodeError:
        return "Pueue: Failed to read line."


def task_action_response(message: str, matching: list[int], failed: list[int]) -> dict:
    """pueue's ``compile_task_response``: success unless no given id matched."""
    done, bad = ", ".join(map(str, matching)), ", ".join(map(str, failed))
    if not failed:
        return success(f"{message}: {done}")
    if not matching:
        return failure(f"The command failed for tasks: {bad}")
    return success(f"{message}: {done}\nThe command failed for tasks: {bad}")


def success(text: str) -> dict:
    return {"ok": True, "text": text}


def failure(text: str) -> dict:
    return {"ok": False, "text": text}


def append_jsonl(path: str, record: dict) -> None:
    with open(path, "a") as file:
        file.write(compact_json(record) + "\n")


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(widths[col]) for col, cell in enumerate(row)).rstrip() for row in rows)


def describe_status(task: dict) -> str:
    """The status word of the plain ``status``/``log`` output."""
    if task["status"] != "Done":
        return task["status"]
    result = task["result"]
    if isinstance(result, str):
        return result
    if "Failed" in result:
        return f"Failed ({result['Failed']})"
    return "Failed to spawn"


# ---------------------------------------------------------------------------- daemon


class Daemon:
    """The pueued analogue: owns the state, runs the tasks, answers one request per connection.

    Single-threaded on purpose: requests, child exits (SIGCHLD wakes the loop) and scheduling
    are handled one after the other, so no state is ever shared between threads.
    """

    def __init__(self, paths: StateDir, version: str) -> None:
        self.paths = paths
        self.version = version
        self.tasks: dict[int, dict] = {}
        self.groups: dict[str, dict] = {DEFAULT_GROUP: {"status": "Running", "parallel_tasks": 1}}
        self.children: dict[int, subprocess.Popen] = {}
        self.running = True

    # -- persistence

    def restore(self) -> None:
        """Load the saved state, applying pueue's rules for tasks of a daemon that went away."""
        try:
            with open(self.paths.state) as file:
                saved = json.load(file)
        except FileNotFoundError:
            return
        self.groups = saved["groups"]
        self.tasks = {int(task_id): task for task_id, task in saved["tasks"].items()}
        for task in self.tasks.values():
            if task["status"] in ACTIVE:
                self._finish(task, "Killed")
        for name, group in self.groups.items():
            if self._tasks_of(name, ("Queued",)):
                group["status"] = "Paused"
        self.save()

    def save(self) -> None:
        """Write the state atomically, so a crash never leaves half a file behind."""
        temporary = self.paths.state + ".tmp"
        with open(temporary, "w") as file:
            # dumps, not dump: dump streams through json's pure-Python encoder, many times slower.
            file.write(json.dumps({"tasks": self.tasks, "groups": self.groups}))
        os.replace(temporary, self.paths.state)

    # -- main loop

    def serve(self, listener: socket.socket) -> None:
        """Answer requests and run tasks until stopped, then kill the tasks like pueue does."""
        import selectors

        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        # A real handler (not SIG_IGN, which would auto-reap) only so that exits wake the loop.
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ)
        selector.register(wake_read, selectors.EVENT_READ)
        while self.running:
            if self._reap() | self._schedule():
                self.save()
            for key, _ in selector.select(timeout=1.0):
                if key.fileobj is listener:
                    self._answer(listener)
                else:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_read, 4096)
        self._kill_all()

    def _stop(self, *_: object) -> None:
        self.running = False

    def _answer(self, listener: socket.socket) -> None:
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(5.0)
            try:
                data = receive_all(connection)
                if not data:  # a client that connected and gave up, as pueue's add on a missing -w
                    return
                request = json.loads(data)
                connection.sendall(compact_json(self.handle(request)).encode())
            except (OSError, ValueError) as err:
                print(f"pueue sandbox: dropped a request: {err!r}", file=sys.stderr)

    def handle(self, request: dict) -> dict:
        handler = getattr(self, f"_cmd_{request.get('cmd')}", None)
        if handler is None:
            return failure(f"Unknown request {request.get('cmd')!r}")
        return handler(request)

    def _kill_all(self) -> None:
        """Graceful shutdown: like pueue, kill every task (they end as Killed) and save."""
        for child in self.children.values():
            signal_process_group(child.pid, signal.SIGKILL)
            child.wait()
        self._reap()
        self.save()

    # -- running tasks

    def _schedule(self) -> bool:
        """Start queued tasks (lowest id first; priorities are always 0) while slots are free.

        Runs after every request, so it counts each group's active tasks once rather than per
        queued task (which made a request cost O(tasks^2) with many tasks queued)."""
        active = collections.Counter(t["group"] for t in self.tasks.values() if t["status"] in ACTIVE)
        started = False
        for task_id in sorted(self.tasks):
            task = self.tasks[task_id]
            if task["status"] == "Queued" and self._has_free_slot(task["group"], active[task["group"]]):
                self._spawn(task)
                active[task["group"]] += 1
                started = True
        return started

    def _has_free_slot(self, name: str, active: int) -> bool:
        group = self.groups[name]
        limit = group["parallel_tasks"]
        return group["status"] == "Running" and (limit == 0 or active < limit)

    def _spawn(self, task: dict) -> None:
        import subprocess

        worker_id = self._free_worker_id(task["group"])
        envs = dict(task["envs"], PUEUE_GROUP=task["group"], PUEUE_WORKER_ID=str(worker_id))
        task["worker_id"] = worker_id
        with open(self.paths.log(task["id"]), "wb") as log:
            try:
                child = subprocess.Popen(
                    ["sh", "-c", task["command"]],
                    cwd=task["path"],
                    env=envs,
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as err:
                message = f"Failed to spawn child {task['id']} with err: {rust_io_debug(err)}"
                log.write(f"Pueue error, failed to spawn task. Check your command.\n{message}".encode())
                self._started(task)
                self._finish(task, {"FailedToSpawn": message})  # pueue reads the clock twice, too
                return
        # Like pueue, the task keeps the environment it was started with.
        task.update(status="Running", envs=envs, pid=child.pid)
        self.children[task["id"]] = child
        self._started(task)

    def _started(self, task: dict) -> None:
        """Like pueue, the start time is read once the spawn has been tried."""
        start_ns = time.time_ns()
        task["start"] = rfc3339(start_ns)
        self._event("start", task, start_ns)

    def _free_worker_id(self, name: str) -> int:
        taken = {task["worker_id"] for task in self._tasks_of(name, ACTIVE)}
        return next(worker for worker in range(len(taken) + 1) if worker not in taken)

    def _reap(self) -> bool:
        finished = [task_id for task_id, child in self.children.items() if child.poll() is not None]
        for task_id in finished:
            child = self.children.pop(task_id)
            child.stdin.close()
            self._finish(self.tasks[task_id], exit_result(child.returncode))
        return bool(finished)

    def _finish(self, task: dict, result: object) -> None:
        end_ns = time.time_ns()
        task.update(status="Done", result=result, end=rfc3339(end_ns), pid=None)
        self._event("end", task, end_ns)

    def _event(self, kind: str, task: dict, ns: int) -> None:
        record = {"time": rfc3339(ns), "time_ns": ns, "event": kind}
        record.update({key: task[key] for key in ("id", "created_at", "label", "group", "worker_id")})
        if kind == "end":
            record["result"] = task["result"]
        append_jsonl(self.paths.events, record)

    def _tasks_of(self, group: str, statuses: tuple[str, ...]) -> list[dict]:
        return [t for t in self.tasks.values() if t["group"] == group and t["status"] in statuses]

    def _signal(self, tasks: list[dict], signum: int, new_status: str | None = None) -> None:
        for task in tasks:
            signal_process_group(task["pid"], signum)
            if new_status:
                task["status"] = new_status

    # -- requests (one method per request "cmd"; the request is the CLI's parsed arguments)

    def _unknown_group(self, name: str) -> dict | None:
        if name in self.groups:
            return None
        names = ", ".join(rust_debug_str(group) for group in sorted(self.groups))
        return failure(f"Group {name} doesn't exists. Use one of these: [{names}]")

    def _cmd_add(self, request: dict) -> dict:
        group = request["group"]
        problem = self._unknown_group(group)
        if problem:
            return problem
        task_id = max(self.tasks, default=-1) + 1
        created_at = rfc3339(time.time_ns())
        self.tasks[task_id] = {
            "id": task_id,
            "created_at": created_at,
            "enqueued_at": rfc3339(time.time_ns()),
            "command": request["command"],
            "path": request["path"],
            "envs": request["envs"],
            "group": group,
            "label": request["label"],
            "status": "Queued",
            "start": None,
            "end": None,
            "result": None,
            "pid": None,
            "worker_id": None,
        }
        self.save()
        evidence = {"time": created_at, "id": task_id, "label": request["label"], "group": group}
        append_jsonl(self.paths.adds, {**evidence, "path": request["path"], "command": request["command"]})
        if request["print_task_id"]:
            return success(str(task_id))
        paused = (
            "\nThe group of this task is currently paused!" if self.groups[group]["status"] == "Paused" else ""
        )
        return success(f"New task added (id {task_id}).{paused}")

    def _cmd_status(self, request: dict) -> dict:
        tasks = [self.tasks[i] for i in sorted(self.tasks) if request["group"] in (None, self.tasks[i]["group"])]
        groups = {name: self.groups[name] for name in sorted(self.groups)}
        if request["json"]:
            rendered = {str(task["id"]): render_task(task, self.version) for task in tasks}
            return success(compact_json({"tasks": rendered, "groups": groups}))
        if not tasks:
            return success("Task list is empty. Add tasks with `pueue add -- [cmd]`")
        header = ["Id", "Status", "Group", "Label", "Command", "Path", "Start", "End"]
        columns = ("group", "label", "command", "path", "start", "end")
        rows = [[str(t["id"]), describe_status(t), *(t[column] or "" for column in columns)] for t in tasks]
        return success(format_table([header, *rows]))

    def _cmd_kill(self, request: dict) -> dict:
        signum = request["signal"]
        if request["task_ids"]:
            response, targets = self._task_action(request["task_ids"], ACTIVE, "Tasks are being killed")
        else:
            name = request["group"] or DEFAULT_GROUP
            problem = self._unknown_group(name)
            if problem:
                return problem
            targets = self._tasks_of(name, ACTIVE)
            if self._tasks_of(name, ("Queued",)):
                self.groups[name]["status"] = "Paused"
            if signum is None:
                text = f'All tasks of group "{name}" are being killed. The group will also be paused!!!'
            else:
                signal_name = signal.Signals(signum).name.lower()
                text = f"Sending signal {signal_name} to all running tasks of group {name}."
            response = success(text)
            self.save()
        self._signal(targets, signal.SIGKILL if signum is None else signum)
        return response

    def _task_action(self, task_ids: list[int], statuses: tuple[str, ...], message: str) -> tuple[dict, list]:
        """Split ids into tasks in ``statuses`` and the rest; answer like pueue."""
        matching = [i for i in task_ids if i in self.tasks and self.tasks[i]["status"] in statuses]
        failed = [i for i in task_ids if i not in matching]
        return task_action_response(message, matching, failed), [self.tasks[i] for i in matching]

    def _cmd_log(self, request: dict) -> dict:
        lines = None if request["full"] else request["lines"]
        lines = DEFAULT_LOG_LINES if lines is None and not request["full"] else lines
        if request["task_ids"]:
            tasks = [self.tasks[i] for i in sorted(set(request["task_ids"])) if i in self.tasks]
        else:
            # 4.x shows the default group when no ids are given, 3.x every task.
            group = request["group"] or (DEFAULT_GROUP if self.version.startswith("4.") else None)
            tasks = [self.tasks[i] for i in sorted(self.tasks) if group in (None, self.tasks[i]["group"])]
        outputs = {task["id"]: read_log_output(self.paths.log(task["id"]), lines) for task in tasks}
        if request["json"]:
            logs = {
                str(t["id"]): {"task": render_task(t, self.version, envs={}), "output": outputs[t["id"]]}
                for t in tasks
            }
            return success(compact_json(logs))
        shown = [t for t in tasks if t["status"] in ("Done", *ACTIVE)]
        return success("\n\n".join(f"--- Task {t['id']}: {describe_status(t)}\n{outputs[t['id']]}" for t in shown))

    def _cmd_clean(self, request: dict) -> dict:
        for task in list(self.tasks.values()):
            if task["status"] != "Done" or request["group"] not in (None, task["group"]):
                continue
            if not request["successful_only"] or task["result"] == "Success":
                self._forget(task["id"])
        self.save()
        only = " successfully" if request["successful_only"] else ""
        where = f" from group '{request['group']}'" if request["group"] else ""
        return success(f"All{only} finished tasks have been removed{where}")

    def _cmd_remove(self, request: dict) -> dict:
        response, targets = self._task_action(request["task_ids"], ("Queued", "Done"), "Tasks removed from list")
        for task in targets:
            self._forget(task["id"])
        self.save()
        return response

    def _forget(self, task_id: int) -> None:
        del self.tasks[task_id]
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.paths.log(task_id))

    def _cmd_group(self, request: dict) -> dict:
        if request["group_cmd"] == "add":
            return self._add_group(request["name"], request["parallel"])
        groups = {name: self.groups[name] for name in sorted(self.groups)}
        if request["json"]:
            return success(compact_json(groups))
        return success(
            "\n".join(
                f'Group "{name}" ({group["parallel_tasks"]} parallel): {group["status"].lower()}'
                for name, group in groups.items()
            )
        )

    def _add_group(self, name: str, parallel: int | None) -> dict:
        if name in self.groups:
            return failure(f'Group "{name}" already exists')
        self.groups[name] = {"status": "Running", "parallel_tasks": 1 if parallel is None else parallel}
        self.save()
        if self.version.startswith("3."):
            return success(f'Group "{name}" is being created')
        return success(f'New group "{name}" has been created')

    def _cmd_parallel(self, request: dict) -> dict:
        name = request["group"] or DEFAULT_GROUP
        problem = self._unknown_group(name)
        if problem:
            return problem
        self.groups[name]["parallel_tasks"] = request["parallel_tasks"]
        self.save()
        return success(f'Parallel tasks setting for group "{name}" adjusted')

    def _cmd_start(self, request: dict) -> dict:
        name = request["group"] or DEFAULT_GROUP
        problem = self._unknown_group(name)
        if problem:
            return problem
        self.groups[name]["status"] = "Running"
        self._signal(self._tasks_of(name, ("Paused",)), signal.SIGCONT, "Running")
        self.save()
        return success(f'Group "{name}" is being resumed.')

    def _cmd_pause(self, request: dict) -> dict:
        name = request["group"] or DEFAULT_GROUP
        problem = self._unknown_group(name)
        if problem:
            return problem
        self.groups[name]["status"] = "Paused"
        if not request["wait"]:
            self._signal(self._tasks_of(name, ("Running",)), signal.SIGSTOP, "Paused")
        self.save()
        return success(f'Group "{name}" is being paused.')

    def _cmd_shutdown(self, _request: dict) -> dict:
        self.running = False
        return success("Daemon is shutting down")


def exit_result(returncode: int) -> object:
    """pueue's TaskResult for an exit status: Python reports a signal as a negative code."""
    if returncode == 0:
        return "Success"
    if returncode < 0:
        return "Killed"
    return {"Failed": returncode}


def signal_process_group(pid: int, signum: int) -> None:
    """Signal a task's whole process group (pueue does the same); it may have just exited."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def receive_all(connection: socket.socket) -> bytes:
    """Read until the peer shuts down its side: each connection carries one message."""
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def run_daemon(paths: StateDir, version: str) -> int:
    """Run the daemon in the foreground until ``shutdown``, SIGTERM or SIGINT."""
    if len(paths.socket.encode()) > MAX_SOCKET_PATH:
        print(f"pueue sandbox: state dir path too long for a unix socket: {paths.root}", file=sys.stderr)
        return 1
    os.makedirs(paths.logs, mode=0o700, exist_ok=True)
    lock_fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)  # held open until we exit
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("There seems to be an active pueue daemon.", file=sys.stderr)
        return 1
    configure(paths.root)
    if not os.path.exists(paths.secret):
        # pueued's secret authenticates its clients; the stand-in's clients only need it to exist.
        write_atomically(paths.secret, os.urandom(32).hex())
    daemon = Daemon(paths, version)
    daemon.restore()
    with contextlib.suppress(FileNotFoundError):
        os.remove(paths.socket)  # left by a daemon that died; we hold the lock, so it is stale
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(paths.socket)
        listener.listen(64)
        write_atomically(paths.pid, str(os.getpid()))
        daemon.serve(listener)
    for leftover in (paths.socket, paths.pid):
        os.remove(leftover)
    return 0


def daemonize(paths: StateDir, version: str) -> int:
    """Start the daemon detached and return once it listens (its pid file names it)."""
    import subprocess

    os.makedirs(paths.root, mode=0o700, exist_ok=True)
    command = [sys.executable, "-I", os.path.abspath(__file__), "daemon", "--state-dir", paths.root]
    with open(paths.daemon_log, "ab") as log:
        child = subprocess.Popen(
            [*command, "--version", version],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if paths.read_pid() == child.pid:
            return 0
        if child.poll() is not None:
            print(
                f"pueue sandbox: the daemon exited with {child.returncode}, see {paths.daemon_log}",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.005)
    child.kill()
    print(f"pueue sandbox: the daemon did not get ready in {READY_TIMEOUT}s", file=sys.stderr)
    return 1


def write_atomically(path: str, text: str) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w") as file:
        file.write(text)
    os.replace(temporary, path)


# ---------------------------------------------------------------------------- client


def parse_add(argv: list[str]) -> dict:
    """``add``'s arguments as clap takes them: options first, then (after ``--`` or the first
    word that is not an option) the command words, joined with single spaces."""
    values = {"-l": "label", "--label": "label", "-g": "group", "--group": "group"}
    values.update({"-w": "working_directory", "--working-directory": "working_directory"})
    flags = {"-p": "print_task_id", "--print-task-id": "print_task_id"}
    options = {"label": None, "group": DEFAULT_GROUP, "working_directory": None, "print_task_id": False}
    rest = list(argv)
    while rest and rest[0].startswith("-") and rest[0] != "-":
        arg = rest.pop(0)
        if arg == "--":
            break
        name, value = _split_option(arg)
        if name in flags and value is None:
            options[flags[name]] = True
        elif name in values:
            if value is None:
                if not rest:
                    raise UsageError(f"a value is required for '{name}' but none was supplied")
                value = rest.pop(0)
            options[values[name]] = value
        else:
            raise UsageError(f"unexpected argument '{arg}' found")
    if not rest:
        raise UsageError("the following required arguments were not provided:\n  <COMMAND>...")
    return {"cmd": "add", "command": " ".join(rest), **options}


def _split_option(arg: str) -> tuple[str, str | None]:
    """``--label=x`` -> (``--label``, ``x``); ``-lx`` -> (``-l``, ``x``); ``-l`` -> (``-l``, None)."""
    if arg.startswith("--"):
        name, equals, value = arg.partition("=")
        return name, value if equals else None
    return arg[:2], arg[2:] or None


def parse_signal(text: str) -> int:
    import argparse

    key = text.lower().removeprefix("sig")
    if key not in SIGNALS:
        raise argparse.ArgumentTypeError(f"invalid signal '{text}'")
    return SIGNALS[key]


def build_parser(version: str) -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(prog="pueue", description="SANDBOX stand-in for pueue (tests/demo only).")
    parser.add_argument("-V", "--version", action="version", version=f"pueue {version}")
    commands = parser.add_subparsers(dest="cmd")
    commands.add_parser("add", help="-l LABEL -g GROUP -w DIR -p -- COMMAND...")

    status = commands.add_parser("status")
    status.add_argument("-j", "--json", action="store_true")
    status.add_argument("-g", "--group")

    kill = commands.add_parser("kill", help="with no ids: kills every task of the default group!")
    kill.add_argument("task_ids", nargs="*", type=int)
    kill.add_argument("-g", "--group")
    kill.add_argument("-s", "--signal", type=parse_signal)

    log = commands.add_parser("log")
    log.add_argument("task_ids", nargs="*", type=int)
    log.add_argument("-j", "--json", action="store_true")
    log.add_argument("-g", "--group")
    amount = log.add_mutually_exclusive_group()
    amount.add_argument("-l", "--lines", type=int)
    amount.add_argument("-f", "--full", action="store_true")

    clean = commands.add_parser("clean")
    clean.add_argument("-s", "--successful-only", action="store_true")
    clean.add_argument("-g", "--group")

    commands.add_parser("remove").add_argument("task_ids", nargs="+", type=int)

    group = commands.add_parser("group")
    group.add_argument("-j", "--json", action="store_true")
    group_add = group.add_subparsers(dest="group_cmd").add_parser("add")
    group_add.add_argument("name")
    group_add.add_argument("-p", "--parallel", type=int)

    parallel = commands.add_parser("parallel")
    parallel.add_argument("parallel_tasks", type=int)
    parallel.add_argument("-g", "--group")

    commands.add_parser("start").add_argument("-g", "--group")
    pause = commands.add_parser("pause")
    pause.add_argument("-g", "--group")
    pause.add_argument("-w", "--wait", action="store_true")
    commands.add_parser("shutdown")

    daemon = commands.add_parser("daemon", help="run the sandbox daemon (the pueued analogue)")
    daemon.add_argument("--state-dir")
    daemon.add_argument(
        "--version", choices=VERSIONS, default=os.environ.get("PUEUE_SANDBOX_VERSION", DEFAULT_VERSION)
    )
    daemon.add_argument("-d", "--daemonize", action="store_true")

    setup = commands.add_parser("install", help="write a `pueue` wrapper script into --bin-dir")
    setup.add_argument("--bin-dir", required=True)
    setup.add_argument("--state-dir", required=True)
    setup.add_argument("--version", choices=VERSIONS, default=DEFAULT_VERSION)
    return parser


def run_client(request: dict, version: str) -> int:
    """Send one request to the daemon and print its answer where pueue would. Like pueue, the client
    reads its config and secret and connects before it resolves ``add``'s ``-w``: while the daemon
    is down, a missing workdir goes unnoticed."""
    paths = StateDir()
    if request["cmd"] == "add" and paths.fault("hang_before_add"):
        return hang()
    if not os.path.exists(paths.config):
        no_config = "Couldn't find a configuration file. Did you start the daemon yet?"
        raise ClientError(no_config, location="pueue/src/bin/pueue.rs:61")
    try:
        with open(paths.secret, "rb"):
            pass
    except OSError as err:
        raise secret_error(paths, err) from err
    try:
        connection = connect(paths)
    except OSError as err:
        raise connection_error(paths, err) from err
    with connection:
        if request["cmd"] == "add":
            request.update(path=add_path(request.pop("working_directory"), version), envs=captured_env())
        try:
            response = exchange(connection, request)
        except OSError as err:
            raise connection_error(paths, err) from err
        except ValueError as err:  # the daemon went away after reading the request
            cause = "I/O error while reading request size header:\nfailed to fill whole buffer"
            raise ClientError(cause, location="pueue/src/client/commands/add.rs:73") from err
    if request["cmd"] == "add" and paths.fault("hang_after_add"):
        return hang()
    if response["ok"]:
        print(response["text"])
        return 0
    print(response["text"], file=sys.stderr if version.startswith("4.") else sys.stdout)
    return 1


def hang() -> int:
    """A fault hook: stall like a wedged ssh session until the caller's timeout kills us."""
    time.sleep(HANG_SECONDS)
    return 1


def add_path(working_directory: str | None, version: str) -> str:
    """The task's path: ``-w`` (4.0.3+ refuses a missing one; 3.x lets the spawn fail) or the
    current directory."""
    if working_directory is None:
        return os.getcwd()
    if version.startswith("4.") and not os.path.exists(working_directory):
        missing = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        raise ClientError(
            "Failed to canonicalize given working directory path",
            rust_io_display(missing),
            location="pueue/src/client/commands/add.rs:42",
        )
    return os.path.realpath(working_directory)


def captured_env() -> dict[str, str]:
    """The caller's environment as pueue captures it; the wrapper's own variables are not the
    caller's, so they are left out."""
    return {key: value for key, value in os.environ.items() if key not in SANDBOX_ENV}


def send_request(paths: StateDir, request: dict, timeout: float | None = None) -> dict:
    with connect(paths, timeout) as connection:
        return exchange(connection, request)


def connect(paths: StateDir, timeout: float | None = None) -> socket.socket:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.settimeout(timeout)
        connection.connect(paths.socket)
    except OSError:
        connection.close()
        raise
    return connection


def exchange(connection: socket.socket, request: dict) -> dict:
    """One request, one response: the request ends where the client shuts its side down."""
    connection.sendall(compact_json(request).encode())
    connection.shutdown(socket.SHUT_WR)
    return json.loads(receive_all(connection))


def connection_error(paths: StateDir, err: OSError) -> ClientError:
    """pueue's error chain for a daemon that is not there: it ends with the OS error, "No such file
    or directory" after a clean stop (the socket is gone), "Connection refused" after a SIGKILL."""
    return ClientError(
        "Failed to initialize client.",
        "Failed to initialize stream.",
        f"I/O error at path {rust_debug_str(paths.socket)} while connecting to daemon. Did you start it?:\n"
        + rust_io_display(err),
        location="pueue_lib/src/network/client.rs:85",
    )


def secret_error(paths: StateDir, err: OSError) -> ClientError:
    """pueue reads the shared secret before it connects: a config whose daemon never ran has none."""
    return ClientError(
        f"I/O error at path {rust_debug_str(paths.secret)} while opening secret file. "
        "Did you start the daemon at least once?:\n" + rust_io_display(err),
        location="pueue/src/bin/pueue.rs:91",
    )


def strip_global_options(argv: list[str]) -> list[str]:
    """Consume the global options a client puts before the subcommand (clap takes ``--color``
    nowhere else); only colours are known, and the stand-in prints none in its normal output."""
    rest = list(argv)
    while rest and (rest[0] == "--color" or rest[0].startswith("--color=")):
        _, equals, value = rest.pop(0).partition("=")
        if not equals:
            if not rest:
                raise UsageError("a value is required for '--color <COLOR>' but none was supplied")
            value = rest.pop(0)
        if value not in COLORS:
            raise UsageError(f"invalid value '{value}' for '--color <COLOR>'")
    return rest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    version = os.environ.get("PUEUE_SANDBOX_VERSION", DEFAULT_VERSION)
    if version not in VERSIONS:
        print(f"pueue sandbox: PUEUE_SANDBOX_VERSION must be one of {VERSIONS}", file=sys.stderr)
        return 2
    try:
        argv = strip_global_options(argv)
        if argv[:1] == ["add"]:
            return run_client(parse_add(argv[1:]), version)
        args = build_parser(version).parse_args(argv or ["status"])
        if args.cmd == "daemon":
            paths = StateDir(args.state_dir)
            return daemonize(paths, args.version) if args.daemonize else run_daemon(paths, args.version)
        if args.cmd == "install":
            print(install(args.bin_dir, args.state_dir, args.version))
            return 0
        return run_client(vars(args), version)
    except UsageError as err:
        print(f"error: {err}\n\nUsage: pueue add [OPTIONS] -- <COMMAND>...", file=sys.stderr)
        return 2
    except ClientError as err:
        print(err.report(version), file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------- Python API


def install(
    bin_dir: str | os.PathLike[str], state_dir: str | os.PathLike[str], version: str = DEFAULT_VERSION
) -> pathlib.Path:
    """Write an executable ``bin_dir/pueue`` that runs this file against ``state_dir``."""
    import pathlib
    import shlex

    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}")
    wrapper = pathlib.Path(bin_dir) / "pueue"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(
        WRAPPER.format(
            state_dir=shlex.quote(StateDir(state_dir).root),
            version=shlex.quote(version),
            python=shlex.quote(sys.executable),
            module_dir=shlex.quote(os.path.dirname(os.path.abspath(__file__))),
        )
    )
    wrapper.chmod(0o755)
    return wrapper


def configure(state_dir: str | os.PathLike[str]) -> None:
    """Write the state dir's config if it has none, as a first daemon start does (pueued saves a
    default config when it finds none); alone, it leaves a host set up whose daemon never ran."""
    paths = StateDir(state_dir)
    os.makedirs(paths.root, mode=0o700, exist_ok=True)
    if not os.path.exists(paths.config):
        with open(paths.config, "w") as file:
            file.write("# pueue sandbox: created by the first daemon start, like pueue's config\n")


def start_daemon(state_dir: str | os.PathLike[str], version: str = DEFAULT_VERSION) -> int:
    """Start a detached daemon for ``state_dir``; return its pid once it answers."""
    import subprocess

    command = [sys.executable, "-I", os.path.abspath(__file__), "daemon", "-d"]
    command += ["--state-dir", os.fspath(state_dir), "--version", version]
    done = subprocess.run(command, capture_output=True, text=True, timeout=READY_TIMEOUT + 5)
    if done.returncode != 0:
        raise RuntimeError(f"pueue sandbox daemon did not start: {done.stderr.strip()}")
    return StateDir(state_dir).read_pid()


def stop_daemon(state_dir: str | os.PathLike[str], timeout: float = 5.0) -> None:
    """Shut the daemon down (SIGKILL if it does not go), then kill task groups left running."""
    paths = StateDir(state_dir)
    pid = paths.read_pid()
    with contextlib.suppress(OSError, ValueError):
        send_request(paths, {"cmd": "shutdown"}, timeout=timeout)
    if not _wait_until_dead(paths, timeout) and pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_until_dead(paths, timeout)
    _kill_orphaned_tasks(paths)


def crash_daemon(state_dir: str | os.PathLike[str], timeout: float = 5.0) -> None:
    """SIGKILL the daemon and leave its tasks running, as when pueued dies under them."""
    paths = StateDir(state_dir)
    pid = paths.read_pid()
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_until_dead(paths, timeout)


def _wait_until_dead(paths: StateDir, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while paths.daemon_alive():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _kill_orphaned_tasks(paths: StateDir) -> None:
    """Tasks the saved state still calls active belong to a daemon that was killed."""
    try:
        with open(paths.state) as file:
            tasks = json.load(file)["tasks"].values()
    except (OSError, ValueError):
        return
    for task in tasks:
        if task["status"] in ACTIVE and task["pid"]:
            signal_process_group(task["pid"], signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
