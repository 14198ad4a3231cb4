"""The cyclic garbage collector, paused while much acyclic data is built at once.

CPython's collector runs whenever the count of new container objects passes a threshold, and now
and then walks through every object the process holds. Parsing ten thousand pueue tasks, and a
monitor pass reading and comparing ten thousand running cases, build tens of thousands of
containers that hold no cycles (reference counting frees them), yet their number alone set the
collector off again and again: up to a third of a pass, and most of its spread from one pass to
the next. ``paused()`` keeps it from running through such a stretch of computation; it runs again
as before after it. Meant for bounded computation, not for transfers or waits: whatever runs under
it (other threads too) has its cyclic garbage collected only once the pause ends.

Hosts are handled side by side on threads: the first pause stops the collector (if it was
running) and the end of the last one starts it again.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_pauses = 0
_resume = False


@contextmanager
def paused() -> Iterator[None]:
    global _pauses, _resume
    with _lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()
