"""Scenario 2: moving one case folder, MQIC's transport against the usual tools.

Many small files (1,000 x 4 KB): MQIC's ``upload_dir`` (one tar stream on one exec channel)
against ``tar c | ssh tar x`` and against paramiko SFTP with one ``put`` per file. One big
file (1 GB, 200 MB with --quick): ``upload_dir`` against ``scp``. The OpenSSH tools and SFTP
open a connection per transfer, so MQIC is compared with a connection opened inside the
timing too; its figure on an already open connection (as in every pass after a worker's
first) is given beside. Runs are interleaved tool by tool and the median is kept.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path

import paramiko

from resources.remote import ssh, tarstream

from .env import Bench
from .folders import make_big_file, make_case
from .measure import stopwatch
from .report import ScenarioResult

TITLE = "upload 1,000 x 4 KB and one 1 GB file: MQIC vs tar | ssh, per-file SFTP, scp"
MB = 1_000_000

Tool = tuple[Callable[[], object] | None, Callable[[Path, Path], object]]
"""What to do untimed before each run (or None), and the timed transfer of (local, remote dir)."""


def run(bench: Bench, result: ScenarioResult) -> None:
    small_runs, big_runs, size = (3, 2, 200 * MB) if bench.quick else (7, 3, 1000 * MB)
    remote, every = bench.dir("s2-remote"), tools(bench)
    small = make_case(bench.dir("s2-local"), "small", files=1000, size=4096)
    chosen = {name: every[name] for name in ("mqic new", "mqic live", "tar | ssh", "sftp")}
    times = compare(chosen, small, remote, repeat=small_runs, expect=file_count(small))
    tar_ssh = times["tar | ssh"]
    result.add("1,000 x 4 KB: MQIC upload_dir, new connection", times["mqic new"], "s")
    result.add("1,000 x 4 KB: MQIC upload_dir, live connection", times["mqic live"], "s")
    result.add("1,000 x 4 KB: tar c | ssh tar x", tar_ssh, "s")
    result.add("1,000 x 4 KB: paramiko SFTP, one put per file", times["sftp"], "s")
    result.add("MQIC (new connection) / tar | ssh", times["mqic new"] / tar_ssh, "x", ("<=", 1.3))
    result.add("MQIC (live connection) / tar | ssh", times["mqic live"] / tar_ssh, "x")
    result.add("per-file SFTP / MQIC (new connection)", times["sftp"] / times["mqic new"], "x")

    big = make_big_file(bench.dir("s2-local") / "big" / "data.bin", size).parent
    times = compare({name: every[name] for name in ("mqic new", "scp")}, big, remote, repeat=big_runs, expect=1)
    result.add(f"{size // MB} MB: MQIC upload_dir, new connection", size / MB / times["mqic new"], "MB/s")
    result.add(f"{size // MB} MB: scp", size / MB / times["scp"], "MB/s")
    result.add("MQIC / scp throughput", times["scp"] / times["mqic new"], "x", (">=", 0.9))
    result.notes.append(
        "Each transfer writes into a new remote folder, removed untimed afterwards; medians of "
        f"{small_runs} runs (small files) and {big_runs} (big file)."
    )


def tools(bench: Bench) -> dict[str, Tool]:
    transport = ssh.get_transport(bench.sshd.target())

    def upload(local: Path, dest: Path) -> None:
        transport.upload_dir(local, str(dest))

    return {
        "mqic new": (ssh.close_all, upload),
        "mqic live": (lambda: transport.run("true"), upload),
        "tar | ssh": (None, lambda local, dest: tar_over_ssh(bench, local, dest)),
        "sftp": (None, lambda local, dest: sftp_per_file(bench, local, dest)),
        "scp": (None, lambda local, dest: scp_folder(bench, local, dest)),
    }


def compare(tools: dict[str, Tool], local: Path, remote: Path, *, repeat: int, expect: int) -> dict[str, float]:
    """Median seconds per tool; each run lands in a fresh folder and is checked, then removed.

    Run 0 warms every tool up (disk caches, the remote shell's first start) and is not kept.
    Dirty pages are flushed before each run, so no run pays for the writeback of the last.
    """
    times: dict[str, list[float]] = {name: [] for name in tools}
    for run_number in range(repeat + 1):
        for name, (prepare, transfer) in tools.items():
            dest = remote / f"{name.replace(' ', '-').replace('|', '')}-{run_number}"
            if prepare is not None:
                prepare()
            os.sync()
            with stopwatch() as took:
                transfer(local, dest)
            if run_number:
                times[name].append(took[0])
            if file_count(dest) != expect:
                raise RuntimeError(f"{name} delivered {file_count(dest)} files, not {expect}")
            shutil.rmtree(dest)
    return {name: statistics.median(values) for name, values in times.items()}


def file_count(folder: Path) -> int:
    return sum(len(files) for _root, _dirs, files in os.walk(folder))


def tar_over_ssh(bench: Bench, local: Path, dest: Path) -> None:
    """``tar c -C local . | ssh host 'mkdir -p dest && tar x -C dest'`` (MQIC's remote command)."""
    tar = subprocess.Popen(["tar", "-c", "-f", "-", "-C", str(local), "."], stdout=subprocess.PIPE)
    unpack = subprocess.run(bench.ssh(tarstream.untar_command(str(dest))), stdin=tar.stdout, check=False)
    tar.stdout.close()
    if tar.wait() or unpack.returncode:
        raise RuntimeError(f"tar | ssh failed: tar {tar.returncode}, ssh {unpack.returncode}")


def scp_folder(bench: Bench, local: Path, dest: Path) -> None:
    """``scp -r local host:dest``: dest does not exist yet, so it becomes a copy of local."""
    subprocess.run(bench.scp(local, dest=str(dest)), check=True)


def sftp_per_file(bench: Bench, local: Path, dest: Path) -> None:
    """A paramiko connection and SFTP session, a ``mkdir`` per folder and a ``put`` per file."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(bench.sshd.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        "127.0.0.1",
        port=bench.sshd.port,
        username=bench.sshd.username,
        key_filename=str(bench.sshd.client_key),
        look_for_keys=False,
        allow_agent=False,
    )
    try:
        sftp = client.open_sftp()
        for root, _dirs, files in os.walk(local):
            target = dest / Path(root).relative_to(local)
            sftp.mkdir(str(target))
            for name in files:
                sftp.put(os.path.join(root, name), str(target / name))
    finally:
        client.close()
