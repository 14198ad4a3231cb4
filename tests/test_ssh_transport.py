"""SshTransport against a real OpenSSH server on 127.0.0.1: no mocks anywhere.

The server runs on this machine, so what an upload wrote can be checked on disk directly.
Network faults come from a real TCP proxy in front of the server.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from resources.remote import ssh
from resources.remote.errors import (
    BadOutput,
    ChangedHostKey,
    CommandFailed,
    FolderRefused,
    OutcomeUnknown,
    UnknownHostKey,
)
from resources.remote.manifest import UnsafeCaseFolder
from resources.remote.ssh import SshTransport, get_transport
from resources.remote.untar import Limits
from tests.support.sshd import SshServer, generate_key
from tests.support.trees import read_tree

MB = 1 << 20
SECRET = b"outside the case folder: must never be sent\n"
INJECTED = "mqic-injected"
"""What the hostile name would create in the remote home directory if it ever reached a shell."""
HOSTILE_NAME = f"-case with spaces 'single' \"double\" $(touch {INJECTED}) `touch {INJECTED}` ünïcødé ✓"


@pytest.fixture
def fresh():
    """No cached connections and zeroed counters, for tests that count round trips."""
    ssh.close_all()
    ssh.reset_stats()
    yield
    ssh.close_all()


def via(sshd: SshServer, proxy, **overrides) -> ssh.SshTarget:
    """A target that reaches the session sshd through the proxy, trusting the server's key."""
    return sshd.target(port=proxy.port, host_key=sshd.host_key, known_hosts=None, **overrides)


