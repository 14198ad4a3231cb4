"""The sandbox pueue stand-in, driven as a client drives a remote pueue: through a ``pueue``
wrapper on PATH, with a real detached daemon and real task processes per test.

The JSON it prints is checked against pueue's real formats in ``tests/data/pueue/`` (see
docs/pueue-formats.md), its errors against real pueue 4.0.4's verbatim output: if the stand-in
drifts from them, MQIC's client could pass its tests here and still break on a real cluster.
tests/test_pueue_conformance.py runs the behaviour MQIC relies on against both side by side;
this file covers the rest of the stand-in (3.x mode, fault hooks, evidence files).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import suppress
from itertools import pairwise
from pathlib import Path

import pytest

from sandbox import pueue_sandbox
from tests.support.hpc import task_pid

DATA = Path(__file__).parent / "data" / "pueue"
RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{3}|\d{6}|\d{9}))?([+-]\d\d:\d\d|Z)$")


def sample(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def to_ns(timestamp: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 timestamp as pueue writes it."""
    match = RFC3339.match(timestamp)
    assert match, f"not RFC 3339 with 0/3/6/9 fraction digits: {timestamp!r}"
    base, fraction, offset = match.groups()
    moment = datetime.datetime.fromisoformat(base + offset.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 10**9 + int((fraction or "0").ljust(9, "0"))


def status_tag(status: str | dict) -> str:
    """``Queued`` / ``Running`` / ... or ``Done/<result>`` for both the 3.x and 4.x shapes."""
    if isinstance(status, str):
        return status
    ((tag, inner),) = status.items()
    if tag != "Done":
        return tag
    result = inner["result"] if isinstance(inner, dict) and "result" in inner else inner
    return f"Done/{result if isinstance(result, str) else next(iter(result))}"


def shape(value: object) -> str:
    """The JSON skeleton of a value -- keys in order and types, no contents -- as a string."""

    def skeleton(value: object) -> object:
        if isinstance(value, dict):
            return {key: skeleton(item) for key, item in value.items()}
        if isinstance(value, list):
            return [skeleton(item) for item in value]
        return "null" if value is None else type(value).__name__

    return json.dumps(skeleton(value))


def comparable(task: dict) -> dict:
    """A task whose shape can be compared with a sample's: envs and label vary by nature."""
    return {**task, "envs": {}, "label": None}


def timestamps(task: dict) -> list[str]:
    """Every time of a 3.x or 4.x task: top level (3.x) or inside the status (4.x)."""
    times = {key: task.get(key) for key in ("created_at", "enqueued_at", "start", "end")}
    if isinstance(task["status"], dict) and isinstance(inner := next(iter(task["status"].values())), dict):
        times.update({key: inner[key] for key in ("enqueued_at", "start", "end") if key in inner})
    return [value for value in times.values() if value is not None]


class Pueue:
    """One sandbox instance: its ``pueue`` wrapper, state dir and a working directory."""

    def __init__(self, root: Path, version: str) -> None:
        self.version = version
        self.state_dir = root / "state"
        self.wrapper = pueue_sandbox.install(root / "bin", self.state_dir, version)
        self.workdir = root / "work"
        self.workdir.mkdir(parents=True)
        # The venv's python3 first: the machine's may be a slow pyenv shim script.
        path = os.pathsep.join([str(self.wrapper.parent), str(Path(sys.executable).parent), os.environ["PATH"]])
        self.env = {**os.environ, "PATH": path}

    def start(self) -> None:
        pueue_sandbox.start_daemon(self.state_dir, self.version)

    def run(self, *args: str, env: dict | None = None, timeout: float = 10) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["pueue", *args],
            env=env or self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, result
        return result.stdout

    def add(self, *command: str, options: tuple[str, ...] = ()) -> int:
        return int(self.ok("add", "-p", *options, "--", *command).splitlines()[-1])

    def status(self, *args: str) -> dict:
        output = self.ok("status", "--json", *args)
        assert output.count("\n") == 1 and output.endswith("\n"), "one compact JSON line"
        return json.loads(output)

    def task(self, task_id: int) -> dict:
        return self.status()["tasks"][str(task_id)]

    def wait_for(self, task_id: int, tag: str, timeout: float = 10) -> dict:
        """Poll ``status`` until the task's status tag starts with ``tag``."""
        deadline = time.monotonic() + timeout
        while True:
            task = self.task(task_id)
            if status_tag(task["status"]).startswith(tag):
                return task
            assert time.monotonic() < deadline, f"task {task_id} never became {tag}: {task['status']}"
            time.sleep(0.02)

    def jsonl(self, name: str) -> list[dict]:
        path = self.state_dir / name
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def arm_fault(self, name: str) -> None:
        (self.state_dir / "faults").mkdir(exist_ok=True)
        (self.state_dir / "faults" / name).touch()


@pytest.fixture
def make_pueue(tmp_path):
    """Build sandbox instances; every daemon is stopped (and its tasks killed) at teardown."""
    made = []

    def make(version: str = "4.0.4", start: bool = True) -> Pueue:
        instance = Pueue(tmp_path / f"pueue{len(made)}", version)
        made.append(instance)
        if start:
            instance.start()
        return instance

    yield make
    for instance in made:
        pueue_sandbox.stop_daemon(instance.state_dir)


@pytest.fixture
def pueue(make_pueue) -> Pueue:
    return make_pueue()


def spawn_failure(pueue: Pueue) -> int:
    """A task whose directory exists at ``add`` but is gone when it is spawned."""
    doomed = pueue.workdir / "doomed"
    doomed.mkdir()
    pueue.ok("group", "add", "spawn")
    pueue.ok("pause", "-g", "spawn")
    task_id = pueue.add("true", options=("-g", "spawn", "-w", str(doomed)))
    doomed.rmdir()
    pueue.ok("start", "-g", "spawn")
    pueue.wait_for(task_id, "Done")
    return task_id


def every_status(pueue: Pueue) -> dict[str, int]:
    """One task in each status and result the stand-in can produce, by status tag."""
    for group in ("held", "frozen", "victim"):
        pueue.ok("group", "add", group)
    pueue.ok("pause", "-g", "held")
    ids = {
        "Queued": pueue.add("true", options=("-g", "held", "-l", "queued")),
        "Done/Success": pueue.add("true"),
        "Done/Failed": pueue.add("exit 3"),
        "Done/FailedToSpawn": spawn_failure(pueue),
        "Paused": pueue.add("sleep", "30", options=("-g", "frozen")),
        "Done/Killed": pueue.add("sleep", "30", options=("-g", "victim")),
    }
    pueue.ok("group", "add", "wide", "-p", "0")
    ids["Running"] = pueue.add("sleep", "30", options=("-g", "wide"))
    pueue.wait_for(ids["Paused"], "Running")
    pueue.ok("pause", "-g", "frozen")
    pueue.wait_for(ids["Done/Killed"], "Running")
    pueue.ok("kill", str(ids["Done/Killed"]))
    for tag, task_id in ids.items():
        pueue.wait_for(task_id, tag)
    return ids


def test_add_prints_the_id_and_records_the_task(pueue):
    pueue.ok("group", "add", "gpu")
    other_dir = pueue.workdir / "case 1"
    other_dir.mkdir()

    assert (
        pueue.ok("add", "-p", "-l", "case-1", "-g", "gpu", "-w", str(other_dir), "--", "echo", "a  b", "c")
        == "0\n"
    )
    assert pueue.ok("add", "--label=case-2", "echo", "-n", "hi") == "New task added (id 1).\n"

    tasks = pueue.status()["tasks"]
    assert (tasks["0"]["label"], tasks["0"]["group"], tasks["0"]["path"]) == ("case-1", "gpu", str(other_dir))
    assert tasks["0"]["command"] == tasks["0"]["original_command"] == "echo a  b c"
    assert (tasks["1"]["label"], tasks["1"]["path"], tasks["1"]["command"]) == (
        "case-2",
        str(pueue.workdir),
        "echo -n hi",
    )
    adds = pueue.jsonl("adds.jsonl")
    assert [(a["id"], a["label"], a["group"], a["path"], a["command"]) for a in adds] == [
        (0, "case-1", "gpu", str(other_dir), "echo a  b c"),
        (1, "case-2", "default", str(pueue.workdir), "echo -n hi"),
    ]
    assert [to_ns(a["time"]) for a in adds] == [to_ns(tasks[str(a["id"])]["created_at"]) for a in adds]


@pytest.mark.parametrize(("version", "sample_name"), [("4.0.4", "v4_status.json"), ("3.4.1", "v3_status.json")])
def test_status_json_has_the_keys_and_types_of_real_pueue(make_pueue, version, sample_name):
    pueue = make_pueue(version)
    expected = {status_tag(task["status"]): task for task in sample(sample_name)["tasks"].values()}
    ids = every_status(pueue)
    output = pueue.ok("status", "--json")
    state = json.loads(output)

    assert output == json.dumps(state, separators=(",", ":"), ensure_ascii=False) + "\n", "compact, one line"
    assert list(state) == ["tasks", "groups"]
    assert list(state["tasks"]) == [str(i) for i in sorted(ids.values())], "string keys in id order"
    for tag, task_id in ids.items():
        task = state["tasks"][str(task_id)]
        assert shape(comparable(task)) == shape(comparable(expected[tag])), tag
        assert all(to_ns(timestamp) for timestamp in timestamps(task)), tag
        assert all(isinstance(value, str) for value in task["envs"].values())
    assert state["tasks"][str(ids["Queued"])]["label"] == "queued"
    assert state["tasks"][str(ids["Done/Success"])]["label"] is None
    group_model = sample(sample_name)["groups"]["gpu"]
    assert all(list(group) == list(group_model) for group in state["groups"].values())
    assert state["groups"]["held"] == {"status": "Paused", "parallel_tasks": 1}


def test_fresh_daemon_groups_and_group_filter_match_the_samples(pueue):
    assert pueue.status() == sample("v3_v4_status_empty.json")

    assert pueue.ok("group", "add", "gpu", "-p", "2") == 'New group "gpu" has been created\n'
    pueue.ok("pause", "-g", "gpu")
    assert json.loads(pueue.ok("group", "--json")) == sample("v3_v4_group.json")
    gpu_task = pueue.add("true", options=("-g", "gpu"))
    pueue.add("true")

    filtered = pueue.status("-g", "gpu")
    assert list(filtered["tasks"]) == [str(gpu_task)], "-g filters the tasks"
    assert filtered["groups"] == sample("v4_status_group_gpu.json")["groups"], "but not the groups"
    assert pueue.ok("parallel", "3", "-g", "gpu") == 'Parallel tasks setting for group "gpu" adjusted\n'
    assert json.loads(pueue.ok("group", "--json"))["gpu"]["parallel_tasks"] == 3


def test_a_group_of_parallel_one_never_overlaps_its_tasks(pueue):
    pueue.ok("group", "add", "serial", "-p", "1")
    ids = [pueue.add("sleep", "0.1", options=("-g", "serial")) for _ in range(3)]
    done = [pueue.wait_for(task_id, "Done/Success")["status"]["Done"] for task_id in ids]

    spans = sorted((to_ns(d["start"]), to_ns(d["end"])) for d in done)
    assert all(end <= next_start for (_, end), (next_start, _) in pairwise(spans))
    events = [e for e in pueue.jsonl("events.jsonl") if e["group"] == "serial"]
    assert [e["event"] for e in sorted(events, key=lambda e: e["time_ns"])] == ["start", "end"] * 3
    assert {e["worker_id"] for e in events} == {0}


def test_labels_are_not_unique(pueue):
    first = pueue.add("true", options=("-l", "same"))
    second = pueue.add("true", options=("-l", "same"))

    tasks = pueue.status()["tasks"]
    assert first != second
    assert tasks[str(first)]["label"] == tasks[str(second)]["label"] == "same"


def test_ids_are_reused_after_clean_and_remove(pueue):
    for task_id in (pueue.add("true"), pueue.add("true")):
        pueue.wait_for(task_id, "Done")
    assert (pueue.state_dir / "task_logs" / "1.log").exists()

    assert pueue.ok("clean") == "All finished tasks have been removed\n"
    assert pueue.status()["tasks"] == {}
    assert not list((pueue.state_dir / "task_logs").iterdir())
    assert pueue.add("true", options=("-l", "again")) == 0

    pueue.ok("pause", "-g", "default")
    queued = pueue.add("true")
    assert pueue.ok("remove", str(queued)) == f"Tasks removed from list: {queued}\n"
    assert pueue.add("true") == queued, "next id = max existing + 1"


def test_kill_by_id_and_of_tasks_that_are_not_running(pueue):
    pueue.ok("group", "add", "wide", "-p", "0")
    victim = pueue.add("sleep", "30", options=("-g", "wide"))
    finished = pueue.add("true")
    pueue.wait_for(victim, "Running")
    pueue.wait_for(finished, "Done")

    assert pueue.ok("kill", str(victim)) == f"Tasks are being killed: {victim}\n"
    assert pueue.wait_for(victim, "Done")["status"]["Done"]["result"] == "Killed"
    refused = pueue.run("kill", str(finished), "99")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == f"The command failed for tasks: {finished}, 99\n"

    terminated = pueue.add("sleep", "30", options=("-g", "wide"))
    pueue.wait_for(terminated, "Running")
    mixed = pueue.run("kill", "-s", "SIGTERM", str(terminated), "99")
    assert (mixed.returncode, mixed.stdout) == (
        0,
        f"Tasks are being killed: {terminated}\nThe command failed for tasks: 99\n",
    )
    assert status_tag(pueue.wait_for(terminated, "Done")["status"]) == "Done/Killed"


def test_kill_without_ids_kills_the_whole_default_group_and_pauses_it(pueue):
    running = pueue.add("sleep", "30")
    queued = pueue.add("true")
    pueue.wait_for(running, "Running")

    assert pueue.ok("kill") == 'All tasks of group "default" are being killed. The group will also be paused!!!\n'
    assert status_tag(pueue.wait_for(running, "Done")["status"]) == "Done/Killed"
    state = pueue.status()
    assert state["groups"]["default"]["status"] == "Paused"
    assert status_tag(state["tasks"][str(queued)]["status"]) == "Queued"


def test_log_json_matches_pueue(pueue):
    pueue.ok("group", "add", "other")
    chatty = pueue.add("seq 1 20")
    elsewhere = pueue.add("echo elsewhere", options=("-g", "other"))
    pueue.wait_for(chatty, "Done")
    pueue.wait_for(elsewhere, "Done")
    pueue.ok("pause", "-g", "default")
    waiting = pueue.add("echo later")

    logs = json.loads(pueue.ok("log", "--json", str(chatty), str(waiting)))
    model = sample("v4_log.json")["0"]
    assert list(logs) == [str(chatty), str(waiting)]
    assert logs[str(chatty)]["task"]["envs"] == {}
    entry = {**logs[str(chatty)], "task": comparable(logs[str(chatty)]["task"])}
    assert shape(entry) == shape({**model, "task": comparable(model["task"])})
    assert logs[str(chatty)]["output"] == "\n".join(str(n) for n in range(6, 21)), "last 15 lines"
    log_file = pueue.state_dir / "task_logs" / f"{waiting}.log"
    assert logs[str(waiting)]["output"] == (
        f'(Pueue error) Failed to get log file handle: I/O error at path "{log_file}" while getting log file'
        " handle:\nNo such file or directory (os error 2)"
    )
    assert json.loads(pueue.ok("log", "--json", "--lines", "2", str(chatty)))[str(chatty)]["output"] == "19\n20"
    full = "".join(f"{n}\n" for n in range(1, 21))
    assert json.loads(pueue.ok("log", "--json", "--full", str(chatty)))[str(chatty)]["output"] == full
    assert list(json.loads(pueue.ok("log", "--json"))) == [str(chatty), str(waiting)], "4.x: default group"


@pytest.mark.parametrize(("version", "stream"), [("4.0.4", "stderr"), ("3.4.1", "stdout")])
def test_unknown_group_is_refused_like_pueue(make_pueue, version, stream):
    pueue = make_pueue(version)
    pueue.ok("group", "add", "cpu")

    refused = pueue.run("add", "-g", "gpu", "--", "true")

    assert refused.returncode == 1
    assert getattr(refused, stream) == 'Group gpu doesn\'t exists. Use one of these: ["cpu", "default"]\n'
    assert pueue.status()["tasks"] == {}, "groups are never created by add"


def real_error(name: str, socket: Path | None = None) -> str:
    """Real pueue 4.0.4's stderr for an error, verbatim but for the socket path."""
    text = (DATA / f"v4_error_{name}.txt").read_text()
    return text.replace("/home/alice/.local/share/pueue/pueue.socket", str(socket)) if socket else text


def test_missing_working_directory(make_pueue):
    modern, legacy = make_pueue("4.0.4"), make_pueue("3.4.1")
    missing = str(modern.workdir / "missing")

    refused = modern.run("add", "-w", missing, "--", "true")
    accepted = legacy.add("true", options=("-w", missing))

    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == real_error("missing_workdir"), "colours and all, like pueue 4.0.4"
    assert modern.status()["tasks"] == {} and modern.jsonl("adds.jsonl") == []
    assert status_tag(legacy.wait_for(accepted, "Done")["status"]) == "Done/FailedToSpawn", "3.x fails at spawn"


def test_daemon_down_and_never_started(make_pueue):
    stopped, crashed, never = make_pueue(), make_pueue(), make_pueue(start=False)
    pueue_sandbox.stop_daemon(stopped.state_dir)
    pueue_sandbox.crash_daemon(crashed.state_dir)

    down = stopped.run("--color", "never", "status", "--json")
    assert (down.returncode, down.stdout) == (1, "")
    assert down.stderr == real_error("daemon_stopped", stopped.state_dir / "pueue.socket")
    killed = crashed.run("status", "--json")
    assert (killed.returncode, killed.stdout) == (1, "")
    assert killed.stderr == real_error("daemon_killed", crashed.state_dir / "pueue.socket"), "a stale socket"
    fresh = never.run("status", "--json")
    assert (fresh.returncode, fresh.stdout) == (1, "")
    assert fresh.stderr == real_error("no_config")


def test_daemon_down_in_3x_layout(make_pueue):
    legacy = make_pueue("3.4.1")
    pueue_sandbox.stop_daemon(legacy.state_dir)

    down = legacy.run("status", "--json")

    socket = legacy.state_dir / "pueue.socket"
    assert down.stderr == (
        "Error: Failed to initialize client.\n\nCaused by:\n    0: Failed to initialize stream.\n"
        f'    1: I/O error at path "{socket}" while connecting to daemon. Did you start it?:\n'
        "       No such file or directory (os error 2)\n"
    )


def test_global_color_option_goes_before_the_subcommand(pueue):
    assert pueue.ok("--color", "never", "add", "-p", "--", "true") == "0\n"
    assert pueue.ok("--color=always", "--version") == "pueue 4.0.4\n"
    for args in (["status", "--color", "never"], ["add", "--color", "never", "--", "true"], ["--color", "red"]):
        assert pueue.run(*args).returncode == 2, args


def test_restart_kills_active_tasks_and_pauses_groups_with_queued_tasks(pueue, tmp_path):
    pids = [tmp_path / "default.pid", tmp_path / "gpu.pid"]
    for group in ("gpu", "idle"):
        pueue.ok("group", "add", group)
    running = [
        pueue.add(f"echo $$ > {pids[0]}; exec sleep 30"),
        pueue.add(f"echo $$ > {pids[1]}; exec sleep 30", options=("-g", "gpu")),
    ]
    queued = [pueue.add("true"), pueue.add("true", options=("-g", "gpu"))]
    for task_id in running:
        pueue.wait_for(task_id, "Running")
    try:
        paths = pueue_sandbox.StateDir(pueue.state_dir)
        os.kill(paths.read_pid(), signal.SIGKILL)  # a crash: no graceful shutdown
        while paths.daemon_alive():
            time.sleep(0.01)
        pueue.start()

        state = pueue.status()
        assert [status_tag(state["tasks"][str(i)]["status"]) for i in running] == ["Done/Killed"] * 2
        assert [status_tag(state["tasks"][str(i)]["status"]) for i in queued] == ["Queued"] * 2
        statuses = {name: group["status"] for name, group in state["groups"].items()}
        assert statuses == {"default": "Paused", "gpu": "Paused", "idle": "Running"}

        assert pueue.ok("start", "-g", "gpu") == 'Group "gpu" is being resumed.\n'
        assert status_tag(pueue.wait_for(queued[1], "Done")["status"]) == "Done/Success"
        assert status_tag(pueue.task(queued[0])["status"]) == "Queued", "default stays paused"
    finally:
        for pid_file in pids:  # pueue leaves the processes of a dead daemon running
            with suppress(ProcessLookupError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def test_pause_stops_running_tasks_and_start_resumes_them(pueue):
    task_id = pueue.add("echo $$ > pid; while [ ! -e go ]; do sleep 0.05; done")
    pid = task_pid(pueue.workdir / "pid")

    assert pueue.ok("pause", "-g", "default") == 'Group "default" is being paused.\n'
    assert status_tag(pueue.task(task_id)["status"]) == "Paused"
    assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T", "SIGSTOPped"
    (pueue.workdir / "go").touch()
    pueue.ok("start", "-g", "default")
    assert status_tag(pueue.wait_for(task_id, "Done")["status"]) == "Done/Success"


def test_hang_before_add_adds_nothing(pueue):
    pueue.arm_fault("hang_before_add")

    with pytest.raises(subprocess.TimeoutExpired):
        pueue.run("add", "--", "true", timeout=1)

    assert pueue.status()["tasks"] == {}
    assert pueue.jsonl("adds.jsonl") == []


def test_hang_after_add_creates_the_task_but_prints_nothing(pueue):
    pueue.arm_fault("hang_after_add")

    with pytest.raises(subprocess.TimeoutExpired) as hung:
        pueue.run("add", "-p", "-l", "lost-id", "--", "true", timeout=1)

    assert not hung.value.stdout
    assert [task["label"] for task in pueue.status()["tasks"].values()] == ["lost-id"]
    assert [add["label"] for add in pueue.jsonl("adds.jsonl")] == ["lost-id"]


def test_3x_switch_through_the_wrapper_environment(make_pueue):
    pueue = make_pueue("3.4.1", start=False)
    assert pueue.ok("--version") == "pueue 3.4.1\n"
    pueue.ok("daemon", "-d")  # the daemon takes its version from the wrapper's environment

    task = pueue.wait_for(pueue.add("true"), "Done")

    assert task["status"] == {"Done": "Success"} and "enqueued_at" in task and "prev_status" in task
    assert make_pueue(start=False).ok("--version") == "pueue 4.0.4\n"


def test_task_runs_with_the_callers_environment_and_directory(pueue):
    pueue.ok("group", "add", "gpu")
    # What a login shell over ssh would hand pueue; PWD is exported by the wrapper's sh anyway.
    caller_env = {
        "PATH": pueue.env["PATH"],
        "PWD": str(pueue.workdir),
        "LANG": "C.UTF-8",
        "ONLY_IN_CALLER": "yes",
    }
    added = pueue.run("add", "-p", "-g", "gpu", "--", "pwd; env", env=caller_env)
    task_id = int(added.stdout)

    task = pueue.wait_for(task_id, "Done/Success")
    output = json.loads(pueue.ok("log", "--json", "--full", str(task_id)))[str(task_id)]["output"]
    lines = output.splitlines()
    assert lines[0] == str(pueue.workdir)
    assert {"ONLY_IN_CALLER=yes", "PUEUE_GROUP=gpu", "PUEUE_WORKER_ID=0"} <= set(lines)
    assert not [line for line in lines if line.startswith(("HOME=", "PUEUE_SANDBOX_"))], "no daemon env leaks"
    assert task["envs"] == {**caller_env, "PUEUE_GROUP": "gpu", "PUEUE_WORKER_ID": "0"}


def test_failed_to_spawn(pueue):
    task_id = spawn_failure(pueue)

    done = pueue.task(task_id)["status"]["Done"]
    error = 'Os { code: 2, kind: NotFound, message: "No such file or directory" }'
    message = f"Failed to spawn child {task_id} with err: {error}"
    assert done["result"] == {"FailedToSpawn": message}
    assert to_ns(done["start"]) <= to_ns(done["end"])
    output = json.loads(pueue.ok("log", "--json", str(task_id)))[str(task_id)]["output"]
    assert output == f"Pueue error, failed to spawn task. Check your command.\n{message}"


def test_failed_exit_codes(pueue):
    ids = [pueue.add("exit 7"), pueue.add("no-such-command-anywhere")]

    results = [pueue.wait_for(task_id, "Done")["status"]["Done"]["result"] for task_id in ids]

    assert results == [{"Failed": 7}, {"Failed": 127}]


def test_usage_errors_exit_2(pueue):
    for args in (["add"], ["add", "-x", "--", "true"], ["kill", "-s", "bogus", "1"], ["status", "--bogus"]):
        assert pueue.run(*args).returncode == 2, args
    assert pueue.status()["tasks"] == {}
