"""The SSH transport: paramiko, one connection per host per process, every failure classified.

A new connection costs about three exec channels (~277 ms against ~85 ms on loopback, see
docs/sshd-on-loopback.md), so each process keeps one connection per target
and opens an exec channel per command. Anything that leaves us unsure what happened on the
remote side becomes ``OutcomeUnknown`` and drops the connection, so the next call starts
clean. Host keys are always verified; nothing is ever trusted on first use, jump hosts'
included (``SshTarget.jumps``: each reached through ``direct-tcpip`` channels of the one before).
Every command goes to the host's ``sh`` in a frame (``script``), whatever the login shell.

Each command runs with four small worker threads (start + stdin, stdout, stderr, exit
status) while the calling thread watches the clock: reading both streams at once is what
keeps a command that floods stdout and stderr from deadlocking, and a watcher that never
blocks is what makes every timeout real. Nothing read is unbounded: output past
``SshTarget.max_output_bytes`` (stderr past ``STDERR_MAX_BYTES``) is not read on, and a
download that stops early (``untar``) is not drained; the connection is dropped instead.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from . import download, tarstream
from .errors import BadOutput, ChangedHostKey, HostKeyError, OutcomeUnknown, UnknownHostKey
from .script import OVERHEAD, Framed, Unwrapped
from .transport import CommandResult, ProgressCallback, still_waiting
from .untar import Extraction

WINDOW_SIZE = 2 << 20
MAX_PACKET_SIZE = 32 << 10
"""Receive window and packet size per channel, measured on loopback for a 200 MB download
(median of 8): 2 MB / 32 KB 434 MB/s, 8 MB / 32 KB 345 MB/s, 16 MB / 256 KB 315 MB/s.
paramiko moves the unread rest of its receive buffer on every read, so a bigger backlog
costs more than the fewer window adjustments save. 2 MB per round trip still allows
100 MB/s at 20 ms. Uploads use the server's window, so nothing to tune on that side."""

READ_SIZE = 1 << 20
STDERR_MAX_BYTES = 4 << 20
"""Error output is for people and logs; more than this is not read on."""
SESSION_RETRIES = 6
"""Refusals of a session with none other open before giving up (waits of 0.1 s to 3.2 s between)."""
WATCH_INTERVAL = 0.25
"""How often the watching thread re-checks its clocks while workers are still busy."""

NETWORK_ERRORS = (OSError, EOFError, paramiko.SSHException)

TRUST_HINT = "python manage.py trust_host_key <host name>"


@dataclass(frozen=True)
class Hop:
    """A jump host on the way to the target (OpenSSH ``ProxyJump``): reached first, then asked to
    open a ``direct-tcpip`` channel to the next hop or the target."""

    hostname: str
    port: int = 22
    username: str | None = None
    """None: the target's user."""


