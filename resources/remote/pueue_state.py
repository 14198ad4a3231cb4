"""A typed, version-neutral view of pueue's JSON (``status``, ``group`` and ``log`` with ``--json``).

Why this module exists: pueue 3.x and 4.x serialise tasks differently (4.x moved the times into
the status enum), and ``status --json`` is large because every task carries the whole environment
captured at ``add``. This is the only place in MQIC that reads pueue's JSON: it parses it once,
checks it strictly, keeps only what MQIC needs (never the environments, which are big and may hold
secrets) and hands out frozen dataclasses. Anything unexpected (garbage, truncation, a missing key,
an enum variant from a future pueue) raises ``BadOutput``, which callers treat as "no answer" rather
than guessing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from types import MappingProxyType
from typing import Any, NamedTuple

from . import collector
from .errors import BadOutput


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    LOCKED = "locked"
    STASHED = "stashed"
    DONE = "done"


class TaskResult(StrEnum):
    SUCCESS = "success"
    KILLED = "killed"
    ERRORED = "errored"
    DEPENDENCY_FAILED = "dependency_failed"
    FAILED = "failed"
    FAILED_TO_SPAWN = "failed_to_spawn"


class GroupStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    RESET = "reset"


LIVE_STATUSES = frozenset(
    {TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.PAUSED, TaskStatus.LOCKED, TaskStatus.STASHED}
)
"""Statuses of a task that still exists in pueue's queue and may yet run (or is running)."""


@dataclass(frozen=True, slots=True)
class PueueTask:
    """One pueue task. Ids are reused after ``clean``: identify a task by id, label and created_at."""

    id: int
    label: str | None
    group: str
    command: str
    original_command: str
    path: str
    created_at: datetime
    status: TaskStatus
    result: TaskResult | None = None
    exit_code: int | None = None
    """0 for Success, n for Failed(n); None for every other result and while not done."""
    spawn_error: str | None = None
    enqueued_at: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None

    @property
    def is_done(self) -> bool:
        return self.status is TaskStatus.DONE

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES

    def snapshot(self) -> dict[str, Any]:
        """A small JSON-serialisable record of this task, for audit logs.

        A monitor pass builds one for every live task to compare it with the one stored: hence
        the members' ``_value_`` (``value`` is a property) and no helper calls.
        """
        result, enqueued_at, start, end = self.result, self.enqueued_at, self.start, self.end
        return {
            "id": self.id,
            "label": self.label,
            "group": self.group,
            "path": self.path,
            "command": self.command,
            "status": self.status._value_,
            "result": None if result is None else result._value_,
            "exit_code": self.exit_code,
            "spawn_error": self.spawn_error,
            "created_at": self.created_at.isoformat(),
            "enqueued_at": None if enqueued_at is None else enqueued_at.isoformat(),
            "start": None if start is None else start.isoformat(),
            "end": None if end is None else end.isoformat(),
        }

    def same_snapshot(self, other: PueueTask) -> bool:
        """``self.snapshot() == other.snapshot()``, without building either: the monitor asks it of
        every live task every pass, against the task it last found equal to the stored snapshot.
        Two times have the same ``isoformat()`` when they are equal (aware ones: the same instant)
        and have the same UTC offset (None for naive ones); None is only equal to None."""
        a, b = self, other
        return a is b or (
            a.id == b.id
            and a.label == b.label
            and a.group == b.group
            and a.path == b.path
            and a.command == b.command
            and a.status is b.status
            and a.result is b.result
            and a.exit_code == b.exit_code
            and a.spawn_error == b.spawn_error
            and a.created_at == b.created_at
            and a.enqueued_at == b.enqueued_at
            and a.start == b.start
            and a.end == b.end
            and a.created_at.utcoffset() == b.created_at.utcoffset()
            and (a.enqueued_at is None or a.enqueued_at.utcoffset() == b.enqueued_at.utcoffset())
            and (a.start is None or a.start.utcoffset() == b.start.utcoffset())
            and (a.end is None or a.end.utcoffset() == b.end.utcoffset())
        )


@dataclass(frozen=True, slots=True)
class PueueGroup:
    name: str
    status: GroupStatus
    parallel_tasks: int
    """How many tasks of this group may run at once; 0 means unlimited."""


