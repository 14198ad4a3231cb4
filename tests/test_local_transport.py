"""LocalTransport keeps the same contract as SshTransport, with subprocesses and local folders."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from resources.remote.errors import BadOutput, CommandFailed, FolderRefused, OutcomeUnknown
from resources.remote.local import STDERR_MAX_BYTES, LocalTransport
from resources.remote.manifest import UnsafeCaseFolder
from resources.remote.untar import Limits
from tests.support.trees import read_tree

MB = 1 << 20
SECRET = b"outside the case folder: must never be sent\n"


def make_tree(root: Path, files: int) -> dict[str, bytes]:
    contents = {}
    for i in range(files):
        relative = f"d{i // 10}/f{i:03}.dat"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(f"file {i}\n".encode() * 100)
        contents[relative] = (root / relative).read_bytes()
    return contents


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


def test_run_drains_20_mb_on_stdout_and_3_mb_on_stderr_at_once():
    out, err = 20 * MB, 3 * MB
    command = f"head -c {out} /dev/zero | tr '\\0' o & head -c {err} /dev/zero | tr '\\0' e >&2; wait"

    result = LocalTransport().run(command)

    assert (result.stdout, result.stderr) == ("o" * out, "e" * err)


def wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not running(pid)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("stream", "what"), [("", "output"), (">&2", "error output")])
def test_endless_output_is_bad_output_and_the_command_is_killed(tmp_path, stream, what):
    pid_file = tmp_path / "pid"

    with pytest.raises(BadOutput, match=f"^{what} of local command .* exceeded"):
        LocalTransport(max_output_bytes=MB).run(f"echo $$ > {pid_file}; exec yes {stream}")

    assert wait_gone(int(pid_file.read_text()))


def test_output_up_to_the_cap_is_read_whole():
    result = LocalTransport(max_output_bytes=MB).run(
        f"head -c {MB} /dev/zero; head -c {STDERR_MAX_BYTES} /dev/zero >&2"
    )

    assert (len(result.stdout), len(result.stderr)) == (MB, STDERR_MAX_BYTES)


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

    assert wait_gone(int(pid_file.read_text()))


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
    result = transport.download_dir(str(remote), back)

    assert read_tree(remote) == expected | {"link": expected["d0/f000.dat"]}
    assert os.readlink(remote / "link") == "d0/f000.dat"
    assert read_tree(back) == expected  # results hold files and folders only:
    assert not (back / "link").exists() and result.skipped == [(f"{name}/link", "symlink")]
    assert (result.files, result.bytes) == (30, sum(len(data) for data in expected.values()))
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
    with pytest.raises(FolderRefused, match="nowhere: missing on the host"):
        transport.download_dir(str(tmp_path / "nowhere"), case)
    with pytest.raises(OutcomeUnknown, match=r"not reached: .*tar on the host exited 2"):
        transport.download_dir(str(tmp_path / "no base" / "case"), case)

    assert len(read_tree(case)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case", "plain_file"]


def test_download_finishes_a_swap_that_a_crash_cut_short(tmp_path):
    results = tmp_path / "results"
    make_tree(results / ".mqic-7.outgoing", 3)  # the crash came between the two renames:
    expected = make_tree(results / ".mqic-7.incoming", 5)  # old moved aside, new not yet in place

    with pytest.raises(FolderRefused):
        LocalTransport().download_dir(str(tmp_path / "remote is gone"), results / "case", staging_key="7")

    assert read_tree(results / "case") == expected
    assert sorted(p.name for p in results.iterdir()) == ["case"]


def test_staging_names_fit_whatever_the_destinations_name(tmp_path):
    name = "n" * 255  # ".<name>.incoming" would pass the 255-byte limit
    make_tree(tmp_path / "remote" / name, 3)
    back = tmp_path / "back" / name

    result = LocalTransport().download_dir(str(tmp_path / "remote" / name), back)

    assert result.ok and read_tree(back) == read_tree(tmp_path / "remote" / name)


# -- batched downloads ----------------------------------------------------------------------------------


def results_dir(tmp_path: Path, names: list[str]) -> dict[str, Path]:
    """Destinations that already hold an earlier download's file."""
    routes = {name: tmp_path / "results" / name for name in names}
    for dest in routes.values():
        dest.mkdir(parents=True)
        (dest / "earlier.txt").write_text("from an earlier download")
    return routes


def test_download_folders_brings_each_home_and_keeps_failures_apart(tmp_path):
    remote = tmp_path / "remote"
    one, three = make_tree(remote / "one", 4), make_tree(remote / "three", 3)
    (remote / "three" / "link").symlink_to("/etc/passwd")
    (remote / "big").mkdir()
    (remote / "big" / "a.bin").write_bytes(b"a" * 3000)
    (remote / "big" / "b.bin").write_bytes(b"b" * 3000)  # past the cap, and read past
    routes = results_dir(tmp_path, ["one", "missing", "big", "three"])
    keys = {name: str(n) for n, name in enumerate(routes)}

    results = LocalTransport().download_folders(
        str(remote), routes, staging_keys=keys, limits=Limits(max_bytes=4096)
    )

    assert results["one"].ok and read_tree(routes["one"]) == one
    assert results["three"].ok and read_tree(routes["three"]) == three
    assert results["three"].skipped == [("three/link", "symlink")]
    assert results["missing"].error == "missing on the host"
    assert results["big"].error.startswith("results exceed MQIC_RESULT_MAX_BYTES (4096 bytes)")
    for failed in ("missing", "big"):
        assert read_tree(routes[failed]) == {"earlier.txt": b"from an earlier download"}
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == sorted(routes)


