"""A TCP link with a round-trip time, for the benchmark's "far away" scenario, in a process of its own.

``python -m tests.support.delay_link UPSTREAM_PORT RTT_MS``: listens on 127.0.0.1 (a free port,
printed on the first line of stdout) and forwards every connection to 127.0.0.1:UPSTREAM_PORT,
each byte arriving half the round trip after it was sent, in each direction. Unlike a proxy that
sleeps before each chunk (``proxy.FaultProxy``), it does not throttle: chunks are queued with
their due time and sent when due, so many are in flight at once, as on a long fat link. A new
connection pays one round trip before its first byte, as TCP's handshake does. Where the kernel
has ``netem``, a veth pair into a network namespace does the same in the kernel; this machine's
kernel has no ``sch_netem``, hence this stand-in (loopback only: it shapes no shared interface).
"""

from __future__ import annotations

import contextlib
import heapq
import socket
import sys
import threading
import time

CHUNK = 1 << 16


def pipe(source: socket.socket, sink: socket.socket, delay: float) -> None:
    """Read from ``source`` as fast as it comes; write each chunk to ``sink`` ``delay`` s later."""
    due: list[tuple[float, int, bytes]] = []
    ready = threading.Condition()
    done = [False]

    def reader() -> None:
        n = 0
        try:
            while data := source.recv(CHUNK):
                with ready:
                    heapq.heappush(due, (time.monotonic() + delay, n, data))
                    n += 1
                    ready.notify()
        except OSError:
            pass
        with ready:
            done[0] = True
            ready.notify()

    threading.Thread(target=reader, daemon=True).start()
    try:
        while True:
            with ready:
                while not due and not done[0]:
                    ready.wait()
                if not due:
                    break
                at, _n, data = due[0]
                wait = at - time.monotonic()
                if wait > 0:
                    ready.wait(wait)
                    continue
                heapq.heappop(due)
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def serve(upstream_port: int, rtt: float) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=link, args=(client, upstream_port, rtt), daemon=True).start()


def link(client: socket.socket, upstream_port: int, rtt: float) -> None:
    time.sleep(rtt)  # the handshake's round trip
    with contextlib.closing(client), socket.create_connection(("127.0.0.1", upstream_port)) as upstream:
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=pipe, args=(upstream, client, rtt / 2), daemon=True)
        back.start()
        pipe(client, upstream, rtt / 2)
        back.join()


if __name__ == "__main__":
    serve(int(sys.argv[1]), float(sys.argv[2]) / 1000)