@dataclass(frozen=True, slots=True)
class PueueLogEntry:
    task: PueueTask
    output: str
    """The tail of the task's combined stdout/stderr, or pueue's "(Pueue error) ..." text."""


@dataclass(frozen=True)
class PueueState:
    """Everything ``pueue status --json`` said, at one moment.

    ``schema`` is "3" or "4" as told from the task layout, or None when there are no tasks to tell
    it from (the JSON itself carries no version).
    """

    tasks: Mapping[int, PueueTask]
    groups: Mapping[str, PueueGroup]
    schema: str | None

    def find_by_label(self, label: str) -> list[PueueTask]:
        """All tasks carrying ``label``, oldest first: pueue does not keep labels unique."""
        return list(self._by_label.get(label, ()))

    def tasks_with_label_prefix(self, prefix: str) -> list[PueueTask]:
        return _oldest_first(t for t in self.tasks.values() if t.label is not None and t.label.startswith(prefix))

    def live_tasks_in_group(self, group: str) -> list[PueueTask]:
        return _oldest_first(t for t in self.tasks.values() if t.group == group and t.is_live)

    @cached_property
    def _by_label(self) -> dict[str, list[PueueTask]]:
        """Label index, built on first use: callers look up many labels in one (big) state."""
        index: dict[str, list[PueueTask]] = {}
        for task in _oldest_first(self.tasks.values()):
            if task.label is not None:
                index.setdefault(task.label, []).append(task)
        return index


def parse_status(text: str) -> PueueState:
    """Parse ``pueue status --json`` (3.x or 4.x)."""
    with _reporting("pueue status --json"), collector.paused():
        return _parse_status(text)  # its decoded JSON is freed before the collector resumes


def _parse_status(text: str) -> PueueState:
    data = _load_object(text)
    tasks, schema = _parse_tasks(_field(data, "tasks", dict))
    groups = _parse_groups(_field(data, "groups", dict))
    return PueueState(tasks=MappingProxyType(tasks), groups=MappingProxyType(groups), schema=schema)


def parse_groups(text: str) -> dict[str, PueueGroup]:
    """Parse ``pueue group --json``: a map of group name to group."""
    with _reporting("pueue group --json"):
        return _parse_groups(_load_object(text))


def parse_log(text: str) -> dict[int, PueueLogEntry]:
    """Parse ``pueue log --json``: task id to the task and the tail of its output."""
    with _reporting("pueue log --json"):
        entries = {}
        for key, raw in _load_object(text).items():
            try:
                entry = _expect(raw, dict, "log entry")
                task = _parse_task(key, _field(entry, "task", dict))
                entries[task.id] = PueueLogEntry(task=task, output=_field(entry, "output", str))
            except _Malformed as exc:
                raise _located(f"log entry {key}", exc) from None
        return entries


# --- parsing internals -------------------------------------------------------------------------


class _Malformed(Exception):
    """Raised inside this module; turned into ``BadOutput`` with its context at the public edge."""


@contextmanager
def _reporting(what: str) -> Iterator[None]:
    """Turn ``_Malformed`` into ``BadOutput`` naming the command whose output was wrong."""
    try:
        yield
    except _Malformed as exc:
        raise BadOutput(f"unexpected {what} output: {exc}") from None


def _located(where: str, exc: _Malformed) -> _Malformed:
    """Prefix a problem with where it was found (a task id, a group name)."""
    return _Malformed(f"{where}: {exc}")


def _load_object(text: str) -> dict:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _Malformed(f"not valid JSON ({exc}); output starts {text[:80]!r}") from None
    return _expect(data, dict, "top level")


def _expect(value: Any, kind: type, what: str) -> Any:
    """``value`` if it is exactly a ``kind`` (as json.loads builds them; a bool is no int)."""
    if type(value) is not kind:
        raise _Malformed(f"{what} should be {kind.__name__}, got {_describe(value)}")
    return value


