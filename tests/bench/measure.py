"""Clocks and counters shared by the scenarios."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as took: ...`` then ``took[0]`` is the elapsed wall time in seconds."""
    took: list[float] = []
    start = time.perf_counter()
    try:
        yield took
    finally:
        took.append(time.perf_counter() - start)


def median_seconds(
    action: Callable[[], object], repeat: int, *, before: Callable[[], object] | None = None
) -> float:
    """The median wall time of ``action`` over ``repeat`` runs; ``before`` runs untimed ahead of each."""
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        with stopwatch() as took:
            action()
        times.append(took[0])
    return statistics.median(times)


@contextmanager
def counting_queries() -> Iterator[Counter]:
    """Count the SQL statements Django sends: ``queries`` in all, ``writes`` that change rows.

    Hooked in with ``execute_wrapper``, so it sees every statement on the default connection
    whatever the DEBUG setting, and costs one function call per statement.
    """
    from django.db import connection

    counts: Counter = Counter()

    def count(execute, sql, params, many, context):
        counts["queries"] += 1
        if sql.lstrip().upper().startswith(WRITES):
            counts["writes"] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        yield counts
