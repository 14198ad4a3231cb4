"""The frame every remote command travels in (``resources/remote/script.py``), run by each login
shell a site may give the HPC account, on this machine (the sshd tests run the same over SSH)."""

from __future__ import annotations

import subprocess

import pytest

from resources.remote.errors import OutcomeUnknown
from resources.remote.script import Framed, Unwrapped
from tests.support.accounts import SHELLS, ensure_shell

NOISE_OUT, NOISE_ERR = "Welcome to the cluster\n", "module: gcc loaded\n"


def run_as_login_shell(shell: str, framed: Framed, data: bytes = b"", noise: bool = True):
    """What sshd does with an exec request: ``<login shell> -c <line>``, after the rc files talked."""
    line = framed.login_command(data_follows=bool(data))
    talk = f"printf '{NOISE_OUT}'; printf '{NOISE_ERR}' >&2; " if noise else ""
    done = subprocess.run(
        ["sh", "-c", f'{talk}exec {ensure_shell(shell)} -c "$0"', line],
        input=framed.script + data,
        capture_output=True,
        timeout=30,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.mark.parametrize("shell", list(SHELLS))
def test_every_login_shell_hands_the_script_to_sh_and_only_the_frame_is_read(shell):
    command = 'r=$?; for p in "1 2" 3; do printf "%s|" $p; done; echo "$(echo nested)"; echo oops >&2; exit 7'
    framed = Framed(command)
    code, out, err = run_as_login_shell(shell, framed)
    result = framed.result(code, out, err)
    assert (result.exit_code, result.stdout, result.stderr) == (7, "1|2|3|nested\n", "oops\n")


@pytest.mark.parametrize("shell", list(SHELLS))
def test_data_after_the_script_reaches_the_command_whole(shell, tmp_path):
    """An upload: the command reads what follows the script on stdin (dash reads its input in
    blocks, so ``sh -s`` would swallow the data; the login line reads exactly the script)."""
    data = bytes(range(256)) * 4000 + b"\nexit 0\n"
    target = tmp_path / "got"
    framed = Framed(f"cat > '{target}'")
    code, _out, err = run_as_login_shell(shell, framed, data)
    assert framed.result(code, None, err).exit_code == 0
    assert target.read_bytes() == data


def test_a_shell_that_never_ran_the_frame_is_unknown_not_success():
    """fish exits 0 on a line it cannot parse: without a frame, that is no answer at all."""
    framed = Framed("true")
    done = subprocess.run([ensure_shell("fish"), "-c", "r=0; exit 3"], capture_output=True, timeout=30)
    assert done.returncode == 0
    with pytest.raises(OutcomeUnknown):
        framed.result(done.returncode, done.stdout.decode(), done.stderr.decode())


def test_a_frame_cut_short_is_unknown_and_a_forged_one_is_not_taken():
    framed = Framed("true")
    cut = f"{framed.tag} begin\nhalf"
    with pytest.raises(OutcomeUnknown):
        framed.result(0, cut, f"{framed.tag} begin\n\n{framed.tag} end 0\n")
    forged = "MQIC-" + "0" * 32
    with pytest.raises(OutcomeUnknown):
        framed.result(0, f"{forged} begin\nx\n{forged} end 0\n", f"{forged} begin\n\n{forged} end 0\n")


def test_a_stream_is_read_from_just_after_its_begin_marker():
    class Chunks:
        def __init__(self, *chunks):
            self.chunks = list(chunks)

        def read(self, size):
            return self.chunks.pop(0) if self.chunks else b""

    framed = Framed("tar -c ...")
    begin = framed.begin
    stream = Unwrapped(Chunks(b"banner\n" + begin[:5], begin[5:] + b"TAR", b"DATA"), framed)
    assert stream.read(2) + stream.read(10) + stream.read(10) + stream.read(10) == b"TARDATA"