def _field_present(obj: dict, key: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise _Malformed(f"missing key {key!r}") from None


def _field(obj: dict, key: str, kind: type) -> Any:
    return _expect(_field_present(obj, key), kind, repr(key))


def _optional_field(obj: dict, key: str, kind: type) -> Any:
    """A key that must be present but may be null (serde writes ``None`` as ``null``)."""
    value = _field_present(obj, key)
    return None if value is None else _expect(value, kind, repr(key))


def _describe(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)")


def _timestamp(value: str, what: str) -> datetime:
    """RFC 3339 as chrono writes it (0-9 fraction digits, Z or +HH:MM) -> aware datetime.

    Python 3.11's ``fromisoformat`` truncates fractions beyond microseconds; the regex keeps it
    from accepting the looser ISO 8601 forms (naive times, dates alone) it would also take.
    """
    if _RFC3339.fullmatch(value) is None:
        raise _Malformed(f"{what} is not an RFC 3339 timestamp: {_describe(value)}")
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise _Malformed(f"{what} is not a valid time: {value!r} ({exc})") from None


def _time_field(obj: dict, key: str) -> datetime | None:
    value = _optional_field(obj, key, str)
    return None if value is None else _timestamp(value, repr(key))


def _variant(value: Any, what: str) -> tuple[str, Any]:
    """Split a serde externally-tagged enum value: ``"Name"`` or ``{"Name": payload}``."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict) and len(value) == 1:
        return next(iter(value.items()))
    raise _Malformed(f"{what} is not a pueue enum value: {_describe(value)}")


class _Lifecycle(NamedTuple):
    """What a task's status says, whichever schema it came from."""

    status: TaskStatus
    result: TaskResult | None = None
    exit_code: int | None = None
    spawn_error: str | None = None
    enqueued_at: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None


def _parse_tasks(raw_tasks: dict) -> tuple[dict[int, PueueTask], str | None]:
    tasks: dict[int, PueueTask] = {}
    schema = None
    for key, raw in raw_tasks.items():
        if schema != "3" and (task := _quick_v4_task(key, raw)) is not None:
            tasks[task.id] = task
            schema = "4"
            continue
        try:
            task = _parse_task(key, _expect(raw, dict, "task"))
            task_schema = _schema_of(raw)
            if schema is not None and task_schema != schema:
                raise _Malformed(f"has the {task_schema}.x layout but earlier tasks have the {schema}.x one")
        except _Malformed as exc:
            raise _located(f"task {key}", exc) from None
        tasks[task.id] = task
        schema = task_schema
    return tasks, schema


def _schema_of(raw: dict) -> str:
    """3.x keeps ``start``/``end`` on the task itself; 4.x moved them into the status."""
    return "3" if "start" in raw else "4"


def _parse_task(key: str, raw: dict) -> PueueTask:
    task_id = _field(raw, "id", int)
    if str(task_id) != key:
        raise _Malformed(f"task under key {key!r} has id {task_id}")
    status = _field_present(raw, "status")
    lifecycle = _lifecycle_v3(raw, status) if _schema_of(raw) == "3" else _lifecycle_v4(status)
    return PueueTask(
        id=task_id,
        label=_optional_field(raw, "label", str),
        group=_field(raw, "group", str),
        command=_field(raw, "command", str),
        original_command=_field(raw, "original_command", str),
        path=_field(raw, "path", str),
        created_at=_timestamp(_field(raw, "created_at", str), "'created_at'"),
        **lifecycle._asdict(),
    )


def _quick_v4_task(key: str, raw: Any) -> PueueTask | None:
    """``_parse_task`` for the common 4.x task (Queued, Running, Paused or Done, the usual
    results), checked just as strictly but inline: ten thousand tasks are parsed every pass.

    Anything else, and anything wrong, gives None: the careful path then parses the task again
    (and says precisely what is wrong with it). So this accepts nothing the careful path refuses
    and returns the very same task for what it accepts. A task shows the same values in every
    ``status``: the task built before from exactly these values (``_seen_tasks``) is handed out.
    """
    if type(raw) is not dict or "start" in raw:  # not a task, or the 3.x layout
        return None
    get = raw.get
    task_id, label, status, created = get("id"), get("label", _MISSING), get("status"), get("created_at")
    group, command, original, path = get("group"), get("command"), get("original_command"), get("path")
    if (
        type(task_id) is not int
        or type(group) is not str
        or type(command) is not str
        or type(original) is not str
        or type(path) is not str
        or (label is not None and type(label) is not str)
        or type(created) is not str
        or type(status) is not dict
        or len(status) != 1
        or str(task_id) != key
    ):
        return None
    ((name, payload),) = status.items()
    if type(payload) is not dict:
        return None
    seen_as = _seen_as(task_id, label, group, command, original, path, created, name, payload)
    if seen_as is not None and (task := _seen_tasks.get(seen_as)) is not None:
        return task
    task = _new_v4_task(task_id, label, group, command, original, path, created, name, payload)
    if task is not None and seen_as is not None:
        if len(_seen_tasks) >= _SEEN_KEPT:
            _seen_tasks.clear()
        _seen_tasks[seen_as] = task
    return task


def _new_v4_task(
    task_id: int, label: str | None, group: str, command: str, original: str, path: str, created: str,
    name: str, payload: dict,
) -> PueueTask | None:  # fmt: skip
    """The rest of ``_quick_v4_task``: the times, the status and the result checked, the task built."""
    created_at = _quick_time(created)
    enqueued_at = _quick_optional_time(payload, "enqueued_at")
    if created_at is None or enqueued_at is _MISSING:
        return None
    result = exit_code = spawn_error = start = end = None
    if name == "Queued":
        task_status = TaskStatus.QUEUED
    else:
        task_status = _QUICK_STATUSES.get(name)
        start = _quick_optional_time(payload, "start")
        if task_status is None or start is _MISSING:
            return None
        if task_status is TaskStatus.DONE:
            outcome = _quick_result(payload.get("result", _MISSING))
            end = _quick_optional_time(payload, "end")
            if outcome is None or end is _MISSING:
                return None
            result, exit_code, spawn_error = outcome
    return PueueTask(
        task_id, label, group, command, original, path, created_at, task_status, result, exit_code, spawn_error,
        enqueued_at, start, end,
    )  # fmt: skip


_MISSING: Any = object()
_QUICK_STATUSES = {"Running": TaskStatus.RUNNING, "Paused": TaskStatus.PAUSED, "Done": TaskStatus.DONE}
_SEEN_KEPT = 1 << 15
_seen_tasks: dict[tuple, PueueTask] = {}
"""The tasks ``_quick_v4_task`` built, by everything it read to build them (``_seen_as``). A task is
immutable: the one built before from the same values is as good as a new one, and building ten
thousand was half of parsing them. Emptied when full."""
_KEY_VALUES = (str, int, type(None))


def _seen_as(
    task_id: int, label: str | None, group: str, command: str, original: str, path: str, created: str,
    name: str, payload: dict,
) -> tuple | None:  # fmt: skip
    """Everything ``_new_v4_task`` reads of a task, as a key; None when one of its values is not a
    string, an int or null (the caller checked the others). A bool is no int (``True == 1``) and a
    float no int (``1.0 == 1``): with these alone, equal keys are the very same values."""
    times = payload.get("enqueued_at", _MISSING), payload.get("start", _MISSING), payload.get("end", _MISSING)
    outcome = payload.get("result", _MISSING)
    if type(outcome) is dict and len(outcome) == 1:  # {"Failed": 2}, {"FailedToSpawn": "..."}
        ((variant, detail),) = outcome.items()
        if type(detail) not in _KEY_VALUES:
            return None
        outcome = (variant, detail)
    elif outcome is not _MISSING and type(outcome) not in _KEY_VALUES:
        return None
    for value in times:
        if value is not _MISSING and value is not None and type(value) is not str:
            return None
    return (task_id, label, group, command, original, path, created, name, *times, outcome)


def _quick_time(value: Any) -> datetime | None:
    """``_timestamp`` for a string that is a valid RFC 3339 time; None for anything else."""
    if type(value) is not str or _RFC3339.fullmatch(value) is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _quick_optional_time(obj: dict, key: str) -> Any:
    """``_time_field``: the time, or None for null; ``_MISSING`` when the careful path would refuse."""
    value = obj.get(key, _MISSING)
    if value is None or value is _MISSING:
        return value
    when = _quick_time(value)
    return _MISSING if when is None else when


def _quick_result(value: Any) -> tuple[TaskResult, int | None, str | None] | None:
    """``_result`` for a valid result; None for anything else."""
    if type(value) is str:
        result = _PLAIN_RESULTS.get(value)
        return None if result is None else (result, 0 if result is TaskResult.SUCCESS else None, None)
    if type(value) is not dict:
        return None
    try:
        return _result(value)
    except _Malformed:
        return None


_PLAIN_STATUSES = {
    "Queued": TaskStatus.QUEUED,
    "Running": TaskStatus.RUNNING,
    "Paused": TaskStatus.PAUSED,
    "Locked": TaskStatus.LOCKED,
}


def _lifecycle_v3(raw: dict, status: Any) -> _Lifecycle:
    """3.x: ``"Queued"``, ..., ``{"Stashed": {...}}``, ``{"Done": RESULT}``; times on the task."""
    name, payload = _variant(status, "status")
    times = {key: _time_field(raw, key) for key in ("enqueued_at", "start", "end")}
    if name == "Done":
        return _Lifecycle(TaskStatus.DONE, *_result(payload), **times)
    if name == "Stashed":
        return _Lifecycle(TaskStatus.STASHED, **times)
    if name not in _PLAIN_STATUSES:
        raise _Malformed(f"unknown status variant {name!r}")
    if payload is not None:
        raise _Malformed(f"status {name!r} carries unexpected data {_describe(payload)}")
    return _Lifecycle(_PLAIN_STATUSES[name], **times)


def _lifecycle_v4(status: Any) -> _Lifecycle:
    """4.x: every status but Locked and Stashed carries its own times; Locked wraps the previous."""
    name, payload = _variant(status, "status")
    if name == "Locked":
        previous = _lifecycle_v4(_field_present(_expect(payload, dict, "Locked"), "previous_status"))
        return _Lifecycle(TaskStatus.LOCKED, enqueued_at=previous.enqueued_at, start=previous.start)
    if name == "Stashed":
        return _Lifecycle(TaskStatus.STASHED)
    if name not in ("Queued", "Running", "Paused", "Done"):
        raise _Malformed(f"unknown status variant {name!r}")
    payload = _expect(payload, dict, name)
    enqueued_at = _time_field(payload, "enqueued_at")
    if name == "Queued":
        return _Lifecycle(TaskStatus.QUEUED, enqueued_at=enqueued_at)
    start = _time_field(payload, "start")
    if name != "Done":
        return _Lifecycle(_PLAIN_STATUSES[name], enqueued_at=enqueued_at, start=start)
    result = _result(_field_present(payload, "result"))
    return _Lifecycle(TaskStatus.DONE, *result, enqueued_at, start, _time_field(payload, "end"))


_PLAIN_RESULTS = {
    "Success": TaskResult.SUCCESS,
    "Killed": TaskResult.KILLED,
    "Errored": TaskResult.ERRORED,
    "DependencyFailed": TaskResult.DEPENDENCY_FAILED,
}


def _result(value: Any) -> tuple[TaskResult, int | None, str | None]:
    """RESULT -> (result, exit_code, spawn_error)."""
    name, payload = _variant(value, "result")
    if name in _PLAIN_RESULTS:
        if payload is not None:
            raise _Malformed(f"result {name!r} carries unexpected data {_describe(payload)}")
        result = _PLAIN_RESULTS[name]
        return result, (0 if result is TaskResult.SUCCESS else None), None
    if name == "Failed":
        return TaskResult.FAILED, _expect(payload, int, "Failed exit code"), None
    if name == "FailedToSpawn":
        return TaskResult.FAILED_TO_SPAWN, None, _expect(payload, str, "FailedToSpawn error")
    raise _Malformed(f"unknown result variant {name!r}")


_GROUP_STATUSES = {"Running": GroupStatus.RUNNING, "Paused": GroupStatus.PAUSED, "Reset": GroupStatus.RESET}


def _parse_groups(raw_groups: dict) -> dict[str, PueueGroup]:
    groups = {}
    for name, raw in raw_groups.items():
        try:
            groups[name] = _parse_group(name, _expect(raw, dict, "group"))
        except _Malformed as exc:
            raise _located(f"group {name!r}", exc) from None
    return groups


def _parse_group(name: str, raw: dict) -> PueueGroup:
    status = _field(raw, "status", str)
    if status not in _GROUP_STATUSES:
        raise _Malformed(f"unknown group status variant {status!r}")
    parallel = _field(raw, "parallel_tasks", int)
    if parallel < 0:
        raise _Malformed(f"negative parallel_tasks {parallel}")
    return PueueGroup(name=name, status=_GROUP_STATUSES[status], parallel_tasks=parallel)


def _oldest_first(tasks: Iterable[PueueTask]) -> list[PueueTask]:
    return sorted(tasks, key=lambda t: (t.created_at, t.id))
