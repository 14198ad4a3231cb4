"""The pueue client's command building and its reading of pueue's answers.

A recording Transport stands in for SSH here: the point is the exact command strings and how
pueue's replies (real pueue 4.0.4's, see docs/pueue-formats.md and tests/data/pueue/) are classified.
One test runs the real ``add_many`` script through a real ``sh`` against a fake ``pueue`` that
records its argv, to prove the quoting survives a shell.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from resources.remote.errors import BadOutput, CommandFailed, OutcomeUnknown
from resources.remote.pueue import (
    ADD_LANES,
    MAX_MESSAGE,
    AddResult,
    AddSpec,
    DaemonDown,
    PueueClient,
    TaskNotFound,
    UnknownGroup,
)
from resources.remote.pueue_state import GroupStatus, PueueGroup, TaskStatus
from resources.remote.transport import CommandResult

DATA = Path(__file__).parent / "data" / "pueue"

NASTY_LABEL = 'it\'s "q" $(rm -rf ~) `id` ✓'
NASTY_WORKDIR = "/data/my dir/$HOME/`x`"
NASTY_COMMAND = "-rf --; echo \"it's\" $(whoami) `id` > 'out file' && echo ✓"
VERSION_WARNING = "Different daemon version detected '3.3.0'. Consider restarting the daemon."
# Real pueue 4.0.4's stderr, verbatim (colours, location and backtrace hint included).
DAEMON_DOWN_4X = (DATA / "v4_error_daemon_stopped.txt").read_text()
DAEMON_DOWN_4X_CLEAN = (
    "0: Failed to initialize client.\n1: Failed to initialize stream.\n"
    '2: I/O error at path "/home/alice/.local/share/pueue/pueue.socket" while connecting to daemon. '
    "Did you start it?:\n2: No such file or directory (os error 2)"
)
DAEMON_DOWN_REPLIES = [
    (DATA / f"v4_error_{name}.txt").read_text() for name in ("daemon_stopped", "daemon_killed", "handshake_reset")
]
DAEMON_NEVER_STARTED = (DATA / "v4_error_no_config.txt").read_text()
# A config, but pueued never ran on it: no shared secret yet (real pueue 4.0.4, path replaced).
DAEMON_NEVER_RAN = (DATA / "v4_error_never_started.txt").read_text()
UNKNOWN_GROUP = 'Group gpu doesn\'t exists. Use one of these: ["default"]\n'


@dataclass
class Call:
    command: str
    stdin: bytes | None
    timeout: float | None


class RecordingTransport:
    """Answers each ``run`` with the next scripted reply (a result, an exception or a function)."""

    def __init__(self, *replies):
        self.replies = list(replies)
        self.calls: list[Call] = []

    def run(self, command, *, stdin=None, timeout=None):
        self.calls.append(Call(command, stdin, timeout))
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply(command, stdin) if callable(reply) else reply

    @property
    def commands(self) -> list[str]:
        return [call.command for call in self.calls]


def ok(stdout: str = "") -> CommandResult:
    return CommandResult(0, stdout, "")


def failed(exit_code: int, *, stdout: str = "", stderr: str = "") -> CommandResult:
    return CommandResult(exit_code, stdout, stderr)


def client_with(*replies, **kwargs) -> tuple[PueueClient, RecordingTransport]:
    transport = RecordingTransport(*replies)
    return PueueClient(transport, **kwargs), transport


# --- add --------------------------------------------------------------------------------------


def test_add_builds_the_documented_command_and_returns_the_id():
    client, transport = client_with(ok("7\n"))

    task_id = client.add("python run.py --x 1", label="case-1", group="gpu", workdir="/scratch/c1")

    assert task_id == 7
    assert transport.commands == [
        "pueue --color never add -l case-1 -g gpu -w /scratch/c1 -p -- 'python run.py --x 1'"
    ]


def test_add_quotes_hostile_values_and_passes_the_command_as_one_word():
    client, transport = client_with(ok("3\n"))

    client.add(NASTY_COMMAND, label=NASTY_LABEL, group="gpu", workdir=NASTY_WORKDIR)

    (command,) = transport.commands
    assert command == (
        "pueue --color never add -l 'it'\"'\"'s \"q\" $(rm -rf ~) `id` ✓' "
        "-g gpu -w '/data/my dir/$HOME/`x`' -p -- "
        "'-rf --; echo \"it'\"'\"'s\" $(whoami) `id` > '\"'\"'out file'\"'\"' && echo ✓'"
    )
    assert shlex.split(command) == [
        "pueue",
        "--color",
        "never",
        "add",
        "-l",
        NASTY_LABEL,
        "-g",
        "gpu",
        "-w",
        NASTY_WORKDIR,
        "-p",
        "--",
        NASTY_COMMAND,
    ]


def test_add_with_a_multi_word_pueue_command():
    transport = RecordingTransport(ok("1\n"))
    client = PueueClient(transport, command="'/opt/my tools/pueue' --config /etc/pueue.yml")

    client.add("true", label="l", group="default", workdir="/w")

    assert transport.commands == [
        "'/opt/my tools/pueue' --config /etc/pueue.yml --color never add -l l -g default -w /w -p -- true"
    ]


def test_add_passes_environment_as_quoted_assignments():
    client, transport = client_with(ok("5\n"))

    client.add("run", label="l", group="g", workdir="/w", env={"CUDA_VISIBLE_DEVICES": "0,1", "MSG": "a b'$(c)"})

    assert transport.commands == [
        "CUDA_VISIBLE_DEVICES=0,1 MSG='a b'\"'\"'$(c)' pueue --color never add -l l -g g -w /w -p -- run"
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label": "-x"}, "label must not start with '-'"),
        ({"group": "--all"}, "group must not start with '-'"),
        ({"workdir": "-w"}, "workdir must not start with '-'"),
        ({"group": ""}, "empty group"),
        ({"workdir": ""}, "empty workdir"),
        ({"command": "  "}, "empty command"),
        ({"command": "echo \0"}, "NUL"),
        ({"env": {"1X": "v"}}, "invalid environment variable name '1X'"),
        ({"env": {"A=B": "v"}}, "invalid environment variable name 'A=B'"),
        ({"env": {"A B": "v"}}, "invalid environment variable name 'A B'"),
    ],
)
def test_add_refuses_values_pueue_or_the_shell_would_misread(kwargs, message):
    client, transport = client_with()
    arguments = {"command": "true", "label": "l", "group": "g", "workdir": "/w", **kwargs}

    with pytest.raises(ValueError, match=re.escape(message)):
        client.add(arguments.pop("command"), **arguments)

    assert transport.calls == []


def test_add_allows_an_empty_label():
    client, transport = client_with(ok("2\n"))

    assert client.add("true", label="", group="g", workdir="/w") == 2
    assert transport.commands == ["pueue --color never add -l '' -g g -w /w -p -- true"]


def test_add_reads_the_last_line_after_a_3x_version_warning():
    client, _ = client_with(ok(f"{VERSION_WARNING}\n12\n\n"))

    assert client.add("true", label="l", group="g", workdir="/w") == 12


@pytest.mark.parametrize("stdout", ["", "\n", "New task added (id 4).\n", f"12\n{VERSION_WARNING}\n"])
def test_add_without_a_readable_id_is_bad_output(stdout):
    client, _ = client_with(ok(stdout))

    with pytest.raises(BadOutput, match="pueue add printed no task id") as caught:
        client.add("true", label="l", group="g", workdir="/w")

    assert isinstance(caught.value, OutcomeUnknown)  # the task may exist: look it up by label


@pytest.mark.parametrize(
    "reply",
    [failed(1, stdout=UNKNOWN_GROUP), failed(1, stderr=UNKNOWN_GROUP)],
    ids=["3.x-stdout", "4.x-stderr"],
)
def test_add_to_unknown_group(reply):
    client, _ = client_with(reply)

    with pytest.raises(UnknownGroup, match="Group gpu doesn't exists") as caught:
        client.add("true", label="l", group="gpu", workdir="/w")

    error = caught.value
    assert isinstance(error, CommandFailed)
    assert (error.exit_code, error.command) == (1, "pueue --color never add -l l -g gpu -w /w -p -- true")
    assert (error.stdout, error.stderr) == (reply.stdout.strip(), reply.stderr.strip())
    assert str(error) == f"pueue exited 1: {UNKNOWN_GROUP.strip()}"


@pytest.mark.parametrize(
    "stderr",
    [*DAEMON_DOWN_REPLIES, DAEMON_NEVER_STARTED, DAEMON_NEVER_RAN],
    ids=["stopped", "killed", "handshake", "no-config", "no-secret"],
)
def test_add_with_the_daemon_down(stderr):
    client, _ = client_with(failed(1, stderr=stderr))

    with pytest.raises(DaemonDown, match=r"Did you start|Failed to initialize client") as caught:
        client.add("true", label="l", group="g", workdir="/w")

    assert isinstance(caught.value, CommandFailed)


def test_errors_keep_only_their_meaningful_lines():
    client, _ = client_with(failed(1, stderr=DAEMON_DOWN_4X), failed(1, stderr=DAEMON_NEVER_STARTED))

    with pytest.raises(DaemonDown) as down:
        client.status()
    with pytest.raises(DaemonDown) as never:
        client.status()

    assert "\x1b" in DAEMON_DOWN_4X and "Location:" in DAEMON_DOWN_4X
    assert str(down.value) == f"pueue exited 1: {DAEMON_DOWN_4X_CLEAN}"
    assert down.value.stderr == DAEMON_DOWN_4X_CLEAN
    assert str(never.value) == (
        "pueue exited 1: 0: Couldn't find a configuration file. Did you start the daemon yet?"
    )


def test_a_configured_daemon_that_never_ran_is_down():
    """Not a refusal ("outcome unknown" to the submission pass): pueue stopped before connecting, so
    the add created nothing and is retried once the daemon runs."""
    client, transport = client_with(failed(1, stderr=DAEMON_NEVER_RAN), batch_reply((1, "", DAEMON_NEVER_RAN)))

    with pytest.raises(DaemonDown) as caught:
        client.add("true", label="l", group="g", workdir="/w")
    (result,) = client.add_many([AddSpec("true", "l", "g", "/w")])

    assert "\x1b" in DAEMON_NEVER_RAN and "Location:" in DAEMON_NEVER_RAN
    assert str(caught.value) == (
        'pueue exited 1: 0: I/O error at path "/home/alice/.local/share/pueue/shared_secret" while opening '
        "secret file. Did you start the daemon at least once?:\n0: No such file or directory (os error 2)"
    )
    assert type(result.error) is DaemonDown and result.error.stderr == caught.value.stderr
    assert len(transport.calls) == 2


def test_a_missing_workdir_is_a_plain_failure():
    client, _ = client_with(failed(1, stderr=(DATA / "v4_error_missing_workdir.txt").read_text()))

    with pytest.raises(CommandFailed) as caught:
        client.add("true", label="l", group="g", workdir="/gone")

    assert type(caught.value) is CommandFailed
    assert str(caught.value) == (
        "pueue exited 1: 0: Failed to canonicalize given working directory path\n"
        "1: No such file or directory (os error 2)"
    )


def test_long_errors_keep_their_first_line_and_their_tail():
    causes = "".join(f"   {n}: \x1b[91mcause number {n}\x1b[0m\n" for n in range(60))
    client, _ = client_with(failed(1, stderr=f"Error: \n{causes}\nLocation:\n   x.rs:1\n"))

    with pytest.raises(CommandFailed) as caught:
        client.status()

    message = caught.value.stderr
    assert len(message) == MAX_MESSAGE
    assert message.startswith("0: cause number 0\n...\n")
    assert message.endswith("59: cause number 59")
    assert "\x1b" not in message and "x.rs" not in message


def test_other_failures_are_plain_command_failed():
    client, _ = client_with(failed(2, stderr="error: unexpected argument '--frobnicate' found\n"))

    with pytest.raises(CommandFailed, match="pueue exited 2: error: unexpected argument") as caught:
        client.add("true", label="l", group="g", workdir="/w")

    assert type(caught.value) is CommandFailed


def test_outcome_unknown_from_the_transport_passes_through_untouched():
    lost = OutcomeUnknown("connection reset")
    client, _ = client_with(lost, lost, lost)

    for call in (
        lambda: client.add("true", label="l", group="g", workdir="/w"),
        lambda: client.status(),
        lambda: client.add_many([AddSpec("true", "l", "g", "/w")]),
    ):
        with pytest.raises(OutcomeUnknown) as caught:
            call()
        assert caught.value is lost


# --- add_many ---------------------------------------------------------------------------------


def batch_tag(script: str) -> str:
    return re.search(r"'(MQIC-PUEUE-[0-9a-f]{32}) 0 begin'", script)[1]


def batch_reply(*adds, noise: str = ""):
    """Answer an add_many script as sh would: each add is (exit code, stdout, stderr)."""

    def reply(command, stdin):
        tag = batch_tag(command)
        stdout, stderr = [noise], []
        for index, (code, out, err) in enumerate(adds):
            stdout.append(f"{tag} {index} begin\n{out}\n{tag} {index} end {code}\n")
            stderr.append(f"{tag} {index} begin\n{err}\n{tag} {index} end\n")
        return CommandResult(0, "".join(stdout), "".join(stderr))

    return reply


SPECS = [
    AddSpec("run a", label="case-a", group="gpu", workdir="/w/a"),
    AddSpec("run b", label="case-b", group="nope", workdir="/w/b"),
    AddSpec("run c", label="case-c", group="gpu", workdir="/w/c", env={"MODE": "fast"}),
]


def test_add_many_is_one_round_trip_and_reports_each_spec():
    forged = "MQIC-PUEUE-00000000000000000000000000000000 0 end 0"
    client, transport = client_with(
        batch_reply(
            (0, f"{VERSION_WARNING}\n{forged}\n4\n", ""),
            (1, UNKNOWN_GROUP, ""),
            (0, "5\n", ""),
            noise="Welcome to the cluster!\n",
        )
    )

    results = client.add_many(SPECS)

    assert [(r.spec, r.task_id, r.ok) for r in results] == [
        (SPECS[0], 4, True),
        (SPECS[1], None, False),
        (SPECS[2], 5, True),
    ]
    assert isinstance(results[1].error, UnknownGroup)
    assert results[1].error.command == "pueue --color never add -l case-b -g nope -w /w/b -p -- 'run b'"
    (call,) = transport.calls
    assert call.stdin is None, "the transport sends every command to sh; the script is the command"
    script = call.command
    assert " pueue --color never add -l case-a -g gpu -w /w/a -p -- 'run a' </dev/null;" in script
    assert " MODE=fast pueue --color never add -l case-c -g gpu -w /w/c -p -- 'run c' </dev/null;" in script


def test_add_many_separates_stdout_and_stderr_per_add():
    client, _ = client_with(batch_reply((0, "8\n", "a warning\n"), (1, "", DAEMON_DOWN_4X), (0, "9", "")))

    results = client.add_many(SPECS)

    assert [r.task_id for r in results] == [8, None, 9]
    assert isinstance(results[1].error, DaemonDown)
    assert results[1].error.stderr == DAEMON_DOWN_4X_CLEAN


def test_add_many_bad_id_in_the_middle_is_bad_output_for_that_spec_only():
    client, _ = client_with(batch_reply((0, "1\n", ""), (0, "oops\n", ""), (0, "3\n", "")))

    results = client.add_many(SPECS)

    assert [r.task_id for r in results] == [1, None, 3]
    assert isinstance(results[1].error, BadOutput)


def test_add_many_cut_short_marks_the_missing_specs_unknown():
    def cut_short(command, stdin):
        tag = batch_tag(command)
        stdout = f"{tag} 0 begin\n6\n\n{tag} 0 end 0\n{tag} 1 begin\n"
        return CommandResult(137, stdout, f"{tag} 0 begin\n\n{tag} 0 end\nKilled\n")

    client, _ = client_with(cut_short)

    results = client.add_many(SPECS)

    assert results[0] == AddResult(SPECS[0], task_id=6)
    for result in results[1:]:
        assert type(result.error) is OutcomeUnknown
        assert "the batch script exited 137" in str(result.error)
    assert "label 'case-b'" in str(results[1].error)


def test_add_many_with_nothing_to_add_makes_no_call():
    client, transport = client_with()

    assert client.add_many([]) == []
    assert transport.calls == []


def test_add_many_validates_every_spec_before_running_anything():
    client, transport = client_with()

    with pytest.raises(ValueError, match="label must not start with '-'"):
        client.add_many([SPECS[0], AddSpec("x", label="-bad", group="g", workdir="/w")])

    assert transport.calls == []


def test_add_many_uses_a_fresh_tag_every_time():
    client, transport = client_with(batch_reply((0, "1", "")), batch_reply((0, "2", "")))

    client.add_many(SPECS[:1])
    client.add_many(SPECS[:1])

    assert batch_tag(transport.calls[0].command) != batch_tag(transport.calls[1].command)


# --- add_many through a real shell --------------------------------------------------------------

FAKE_PUEUE = r"""#!/bin/sh
# Stand-in for `pueue add -p`: refuses group "nope" as pueue 4.x does, prints a 3.x version
# warning and then a fresh id, and records argc, argv, $MQIC_TEST_VAR and the id it gave ("-" if
# none), NUL-separated. add_many runs adds side by side, so counter and record are kept under a
# lock. With a file "barrier" holding N, each call first waits until N calls have started.
here=$(dirname "$0")
if [ -f "$here/barrier" ]; then
    mkdir -p "$here/started" && : >"$here/started/$$"
    tries=0
    while [ "$(ls "$here/started" | wc -l)" -lt "$(cat "$here/barrier")" ]; do
        tries=$((tries + 1))
        [ "$tries" -gt 200 ] && { echo "alone at the barrier: the adds did not run side by side" >&2; exit 99; }
        sleep 0.05
    done