@dataclass(frozen=True)
class SshTarget:
    """Where and how to log in. Frozen and hashable: it keys the connection cache.

    Without ``key_filename`` the usual ``~/.ssh/id_*`` keys are tried; the SSH agent never
    is, since MQIC runs as a service.
    """

    hostname: str
    port: int = 22
    username: str | None = None
    key_filename: str | None = None
    known_hosts: str | None = None
    host_key: str | None = None
    """Trusted host key as "key-type base64"; when set, ``known_hosts`` is not read."""
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    keepalive_interval: float = 30.0
    max_output_bytes: int = 256 << 20
    """A command's stdout past this raises ``BadOutput`` (setting ``MQIC_REMOTE_OUTPUT_MAX_BYTES``)."""
    jumps: tuple[Hop, ...] = ()
    """Jump hosts, in order. Each logs in with the target's key and is verified against its
    ``known_hosts`` file, never trusted on first use."""

    def hop(self, index: int) -> SshTarget:
        """The target that jump host ``index`` is, reached through the hops before it."""
        hop = self.jumps[index]
        return dataclasses.replace(
            self,
            hostname=hop.hostname,
            port=hop.port,
            username=hop.username or self.username,
            host_key=None,
            jumps=self.jumps[:index],
        )

    @property
    def host_key_name(self) -> str:
        """The host as known_hosts names it: ``[host]:port`` unless the port is 22."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def __str__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{user}{self.hostname}:{self.port}"


# -- counters -----------------------------------------------------------------------


@dataclass(frozen=True)
class SshStats:
    """What this process has done over SSH; tests and benchmarks read it to count round trips."""

    connections_opened: int = 0
    channels_opened: int = 0


_stats = SshStats()
_stats_lock = threading.Lock()


def stats() -> SshStats:
    return _stats


def reset_stats() -> None:
    global _stats
    with _stats_lock:
        _stats = SshStats()


def _count(field: str) -> None:
    global _stats
    with _stats_lock:
        _stats = dataclasses.replace(_stats, **{field: getattr(_stats, field) + 1})


# -- host keys ------------------------------------------------------------------------


def fingerprint(key_type: str, key_base64: str) -> str:
    """The OpenSSH ``SHA256:...`` fingerprint of a public key given as type and base64 blob."""
    blob = base64.b64decode(key_base64)
    embedded_type = paramiko.Message(blob).get_text()
    if embedded_type != key_type:
        raise ValueError(f"key data is a {embedded_type} key, not {key_type}")
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _key_fingerprint(key: paramiko.PKey) -> str:
    return fingerprint(key.get_name(), key.get_base64())


def scan_host_key(target: SshTarget) -> tuple[str, str, str]:
    """Fetch the key the target offers, without logging in to it: ``(key_type, base64, fingerprint)``;
    through its jump hosts, which are logged in to and verified as for any connection.

    For a trust command: show the fingerprint to a human, store the key if they confirm.
    """
    timeout = target.connect_timeout
    hops: list[paramiko.SSHClient] = []
    try:
        hops, channel = _route(target)
        with contextlib.closing(
            channel or socket.create_connection((target.hostname, target.port), timeout)
        ) as sock:
            transport = paramiko.Transport(sock)
            try:
                transport.banner_timeout = timeout
                transport.start_client(timeout=timeout)
                key = transport.get_remote_server_key()
            finally:
                transport.close()
    except NETWORK_ERRORS as error:
        raise OutcomeUnknown(
            f"could not fetch the host key of {target.hostname}:{target.port}: {error}"
        ) from error
    finally:
        for hop in reversed(hops):
            _hang_up(hop)
    return key.get_name(), key.get_base64(), _key_fingerprint(key)


def _route(target: SshTarget) -> tuple[list[paramiko.SSHClient], paramiko.Channel | None]:
    """Log in to each jump host in turn, through the one before; return those connections and a
    channel from the last to the target (``None`` without jump hosts: connect directly)."""
    hops: list[paramiko.SSHClient] = []
    channel = None
    try:
        for index in range(len(target.jumps)):
            hop = target.hop(index)
            hops.append(_login(hop, channel))
            following = target.jumps[index + 1] if index + 1 < len(target.jumps) else target
            try:
                channel = (
                    hops[-1]
                    .get_transport()
                    .open_channel(
                        "direct-tcpip",
                        (following.hostname, following.port),
                        ("127.0.0.1", 0),
                        timeout=target.connect_timeout,
                    )
                )
            except NETWORK_ERRORS as error:
                onward = f"{following.hostname}:{following.port}"
                raise OutcomeUnknown(
                    f"jump host {hop.hostname}:{hop.port} could not reach {onward}: {error}"
                ) from error
    except BaseException:
        for client in reversed(hops):
            _hang_up(client)
        raise
    return hops, channel


def _login(target: SshTarget, sock: paramiko.Channel | None) -> paramiko.SSHClient:
    """One authenticated connection to ``target`` (over ``sock``: a channel through a jump host),
    its key verified against what is trusted for it."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(_RefuseUnknownKey(target))
    _load_trusted_keys(client.get_host_keys(), target)
    try:
        client.connect(
            hostname=target.hostname,
            port=target.port,
            username=target.username or None,
            key_filename=target.key_filename,
            timeout=target.connect_timeout,
            banner_timeout=target.connect_timeout,
            auth_timeout=target.connect_timeout,
            channel_timeout=target.connect_timeout,
            allow_agent=False,
            look_for_keys=target.key_filename is None,
            sock=sock,
        )
    except BaseException as error:
        client.close()
        if not isinstance(error, NETWORK_ERRORS):
            raise  # UnknownHostKey from our policy, or a programming error
        raise _connect_error(target, error) from error
    client.get_transport().set_keepalive(target.keepalive_interval)
    _count("connections_opened")
    return client


