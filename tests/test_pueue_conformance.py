"""Everything MQIC relies on of pueue, run against the stand-in AND real pueue 4.0.4.

Each test runs twice through the ``remote`` fixture: on the sandbox, and (marker ``real_pueue``)
on a private real pueued. Both are driven through MQIC's own ``PueueClient`` over the real sshd,
and every expectation here is what real pueue was seen to do (docs/pueue-formats.md): a test
that passes on "real" and fails on "sandbox" is a bug in the stand-in. The last test compares
the two remotes' raw output side by side, field by field.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import time
from contextlib import suppress
from datetime import datetime
from pathlib import Path

import pytest

from cases.services.jobs import EXIT_MARKER, JOB_LOG, job_command
from resources.remote.errors import CommandFailed, OutcomeUnknown
from resources.remote.pueue import AddSpec, DaemonDown, PueueClient, TaskNotFound, UnknownGroup
from resources.remote.pueue_state import GroupStatus, TaskResult, TaskStatus
from resources.remote.ssh import SshTransport
from sandbox.real_pueue import process_alive
from tests.support.hpc import RealPueue, Sandbox, kill_hung_clients, overlaps_per_group, task_pid

WAIT = 30.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")
HOSTILE_LABEL = 'it\'s "q" $(touch pwned) `id` ✓\nsecond line'
HOSTILE_COMMAND = "printf '%s|' \"it's\" \"$(echo sub)\" '$(not run)' ✓; printf 'a\\nb'"
HOSTILE_OUTPUT = "it's|sub|$(not run)|✓|a\nb"
WAIT_FOR_GO = "while [ ! -e go ]; do sleep 0.05; done"
UNKNOWN_GROUP = 'Group nope doesn\'t exists. Use one of these: ["default", "gpu_a", "gpu_b"]'


def utc_suffix() -> str:
    """How pueue (chrono) ends a local time: "Z" on a UTC host, else the offset."""
    offset = datetime.now().astimezone().strftime("%z")
    return "Z" if offset == "+0000" else f"{offset[:3]}:{offset[3:]}"


TIMESTAMP = re.compile(
    rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{{3}}|\.\d{{6}}|\.\d{{9}})?{re.escape(utc_suffix())}"
)


@pytest.fixture
def client(remote, sshd) -> PueueClient:
    return PueueClient(SshTransport(sshd.target()), remote.pueue)


def workdir(remote, name: str) -> Path:
    folder = remote.base_dir / name
    folder.mkdir()
    return folder


def wait_until(client: PueueClient, task_id: int, status: TaskStatus):
    """Poll ``status`` until the task reaches ``status`` (pueued starts tasks on its own tick)."""
    deadline = time.monotonic() + WAIT
    while (task := client.status().tasks[task_id]).status is not status:
        assert time.monotonic() < deadline, f"task {task_id} never became {status}: {task}"
        time.sleep(0.05)
    return task


def raw(remote, *args: str) -> tuple[int, str, str]:
    """One pueue call as MQIC makes it (``--color never`` first), its raw exit code and streams."""
    done = remote.cli("--color", "never", *args, check=False)
    return done.returncode, done.stdout, done.stderr


def go(folder: Path) -> None:
    (folder / "go").touch()


# --- adding -----------------------------------------------------------------------------------


def test_version(client):
    assert client.version() == "4.0.4"


def test_add_keeps_hostile_label_command_and_workdir_exactly(remote, client):
    folder = workdir(remote, "dir with space $HOME `x` ✓")

    task_id = client.add(
        HOSTILE_COMMAND + '; printf "|%s" "$MQIC_ODD"',
        label=HOSTILE_LABEL,
        group="gpu_b",
        workdir=str(folder),
        env={"MQIC_ODD": "a b'$(c)"},
    )

    task = wait_until(client, task_id, TaskStatus.DONE)
    assert (task.label, task.group, task.path) == (HOSTILE_LABEL, "gpu_b", str(folder))
    assert task.command == task.original_command == HOSTILE_COMMAND + '; printf "|%s" "$MQIC_ODD"'
    assert (task.result, task.exit_code) == (TaskResult.SUCCESS, 0)
    assert client.log(task_id) == HOSTILE_OUTPUT + "|a b'$(c)"
    assert not (folder / "pwned").exists()


@pytest.mark.parametrize("field", ["label", "group", "workdir"])
def test_leading_dashes_are_refused_before_anything_runs(remote, client, field):
    arguments = {"label": "l", "group": "gpu_a", "workdir": str(remote.base_dir), field: "-p"}

    with pytest.raises(ValueError, match="must not start with '-'"):
        client.add("true", **arguments)

    assert client.status().tasks == {}


def test_add_to_a_paused_group(remote, client):
    assert raw(remote, "pause", "-g", "gpu_a") == (0, 'Group "gpu_a" is being paused.\n', "")

    quiet = client.add("true", label="quiet", group="gpu_a", workdir=str(remote.base_dir))
    code, stdout, stderr = raw(remote, "add", "-g", "gpu_a", "--", "true")

    assert (code, stderr) == (0, "")
    assert stdout == f"New task added (id {quiet + 1}).\nThe group of this task is currently paused!\n"
    state = client.status()
    assert state.groups["gpu_a"].status is GroupStatus.PAUSED
    assert [state.tasks[i].status for i in (quiet, quiet + 1)] == [TaskStatus.QUEUED] * 2


def test_add_many_reports_each_spec(remote, client):
    folders = [str(workdir(remote, f"case-{n}")) for n in range(3)]
    specs = [
        AddSpec("exit 0", "case-0", "gpu_a", folders[0]),
        AddSpec("exit 1", "case-1", "nope", folders[1]),
        AddSpec("exit 2", "case-2", "gpu_b", folders[2], env={"X": "1"}),
    ]

    results = client.add_many(specs)

    assert [r.ok for r in results] == [True, False, True]
    assert isinstance(results[1].error, UnknownGroup)
    assert str(results[1].error) == f"pueue exited 1: {UNKNOWN_GROUP}"
    state = client.status()
    assert sorted(state.tasks) == sorted(r.task_id for r in results if r.ok)
    for result in (results[0], results[2]):
        task = state.tasks[result.task_id]
        assert (task.label, task.group, task.path) == (result.spec.label, result.spec.group, result.spec.workdir)


def test_unknown_group_creates_nothing(remote, client):
    with pytest.raises(UnknownGroup) as caught:
        client.add("true", label="l", group="nope", workdir=str(remote.base_dir))

    assert_pueue_error(caught.value, UNKNOWN_GROUP)
    assert caught.value.exit_code == 1
    assert client.status().tasks == {}
    with pytest.raises(UnknownGroup):
        client.start_group("nope")


def test_missing_workdir_is_refused_by_the_client(remote, client):
    with pytest.raises(CommandFailed) as caught:
        client.add("true", label="l", group="gpu_a", workdir=str(remote.base_dir / "missing"))

    assert type(caught.value) is CommandFailed
    assert_pueue_error(
        caught.value,
        "0: Failed to canonicalize given working directory path\n1: No such file or directory (os error 2)",
    )
    assert client.status().tasks == {}


# --- reading state ----------------------------------------------------------------------------


def every_state(remote, client) -> dict[str, int]:
    """One task in each state MQIC reads; gpu_a holds a running task and one queued behind it."""
    folder = workdir(remote, "states")
    doomed = workdir(remote, "doomed")
    wide = "wide"
    client.group_add(wide, parallel=4)
    add = {"label": "x", "workdir": str(folder)}
    ids = {
        "running": client.add(WAIT_FOR_GO, group="gpu_a", **add),
        "queued": client.add("true", group="gpu_a", **add),
        "success": client.add("echo fine", group=wide, **add),
        "failed": client.add("exit 3", group=wide, **add),
        "killed": client.add("sleep 60", group=wide, **add),
    }
    raw(remote, "pause", "-g", "gpu_b")
    ids["spawn"] = client.add("true", label="x", group="gpu_b", workdir=str(doomed))
    doomed.rmdir()
    client.start_group("gpu_b")
    wait_until(client, ids["killed"], TaskStatus.RUNNING)
    client.kill([ids["killed"]])
    for name in ("success", "failed", "killed", "spawn"):
        wait_until(client, ids[name], TaskStatus.DONE)
    wait_until(client, ids["running"], TaskStatus.RUNNING)
    return ids


def test_status_in_every_state_mqic_reads(remote, client):
    ids = every_state(remote, client)

    state = client.status()

    tasks = {name: state.tasks[task_id] for name, task_id in ids.items()}
    assert {name: (t.status, t.result, t.exit_code) for name, t in tasks.items()} == {
        "running": (TaskStatus.RUNNING, None, None),
        "queued": (TaskStatus.QUEUED, None, None),
        "success": (TaskStatus.DONE, TaskResult.SUCCESS, 0),
        "failed": (TaskStatus.DONE, TaskResult.FAILED, 3),
        "killed": (TaskStatus.DONE, TaskResult.KILLED, None),
        "spawn": (TaskStatus.DONE, TaskResult.FAILED_TO_SPAWN, None),
    }
    assert tasks["spawn"].spawn_error == (
        f"Failed to spawn child {ids['spawn']} with err: "
        'Os { code: 2, kind: NotFound, message: "No such file or directory" }'
    )
    assert tasks["spawn"].start <= tasks["spawn"].end
    assert tasks["queued"].start is None and tasks["running"].end is None
    assert state.schema == "4"
    assert {name: (g.status, g.parallel_tasks) for name, g in state.groups.items()} == {
        "default": (GroupStatus.RUNNING, 1),
        "gpu_a": (GroupStatus.RUNNING, 1),
        "gpu_b": (GroupStatus.RUNNING, 1),
        "wide": (GroupStatus.RUNNING, 4),
    }
    go(remote.base_dir / "states")


def test_status_json_layout(remote, client):
    ids = every_state(remote, client)

    code, stdout, stderr = raw(remote, "status", "--json")

    assert (code, stderr) == (0, "")
    assert stdout.endswith("}\n") and stdout.count("\n") == 1, "one compact line"
    data = json.loads(stdout)
    assert stdout == json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n"
    assert list(data) == ["tasks", "groups"]
    assert list(data["tasks"]) == [str(i) for i in sorted(ids.values())]
    assert list(data["groups"]) == ["default", "gpu_a", "gpu_b", "wide"]
    keys = ["id", "created_at", "original_command", "command", "path", "envs", "group"]
    keys += ["dependencies", "priority", "label", "status"]
    payloads = {
        "running": ("Running", ["enqueued_at", "start"]),
        "queued": ("Queued", ["enqueued_at"]),
        "success": ("Done", ["enqueued_at", "start", "end", "result"]),
    }
    for name, (variant, fields) in payloads.items():
        task = data["tasks"][str(ids[name])]
        assert list(task) == keys
        assert (task["dependencies"], task["priority"]) == ([], 0)
        assert list(task["status"]) == [variant] and list(task["status"][variant]) == fields
        for stamp in [task["created_at"], *(task["status"][variant][f] for f in fields if f != "result")]:
            assert TIMESTAMP.fullmatch(stamp), stamp
    results = {name: data["tasks"][str(ids[name])]["status"]["Done"]["result"] for name in ("failed", "killed")}
    assert results == {"failed": {"Failed": 3}, "killed": "Killed"}
    running = data["tasks"][str(ids["running"])]["envs"]
    assert (running["PUEUE_GROUP"], running["PUEUE_WORKER_ID"]) == ("gpu_a", "0")
    assert "PUEUE_GROUP" not in data["tasks"][str(ids["spawn"])]["envs"], "never started"
    go(remote.base_dir / "states")


def test_status_of_one_group_filters_tasks_not_groups(remote, client):
    folder = str(remote.base_dir)
    a = client.add("true", label="a", group="gpu_a", workdir=folder)
    client.add("true", label="b", group="gpu_b", workdir=folder)

    state = client.status(group="gpu_a")

    assert list(state.tasks) == [a]
    assert sorted(state.groups) == ["default", "gpu_a", "gpu_b"]
    assert client.status(group="nope").tasks == {}, "an unknown group is no error for status"


def test_log_tail_and_missing_logs(remote, client):
    folder = str(remote.base_dir)
    chatty = client.add("seq 1 20", label="l", group="gpu_a", workdir=folder)
    raw(remote, "pause", "-g", "gpu_b")
    waiting = client.add("true", label="l", group="gpu_b", workdir=folder)
    wait_until(client, chatty, TaskStatus.DONE)

    assert client.log(chatty, lines=2) == "19\n20"
    assert client.log(chatty, lines=50) == "\n".join(str(n) for n in range(1, 21))
    assert re.fullmatch(
        rf'\(Pueue error\) Failed to get log file handle: I/O error at path "/[^"]+/task_logs/{waiting}\.log" '
        r"while getting log file handle:\nNo such file or directory \(os error 2\)",
        client.log(waiting),
    )
    with pytest.raises(TaskNotFound):
        client.log(99)
    assert raw(remote, "log", "--json") == (0, "{}\n", ""), "4.x: no ids = the default group"


# --- acting on tasks and groups ---------------------------------------------------------------


def test_kill_by_id(remote, client):
    folder = str(remote.base_dir)
    victim = client.add("sleep 60", label="v", group="gpu_a", workdir=folder)
    done = client.add("true", label="d", group="gpu_b", workdir=folder)
    wait_until(client, victim, TaskStatus.RUNNING)
    wait_until(client, done, TaskStatus.DONE)

    assert raw(remote, "kill", str(victim)) == (0, f"Tasks are being killed: {victim}\n", "")
    assert wait_until(client, victim, TaskStatus.DONE).result is TaskResult.KILLED
    with pytest.raises(CommandFailed) as caught:
        client.kill([done])
    assert_pueue_error(caught.value, f"The command failed for tasks: {done}")
    with pytest.raises(ValueError, match="kills a whole group"):
        client.kill([])


def test_remove_clean_and_id_reuse(remote, client):
    folder = str(remote.base_dir)
    finished = client.add("true", label="f", group="gpu_b", workdir=folder)
    running = client.add(WAIT_FOR_GO, label="r", group="gpu_a", workdir=folder)
    queued = client.add("true", label="q", group="gpu_a", workdir=folder)
    wait_until(client, finished, TaskStatus.DONE)
    wait_until(client, running, TaskStatus.RUNNING)

    with pytest.raises(CommandFailed) as caught:
        client.remove([running])
    assert_pueue_error(caught.value, f"The command failed for tasks: {running}")
    assert raw(remote, "remove", str(queued)) == (0, f"Tasks removed from list: {queued}\n", "")
    assert client.add("true", label="again", group="gpu_a", workdir=folder) == queued, "id = max + 1"
    client.remove([queued])
    go(remote.base_dir)
    wait_until(client, running, TaskStatus.DONE)
    assert raw(remote, "clean") == (0, "All finished tasks have been removed\n", "")
    assert client.status().tasks == {}
    assert client.add("true", label="reused", group="gpu_a", workdir=folder) == 0


def test_groups_add_list_pause_start(remote, client):
    client.group_add("gpu_c", parallel=2)
    with pytest.raises(CommandFailed) as caught:
        client.group_add("gpu_c", parallel=2)
    assert_pueue_error(caught.value, 'Group "gpu_c" already exists')
    assert raw(remote, "group", "add", "gpu_d", "-p", "1") == (0, 'New group "gpu_d" has been created\n', "")

    raw(remote, "pause", "-g", "gpu_c")
    assert client.groups()["gpu_c"].status is GroupStatus.PAUSED
    assert raw(remote, "start", "-g", "gpu_c") == (0, 'Group "gpu_c" is being resumed.\n', "")
    groups = client.groups()
    assert {name: (g.status, g.parallel_tasks) for name, g in groups.items()} == {
        "default": (GroupStatus.RUNNING, 1),
        "gpu_a": (GroupStatus.RUNNING, 1),
        "gpu_b": (GroupStatus.RUNNING, 1),
        "gpu_c": (GroupStatus.RUNNING, 2),
        "gpu_d": (GroupStatus.RUNNING, 1),
    }


def test_job_wrapper_leaves_exit_code_and_log_in_the_workdir(remote, client):
    folder = workdir(remote, "job")
    (folder / "run.sh").write_text('echo "on $CUDA_VISIBLE_DEVICES"; echo oops >&2; exit 3\n')

    task_id = client.add(job_command("run.sh", devices="1"), label="job", group="gpu_a", workdir=str(folder))

    task = wait_until(client, task_id, TaskStatus.DONE)
    assert (task.result, task.exit_code) == (TaskResult.FAILED, 3)
    assert (folder / EXIT_MARKER).read_text() == "3\n"
    assert (folder / JOB_LOG).read_text() == "on 1\noops\n"
    assert client.log(task_id) == "on 1\noops"
    assert not (folder / f"{EXIT_MARKER}.tmp").exists()


# --- the daemon going away --------------------------------------------------------------------


def assert_pueue_error(error, meaningful: str) -> None:
    """pueue's meaningful lines end the message; a login shell may print its own noise before them
    (here root's ~/.bashrc runs pyenv on every login, which now and then complains on stderr)."""
    assert str(error).startswith("pueue exited 1: ") and str(error).endswith(meaningful), str(error)


def daemon_down_message(remote, os_error: str) -> str:
    return (
        "0: Failed to initialize client.\n1: Failed to initialize stream.\n"
        f'2: I/O error at path "{remote.socket}" while connecting to daemon. Did you start it?:\n2: {os_error}'
    )


def test_daemon_stopped(remote, client):
    remote.stop()

    with pytest.raises(DaemonDown) as caught:
        client.status()
    with pytest.raises(DaemonDown):
        client.add("true", label="l", group="gpu_a", workdir=str(remote.base_dir))
    with pytest.raises(DaemonDown, match="Did you start it"):  # pueue connects before it resolves -w
        client.add("true", label="l", group="gpu_a", workdir=str(remote.base_dir / "missing"))

    assert not remote.socket.exists(), "a clean stop removes the socket"
    assert_pueue_error(caught.value, daemon_down_message(remote, "No such file or directory (os error 2)"))
    code, stdout, stderr = raw(remote, "status", "--json")
    assert (code, stdout) == (1, "")
    assert ANSI.search(stderr), "real pueue colours its errors even with --color never"
    assert "Location:" in stderr
    assert ANSI.search(caught.value.stderr) is None, "the client keeps no escape codes"


def test_daemon_killed(remote, client):
    remote.crash()

    with pytest.raises(DaemonDown) as caught:
        client.status()

    assert remote.socket.exists(), "SIGKILL leaves the socket behind"
    assert_pueue_error(caught.value, daemon_down_message(remote, "Connection refused (os error 111)"))
    remote.start()
    assert client.status().tasks == {}


def test_daemon_never_started(never_started_remote, sshd):
    """pueue configured, pueued never run: the client finds no shared secret and stops before it
    connects. A definite "daemon down" (nothing was added, retry later), not an unknown outcome."""
    remote = never_started_remote
    client = PueueClient(SshTransport(sshd.target()), remote.pueue)
    folder = workdir(remote, "never")

    with pytest.raises(DaemonDown) as caught:
        client.add("true", label="early", group="default", workdir=str(folder))
    with pytest.raises(DaemonDown):
        client.status()

    assert not remote.secret.exists() and not remote.socket.exists()
    assert_pueue_error(
        caught.value,
        f'0: I/O error at path "{remote.secret}" while opening secret file. '
        "Did you start the daemon at least once?:\n0: No such file or directory (os error 2)",
    )
    code, stdout, stderr = raw(remote, "status", "--json")
    assert (code, stdout) == (1, "")
    assert ANSI.search(stderr) and "Location:" in stderr
    remote.start()
    assert remote.secret.exists(), "the first start writes the secret"
    task_id = client.add("true", label="later", group="default", workdir=str(folder))
    assert [task.label for task in client.status().tasks.values()] == ["later"] and task_id == 0


def test_graceful_stop_kills_running_tasks_and_pauses_groups_with_queued_ones(remote, client):
    folder = workdir(remote, "graceful")
    running = client.add(f"echo $$ > pid; {WAIT_FOR_GO}", label="r", group="gpu_a", workdir=str(folder))
    queued = client.add("true", label="q", group="gpu_a", workdir=str(folder))
    wait_until(client, running, TaskStatus.RUNNING)
    pid = task_pid(folder / "pid")

    remote.stop()
    remote.start()

    state = client.status()
    assert (state.tasks[running].status, state.tasks[running].result) == (TaskStatus.DONE, TaskResult.KILLED)
    assert state.tasks[queued].status is TaskStatus.QUEUED
    assert state.groups["gpu_a"].status is GroupStatus.PAUSED
    assert not process_alive(pid), "pueue killed the task's process"


def test_sigkill_then_restart(remote, client):
    """pueued SIGKILLed under running tasks, then started again with the same config."""
    folders = {name: workdir(remote, name) for name in ("job", "free", "other")}
    client.group_add("idle", parallel=1)
    client.group_add("held", parallel=1)
    raw(remote, "pause", "-g", "held")
    (folders["job"] / "run.sh").write_text(f"echo $$ > pid; {WAIT_FOR_GO}; echo finished\n")
    job = client.add(job_command("run.sh"), label="job", group="gpu_a", workdir=str(folders["job"]))
    behind = client.add("true", label="behind", group="gpu_a", workdir=str(folders["job"]))
    free = client.add(f"echo $$ > pid; {WAIT_FOR_GO}", label="free", group="gpu_b", workdir=str(folders["free"]))
    for task_id in (job, free):
        wait_until(client, task_id, TaskStatus.RUNNING)
    pids = [task_pid(folders[name] / "pid") for name in ("job", "free")]
    before = client.status()
    try:
        remote.crash()
        with pytest.raises(DaemonDown):
            client.status()
        remote.start()

        state = client.status()
        for task_id in (job, free):
            task = state.tasks[task_id]
            assert (task.status, task.result) == (TaskStatus.DONE, TaskResult.KILLED)
            assert task.start == before.tasks[task_id].start and task.end > task.start
        assert state.tasks[behind].status is TaskStatus.QUEUED
        assert {name: g.status for name, g in state.groups.items()} == {
            "default": GroupStatus.RUNNING,
            "gpu_a": GroupStatus.PAUSED,  # it holds a queued task
            "gpu_b": GroupStatus.RUNNING,
            "idle": GroupStatus.RUNNING,
            "held": GroupStatus.PAUSED,  # as it was
        }
        assert all(process_alive(pid) for pid in pids), "the processes run on"

        go(folders["job"])  # the orphaned job finishes its work and writes its marker
        deadline = time.monotonic() + WAIT
        while not (folders["job"] / EXIT_MARKER).exists():
            assert time.monotonic() < deadline, "the orphaned job never wrote its exit code"
            time.sleep(0.05)
        assert (folders["job"] / EXIT_MARKER).read_text() == "0\n"
        assert (folders["job"] / JOB_LOG).read_text().endswith("finished\n")
        assert client.status().tasks[job].result is TaskResult.KILLED, "pueue still says Killed"

        client.start_group("gpu_a")
        assert wait_until(client, behind, TaskStatus.DONE).result is TaskResult.SUCCESS
    finally:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


# --- the fixtures' own surface: evidence and fault hooks ---------------------------------------


def test_evidence_and_fault_hooks(remote, client, sshd):
    folder = str(workdir(remote, "evidence"))
    impatient = PueueClient(SshTransport(sshd.target(command_timeout=2.0)), remote.pueue)
    first = client.add("true", label="one", group="gpu_a", workdir=folder)
    wait_until(client, first, TaskStatus.DONE)

    remote.set_fault("hang_before_add")
    with pytest.raises(OutcomeUnknown):
        impatient.add("true", label="never", group="gpu_a", workdir=folder)
    remote.set_fault("hang_before_add", armed=False)
    remote.set_fault("hang_after_add")
    with pytest.raises(OutcomeUnknown):
        impatient.add("true", label="lost", group="gpu_a", workdir=folder)
    remote.set_fault("hang_after_add", armed=False)
    kill_hung_clients(remote)

    [lost] = client.find_tasks_by_label("lost")
    assert not client.find_tasks_by_label("never")
    assert [(a["id"], a["label"], a["group"], a["path"], a["command"]) for a in remote.adds()] == [
        (first, "one", "gpu_a", folder, "true"),
        (lost.id, "lost", "gpu_a", folder, "true"),
    ]
    wait_until(client, lost.id, TaskStatus.DONE)
    events = [(e["event"], e["id"], e["label"], e["group"], e["worker_id"]) for e in remote.events()]
    assert events == [
        (kind, task, label, "gpu_a", 0)
        for task, label in ((first, "one"), (lost.id, "lost"))
        for kind in ("start", "end")
    ]
    assert [e["result"] for e in remote.events() if e["event"] == "end"] == ["Success", "Success"]
    assert overlaps_per_group(remote.events()) == {"gpu_a": 1}


# --- the two remotes side by side -------------------------------------------------------------


def normalise(text: str, remote) -> str:
    """Raw output with what must differ replaced: times, the remote's own paths, the captured envs."""
    with suppress(ValueError):
        text = json.dumps(_pueue_envs_only(json.loads(text)), separators=(",", ":"), ensure_ascii=False) + "\n"
    text = TIMESTAMP.sub("<time>", text)
    text = text.replace(str(remote.socket), "<socket>").replace(str(remote.base_dir), "<base>")
    return re.sub(r'"/[^"]*/task_logs/', '"<logs>/', text)


def _pueue_envs_only(value):
    """Each task's ``envs`` reduced to the names pueue adds itself (the rest is the caller's)."""
    if isinstance(value, dict):
        return {
            key: sorted(k for k in item if k.startswith("PUEUE_")) if key == "envs" else _pueue_envs_only(item)
            for key, item in value.items()
        }
    return value


def scenario(remote) -> list[tuple[str, tuple[int, str, str]]]:
    """The same calls on one remote; every answer, raw."""
    folder = remote.base_dir / "work"
    doomed = remote.base_dir / "doomed"
    folder.mkdir()
    doomed.mkdir()
    seen = []

    def call(*args: str) -> None:
        code, stdout, stderr = raw(remote, *args)
        answer = (code, normalise(stdout, remote), normalise(stderr, remote))
        seen.append((normalise(shlex.join(args), remote), answer))

    def settle(task_id: int, variant: str) -> None:
        deadline = time.monotonic() + WAIT
        while variant not in json.loads(raw(remote, "status", "--json")[1])["tasks"][str(task_id)]["status"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)

    call("group", "add", "wide", "-p", "0")
    call("group", "add", "wide")
    call("add", "-p", "-l", HOSTILE_LABEL, "-g", "wide", "-w", str(folder), "--", HOSTILE_COMMAND)
    call("add", "-l", "", "-g", "wide", "-w", str(folder), "--", "exit 7")
    call("add", "-g", "wide", "-w", str(folder), "--", "sleep 60")
    call("pause", "-g", "gpu_b")
    call("add", "-g", "gpu_b", "-w", str(doomed), "--", "true")
    call("add", "-g", "gpu_b", "-w", str(folder / "missing"), "--", "true")
    call("add", "-g", "nope", "--", "true")
    doomed.rmdir()
    for task_id in (0, 1):
        settle(task_id, "Done")
    settle(2, "Running")
    call("kill", "2", "0", "99")
    settle(2, "Done")
    call("start", "-g", "gpu_b")
    settle(3, "Done")
    call("add", "-p", "-g", "gpu_a", "-w", str(folder), "--", "true")
    settle(4, "Done")
    call("status", "--json")
    call("status", "--json", "-g", "wide")
    call("log", "--json", "--lines", "1", "0", "1", "3", "99")
    call("group", "--json")
    call("remove", "0", "99")
    call("clean")
    call("status", "--json")
    call("--version")
    call("add", "-p", "-g", "gpu_b", "-w", str(folder), "--", "sleep 60")
    settle(0, "Running")
    call("pause", "-g", "gpu_b")
    call("status", "--json", "-g", "gpu_b")
    call("kill", "0")
    settle(0, "Done")
    call("start", "-g", "gpu_b")
    call("add", "-p", "-g", "gpu_a", "-w", str(folder), "--", WAIT_FOR_GO)
    call("add", "-p", "-g", "gpu_a", "-w", str(folder), "--", "true")
    settle(1, "Running")
    remote.crash()
    call("status", "--json")
    remote.start()
    call("status", "--json")
    remote.stop()
    call("status", "--json")
    go(folder)  # the orphan of the crash ends
    return seen


@pytest.mark.real_pueue
def test_the_two_remotes_answer_alike():
    real, sandbox = RealPueue(groups={"gpu_a": 1, "gpu_b": 1}), Sandbox(groups={"gpu_a": 1, "gpu_b": 1})
    try:
        expected, actual = scenario(real), scenario(sandbox)
    finally:
        real.cleanup()
        sandbox.cleanup()
    assert [command for command, _ in actual] == [command for command, _ in expected]
    for (command, answer), (_, model) in zip(actual, expected, strict=True):
        assert answer == model, command