def make_tree(root: Path, files: int, per_dir: int = 100, size: int = 4096) -> dict[str, bytes]:
    """Create ``files`` files of distinct contents below ``root``; return {relative path: bytes}."""
    contents = {}
    for i in range(files):
        relative = f"d{i // per_dir:03}/f{i:04}.dat"
        data = (f"{i:08}".encode() * (size // 8 + 1))[:size]
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
        contents[relative] = data
    return contents


def keygen_fingerprint(public_key_file: Path) -> str:
    return subprocess.run(
        ["ssh-keygen", "-l", "-f", str(public_key_file)], capture_output=True, text=True
    ).stdout.split()[1]


# -- commands ---------------------------------------------------------------------------------


def test_run_reports_exit_code_stdout_and_stderr(sshd):
    transport = get_transport(sshd.target())

    result = transport.run("printf 'out\\n'; printf 'err\\n' >&2; exit 3")

    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    with pytest.raises(CommandFailed) as failed:
        result.check("the command")
    assert failed.value.exit_code == 3
    assert failed.value.stderr == "err\n"


def test_run_drains_20_mb_on_stdout_and_3_mb_on_stderr_at_once(sshd):
    out, err = 20 * MB, 3 * MB
    command = f"head -c {out} /dev/zero | tr '\\0' o & head -c {err} /dev/zero | tr '\\0' e >&2; wait"

    result = get_transport(sshd.target()).run(command)

    assert result.exit_code == 0
    assert result.stdout == "o" * out
    assert result.stderr == "e" * err


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("stream", "what"), [("", "output"), (">&2", "error output")])
def test_endless_output_is_bad_output_and_the_connection_is_dropped(sshd, fresh, stream, what):
    transport = SshTransport(sshd.target(max_output_bytes=MB))

    with pytest.raises(BadOutput, match=f"^{what} of 'yes.*' exceeded"):
        transport.run(f"yes {stream}")

    assert transport.run("echo again").stdout == "again\n"
    assert ssh.stats().connections_opened == 2


def test_run_sends_stdin_then_eof(sshd):
    transport = get_transport(sshd.target())
    data = os.urandom(3 * MB)

    counted = transport.run("wc -c", stdin=data)
    hashed = transport.run("sha256sum", stdin=data)
    no_input = transport.run("cat")  # EOF is sent even without stdin, so cat returns

    assert counted.stdout.strip() == str(len(data))
    assert hashed.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    assert (no_input.exit_code, no_input.stdout) == (0, "")


@pytest.mark.timeout(30)
def test_command_past_its_timeout_is_outcome_unknown_and_the_next_one_works(sshd):
    transport = get_transport(sshd.target())

    with pytest.raises(OutcomeUnknown, match="did not finish in time"):
        transport.run("sleep 5", timeout=0.5)

    assert transport.run("echo again").stdout == "again\n"


# -- connections ----------------------------------------------------------------------------


def test_one_connection_serves_many_commands(sshd, fresh):
    target = sshd.target()

    outputs = [get_transport(target).run(f"echo {i}").stdout for i in range(10)]

    assert outputs == [f"{i}\n" for i in range(10)]
    assert get_transport(target) is get_transport(target)
    assert ssh.stats() == ssh.SshStats(connections_opened=1, channels_opened=10)


def test_reconnects_after_the_connection_is_cut(sshd, fault_proxy, fresh):
    transport = get_transport(via(sshd, fault_proxy))
    before = transport.run("echo $SSH_CONNECTION").stdout

    fault_proxy.cut_all()
    after = transport.run("echo $SSH_CONNECTION").stdout

    assert before != after  # a new TCP connection: the proxy's source port differs
    assert ssh.stats().connections_opened == 2


def _child_run(target: ssh.SshTarget, results) -> None:
    opened_before = ssh.stats().connections_opened
    line = get_transport(target).run("echo $SSH_CONNECTION").stdout
    results.put((line, ssh.stats().connections_opened - opened_before))


def test_forked_child_opens_its_own_connection(sshd, fresh):
    target = sshd.target()
    parent_line = get_transport(target).run("echo $SSH_CONNECTION").stdout
    context = multiprocessing.get_context("fork")
    results = context.Queue()

    child = context.Process(target=_child_run, args=(target, results))
    child.start()
    child_line, child_opened = results.get(timeout=20)
    child.join(timeout=20)

    assert child.exitcode == 0
    assert child_opened == 1
    assert child_line != parent_line  # another client port: another TCP connection
    assert get_transport(target).run("echo $SSH_CONNECTION").stdout == parent_line
    assert ssh.stats().connections_opened == 1


# -- uploads ----------------------------------------------------------------------------------


def test_upload_of_a_1000_file_case(sshd, tmp_path, fresh):
    case = tmp_path / "case"
    expected = make_tree(case, 1000)
    remote = tmp_path / "remote" / "case"
    progress: list[int] = []

    started = time.perf_counter()
    get_transport(sshd.target()).upload_dir(case, str(remote), progress=progress.append)
    elapsed = time.perf_counter() - started

    print(f"\n1,000 x 4 KB files uploaded in {elapsed:.2f} s")
    assert read_tree(remote) == expected
    assert progress == sorted(progress)
    assert progress[-1] > 1000 * 4096
    assert ssh.stats().channels_opened == 1


def scp_upload(sshd: SshServer, local_dir: Path, remote_dir: Path) -> None:
    options = ["-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={sshd.known_hosts}"]
    destination = f"{sshd.username}@127.0.0.1:{remote_dir}"
    command = ["scp", "-q", "-r", "-P", str(sshd.port), "-i", str(sshd.client_key), *options]
    subprocess.run([*command, str(local_dir), destination], check=True)


def sha256(path: Path) -> str:
    with open(path, "rb") as data:
        return hashlib.file_digest(data, "sha256").hexdigest()


def test_upload_of_a_200_mb_file_matches_byte_for_byte(sshd, tmp_path):
    case = tmp_path / "big"
    case.mkdir()
    block = os.urandom(MB)
    with open(case / "data.bin", "wb") as out:
        for i in range(200):
            out.write(i.to_bytes(8, "big") + block[8:])
    remote = tmp_path / "remote"

    started = time.perf_counter()
    SshTransport(sshd.target()).upload_dir(case, str(remote))
    ours = time.perf_counter() - started
    started = time.perf_counter()
    scp_upload(sshd, case, tmp_path / "scp")
    theirs = time.perf_counter() - started

    print(f"\n200 MB upload, login included: SshTransport {200 / ours:.0f} MB/s, scp {200 / theirs:.0f} MB/s")
    assert sha256(remote / "data.bin") == sha256(case / "data.bin")


def test_case_folder_with_a_hostile_name_round_trips(sshd, tmp_path):
    name = HOSTILE_NAME
    case = tmp_path / "local" / name
    case.mkdir(parents=True)
    (case / name).write_text("same hostile name inside")
    remote = tmp_path / "remote" / name
    back = tmp_path / "back" / name
    transport = get_transport(sshd.target())

    transport.upload_dir(case, str(remote))
    listing = transport.run(f"ls -- {shlex.quote(str(remote))}").check("ls")
    transport.download_dir(str(remote), back)

    assert listing.stdout == name + "\n"
    assert (remote / name).read_text() == "same hostile name inside"
    assert read_tree(back) == read_tree(case)
    assert not (Path.home() / INJECTED).exists()


def test_relative_symlinks_inside_the_case_are_kept_as_links(sshd, tmp_path):
    case = tmp_path / "case"
    (case / "inputs").mkdir(parents=True)
    (case / "inputs" / "mesh.dat").write_text("mesh")
    (case / "relative").symlink_to("inputs/mesh.dat")
    (case / "dir_link").symlink_to("inputs", target_is_directory=True)
    remote = tmp_path / "remote"

    get_transport(sshd.target()).upload_dir(case, str(remote))

    for link in ("relative", "dir_link"):
        assert (remote / link).is_symlink()
    assert (remote / "relative").read_text() == "mesh"
    assert (remote / "dir_link" / "mesh.dat").read_text() == "mesh"
    assert remote.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("hazard", ["link_out", "link_out_via_dotdot", "absolute_link_inside", "fifo"])
def test_unsafe_case_folder_is_refused_before_anything_is_sent(sshd, tmp_path, fresh, hazard):
    case = tmp_path / "case"
    case.mkdir()
    (case / "inputs.dat").write_text("inside")
    (tmp_path / "secret").write_text("outside the case")
    if hazard == "link_out":
        (case / "leak").symlink_to(tmp_path / "secret")
    elif hazard == "link_out_via_dotdot":
        (case / "leak").symlink_to("../secret")
    elif hazard == "absolute_link_inside":  # only relative links are sent
        (case / "leak").symlink_to(case / "inputs.dat")
    else:
        os.mkfifo(case / "pipe")
    remote = tmp_path / "remote"

    with pytest.raises(UnsafeCaseFolder):
        get_transport(sshd.target()).upload_dir(case, str(remote))

    assert not remote.exists()
    assert ssh.stats().channels_opened == 0


def test_upload_into_a_place_that_cannot_be_written_is_command_failed(sshd, tmp_path):
    case = tmp_path / "case"
    make_tree(case, 3)
    (tmp_path / "plain_file").write_text("not a directory")

    with pytest.raises(CommandFailed) as failed:
        get_transport(sshd.target()).upload_dir(case, str(tmp_path / "plain_file" / "case"))

    assert "Not a directory" in failed.value.stderr


# -- downloads --------------------------------------------------------------------------------


def test_download_replaces_the_local_folder_and_can_be_repeated(sshd, tmp_path):
    remote = tmp_path / "remote"
    expected = make_tree(remote, 30, per_dir=10)
    local = tmp_path / "results" / "case"
    local.mkdir(parents=True)
    (local / "stale.txt").write_text("from an older download")
    (local.parent / ".mqic-12.incoming").mkdir()  # what a crash halfway would leave behind
    transport = get_transport(sshd.target())

    transport.download_dir(str(remote), local, staging_key="12")
    first = read_tree(local)
    result = transport.download_dir(str(remote), local, staging_key="12")

    assert first == expected
    assert read_tree(local) == expected
    assert (result.ok, result.files, result.bytes) == (True, 30, 30 * 4096)
    assert sorted(p.name for p in local.parent.iterdir()) == ["case"]


def test_download_of_a_missing_folder_is_refused_and_keeps_the_local_one(sshd, tmp_path):
    local = tmp_path / "case"
    local.mkdir()
    (local / "kept.txt").write_text("still here")

    with pytest.raises(FolderRefused, match="nowhere: missing on the host"):
        get_transport(sshd.target()).download_dir(str(tmp_path / "nowhere"), local)

    assert read_tree(local) == {"kept.txt": b"still here"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case"]


def earlier_results(tmp_path: Path, names: list[str]) -> dict[str, Path]:
    routes = {name: tmp_path / "results" / name for name in names}
    for dest in routes.values():
        dest.mkdir(parents=True)
        (dest / "earlier.txt").write_text("from an earlier download")
    return routes


def test_download_folders_takes_one_channel_and_keeps_failures_apart(sshd, tmp_path, fresh):
    base = tmp_path / "remote"
    one, three = make_tree(base / "one", 5), make_tree(base / "three", 3)
    (base / "three" / "to_passwd").symlink_to("/etc/passwd")
    (base / "linked").symlink_to(base / "one")  # a job replaced its folder with a link
    make_tree(base / "big", 2, size=3000)  # the second file passes the cap and is read past
    routes = earlier_results(tmp_path, ["one", "missing", "linked", "big", "three"])
    keys = {name: str(n) for n, name in enumerate(routes)}

    results = get_transport(sshd.target()).download_folders(
        str(base), routes, staging_keys=keys, limits=Limits(max_bytes=5 * 4096)
    )

    assert results["one"].ok and read_tree(routes["one"]) == one
    assert results["three"].ok and read_tree(routes["three"]) == three
    assert results["three"].skipped == [("three/to_passwd", "symlink")]
    assert results["missing"].error == "missing on the host"
    assert "is a symbolic link on the host" in results["linked"].error
    assert results["big"].ok  # 6,000 bytes: under the cap
    for failed in ("missing", "linked"):
        assert read_tree(routes[failed]) == {"earlier.txt": b"from an earlier download"}
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == sorted(routes)
    assert ssh.stats().channels_opened == 1


@pytest.mark.timeout(60)
def test_an_over_cap_member_drops_the_connection_instead_of_draining(sshd, tmp_path, fresh):
    base = tmp_path / "remote"
    expected = make_tree(base / "first", 3)
    (base / "huge").mkdir()
    with open(base / "huge" / "sparse.bin", "wb") as sparse:
        sparse.truncate(64 << 30)  # 64 GB of zeros that tar would send in full
    routes = earlier_results(tmp_path, ["first", "huge", "last"])
    received: list[int] = []
    transport = get_transport(sshd.target())

    results = transport.download_folders(
        str(base),
        routes,
        staging_keys={"first": "1", "huge": "2", "last": "3"},
        limits=Limits(max_bytes=MB),
        progress=received.append,
    )

    assert received[-1] < 16 * MB
    assert results["first"].ok and read_tree(routes["first"]) == expected
    assert results["huge"].error.startswith("results exceed MQIC_RESULT_MAX_BYTES")
    assert not results["last"].reached
    assert read_tree(routes["huge"]) == {"earlier.txt": b"from an earlier download"}
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["first", "huge", "last"]
    assert transport.run("echo next").stdout == "next\n"
    assert ssh.stats().connections_opened == 2  # the first was dropped


@pytest.mark.timeout(30)
def test_connection_cut_mid_download_is_outcome_unknown_and_changes_nothing(sshd, fault_proxy, tmp_path):
    base = tmp_path / "remote"
    make_tree(base / "one", 20, size=256 * 1024)  # 5 MB
    routes = earlier_results(tmp_path, ["one"])
    transport = SshTransport(via(sshd, fault_proxy))
    transport.run("true")

    fault_proxy.cut_after(MB, "downstream")
    with pytest.raises(OutcomeUnknown, match="connection lost"):
        transport.download_folders(str(base), routes, staging_keys={"one": "1"}, limits=Limits())

    assert read_tree(routes["one"]) == {"earlier.txt": b"from an earlier download"}
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["one"]


# -- batched uploads ------------------------------------------------------------------------------


def test_upload_tree_sends_the_safe_folders_and_reports_the_others(sshd, tmp_path, fresh):
    inbox = tmp_path / "inbox"
    fine = make_tree(inbox / "fine", 5)
    make_tree(inbox / "piped", 2)
    os.mkfifo(inbox / "piped" / "pipe")
    base = tmp_path / "remote"

    problems = get_transport(sshd.target()).upload_tree(
        [(inbox / "fine", "fine"), (inbox / "piped", "piped")], str(base), limits=None
    )

    assert list(problems) == ["piped"] and "special file" in problems["piped"]
    assert sorted(p.name for p in base.iterdir()) == ["fine"]
    assert read_tree(base / "fine") == fine
    assert (base / "fine").stat().st_mode & 0o777 == 0o700
    assert ssh.stats().channels_opened == 1


def test_upload_tree_of_only_unsafe_folders_opens_no_channel(sshd, tmp_path, fresh):
    case = tmp_path / "case"
    case.mkdir()
    (case / "leak").symlink_to("/etc/passwd")

    problems = get_transport(sshd.target()).upload_tree([(case, "case")], str(tmp_path / "remote"))

    assert "points outside the case folder" in problems["case"]
    assert ssh.stats().channels_opened == 0


@pytest.mark.timeout(60)
def test_a_folder_swapped_for_a_link_mid_upload_sends_nothing_from_outside(tmp_path):
    """The swap attack over SSH: the remote ``tar`` is replaced by one that keeps the stream
    it receives, so the test sees exactly what reached the remote side."""
    fake_bin, captured = tmp_path / "fake-bin", tmp_path / "captured.tar"
    fake_bin.mkdir()
    (fake_bin / "tar").write_text(f"#!/bin/sh\ncat > {shlex.quote(str(captured))}\n")
    (fake_bin / "tar").chmod(0o755)
    inbox = tmp_path / "inbox"
    (inbox / "first").mkdir(parents=True)
    (inbox / "first" / "big.bin").write_bytes(os.urandom(3 * MB))  # progress fires while it streams
    (inbox / "victim" / "sub").mkdir(parents=True)
    (inbox / "victim" / "sub" / "data.txt").write_bytes(b"d" * len(SECRET))
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "data.txt").write_bytes(SECRET)

    def swap_once(_sent: int) -> None:
        if not (inbox / "victim" / "sub").is_symlink():
            (inbox / "victim" / "sub").rename(inbox / "victim" / "sub.listed")
            (inbox / "victim" / "sub").symlink_to(tmp_path / "outside")

    with SshServer(path_dirs=[fake_bin]) as server:
        problems = SshTransport(server.target()).upload_tree(
            [(inbox / "first", "first"), (inbox / "victim", "victim")],
            str(tmp_path / "remote"),
            progress=swap_once,
        )

    assert captured.stat().st_size > 3 * MB
    assert SECRET not in captured.read_bytes()
    assert problems == {"victim": "sub changed while it was being sent"}


# -- host keys and authentication ---------------------------------------------------------------


def test_scan_host_key_reports_the_servers_key_and_fingerprint(sshd):
    key_type, key_base64, fingerprint = ssh.scan_host_key(sshd.target())

    assert f"{key_type} {key_base64}" == sshd.host_key
    assert fingerprint == keygen_fingerprint(sshd.workdir / "host_key.pub")
    assert ssh.fingerprint(key_type, key_base64) == fingerprint


@pytest.mark.parametrize("trust", ["empty_known_hosts", "nothing"])
def test_unknown_host_key_is_refused_with_its_fingerprint(sshd, tmp_path, trust):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    target = sshd.target(known_hosts=str(known_hosts) if trust == "empty_known_hosts" else None)
    expected = keygen_fingerprint(sshd.workdir / "host_key.pub")

    with pytest.raises(UnknownHostKey) as refused:
        SshTransport(target).run("true")

    assert (refused.value.fingerprint, refused.value.key_type, refused.value.port) == (
        expected,
        "ssh-ed25519",
        sshd.port,
    )
    assert expected in str(refused.value)
    assert "python manage.py trust_host_key" in str(refused.value)


@pytest.mark.parametrize("trust", ["host_key", "known_hosts"])
def test_changed_host_key_is_refused_loudly(sshd, tmp_path, trust):
    impostor = generate_key(tmp_path / "other_host_key")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {impostor}\n")
    trusted = (
        {"host_key": impostor, "known_hosts": None} if trust == "host_key" else {"known_hosts": str(known_hosts)}
    )
    target = sshd.target(**trusted)

    with pytest.raises(ChangedHostKey) as refused:
        SshTransport(target).run("true")

    assert refused.value.fingerprint == keygen_fingerprint(sshd.workdir / "host_key.pub")
    assert "HOST KEY CHANGED" in str(refused.value)


def test_trusted_host_key_text_replaces_known_hosts(sshd):
    target = sshd.target(known_hosts=None, host_key=sshd.host_key)

    assert SshTransport(target).run("echo trusted").stdout == "trusted\n"


def test_wrong_client_key_is_outcome_unknown(sshd, tmp_path):
    generate_key(tmp_path / "stranger")
    target = sshd.target(key_filename=str(tmp_path / "stranger"))

    with pytest.raises(OutcomeUnknown, match="authentication failed"):
        SshTransport(target).run("true")


# -- network faults ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_connection_cut_mid_output_is_outcome_unknown(sshd, fault_proxy):
    transport = SshTransport(via(sshd, fault_proxy))
    transport.run("true")

    fault_proxy.cut_after(256 * 1024, "downstream")
    with pytest.raises(OutcomeUnknown, match="connection lost"):
        transport.run("head -c 5000000 /dev/zero")
    fault_proxy.pass_through()

    assert transport.run("echo back").stdout == "back\n"


@pytest.mark.timeout(30)
def test_connection_cut_mid_upload_is_outcome_unknown(sshd, fault_proxy, tmp_path):
    case = tmp_path / "case"
    make_tree(case, 20, size=256 * 1024)
    transport = SshTransport(via(sshd, fault_proxy))
    transport.run("true")

    fault_proxy.cut_after(MB, "upstream")
    with pytest.raises(OutcomeUnknown):
        transport.upload_dir(case, str(tmp_path / "remote"))


@pytest.mark.timeout(30)
def test_connection_cut_during_the_handshake_is_outcome_unknown(sshd, fault_proxy):
    fault_proxy.cut_after(1000, "downstream")

    with pytest.raises(OutcomeUnknown):
        SshTransport(via(sshd, fault_proxy)).run("true")


@pytest.mark.timeout(30)
def test_server_that_accepts_and_hangs_is_outcome_unknown(sshd, fault_proxy):
    fault_proxy.hang()

    with pytest.raises(OutcomeUnknown, match="could not connect"):
        SshTransport(via(sshd, fault_proxy, connect_timeout=1.0)).run("true")


@pytest.mark.timeout(30)
def test_link_that_goes_silent_is_outcome_unknown(sshd, fault_proxy, tmp_path):
    case = tmp_path / "case"
    make_tree(case, 3)
    transport = SshTransport(via(sshd, fault_proxy, connect_timeout=5.0, command_timeout=1.0))
    transport.run("true", timeout=60)  # connected (however loaded the machine), before the link goes silent

    fault_proxy.hang()
    with pytest.raises(OutcomeUnknown):
        transport.run("echo lost")
    with pytest.raises(OutcomeUnknown):
        transport.upload_dir(case, str(tmp_path / "remote"))


@pytest.mark.timeout(30)
def test_link_that_goes_silent_mid_upload_is_outcome_unknown(sshd, fault_proxy, tmp_path):
    case = tmp_path / "case"
    make_tree(case, 80, size=256 * 1024)  # 20 MB

    def hang_after_2_mb(sent: int) -> None:
        if sent > 2 * MB:
            fault_proxy.hang()

    transport = SshTransport(via(sshd, fault_proxy, command_timeout=1.0))
    with pytest.raises(OutcomeUnknown, match="did not finish in time"):
        transport.upload_dir(case, str(tmp_path / "remote"), progress=hang_after_2_mb)


@pytest.mark.timeout(30)
def test_transfer_that_stalls_is_outcome_unknown(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "tar").write_text("#!/bin/sh\nsleep 5\n")  # never reads the stream
    (fake_bin / "tar").chmod(0o755)
    case = tmp_path / "case"
    make_tree(case, 40, size=256 * 1024)  # 10 MB: more than the server's window

    with SshServer(path_dirs=[fake_bin]) as server:
        transport = SshTransport(server.target(command_timeout=1.0))
        assert transport.run("command -v tar", timeout=60).stdout == f"{fake_bin}/tar\n"
        with pytest.raises(OutcomeUnknown, match="did not finish in time"):
            transport.upload_dir(case, str(tmp_path / "remote"))


def test_slow_link_still_works(sshd, fault_proxy, tmp_path):
    case = tmp_path / "case"
    expected = make_tree(case, 50)
    transport = SshTransport(via(sshd, fault_proxy))

    fault_proxy.add_latency(20)
    transport.upload_dir(case, str(tmp_path / "remote"))

    assert transport.run("echo slow").stdout == "slow\n"
    assert read_tree(tmp_path / "remote") == expected


def test_path_dirs_come_before_the_system_directories_on_the_remote_path(tmp_path):
    tools = tmp_path / "my tools"

    with SshServer(path_dirs=[tools]) as server:
        remote_path = SshTransport(server.target()).run("echo $PATH").stdout.strip().split(":")

    assert str(tools) in remote_path
    assert remote_path.index(str(tools)) < remote_path.index("/usr/bin")


@pytest.mark.timeout(60)
def test_stopped_server_is_outcome_unknown():
    with SshServer() as server:
        transport = SshTransport(server.target())
        transport.run("true")
        server.stop()

        with pytest.raises(OutcomeUnknown):
            transport.run("echo on a connection that was open")
        with pytest.raises(OutcomeUnknown, match="could not connect"):
            SshTransport(server.target()).run("echo on a new connection")