class _RefuseUnknownKey(paramiko.MissingHostKeyPolicy):
    """Refuse a host we hold no key for, saying which key it offered and how to trust it."""

    def __init__(self, target: SshTarget):
        self.target = target

    def missing_host_key(self, client, hostname, key) -> None:
        target = self.target
        where = f"not in {target.known_hosts}" if target.known_hosts else "no host key configured"
        fp = _key_fingerprint(key)
        raise UnknownHostKey(
            f"{target.hostname}:{target.port} offered the unknown {key.get_name()} host key {fp} "
            f"({where}); refusing to connect. If the host's administrators "
            f"confirm this fingerprint, trust it with: {TRUST_HINT}",
            hostname=target.hostname,
            port=target.port,
            key_type=key.get_name(),
            fingerprint=fp,
        )


def _changed_key_error(target: SshTarget, offered: paramiko.PKey, trusted: paramiko.PKey) -> ChangedHostKey:
    fp = _key_fingerprint(offered)
    return ChangedHostKey(
        f"HOST KEY CHANGED for {target.hostname}:{target.port}! It offered the {offered.get_name()} "
        f"key {fp}, but the trusted key is {trusted.get_name()} {_key_fingerprint(trusted)}. "
        "Someone may be intercepting the connection (man in the middle), or the host was "
        "reinstalled. Refusing to connect. Only once the host's administrators confirm the new "
        f"fingerprint, trust it with: {TRUST_HINT}",
        hostname=target.hostname,
        port=target.port,
        key_type=offered.get_name(),
        fingerprint=fp,
    )


def _load_trusted_keys(keys: paramiko.HostKeys, target: SshTarget) -> None:
    """known_hosts and the explicit ``host_key``; when both name this host they must agree.

    Neither wins silently: a row and a file holding different keys refuse the connection, as a
    changed key does (a missing file trusts nothing).
    """
    if target.known_hosts and Path(target.known_hosts).exists():
        keys.load(target.known_hosts)
    if not target.host_key:
        return
    entry = paramiko.hostkeys.HostKeyEntry.from_line(f"{target.host_key_name} {target.host_key.strip()}")
    if entry is None:
        raise ValueError(f"host_key for {target} is not a 'key-type base64' public key")
    on_file = keys.lookup(target.host_key_name)
    if on_file and entry.key.get_base64() not in {key.get_base64() for key in on_file.values()}:
        fp = _key_fingerprint(entry.key)
        raise ChangedHostKey(
            f"HOST KEY MISMATCH for {target.hostname}:{target.port}: the key trusted on the host's row "
            f"({fp}) is not the one its known_hosts file {target.known_hosts} holds. Refusing to connect "
            f"until they agree: compare with the host's administrators, then run {TRUST_HINT} --replace.",
            hostname=target.hostname,
            port=target.port,
            key_type=entry.key.get_name(),
            fingerprint=fp,
        )
    keys.add(target.host_key_name, entry.key.get_name(), entry.key)


# -- connection cache -------------------------------------------------------------------

