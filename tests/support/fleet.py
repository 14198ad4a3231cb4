"""Several HPC hosts at once, each a private sshd with its own sandbox pueued, and the instruments
the multi-host and scale-out tests read them with.

* ``Site``: one host (``SshServer`` + ``Sandbox`` + its ``HpcHost`` row). GPU group names carry the
  host's name (``alpha-gpu_a``), as ``configure_hpc`` names them when hosts share pueue group names.
* ``SlowStatus``: a ``pueue`` in front of the sandbox's whose ``status`` hangs while a hold file
  exists, writing when each call began and ended: a slow host, and the clock to judge the others by.
* ``SilentPort``: a port that accepts TCP and never says a word (an unreachable login node: the
  connect times out), writing when each connection came and went.
* ``ConnectionWatch``: how many established connections an sshd has, sampled all along a run.
* ``check``: the invariants of ``tests.support.invariants`` over every site, with each host's GPU
  groups judged against its own pueue.
"""

from __future__ import annotations

import contextlib
import shlex
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from cases.models import HOLDS_GPU, Case
from resources.models import GpuGroup, HpcHost
from tests.support.hpc import Sandbox
from tests.support.invariants import LIVE, Findings, leftovers
from tests.support.sshd import LOOPBACK, SshServer

GROUPS = ("gpu_a", "gpu_b")


class Site:
    """One HPC host: its own sshd and sandbox pueued (pueue groups ``gpu_a``, ``gpu_b``, one task each)."""

    def __init__(self, name: str, groups: tuple[str, ...] = GROUPS, sshd_options: dict[str, str] | None = None):
        self.name, self.groups = name, groups
        self.sandbox = Sandbox(groups=dict.fromkeys(groups, 1))
        self.server = SshServer(options=sshd_options).start()
        self.host: HpcHost | None = None

    def register(self, *, port: int | None = None, pueue: str | None = None, **fields) -> HpcHost:
        """Its ``HpcHost`` and GPU groups; ``port`` and ``pueue`` stand in for a fault in front of it."""
        self.host = HpcHost.objects.create(
            name=self.name,
            hostname=LOOPBACK,
            port=port or self.server.port,
            username="root",
            key_path=str(self.server.client_key),
            host_key=self.server.host_key,  # the known_hosts entry names the sshd's own port
            base_dir=str(self.sandbox.base_dir),
            pueue_command=pueue or self.sandbox.pueue,
            **fields,
        )
        for n, group in enumerate(self.groups):
            GpuGroup.objects.create(host=self.host, name=f"{self.name}-{group}", pueue_group=group, devices=str(n))
        return self.host

    def cases(self):
        return Case.objects.filter(gpu_group__host__name=self.name)

    def cleanup(self) -> None:
        self.server.cleanup()
        self.sandbox.cleanup()


@contextlib.contextmanager
def sites(*names: str):
    made: list[Site] = []
    try:
        for name in names:
            made.append(Site(name))
        yield made
    finally:
        for site in made:
            site.cleanup()


class SlowStatus:
    """``folder/pueue``: the sandbox's pueue, but ``status`` waits while ``hold()`` is on (at most
    ``limit`` seconds), so a monitor or reconcile pass hangs on this host until ``release()``."""

    def __init__(self, sandbox: Sandbox, folder: Path, limit: float = 30):
        folder.mkdir(parents=True, exist_ok=True)
        self.path, self.hold_file, self.log = folder / "pueue", folder / "hold", folder / "status.log"
        hold, log = shlex.quote(str(self.hold_file)), shlex.quote(str(self.log))
        self.path.write_text(
            "#!/bin/sh\n"
            'case " $* " in *" status "*)\n'
            f'  echo "start $$ $(date +%s.%N)" >> {log}\n'
            f"  n=0; while [ -e {hold} ] && [ $n -lt {int(limit * 10)} ]; do sleep 0.1; n=$((n+1)); done\n"
            f'  echo "end $$ $(date +%s.%N)" >> {log};;\n'
            "esac\n"
            f'exec {shlex.quote(sandbox.pueue)} "$@"\n'
        )
        self.path.chmod(0o755)

    def hold(self) -> None:
        self.hold_file.touch()

    def release(self) -> None:
        self.hold_file.unlink(missing_ok=True)

    def calls(self) -> list[tuple[float, float | None]]:
        """(began, ended or None while it still hangs) of every ``status`` call, as epoch seconds."""
        began, ended = {}, {}
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        for what, pid, at in (line.split() for line in lines):
            (began if what == "start" else ended)[pid] = float(at)
        return [(at, ended.get(pid)) for pid, at in began.items()]

    def hanging(self) -> list[float]:
        return [began for began, ended in self.calls() if ended is None]


