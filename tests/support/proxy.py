"""A TCP proxy on 127.0.0.1 whose behaviour can be switched while connections are open.

It stands between a client and a real server to produce the network faults that unit
mocks cannot: a connection cut mid-stream, a slow link, a peer that accepts and then
never answers. Modes apply to new and to existing connections from the moment they are set.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass

CHUNK = 65536


@dataclass(frozen=True)
class _Mode:
    latency: float = 0.0
    """Seconds of delay before each chunk is forwarded."""
    cut_after: int | None = None
    """Bytes forwarded, per connection and direction, before the connection is cut."""
    cut_direction: str = "both"
    hang: bool = False


class _Link:
    """One client connection and its upstream connection (none while hanging)."""

    def __init__(self, client: socket.socket):
        self.client = client
        self.upstream: socket.socket | None = None
        self.closed = threading.Event()

    def cut(self) -> None:
        self.closed.set()
        for sock in (self.client, self.upstream):
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv on it
            sock.close()


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream_host:upstream_port``, faults on demand."""

    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()[:2]
        self._mode = _Mode()
        self._changed = threading.Condition()
        self._links: set[_Link] = set()
        self._closing = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    # -- modes ---------------------------------------------------------------------------

    def pass_through(self) -> None:
        self._set_mode(_Mode())

    def add_latency(self, ms: float) -> None:
        """Delay every forwarded chunk by ``ms`` milliseconds."""
        self._set_mode(_Mode(latency=ms / 1000))

    def cut_after(self, nbytes: int, direction: str = "both") -> None:
        """Cut each connection once ``nbytes`` more bytes went ``direction``.

        ``direction`` is "upstream" (client to server), "downstream" or "both"; counting
        starts now for open connections and at the start for new ones.
        """
        if direction not in ("upstream", "downstream", "both"):
            raise ValueError(f"direction must be upstream, downstream or both, not {direction!r}")
        self._set_mode(_Mode(cut_after=nbytes, cut_direction=direction))

    def hang(self) -> None:
        """Accept new connections but never forward a byte; open ones stall too."""
        self._set_mode(_Mode(hang=True))

    def cut_all(self) -> None:
        """Drop every current connection now (the mode stays as it is)."""
        with self._changed:
            links, self._links = self._links, set()
        for link in links:
            link.cut()

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self.cut_all()
        self._set_mode(_Mode())  # wakes stalled forwarders so they see their links closed

    def _set_mode(self, mode: _Mode) -> None:
        with self._changed:
            self._mode = mode
            self._changed.notify_all()

    # -- forwarding -----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            link = _Link(client)
            with self._changed:
                self._links.add(link)
            if not self._mode.hang:
                threading.Thread(target=self._connect, args=(link,), daemon=True).start()

    def _connect(self, link: _Link) -> None:
        try:
            link.upstream = socket.create_connection(self.upstream, timeout=5)
            link.upstream.settimeout(None)
        except OSError:
            self._drop(link)
            return
        if link.closed.is_set():  # cut while we were connecting
            self._drop(link)
            return
        threading.Thread(target=self._forward, args=(link, "upstream"), daemon=True).start()
        self._forward(link, "downstream")

    def _forward(self, link: _Link, direction: str) -> None:
        """Copy one direction of a link chunk by chunk, applying the mode current at each chunk."""
        source, sink = (link.client, link.upstream) if direction == "upstream" else (link.upstream, link.client)
        counted_mode, counted = None, 0
        while True:
            try:
                data = source.recv(CHUNK)
            except OSError:
                break
            mode = self._mode_when_not_hanging(link)
            if not data or link.closed.is_set():
                break
            if mode is not counted_mode:
                counted_mode, counted = mode, 0
            time.sleep(mode.latency)
            if mode.cut_after is not None and mode.cut_direction in (direction, "both"):
                allowed = mode.cut_after - counted
                if len(data) >= allowed:
                    _send_quietly(sink, data[:allowed])
                    break
                counted += len(data)
            if not _send_quietly(sink, data):
                break
        self._drop(link)

    def _mode_when_not_hanging(self, link: _Link) -> _Mode:
        with self._changed:
            while self._mode.hang and not link.closed.is_set():
                self._changed.wait(0.1)
            return self._mode

    def _drop(self, link: _Link) -> None:
        with self._changed:
            self._links.discard(link)
        link.cut()


def _send_quietly(sock: socket.socket, data: bytes) -> bool:
    """Send all of ``data``; False if the peer is gone."""
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True