_transports: dict[tuple[SshTarget, int], SshTransport] = {}
_transports_lock = threading.Lock()


def get_transport(target: SshTarget) -> SshTransport:
    """This process's transport for ``target``; keyed by pid, so a forked child makes its own."""
    key = (target, os.getpid())
    with _transports_lock:
        transport = _transports.get(key)
        if transport is None:
            transport = _transports[key] = SshTransport(target)
        return transport


def close_all() -> None:
    """Close every cached connection of this process; those inherited from a parent are forgotten."""
    pid = os.getpid()
    with _transports_lock:
        mine = [transport for (_, owner), transport in _transports.items() if owner == pid]
        _transports.clear()
    for transport in mine:
        transport.close()


def _renew_locks_in_child() -> None:
    """A fork can copy a lock that another thread held; the child must start with free ones."""
    global _transports_lock, _stats_lock
    _transports_lock = threading.Lock()
    _stats_lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_locks_in_child)


# -- the transport --------------------------------------------------------------------------


class _SessionRefused(Exception):
    """The server refused a new channel on a live connection (``MaxSessions``): nothing was run."""


class _Sessions:
    """One channel at a time on a connection: the least any server allows (``MaxSessions 1`` at
    some sites). MQIC gives every contact a connection of its own and runs its commands one after
    another, so nothing waits here in practice; a connection shared between threads takes turns.
    A server may still refuse the next session for a moment after the last one closed (the close
    and the next open cross on the wire): that is waited out, a few times, never an error at once.
    """

    def __init__(self):
        self._turn = threading.Lock()

    @contextlib.contextmanager
    def held(self, wait: float) -> Iterator[None]:
        if not self._turn.acquire(timeout=wait):
            raise OutcomeUnknown(f"no session free on the connection within {wait:.0f}s (nothing was run)")
        try:
            yield
        finally:
            self._turn.release()

    @staticmethod
    def refused(tries: int) -> None:
        """The server refused a session while none other of ours was open: wait, then ask again."""
        if tries >= SESSION_RETRIES:
            raise OutcomeUnknown(
                f"the server refused a session {tries} times with none other open (nothing was run)"
            )
        time.sleep(0.05 * 2**tries)


class _ChannelBroken(Exception):
    """The channel or connection failed under a worker (as opposed to a local error)."""


class _Abandon(Exception):
    """A reader stops reading on purpose: the command is not drained, its connection is
    dropped, and ``error`` (if any) is raised to the caller."""

    def __init__(self, error: Exception | None = None):
        super().__init__(error)
        self.error = error


class _Activity:
    """When bytes last moved on a channel, so transfers time out on a stall, not on size."""

    def __init__(self):
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()


class _Worker(threading.Thread):
    def __init__(self, work: Callable[[], Any]):
        super().__init__(daemon=True)
        self._work = work
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._work()
        except BaseException as error:
            self.error = error


class _ChannelReader:
    """``read(n)`` over one stream of a channel (stdout or stderr), for tarfile or to collect."""

    def __init__(self, recv: Callable[[int], bytes], activity: _Activity):
        self._recv = recv
        self._activity = activity

    def read(self, size: int) -> bytes:
        try:
            data = self._recv(size)
        except NETWORK_ERRORS as error:
            raise _ChannelBroken(error) from error
        self._activity.touch()
        return data

    def read_all(self, limit: int, what: str) -> bytes:
        """Everything up to EOF; past ``limit`` bytes, give up (``_Abandon`` with ``BadOutput``)."""
        chunks, size = [], 0
        while chunk := self.read(READ_SIZE):
            size += len(chunk)
            if size > limit:
                raise _Abandon(BadOutput(f"{what} exceeded {limit} bytes; stopped reading it"))
            chunks.append(chunk)
        return b"".join(chunks)


