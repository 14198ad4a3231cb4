"""Parsing pueue's JSON (3.x and 4.x) into the typed state, against pueue's real formats.

The samples in tests/data/pueue/ are built from pueue's serde structs, plus one state file taken
verbatim from pueue's own tests (docs/pueue-formats.md lists them). Both v3 and v4 status samples
describe the same 13 tasks. What real pueue 4.0.4 prints is checked in test_pueue_conformance.py.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from resources.remote.errors import BadOutput, OutcomeUnknown
from resources.remote.pueue_state import (
    GroupStatus,
    PueueGroup,
    TaskResult,
    TaskStatus,
    parse_groups,
    parse_log,
    parse_status,
)

DATA = Path(__file__).parent / "data" / "pueue"
PLUS2 = timezone(timedelta(hours=2))


def sample(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


def sample_json(name: str) -> dict:
    return json.loads(sample(name))


def at(hour: int, minute: int, second: int, micro: int = 0, tz: timezone = PLUS2) -> datetime:
    return datetime(2025, 6, 1, hour, minute, second, micro, tzinfo=tz)


S, R = TaskStatus, TaskResult

# id: (label, group, status, result, exit_code) for the 13 tasks of v3_status.json / v4_status.json
EXPECTED_TASKS = {
    0: ("prep", "default", S.DONE, R.SUCCESS, 0),
    1: (None, "default", S.DONE, R.FAILED, 2),
    2: ("train-a", "gpu", S.DONE, R.KILLED, None),
    3: (None, "default", S.DONE, R.FAILED_TO_SPAWN, None),
    4: ("io-err", "default", S.DONE, R.ERRORED, None),
    5: ("needs-1", "default", S.DONE, R.DEPENDENCY_FAILED, None),
    6: ("long", "default", S.RUNNING, None, None),
    7: ("train-b", "gpu", S.PAUSED, None, None),
    8: ("after-long", "default", S.QUEUED, None, None),
    9: ("stash-me", "gpu", S.STASHED, None, None),
    10: (None, "default", S.STASHED, None, None),
    11: ("editing", "default", S.LOCKED, None, None),
    12: ('say "hi" ✓', "gpu", S.QUEUED, None, None),
}
SPAWN_ERROR = (
    'Failed to spawn child 3 with err: Os { code: 2, kind: NotFound, message: "No such file or directory" }'
)
STATUS_SAMPLES = [("v3_status.json", "3"), ("v4_status.json", "4")]


@pytest.mark.parametrize(("name", "schema"), STATUS_SAMPLES)
def test_status_sample_decodes_every_task(name, schema):
    state = parse_status(sample(name))

    assert state.schema == schema
    assert list(state.tasks) == list(range(13))
    decoded = {
        task_id: (task.label, task.group, task.status, task.result, task.exit_code)
        for task_id, task in state.tasks.items()
    }
    assert decoded == EXPECTED_TASKS
    assert all(task.id == task_id for task_id, task in state.tasks.items())


@pytest.mark.parametrize(("name", "schema"), STATUS_SAMPLES)
def test_status_sample_commands_paths_and_spawn_error(name, schema):
    tasks = parse_status(sample(name)).tasks

    assert tasks[3].spawn_error == SPAWN_ERROR
    assert tasks[3].path == "/does/not/exist"
    assert [t.id for t in tasks.values() if t.spawn_error is not None] == [3]
    assert tasks[10].path == "/home/alice"
    assert tasks[0].path == "/home/alice/proj"
    assert tasks[12].command == tasks[12].original_command == "echo 'quoted' && echo \"double\""
    assert tasks[2].command == "python train.py --epochs 10"


@pytest.mark.parametrize(("name", "schema"), STATUS_SAMPLES)
def test_status_sample_times_keep_their_offsets(name, schema):
    tasks = parse_status(sample(name)).tasks

    done = tasks[0]  # 9, 9, 3 and 6 fraction digits
    assert done.created_at == at(10, 10, 0, 123456)
    assert done.created_at.utcoffset() == timedelta(hours=2)
    assert done.enqueued_at == at(10, 10, 0, 123476)
    assert done.start == at(10, 10, 1, 250000)
    assert done.end == at(10, 10, 5, 345678)
    assert done.end.tzinfo == PLUS2

    running = tasks[6]
    assert (running.enqueued_at, running.start, running.end) == (
        at(10, 16, 0, 130143),
        at(10, 16, 1, 234587),
        None,
    )
    paused = tasks[7]
    assert (paused.start, paused.end) == (at(10, 17, 1, 234591), None)
    queued = tasks[8]
    assert (queued.enqueued_at, queued.start, queued.end) == (at(10, 18, 0, 132365), None, None)
    stashed = tasks[9]
    assert (stashed.created_at, stashed.enqueued_at, stashed.start) == (at(10, 19, 0, 133456), None, None)
    locked = tasks[11]  # 4.x: the time comes from the wrapped previous (Queued) status
    assert (locked.enqueued_at, locked.start, locked.end) == (at(10, 21, 0, 135698), None, None)
    spawn_failed = tasks[3]
    assert spawn_failed.start == spawn_failed.end == at(10, 13, 1, 234577)


@pytest.mark.parametrize(("name", "schema"), STATUS_SAMPLES)
def test_status_sample_groups(name, schema):
    groups = parse_status(sample(name)).groups

    assert dict(groups) == {
        "default": PueueGroup("default", GroupStatus.RUNNING, 1),
        "gpu": PueueGroup("gpu", GroupStatus.PAUSED, 2),
    }


def test_v3_and_v4_samples_decode_to_identical_tasks():
    v3 = parse_status(sample("v3_status.json"))
    v4 = parse_status(sample("v4_status.json"))

    assert dict(v3.tasks) == dict(v4.tasks)
    assert dict(v3.groups) == dict(v4.groups)


def test_tasks_keep_no_environment():
    task = parse_status(sample("v4_status.json")).tasks[0]

    assert "envs" not in {f.name for f in dataclasses.fields(task)}
    assert not hasattr(task, "envs")


def test_done_and_live_properties():
    tasks = parse_status(sample("v4_status.json")).tasks

    assert [t.id for t in tasks.values() if t.is_done] == [0, 1, 2, 3, 4, 5]
    assert [t.id for t in tasks.values() if t.is_live] == [6, 7, 8, 9, 10, 11, 12]


def test_snapshot_is_small_json_with_iso_times():
    tasks = parse_status(sample("v3_status.json")).tasks

    assert tasks[1].snapshot() == {
        "id": 1,
        "label": None,
        "group": "default",
        "path": "/home/alice/proj",
        "command": "ls /nonexistent",
        "status": "done",
        "result": "failed",
        "exit_code": 2,
        "spawn_error": None,
        "created_at": "2025-06-01T10:11:00.124567+02:00",
        "enqueued_at": "2025-06-01T10:11:00.124587+02:00",
        "start": "2025-06-01T10:11:01.234571+02:00",
        "end": "2025-06-01T10:11:05.345686+02:00",
    }
    queued = tasks[12].snapshot()
    assert (queued["status"], queued["result"], queued["start"], queued["label"]) == (
        "queued",
        None,
        None,
        'say "hi" ✓',
    )
    assert json.loads(json.dumps(queued)) == queued


def test_state_is_immutable():
    state = parse_status(sample("v4_status.json"))

    with pytest.raises(dataclasses.FrozenInstanceError):
        state.tasks[0].status = TaskStatus.QUEUED
    with pytest.raises(TypeError):
        state.tasks[99] = state.tasks[0]


def test_filtered_group_sample_has_only_that_groups_tasks_but_all_groups():
    state = parse_status(sample("v4_status_group_gpu.json"))

    assert list(state.tasks) == [2, 7, 9, 12]
    assert {t.group for t in state.tasks.values()} == {"gpu"}
    assert [t.status for t in state.tasks.values()] == [S.DONE, S.PAUSED, S.STASHED, S.QUEUED]
    assert state.tasks[2].result is R.KILLED
    assert set(state.groups) == {"default", "gpu"}
    assert [t.id for t in state.live_tasks_in_group("gpu")] == [7, 9, 12]


def test_state_file_from_pueue_repository():
    state = parse_status(sample("v4_state_file_from_pueue_repo.json"))

    assert state.schema == "4"
    decoded = {i: (t.status, t.result, t.exit_code, t.label, t.command) for i, t in state.tasks.items()}
    assert decoded == {
        0: (S.DONE, R.SUCCESS, 0, None, "ls"),
        1: (S.DONE, R.FAILED, 2, None, "ls"),
        2: (S.STASHED, None, None, None, "ls"),
        3: (S.RUNNING, None, None, None, "sleep 9000000"),
        4: (S.QUEUED, None, None, None, "pueue sleep 60"),
        5: (S.QUEUED, None, None, None, "days ls"),
    }
    assert state.tasks[3].start == datetime(2024, 7, 18, 14, 55, 23, 365190, tzinfo=PLUS2)
    assert state.tasks[5].enqueued_at == datetime(2024, 7, 18, 14, 56, 35, 928788, tzinfo=PLUS2)
    assert dict(state.groups) == {
        "default": PueueGroup("default", GroupStatus.RUNNING, 1),
        "downloads": PueueGroup("downloads", GroupStatus.RUNNING, 1),
    }


def test_empty_state():
    state = parse_status(sample("v3_v4_status_empty.json"))

    assert dict(state.tasks) == {}
    assert state.schema is None
    assert dict(state.groups) == {"default": PueueGroup("default", GroupStatus.RUNNING, 1)}
    assert state.find_by_label("anything") == []
    assert state.live_tasks_in_group("default") == []


def test_group_json():
    assert parse_groups(sample("v3_v4_group.json")) == {
        "default": PueueGroup("default", GroupStatus.RUNNING, 1),
        "gpu": PueueGroup("gpu", GroupStatus.PAUSED, 2),
    }


def test_group_reset_status_and_unlimited_parallel():
    groups = parse_groups('{"g":{"status":"Reset","parallel_tasks":0}}')

    assert groups == {"g": PueueGroup("g", GroupStatus.RESET, 0)}


@pytest.mark.parametrize("name", ["v3_log.json", "v4_log.json"])
def test_log_json(name):
    entries = parse_log(sample(name))

    assert list(entries) == list(range(13))
    assert entries[0].output == "hello"
    assert entries[1].output == "ls: cannot access '/nonexistent': No such file or directory"
    assert entries[2].output == "epoch 1/10 loss=0.91\nepoch 2/10 loss=0.55"
    assert entries[4].output == ""
    assert entries[3].output.startswith("Pueue error, failed to spawn task.")
    assert entries[8].output.startswith("(Pueue error) Failed to get log file handle")
    assert (entries[1].task.status, entries[1].task.exit_code) == (S.DONE, 2)
    assert (entries[7].task.label, entries[7].task.status) == ("train-b", S.PAUSED)
    assert entries[11].task.status is S.LOCKED
    assert entries[12].task.label == 'say "hi" ✓'


def test_log_tasks_match_status_tasks():
    log_tasks = {i: e.task for i, e in parse_log(sample("v4_log.json")).items()}

    assert log_tasks == dict(parse_status(sample("v3_status.json")).tasks)


# --- lookups ----------------------------------------------------------------------------------


def status_with(edit) -> str:
    """The v4 status sample after ``edit(data)`` changed it."""
    data = sample_json("v4_status.json")
    edit(data)
    return json.dumps(data)


def test_find_by_label_returns_all_duplicates_oldest_first():
    def duplicate_labels(data):
        tasks = data["tasks"]
        for task_id in ("2", "7", "12"):
            tasks[task_id]["label"] = "case-42"
        tasks["12"]["created_at"] = "2025-06-01T08:00:00Z"  # 10:00+02:00: oldest despite the highest id
        tasks["7"]["created_at"] = tasks["2"]["created_at"]  # same time: the lower id first

    state = parse_status(status_with(duplicate_labels))

    assert [t.id for t in state.find_by_label("case-42")] == [12, 2, 7]
    assert state.find_by_label("case-4") == []
    assert [t.id for t in state.find_by_label("prep")] == [0]


def test_find_by_label_keeps_empty_label_distinct_from_none():
    def empty_label(data):
        data["tasks"]["4"]["label"] = ""

    state = parse_status(status_with(empty_label))

    assert [t.id for t in state.find_by_label("")] == [4]
    assert state.tasks[1].label is None


def test_tasks_with_label_prefix():
    state = parse_status(sample("v3_status.json"))

    assert [t.id for t in state.tasks_with_label_prefix("train-")] == [2, 7]
    assert [t.id for t in state.tasks_with_label_prefix("")] == [0, 2, 4, 5, 6, 7, 8, 9, 11, 12]


def test_live_tasks_in_group():
    state = parse_status(sample("v3_status.json"))

    assert [t.id for t in state.live_tasks_in_group("default")] == [6, 8, 10, 11]
    assert [t.id for t in state.live_tasks_in_group("gpu")] == [7, 9, 12]
    assert state.live_tasks_in_group("nope") == []


# --- timestamps -------------------------------------------------------------------------------


def created_at(text: str) -> datetime:
    def set_time(data):
        data["tasks"]["0"]["created_at"] = text

    return parse_status(status_with(set_time)).tasks[0].created_at


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-06-01T10:10:00+02:00", at(10, 10, 0)),
        ("2025-06-01T10:10:00.1+02:00", at(10, 10, 0, 100000)),
        ("2025-06-01T10:10:00.123+02:00", at(10, 10, 0, 123000)),
        ("2025-06-01T10:10:00.123456+02:00", at(10, 10, 0, 123456)),
        ("2025-06-01T10:10:00.123456789+02:00", at(10, 10, 0, 123456)),
        ("2025-06-01T10:10:00.999999999+02:00", at(10, 10, 0, 999999)),  # truncated, not rounded
        ("2025-06-01T08:10:00Z", at(8, 10, 0, tz=UTC)),
        ("2025-06-01T08:10:00.5Z", at(8, 10, 0, 500000, tz=UTC)),
        ("2025-06-01T04:40:00.000001-05:30", at(4, 40, 0, 1, tz=timezone(-timedelta(hours=5, minutes=30)))),
        ("2025-06-01T08:10:00+00:00", at(8, 10, 0, tz=UTC)),
    ],
)
def test_timestamp_variants(text, expected):
    value = created_at(text)

    assert value == expected
    assert value.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "text",
    [
        "2025-06-01T10:10:00",  # naive
        "2025-06-01",
        "2025-06-01 10:10:00+02:00",
        "2025-06-01T10:10:00.+02:00",
        "2025-06-01T10:10:00.1234567890+02:00",
        "2025-13-01T10:10:00Z",
        "2025-06-01T10:10:60Z",
        "yesterday",
        "",
        12345,
        None,
    ],
)
def test_bad_timestamps_raise_bad_output_naming_the_task(text):
    with pytest.raises(BadOutput, match=r"task 0: 'created_at'"):
        created_at(text)


# --- garbage, truncation, missing keys, unknown variants --------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not valid JSON"),
        ("Error: Did you start it?", "not valid JSON"),
        (sample("v4_status.json")[:4000], "not valid JSON"),
        (sample("v4_status.json") + "}", "not valid JSON"),
        ("[1, 2]", "top level should be dict"),
        ("null", "top level should be dict"),
        ('{"tasks": {}}', "missing key 'groups'"),
        ('{"groups": {}}', "missing key 'tasks'"),
        ('{"tasks": [], "groups": {}}', "'tasks' should be dict"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_garbage_status_raises_bad_output(text, message):
    with pytest.raises(BadOutput, match=message) as caught:
        parse_status(text)

    assert str(caught.value).startswith("unexpected pueue status --json output: ")
    assert isinstance(caught.value, OutcomeUnknown)


def test_garbage_group_and_log_raise_bad_output():
    with pytest.raises(BadOutput, match=r"unexpected pueue group --json output: group 'gpu': missing key"):
        parse_groups('{"gpu": {"status": "Running"}}')
    with pytest.raises(BadOutput, match=r"unexpected pueue log --json output: not valid JSON"):
        parse_log(sample("v4_log.json")[:-10])
    task = sample_json("v4_log.json")["0"]["task"]
    with pytest.raises(BadOutput, match=r"log entry 0: missing key 'output'"):
        parse_log(json.dumps({"0": {"task": task}}))


def broken_v4(task_id: str, edit) -> str:
    def apply(data):
        edit(data["tasks"][task_id])

    return status_with(apply)


def broken_v3(task_id: str, edit) -> str:
    data = sample_json("v3_status.json")
    edit(data["tasks"][task_id])
    return json.dumps(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (broken_v4("3", lambda t: t.pop("label")), r"task 3: missing key 'label'"),
        (broken_v4("3", lambda t: t.pop("group")), r"task 3: missing key 'group'"),
        (broken_v4("5", lambda t: t.pop("status")), r"task 5: missing key 'status'"),
        (broken_v4("5", lambda t: t.pop("created_at")), r"task 5: missing key 'created_at'"),
        (broken_v4("0", lambda t: t["status"]["Done"].pop("result")), r"task 0: missing key 'result'"),
        (broken_v4("6", lambda t: t["status"]["Running"].pop("start")), r"task 6: missing key 'start'"),
        (broken_v4("11", lambda t: t["status"]["Locked"].clear()), r"task 11: missing key 'previous_status'"),
        (broken_v3("8", lambda t: t.pop("enqueued_at")), r"task 8: missing key 'enqueued_at'"),
        (
            broken_v4("1", lambda t: t.update(status={"Frozen": {}})),
            r"task 1: unknown status variant 'Frozen'",
        ),
        (broken_v3("1", lambda t: t.update(status="Frozen")), r"task 1: unknown status variant 'Frozen'"),
        (
            broken_v4("0", lambda t: t["status"]["Done"].update(result="Exploded")),
            r"task 0: unknown result variant 'Exploded'",
        ),
        (
            broken_v3("1", lambda t: t.update(status={"Done": {"Vanished": 3}})),
            r"task 1: unknown result variant 'Vanished'",
        ),
        (
            broken_v4("11", lambda t: t["status"]["Locked"].update(previous_status="Thawing")),
            r"task 11: unknown status variant 'Thawing'",
        ),
        (broken_v4("1", lambda t: t.update(status={"A": 1, "B": 2})), r"task 1: status is not a pueue enum"),
        (broken_v3("6", lambda t: t.update(status={"Running": {}})), r"task 6: status 'Running' carries"),
        (broken_v4("2", lambda t: t.update(id="2")), r"task 2: 'id' should be int, got \"2\""),
        (broken_v4("2", lambda t: t.update(id=3)), r"task 2: task under key '2' has id 3"),
        (broken_v4("2", lambda t: t.update(label=7)), r"task 2: 'label' should be str, got 7"),
        (
            broken_v4("1", lambda t: t["status"]["Done"].update(result={"Failed": "2"})),
            r"task 1: Failed exit code should be int",
        ),
        (
            broken_v4("1", lambda t: t["status"]["Done"].update(result={"Failed": True})),
            r"task 1: Failed exit code should be int, got true",
        ),
        (broken_v4("4", lambda t: t.update(command=None)), r"task 4: 'command' should be str, got null"),
    ],
)
def test_unexpected_task_content_raises_bad_output_naming_the_task(text, message):
    with pytest.raises(BadOutput, match=message):
        parse_status(text)


def test_task_that_is_not_an_object():
    with pytest.raises(BadOutput, match=r"task 0: task should be dict, got \[\]"):
        parse_status('{"tasks": {"0": []}, "groups": {}}')


def test_unknown_group_status_and_bad_parallel():
    def sleeping(data):
        data["groups"]["gpu"]["status"] = "Sleeping"

    def negative(data):
        data["groups"]["gpu"]["parallel_tasks"] = -1

    with pytest.raises(BadOutput, match=r"group 'gpu': unknown group status variant 'Sleeping'"):
        parse_status(status_with(sleeping))
    with pytest.raises(BadOutput, match=r"group 'gpu': negative parallel_tasks -1"):
        parse_status(status_with(negative))


def test_mixed_3x_and_4x_tasks_are_refused():
    data = sample_json("v4_status.json")
    data["tasks"]["5"] = sample_json("v3_status.json")["tasks"]["5"]

    with pytest.raises(BadOutput, match=r"task 5: has the 3.x layout but earlier tasks have the 4.x one"):
        parse_status(json.dumps(data))


# --- size -------------------------------------------------------------------------------------


def test_ten_thousand_tasks_with_big_environments(capsys):
    template = sample_json("v4_status.json")["tasks"]["1"]
    envs = {f"MQIC_VAR_{n:02d}": f"/opt/cluster/software/module-{n}/lib:" + "x" * 40 for n in range(40)}
    tasks = {}
    for task_id in range(10_000):
        task = copy.deepcopy(template)
        task.update(id=task_id, label=f"case-{task_id % 2500}", envs=envs)
        tasks[str(task_id)] = task
    groups = {"default": {"status": "Running", "parallel_tasks": 4}}
    compact = {"ensure_ascii": False, "separators": (",", ":")}  # one line, as pueue prints it
    text = json.dumps({"tasks": tasks, "groups": groups}, **compact)

    started = time.perf_counter()
    state = parse_status(text)
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n[pueue_state] parsed 10,000 tasks ({len(text) / 1e6:.1f} MB of JSON) in {elapsed:.3f} s")

    assert len(state.tasks) == 10_000
    assert state.tasks[9_999].exit_code == 2
    assert state.tasks[9_999].label == "case-2499"
    assert [t.id for t in state.find_by_label("case-7")] == [7, 2507, 5007, 7507]
    assert len(state.tasks_with_label_prefix("case-1")) == 1111 * 4


# --- the quick path -----------------------------------------------------------------------------

ODD_VALUES = [
    None,
    True,
    0,
    -1,
    2.5,
    "",
    "x",
    [],
    {},
    {"Failed": 1},
    "2025-06-01T10:10:00Z",
    "2025-06-01T10:10:00.123456789-05:30",
    "2025-06-01T10:10:00",
    "2025-06-01 10:10:00+02:00",
]

ODD_RESULTS = [
    "Success",
    "Killed",
    "Exploded",
    {"FailedToSpawn": "no"},
    {"FailedToSpawn": 2},
    {"Success": None},
    {"A": 1, "B": 2},
    {"Failed": 2},
    {"Failed": True},  # == 1 in Python, and hashes alike: no int all the same
    {"Failed": 1.0},
    {"Failed": "2"},
]
ODD_STATUSES = ["Queued", "Running", "Done", {"Running": None}, {"Queued": {}, "Running": {}}, {"Frozen": {}}]


def task_variants():
    """The 4.x sample's tasks (every status and result), then each with one key of the task or of
    its status payload removed or replaced by an odd value, and with odd statuses and results."""
    for key, task in sample_json("v4_status.json")["tasks"].items():
        yield key, task
        yield key, {**task, "start": None}  # the 3.x layout's key in a 4.x task
        yield str(int(key) + 1), task
        for field in list(task):
            yield key, {k: v for k, v in task.items() if k != field}
            for value in ODD_VALUES:
                yield key, {**task, field: value}
        (name, payload), *_ = task["status"].items()
        if isinstance(payload, dict):
            for field in [*payload, "result", "start", "end"]:
                yield key, {**task, "status": {name: {k: v for k, v in payload.items() if k != field}}}
                for value in [*ODD_VALUES, *ODD_RESULTS]:
                    yield key, {**task, "status": {name: {**payload, field: value}}}
        for status in ODD_STATUSES:
            yield key, {**task, "status": status}


def test_the_quick_path_accepts_nothing_the_careful_path_refuses_and_agrees_on_the_rest():
    """Twice over: the second time, every task the quick path took is one it has seen before."""
    from resources.remote.pueue_state import _Malformed, _parse_task, _quick_v4_task, _seen_tasks

    _seen_tasks.clear()
    quick_ones = 0
    for key, raw in [*task_variants(), *task_variants()]:
        quick = _quick_v4_task(key, copy.deepcopy(raw))
        try:
            careful = _parse_task(key, raw) if isinstance(raw, dict) else None
        except _Malformed:
            careful = None
        if quick is None:
            continue
        quick_ones += 1
        assert careful is not None, (key, raw)
        assert quick == careful, (key, raw)
        assert quick.snapshot() == careful.snapshot(), (key, raw)  # the times' offsets too
        assert [type(getattr(quick, f.name)) for f in dataclasses.fields(quick)] == [
            type(getattr(careful, f.name)) for f in dataclasses.fields(careful)
        ]
    assert quick_ones > 200  # the quick path did take the well-formed tasks
    assert len(_seen_tasks) > 50


def test_the_careful_path_takes_the_tasks_the_quick_path_does_not_know():
    state = parse_status(sample("v4_status.json"))  # Stashed and Locked tasks among them

    assert [state.tasks[i].status for i in (9, 10, 11)] == [S.STASHED, S.STASHED, S.LOCKED]
    assert dict(state.tasks) == dict(parse_status(sample("v3_status.json")).tasks)


def test_same_snapshot_is_snapshot_equality():
    tasks = list(parse_status(sample("v4_status.json")).tasks.values())
    tasks += list(parse_status(sample("v3_status.json")).tasks.values())
    first = tasks[0]
    utc = first.created_at.astimezone(UTC)  # the same instant, written at another offset
    tasks += [
        dataclasses.replace(first, created_at=utc),
        dataclasses.replace(first, created_at=utc.replace(tzinfo=None)),  # naive
        dataclasses.replace(first, created_at=first.created_at + timedelta(microseconds=1)),
        dataclasses.replace(first, enqueued_at=None),
        dataclasses.replace(first, end=first.end.astimezone(UTC)),
        dataclasses.replace(first, command=first.command + " "),
        dataclasses.replace(first, original_command="not in the snapshot"),
        dataclasses.replace(first, status=S.RUNNING, result=None, exit_code=None, end=None),
        dataclasses.replace(first, result=R.FAILED, exit_code=0),
        dataclasses.replace(first, label=None),
        dataclasses.replace(first, id=99),
    ]

    for a in tasks:
        for b in tasks:
            assert a.same_snapshot(b) == (a.snapshot() == b.snapshot()), (a, b)
    assert first.same_snapshot(tasks[-5])  # original_command is not in the snapshot