fi
exec 9>>"$here/lock"
flock 9
prev=
for arg in "$@"; do
    if [ "$prev" = "-g" ] && [ "$arg" = "nope" ]; then
        printf '%s\0' "$#" "$@" "${MQIC_TEST_VAR-<unset>}" - >>"$here/argv"
        echo "Group nope doesn't exists. Use one of these: [\"default\"]" >&2
        exit 1
    fi
    prev=$arg
done
count=$(( $(cat "$here/count" 2>/dev/null || echo 0) + 1 ))
echo "$count" >"$here/count"
printf '%s\0' "$#" "$@" "${MQIC_TEST_VAR-<unset>}" "$count" >>"$here/argv"
echo "Different daemon version detected '3.3.0'. Consider restarting the daemon."
echo "$count"
"""


class ShellTransport:
    """Runs commands through a real local ``sh``, the way a login shell runs them over SSH."""

    def __init__(self, env: dict[str, str] | None = None):
        self.env = env

    def run(self, command, *, stdin=None, timeout=None):
        env = {**os.environ, **self.env} if self.env else None
        done = subprocess.run(["sh", "-c", command], input=stdin or b"", capture_output=True, timeout=60, env=env)
        return CommandResult(done.returncode, done.stdout.decode(), done.stderr.decode())


@dataclass(frozen=True)
class FakeCall:
    argv: list[str]
    test_var: str
    task_id: int | None

    @property
    def label(self) -> str:
        return self.argv[self.argv.index("-l") + 1]


def recorded_calls(argv_file: Path) -> list[FakeCall]:
    """Each fake pueue run, in the order they took the lock, decoded from the NUL-separated record."""
    words = argv_file.read_bytes().decode().split("\0")[:-1]
    calls = []
    while words:
        count = int(words.pop(0))
        argv, words = words[:count], words[count:]
        test_var, task_id = words.pop(0), words.pop(0)
        calls.append(FakeCall(argv, test_var, None if task_id == "-" else int(task_id)))
    return calls


@pytest.fixture
def fake_pueue(tmp_path) -> Path:
    bin_dir = tmp_path / "bin dir ✓"
    bin_dir.mkdir()
    script = bin_dir / "pueue"
    script.write_text(FAKE_PUEUE)
    script.chmod(0o755)
    return script


def test_add_many_quoting_survives_a_real_shell(fake_pueue):
    config = ["--config", "/etc/pueue cfg.yml"]
    client = PueueClient(ShellTransport(), command=shlex.join([str(fake_pueue), *config]))
    odd_dir, odd_value = "/tmp/dir with space/-odd", "v a'l $(no) ✓"
    specs = [
        AddSpec(NASTY_COMMAND, NASTY_LABEL, "gpu", odd_dir, {"MQIC_TEST_VAR": odd_value}),
        AddSpec("echo never", "case-b", "nope", "/w"),
        AddSpec("--help", "", "default", "/w/$(x)"),
    ]

    results = client.add_many(specs)

    calls = {call.label: call for call in recorded_calls(fake_pueue.parent / "argv")}
    assert [r.task_id for r in results] == [calls[NASTY_LABEL].task_id, None, calls[""].task_id]
    assert {calls[NASTY_LABEL].task_id, calls[""].task_id} == {1, 2}
    assert isinstance(results[1].error, UnknownGroup)
    assert "Group nope doesn't exists" in results[1].error.stderr
    add = [*config, "--color", "never", "add", "-l"]
    assert calls[NASTY_LABEL].argv == [*add, NASTY_LABEL, "-g", "gpu", "-w", odd_dir, "-p", "--", NASTY_COMMAND]
    assert calls[NASTY_LABEL].test_var == odd_value
    assert calls["case-b"].argv == [*add, "case-b", "-g", "nope", "-w", "/w", "-p", "--", "echo never"]
    assert calls[""].argv == [*add, "", "-g", "default", "-w", "/w/$(x)", "-p", "--", "--help"]
    assert calls["case-b"].test_var == calls[""].test_var == "<unset>"
    for spec in specs:
        argv = calls[spec.label].argv
        # pueue joins the words after `--` with spaces and runs that with `sh -c`:
        assert " ".join(argv[argv.index("--") + 1 :]) == spec.command


def test_add_many_runs_adds_side_by_side(fake_pueue):
    """Each add waits at a barrier until all three have started: run one by one, none would pass."""
    (fake_pueue.parent / "barrier").write_text("3")
    client = PueueClient(ShellTransport(), command=shlex.quote(str(fake_pueue)))

    results = client.add_many(AddSpec("true", f"case-{i}", "gpu", "/w") for i in range(3))

    assert [r.error for r in results] == [None] * 3
    assert sorted(r.task_id for r in results) == [1, 2, 3]


def test_add_many_with_more_adds_than_lanes_keeps_results_with_specs_and_leaves_no_files(fake_pueue, tmp_path):
    scratch = tmp_path / "remote tmp"
    scratch.mkdir()
    client = PueueClient(ShellTransport(env={"TMPDIR": str(scratch)}), command=shlex.quote(str(fake_pueue)))
    groups = ["nope" if i == ADD_LANES else "gpu" for i in range(2 * ADD_LANES + 3)]
    specs = [AddSpec("true", f"case-{i}", group, "/w") for i, group in enumerate(groups)]

    results = client.add_many(specs)

    calls = {call.label: call for call in recorded_calls(fake_pueue.parent / "argv")}
    assert [r.task_id for r in results] == [calls[spec.label].task_id for spec in specs]
    assert isinstance(results[ADD_LANES].error, UnknownGroup)
    assert sorted(r.task_id for r in results if r.ok) == list(range(1, len(specs)))
    assert list(scratch.iterdir()) == []


def test_single_add_through_a_real_shell(fake_pueue):
    client = PueueClient(ShellTransport(), command=shlex.quote(str(fake_pueue)))

    task_id = client.add(NASTY_COMMAND, label=NASTY_LABEL, group="g", workdir="/w", env={"MQIC_TEST_VAR": "$HOME"})

    assert task_id == 1
    assert recorded_calls(fake_pueue.parent / "argv") == [
        FakeCall(
            ["--color", "never", "add", "-l", NASTY_LABEL, "-g", "g", "-w", "/w", "-p", "--", NASTY_COMMAND],
            "$HOME",
            1,
        )
    ]


# --- status, labels, log, groups, version -------------------------------------------------------


def test_status_parses_the_state():
    client, transport = client_with(ok((DATA / "v4_status.json").read_text()))

    state = client.status()

    assert transport.commands == ["pueue --color never status --json"]
    assert state.schema == "4"
    assert state.tasks[6].status is TaskStatus.RUNNING


def test_status_of_one_group_and_timeout_passed_on():
    client, transport = client_with(ok((DATA / "v4_status_group_gpu.json").read_text()), timeout=12.5)

    state = client.status(group="gpu")

    assert transport.calls == [Call("pueue --color never status --json -g gpu", None, 12.5)]
    assert list(state.tasks) == [2, 7, 9, 12]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (failed(1, stderr=DAEMON_DOWN_4X), DaemonDown),
        (failed(1, stderr=f"Error: {UNKNOWN_GROUP}"), UnknownGroup),
        (ok('{"tasks": {'), BadOutput),
        (ok(""), BadOutput),
    ],
)
def test_status_failures(reply, error):
    client, _ = client_with(reply)

    with pytest.raises(error):
        client.status(group="gpu")


def test_find_tasks_by_label():
    client, transport = client_with(ok((DATA / "v3_status.json").read_text()))

    tasks = client.find_tasks_by_label("train-a")

    assert [(t.id, t.group, t.exit_code) for t in tasks] == [(2, "gpu", None)]
    assert transport.commands == ["pueue --color never status --json"]


def test_log_returns_the_tasks_output():
    client, transport = client_with(ok((DATA / "v4_log.json").read_text()))

    assert client.log(2) == "epoch 1/10 loss=0.91\nepoch 2/10 loss=0.55"
    assert transport.commands == ["pueue --color never log --json --lines 50 2"]


def test_log_of_a_vanished_task():
    client, transport = client_with(ok("{}"))

    with pytest.raises(TaskNotFound, match="pueue has no task 41") as caught:
        client.log(41, lines=5)

    assert transport.commands == ["pueue --color never log --json --lines 5 41"]
    assert isinstance(caught.value, CommandFailed)


@pytest.mark.parametrize(("task_id", "lines"), [(-1, 50), (1, 0), ("1", 50), (True, 50)])
def test_log_refuses_bad_arguments(task_id, lines):
    client, transport = client_with()

    with pytest.raises(ValueError, match="must be an integer"):
        client.log(task_id, lines=lines)

    assert transport.calls == []


def test_groups():
    client, transport = client_with(ok((DATA / "v3_v4_group.json").read_text()))

    assert client.groups() == {
        "default": PueueGroup("default", GroupStatus.RUNNING, 1),
        "gpu": PueueGroup("gpu", GroupStatus.PAUSED, 2),
    }
    assert transport.commands == ["pueue --color never group --json"]


def test_group_add_and_start_group():
    client, transport = client_with(
        ok('New group "gpu q" has been created\n'), ok("Group gpu q is being resumed.\n")
    )

    client.group_add("gpu q", parallel=2)
    client.start_group("gpu q")

    assert transport.commands == [
        "pueue --color never group add -p 2 'gpu q'",
        "pueue --color never start -g 'gpu q'",
    ]


def test_group_add_of_an_existing_group_is_command_failed():
    client, _ = client_with(failed(1, stderr='Group "gpu" already exists\n'))

    with pytest.raises(CommandFailed, match="already exists"):
        client.group_add("gpu", parallel=1)


@pytest.mark.parametrize(("name", "parallel"), [("-x", 1), ("", 1), ("gpu", 0)])
def test_group_add_refuses_bad_arguments(name, parallel):
    client, transport = client_with()

    with pytest.raises(ValueError):
        client.group_add(name, parallel=parallel)

    assert transport.calls == []


@pytest.mark.parametrize(("stdout", "version"), [("pueue 4.0.4\n", "4.0.4"), ("pueue 3.4.1\n", "3.4.1")])
def test_version(stdout, version):
    client, transport = client_with(ok(stdout))

    assert client.version() == version
    assert transport.commands == ["pueue --color never --version"]


def test_version_garbage_is_bad_output():
    client, _ = client_with(ok("bash: pueue: command not found?\n"))

    with pytest.raises(BadOutput, match="pueue --version"):
        client.version()


# --- kill -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ids", [[], (), iter([])])
def test_kill_without_ids_is_refused(ids):
    client, transport = client_with()

    with pytest.raises(ValueError, match="kills a whole group"):
        client.kill(ids)

    assert transport.calls == []


def test_kill_ids_and_signal():
    client, transport = client_with(ok("Tasks are being killed: 3, 5\n"), ok("Tasks are being killed: 3\n"))

    client.kill([3, 5])
    client.kill((3,), signal="sigterm")

    assert transport.commands == ["pueue --color never kill 3 5", "pueue --color never kill -s sigterm 3"]


@pytest.mark.parametrize(("ids", "signal"), [(["3"], None), ([-1], None), ([3], "-9")])
def test_kill_refuses_bad_arguments(ids, signal):
    client, transport = client_with()

    with pytest.raises(ValueError):
        client.kill(ids, signal=signal)

    assert transport.calls == []


def test_kill_of_tasks_not_running_is_command_failed():
    client, _ = client_with(failed(1, stderr="The command failed for tasks: 5\n"))

    with pytest.raises(CommandFailed, match="The command failed for tasks: 5") as caught:
        client.kill([5])

    assert caught.value.command == "pueue --color never kill 5"


def test_empty_pueue_command_is_refused():
    with pytest.raises(ValueError, match="empty pueue command"):
        PueueClient(RecordingTransport(), command="  ")