class _ChannelWriter:
    """``write(data)`` into a channel's stdin, counting bytes for the progress callback."""

    def __init__(self, channel: paramiko.Channel, activity: _Activity, progress: ProgressCallback | None):
        self._channel = channel
        self._activity = activity
        self._progress = progress
        self.sent = 0

    def write(self, data: bytes) -> int:
        try:
            self._channel.sendall(memoryview(data))  # paramiko re-slices what it is given per packet
        except NETWORK_ERRORS as error:
            raise _ChannelBroken(error) from error
        self._activity.touch()
        self.sent += len(data)
        if self._progress is not None:
            self._progress(self.sent)
        return len(data)


Feed = Callable[[_ChannelWriter], None]
Consume = Callable[[_ChannelReader], Any]


class SshTransport(tarstream.Uploads, download.Downloads):
    """``Transport`` over one paramiko connection, opened on first use and after any failure.

    Safe to share between threads: each command has its own channel. A failure drops the
    whole connection, so commands running at that moment on other threads fail with
    ``OutcomeUnknown`` too; a connection that failed once is not trusted again.
    """

    def __init__(self, target: SshTarget):
        self.target = target
        self._client: paramiko.SSHClient | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._sessions = _Sessions()

    # -- public API ------------------------------------------------------------------

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float | None = None) -> CommandResult:
        """Run ``command``; past ``timeout`` (default: the target's) raise ``OutcomeUnknown``,
        past the target's ``max_output_bytes`` of stdout ``BadOutput``."""
        limit = self.target.command_timeout if timeout is None else timeout

        def feed(writer: _ChannelWriter) -> None:
            writer.write(stdin)

        return self._exchange(command, feed=feed if stdin else None, deadline=time.monotonic() + limit)

    def _send_tar(self, command: str, write, progress: ProgressCallback | None) -> None:
        """A transfer times out when nothing moves for the command timeout, however long it takes
        in all; ``progress`` is called from a worker thread."""
        self._exchange(command, feed=write, progress=progress).check(command)

    def _stream_tar(
        self, command: str, consume: Callable[[_ChannelReader], Extraction]
    ) -> tuple[Extraction, CommandResult | None]:
        """``download.StreamTar``: a stream left unread to its end is abandoned, not drained."""
        extracted = []

        def read(reader: _ChannelReader) -> None:
            extracted.append(consume(reader))
            if not extracted[0].exhausted:
                raise _Abandon()

        result = self._exchange(command, consume=read)
        return extracted[0], result

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            _hang_up(client)

    # -- connection ------------------------------------------------------------------

    def _connection(self) -> tuple[paramiko.SSHClient, bool]:
        """The live connection and whether it was just opened (opening one if needed)."""
        if self._pid != os.getpid():  # forked: the parent's connection is not ours to use or close
            self._pid, self._client, self._lock = os.getpid(), None, threading.Lock()
        with self._lock:
            client = self._client
            if client is not None and (link := client.get_transport()) is not None and link.is_active():
                return client, False
            if client is not None:
                _hang_up(client)
            self._client = self._connect()
            return self._client, True

    def _connect(self) -> paramiko.SSHClient:
        """The connection to the target, through its jump hosts if it has any; those connections
        live and die with it (``_hang_up``)."""
        hops, channel = _route(self.target)
        try:
            client = _login(self.target, channel)
        except BaseException:
            for hop in reversed(hops):
                _hang_up(hop)
            raise
        client.mqic_hops = hops
        return client

    def _drop(self, client: paramiko.SSHClient) -> None:
        """Forget and close a connection that failed; the next call opens a fresh one."""
        with self._lock:
            if self._client is client:
                self._client = None
        _hang_up(client)

    def _open_channel(self) -> tuple[paramiko.SSHClient, paramiko.Channel]:
        """A new session channel. A cached connection found dead is replaced once: no command
        was sent on it, so retrying cannot run anything twice."""
        client, fresh = self._connection()
        try:
            return client, self._open_session(client)
        except OutcomeUnknown:
            if fresh:
                raise
        client, _ = self._connection()
        return client, self._open_session(client)

    def _open_session(self, client: paramiko.SSHClient) -> paramiko.Channel:
        try:
            channel = client.get_transport().open_session(
                window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE, timeout=self.target.connect_timeout
            )
        except paramiko.ChannelException as error:  # refused, the connection still fine
            raise _SessionRefused(str(error)) from error
        except NETWORK_ERRORS as error:
            self._drop(client)
            raise OutcomeUnknown(f"{self.target}: could not open a channel: {error}") from error
        _count("channels_opened")
        return channel

    # -- one command -------------------------------------------------------------------

    def _exchange(
        self,
        command: str,
        *,
        feed: Feed | None = None,
        consume: Consume | None = None,
        deadline: float | None = None,
        progress: ProgressCallback | None = None,
    ) -> CommandResult | None:
        """Run one command on its own channel: stdin from ``feed``, stdout into ``consume``
        (collected, up to the target's cap, when not given).

        With a ``deadline`` the whole command must end by then; without one (transfers) it
        must not stall for longer than the command timeout. A reader that fails or stops on
        purpose ends the command at once: the connection is dropped rather than the rest of
        the output drained. ``None`` only when ``consume`` stopped without an error.
        """
        framed = Framed(command)
        collected = consume is None
        if collected:
            limit = self.target.max_output_bytes + OVERHEAD

            def consume(reader: _ChannelReader) -> bytes:
                return reader.read_all(limit, f"output of {_shown(command)!r}")

        stream = consume

        def unwrap(reader: _ChannelReader) -> Any:
            return stream(reader if collected else Unwrapped(reader, framed))

        wait = self.target.command_timeout if deadline is None else max(0.0, deadline - time.monotonic())
        refusals = 0
        while True:
            with self._sessions.held(wait):
                try:
                    client, channel = self._open_channel()
                except _SessionRefused:
                    refusals += 1
                    self._sessions.refused(refusals)
                    continue
                return self._run_on(client, channel, command, framed, feed, unwrap, collected, deadline, progress)

    def _run_on(self, client, channel, command, framed, feed, unwrap, collected, deadline, progress):
        """The rest of ``_exchange``, on the channel it opened."""
        activity = _Activity()
        start = _Worker(lambda: _start(channel, framed, feed, _ChannelWriter(channel, activity, progress)))
        out = _Worker(lambda: unwrap(_ChannelReader(channel.recv, activity)))
        err = _Worker(
            lambda: _ChannelReader(channel.recv_stderr, activity).read_all(
                STDERR_MAX_BYTES + OVERHEAD, f"error output of {_shown(command)!r}"
            )
        )
        status = _Worker(channel.recv_exit_status)
        workers = [start, out, err, status]
        for worker in workers:
            worker.start()
        finished = self._watch(workers, activity, deadline, stop=lambda: _stopped_reader(out, err))
        if (stopped := _stopped_reader(out, err)) is not None:
            # Not drained: the rest may be endless. Dropping the connection also stops the command.
            self._drop(client)
            if not isinstance(stopped, _Abandon):
                raise stopped
            if stopped.error is not None:
                raise stopped.error
            return None
        if not finished:
            # Closing the connection also closes the channel and, unlike closing the channel
            # alone, cannot block behind a writer stuck on a dead link.
            self._drop(client)
            raise OutcomeUnknown(f"{self.target}: {_shown(command)!r} did not finish in time; connection closed")
        channel.close()
        raw = self._conclude(client, command, start, out, err, status)
        cap = self.target.max_output_bytes
        return framed.result(raw.exit_code, raw.stdout if collected else None, raw.stderr, max_stdout=cap)

    def _watch(
        self, workers: list[_Worker], activity: _Activity, deadline: float | None, stop: Callable[[], Any]
    ) -> bool:
        """Wait for the workers; False once the deadline passes or nothing moved for too long.
        Returns early (True) once ``stop()`` says a reader gave up."""
        idle_limit = self.target.command_timeout
        for worker in workers:
            while worker.is_alive():
                if stop() is not None:
                    return True
                end = deadline if deadline is not None else activity.last + idle_limit
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                still_waiting()
                worker.join(min(remaining, WATCH_INTERVAL))
        return True

    def _conclude(
        self,
        client: paramiko.SSHClient,
        command: str,
        start: _Worker,
        out: _Worker,
        err: _Worker,
        status: _Worker,
    ) -> CommandResult:
        """Turn what the finished workers saw into a result or the right error (see errors.py)."""
        if start.error is not None and not isinstance(start.error, _ChannelBroken):
            raise start.error  # a local failure, such as a case file that could not be read
        broken = [w.error for w in (start, out, err) if isinstance(w.error, _ChannelBroken)]
        # With an exit status, a broken stdin only means the command did not read all of it.
        if status.result == -1 or any(error is not start.error for error in broken):
            self._drop(client)
            cause = broken[0] if broken else None
            raise OutcomeUnknown(f"{self.target}: connection lost during {_shown(command)!r}") from cause
        return CommandResult(
            exit_code=status.result,
            stdout=out.result.decode(errors="replace") if isinstance(out.result, bytes) else "",
            stderr=err.result.decode(errors="replace"),
        )