class SilentPort:
    """A port that accepts connections and never answers: SSH's banner never comes."""

    def __init__(self):
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = self._listener.getsockname()[1]
        self.connections: list[list[float | None]] = []  # [opened, closed or None], epoch seconds
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            record = [time.time(), None]
            with self._lock:
                self.connections.append(record)
            threading.Thread(target=self._wait_for_close, args=(sock, record), daemon=True).start()

    @staticmethod
    def _wait_for_close(sock: socket.socket, record: list) -> None:
        with sock, contextlib.suppress(OSError):
            while sock.recv(4096):
                pass  # the client's banner: read and ignored
        record[1] = time.time()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def __enter__(self) -> SilentPort:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class ConnectionWatch:
    """The established TCP connections of one listening port, sampled all along the ``with`` block
    by ``ss`` at the server's side, so it counts what the host sees, whoever opened them. ``ss`` asks
    the kernel for the matching sockets in one netlink dump: reading ``/proc/net/tcp`` instead takes
    a read per page, and a reader preempted between two pages counts a closed and a new connection
    as both open."""

    def __init__(self, port: int, interval: float = 0.005):
        self.port, self.interval = port, interval
        self.most = 0
        self.samples = 0
        self.histogram: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._command = ["ss", "-Htn", "state", "established", f"( sport = :{port} )"]

    def established(self) -> int:
        done = subprocess.run(self._command, capture_output=True, text=True, check=True, timeout=30)
        return len(done.stdout.splitlines())

    def _run(self) -> None:
        while not self._stop.is_set():
            count = self.established()
            self.most = max(self.most, count)
            self.histogram[count] += 1
            self.samples += 1
            time.sleep(self.interval)

    def __enter__(self) -> ConnectionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def check(all_sites: list[Site], expected: dict[str, str]) -> Findings:
    """No case lost (``expected``: name -> final status), none added twice (on one host or on two:
    the adds are counted over every site), no GPU group that lies about its host's pueue, nothing of
    an ended case left on any host."""
    actual = dict(Case.objects.filter(name__in=expected).values_list("name", "status"))
    lost = [f"{name}: {actual.get(name)}" for name, status in expected.items() if actual.get(name) != status]
    added = {site.name: Counter(a["label"] for a in site.sandbox.adds()) for site in all_sites}
    duplicates = [
        f"{label} added {n} times ({where(added, label)})"
        for label, n in sum(added.values(), Counter()).items()
        if n > 1
    ]
    mismatches, left = [], []
    for site in all_sites:
        mismatches += [f"{site.name}: {item}" for item in gpu_mismatches(site)]
        left += [f"{site.name}: {item}" for item in leftovers(site.sandbox, expected)]
    return Findings(lost, duplicates, mismatches, left)


def where(added: dict[str, Counter[str]], label: str) -> str:
    """Which sites added ``label`` how often, for a duplicate's finding."""
    return ", ".join(f"{site} {counts[label]}x" for site, counts in added.items() if counts[label])


def assert_settled(all_sites: list[Site], expected: dict[str, str], timeout: float = 90) -> None:
    """``check`` comes out clean within ``timeout`` (a host's last tidy-up may still be under way)."""
    deadline = time.monotonic() + timeout
    while findings := check(all_sites, expected):
        assert time.monotonic() < deadline, findings
        time.sleep(0.5)


def gpu_mismatches(site: Site) -> list[str]:
    found = []
    holders = dict(Case.objects.values_list("pk", "status"))
    groups = GpuGroup.objects.filter(host__name=site.name)
    for group in groups.filter(status=GpuGroup.Status.ASSIGNED):
        if holders.get(group.holder_id) not in HOLDS_GPU:
            found.append(f"{group.name} assigned to case {group.holder_id} ({holders.get(group.holder_id)})")
    available = set(groups.filter(status=GpuGroup.Status.AVAILABLE).values_list("pueue_group", flat=True))
    for task in site.sandbox.status()["tasks"].values():
        status = task["status"] if isinstance(task["status"], str) else next(iter(task["status"]))
        if status in LIVE and task["group"] in available:
            found.append(f"task {task['id']} is {status} in {task['group']}, which MQIC calls available")
    return found