def test_a_complaint_of_tar_about_one_folder_fails_that_folder_only(tmp_path):
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    (fake_bin / "tar").write_text(
        f'#!/bin/sh\n{shutil.which("tar")} "$@"\n'
        'echo "tar: two/d0/f001.dat: Cannot open: Permission denied" >&2\nexit 2\n'
    )
    (fake_bin / "tar").chmod(0o755)
    remote = tmp_path / "remote"
    one = make_tree(remote / "one", 2)
    make_tree(remote / "two", 2)
    routes = results_dir(tmp_path, ["one", "two"])
    transport = LocalTransport(shell_env={"PATH": f"{fake_bin}:{os.environ['PATH']}"})

    results = transport.download_folders(
        str(remote), routes, staging_keys={"one": "1", "two": "2"}, limits=Limits()
    )

    assert results["one"].ok and read_tree(routes["one"]) == one
    assert results["two"].error == "tar on the host: two/d0/f001.dat: Cannot open: Permission denied"
    assert read_tree(routes["two"]) == {"earlier.txt": b"from an earlier download"}


@pytest.mark.timeout(60)
def test_an_over_cap_member_stops_the_download_without_reading_the_rest(tmp_path):
    remote = tmp_path / "remote"
    expected = make_tree(remote / "first", 3)
    (remote / "huge").mkdir()
    with open(remote / "huge" / "sparse.bin", "wb") as sparse:
        sparse.truncate(64 << 30)  # 64 GB that tar would send in full
    make_tree(remote / "last", 2)
    routes = results_dir(tmp_path, ["first", "huge", "last"])
    received: list[int] = []

    results = LocalTransport().download_folders(
        str(remote),
        routes,
        staging_keys={"first": "1", "huge": "2", "last": "3"},
        limits=Limits(max_bytes=MB),
        progress=received.append,
    )

    assert received[-1] < 16 * MB  # the stream was dropped, not drained
    assert results["first"].ok and read_tree(routes["first"]) == expected
    assert results["huge"].error.startswith("results exceed MQIC_RESULT_MAX_BYTES")
    assert not results["last"].reached and results["last"].error.startswith("not reached: ")
    assert read_tree(routes["last"]) == {"earlier.txt": b"from an earlier download"}
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["first", "huge", "last"]


# -- batched uploads --------------------------------------------------------------------------------------


def capturing_tar(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A shell environment whose ``tar`` keeps what reached "the remote side" in a file."""
    fake_bin, capture = tmp_path / "fake-bin", tmp_path / "captured.tar"
    fake_bin.mkdir()
    (fake_bin / "tar").write_text(f"#!/bin/sh\ncat > {capture}\n")
    (fake_bin / "tar").chmod(0o755)
    return {"PATH": f"{fake_bin}:{os.environ['PATH']}"}, capture


def test_upload_tree_reports_unsafe_folders_and_sends_the_others(tmp_path):
    inbox = tmp_path / "inbox"
    fine = make_tree(inbox / "fine", 5)
    make_tree(inbox / "leaky", 2)
    (inbox / "leaky" / "leak").symlink_to("/etc/passwd")
    (inbox / "gone").mkdir()
    (inbox / "gone").rmdir()
    base = tmp_path / "remote"

    problems = LocalTransport().upload_tree(
        [(inbox / "fine", "fine"), (inbox / "leaky", "leaky"), (inbox / "gone", "gone")], str(base)
    )

    assert sorted(problems) == ["gone", "leaky"]
    assert "points outside the case folder" in problems["leaky"]
    assert "cannot be opened as a folder" in problems["gone"]
    assert sorted(p.name for p in base.iterdir()) == ["fine"]
    assert read_tree(base / "fine") == fine
    assert (base / "fine").stat().st_mode & 0o777 == 0o700


def test_a_folder_swapped_for_a_link_mid_upload_is_damaged_and_nothing_outside_is_sent(tmp_path):
    """The swap attack: ``sub`` is listed as a folder, then replaced by a link to a folder
    outside while the batch streams; what reaches the remote side is captured."""
    inbox = tmp_path / "inbox"
    (inbox / "first").mkdir(parents=True)
    (inbox / "first" / "big.bin").write_bytes(os.urandom(3 * MB))  # progress fires while it streams
    (inbox / "victim" / "sub").mkdir(parents=True)
    (inbox / "victim" / "sub" / "data.txt").write_bytes(b"d" * len(SECRET))
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "data.txt").write_bytes(SECRET)
    env, captured = capturing_tar(tmp_path)

    def swap_once(_sent: int) -> None:
        if not (inbox / "victim" / "sub").is_symlink():
            (inbox / "victim" / "sub").rename(inbox / "victim" / "sub.listed")
            (inbox / "victim" / "sub").symlink_to(tmp_path / "outside")

    problems = LocalTransport(shell_env=env).upload_tree(
        [(inbox / "first", "first"), (inbox / "victim", "victim")], str(tmp_path / "remote"), progress=swap_once
    )

    assert SECRET not in captured.read_bytes()
    assert problems == {"victim": "sub changed while it was being sent"}


def test_commands_and_so_jobs_get_a_minimal_environment_not_mqics(monkeypatch):
    """pueue copies its caller's environment into every task: a job added through the local transport
    could read the database URL, the secret key and the mail password of MQIC itself."""
    for name in ("DATABASE_URL", "DJANGO_SECRET_KEY", "EMAIL_HOST_PASSWORD", "MQIC_METRICS_TOKEN"):
        monkeypatch.setenv(name, f"secret-{name}")
    seen = LocalTransport().run("env").stdout
    assert "secret-" not in seen
    assert "PATH=" in seen and "HOME=" in seen
