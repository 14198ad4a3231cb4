"""LocalTransport keeps the same contract as SshTransport, with subprocesses and local folders."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from resources.remote.errors import CommandFailed, OutcomeUnknown
from resources.remote.local import LocalTransport
from resources.remote.tarstream import UnsafeCaseFolder

MB = 1 << 20


def make_tree(root: Path, files: int) -> dict[str, bytes]:
    contents = {}
    for i in range(files):
        relative = f"d{i // 10}/f{i:03}.dat"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(f"file {i}\n".encode() * 100)
        contents[relative] = (root / relative).read_bytes()
    return contents


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (PID 1 here may not reap orphans)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_run_reports_exit_code_stdout_and_stderr():
    result = LocalTransport().run("printf 'out\\n'; printf 'err\\n' >&2; exit 3")

    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    with pytest.raises(CommandFailed):
        result.check("the command")


def test_run_drains_20_mb_on_stdout_and_stderr_at_once():
    size = 20 * MB
    command = f"head -c {size} /dev/zero | tr '\\0' o & head -c {size} /dev/zero | tr '\\0' e >&2; wait"

    result = LocalTransport().run(command)

    assert (result.stdout, result.stderr) == ("o" * size, "e" * size)


def test_run_sends_stdin_then_eof():
    transport = LocalTransport()

    assert transport.run("wc -c", stdin=b"x" * MB).stdout.strip() == str(MB)
    assert transport.run("cat").stdout == ""


def test_shell_env_reaches_the_command():
    transport = LocalTransport(shell_env={"MQIC_PROBE": "from the sandbox"})

    assert transport.run('echo "$MQIC_PROBE"').stdout == "from the sandbox\n"


@pytest.mark.timeout(30)
def test_timeout_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "pid"

    with pytest.raises(OutcomeUnknown, match="did not finish"):
        LocalTransport().run(f"sleep 60 & echo $! > {pid_file}; wait", timeout=0.5)

    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(pid)


def test_upload_and_download_round_trip_with_links_and_a_hostile_name(tmp_path):
    name = "-case 'q' \"dq\" $(touch injected) `touch injected` ünïcødé"
    case = tmp_path / name
    expected = make_tree(case, 30)
    (case / "link").symlink_to("d0/f000.dat")
    remote = tmp_path / "remote" / name
    back = tmp_path / "back" / name
    transport = LocalTransport()
    progress: list[int] = []

    transport.upload_dir(case, str(remote), progress=progress.append)
    transport.download_dir(str(remote), back)
    transport.download_dir(str(remote), back)

    assert read_tree(remote) == expected | {"link": expected["d0/f000.dat"]}
    assert os.readlink(back / "link") == "d0/f000.dat"
    assert read_tree(back) == read_tree(remote)
    assert progress[-1] > sum(len(data) for data in expected.values())
    assert not list(tmp_path.rglob("injected")) and not (Path.cwd() / "injected").exists()


def test_link_out_of_the_case_is_refused(tmp_path):
    case = tmp_path / "case"
    case.mkdir()
    (case / "leak").symlink_to("/etc/passwd")

    with pytest.raises(UnsafeCaseFolder, match="outside the case folder"):
        LocalTransport().upload_dir(case, str(tmp_path / "remote"))

    assert not (tmp_path / "remote").exists()


def test_failures_are_command_failed_and_leave_the_local_folder_alone(tmp_path):
    (tmp_path / "plain_file").write_text("not a directory")
    case = tmp_path / "case"
    make_tree(case, 2)
    transport = LocalTransport()

    with pytest.raises(CommandFailed, match="Not a directory"):
        transport.upload_dir(case, str(tmp_path / "plain_file" / "case"))
    with pytest.raises(CommandFailed):
        transport.download_dir(str(tmp_path / "nowhere"), case)

    assert len(read_tree(case)) == 2


def test_download_finishes_a_swap_that_a_crash_cut_short(tmp_path):
    results = tmp_path / "results"
    make_tree(results / ".case.outgoing", 3)  # the crash came between the two renames:
    expected = make_tree(results / ".case.incoming", 5)  # old moved aside, new not yet in place

    with pytest.raises(CommandFailed):
        LocalTransport().download_dir(str(tmp_path / "remote is gone"), results / "case")

    assert read_tree(results / "case") == expected
    assert sorted(p.name for p in results.iterdir()) == ["case"]