def _hang_up(client: paramiko.SSHClient) -> None:
    """Close the connection now. paramiko's ``close`` leaves the socket to its reader thread, which
    lets go of it only when its poll next times out: until then the host still counts the
    connection, and a budget of connections per host (``resources.contact``) would be exceeded by
    the next contact. Shutting the socket down first ends it at once."""
    transport = client.get_transport()
    if transport is not None and isinstance(transport.sock, socket.socket):
        with contextlib.suppress(OSError):  # already closed, or never connected
            transport.sock.shutdown(socket.SHUT_RDWR)
    client.close()
    for hop in reversed(getattr(client, "mqic_hops", ())):  # the jump hosts it was reached through
        _hang_up(hop)


def _shown(command: str) -> str:
    return command if len(command) <= 200 else command[:200] + "..."


def _start(channel: paramiko.Channel, framed: Framed, feed: Feed | None, writer: _ChannelWriter) -> None:
    """Start the host's ``sh``, send it the framed script, then the command's stdin, then EOF. A
    local failure closes the channel at once so the remote side stops waiting for the rest."""
    try:
        channel.exec_command(framed.login_command(data_follows=feed is not None))
        channel.sendall(framed.script)
    except NETWORK_ERRORS as error:
        raise _ChannelBroken(error) from error
    if feed is not None:
        try:
            feed(writer)
        except _ChannelBroken:
            raise
        except BaseException:
            channel.close()
            raise
    try:
        channel.shutdown_write()
    except NETWORK_ERRORS as error:
        raise _ChannelBroken(error) from error


def _stopped_reader(out: _Worker, err: _Worker) -> BaseException | None:
    """The error of a reader that gave up (on purpose or by a local failure), if one did;
    a broken channel is not a reader giving up, ``_conclude`` judges that."""
    for worker in (out, err):
        if worker.error is not None and not isinstance(worker.error, _ChannelBroken):
            return worker.error
    return None


def _connect_error(target: SshTarget, error: BaseException) -> HostKeyError | OutcomeUnknown:
    if isinstance(error, paramiko.BadHostKeyException):
        return _changed_key_error(target, error.key, error.expected_key)
    if isinstance(error, paramiko.AuthenticationException):
        return OutcomeUnknown(
            f"{target}: authentication failed with key {target.key_filename or '(default keys)'}: "
            f"{error}. Is its public key in the remote authorized_keys?"
        )
    return OutcomeUnknown(f"{target}: could not connect: {error}")
