"""Upload progress per case, for an operator watching a large case go up.

A pass uploads all its cases in one tar stream, folder after folder, so the bytes sent so
far say how far each case is. The percentages are written at most once per interval:
a small upload writes nothing, a large one a few rows a second at most.
"""

from __future__ import annotations

import threading
import time

from ..models import Case, CaseStatus

INTERVAL_SECONDS = 1.0


class UploadProgress:
    """Bytes sent so far, turned into percentages per case and written by the pass's own thread.

    The transport reports progress from a worker thread of its own; writing from there would be a
    second database connection writing while the pass's may hold SQLite's write lock (a test's
    transaction does, all along): it would wait, then fail the pass with "database is locked". So
    ``__call__`` only notes the count, and ``write`` (called from the pass's thread, directly or
    through ``while_waiting`` while the transport works) puts it in the database.
    """

    def __init__(self, sizes: list[tuple[int, int]], interval: float | None = None):
        """``sizes``: (case id, bytes of its files) in the order the stream sends them."""
        self.interval = INTERVAL_SECONDS if interval is None else interval
        self.spans: list[tuple[int, int, int]] = []  # (case id, first byte, size) in stream order
        start = 0
        for case_id, size in sizes:
            self.spans.append((case_id, start, size))
            start += size
        self.last_write = time.monotonic()
        self.written: dict[int, int] = {}
        self.sent = 0
        self.owner = threading.current_thread()

    def __call__(self, sent: int) -> None:
        """Progress callback; may run on the transport's worker thread."""
        self.sent = sent
        if threading.current_thread() is self.owner:
            self.write()

    def write(self) -> None:
        """Write the percentages that changed, at most once per interval; the owner thread only."""
        if threading.current_thread() is not self.owner or time.monotonic() - self.last_write < self.interval:
            return
        self.last_write = time.monotonic()
        for case_id, start, size in self.spans:
            percent = min(100, max(0, (self.sent - start) * 100 // max(size, 1)))
            if self.written.get(case_id) != percent:
                self.written[case_id] = percent
                Case.objects.filter(pk=case_id, status=CaseStatus.SUBMITTING).update(upload_percent=percent)

    def finish(self) -> None:
        """The upload is over: once a case's progress was shown, its final count is written whatever
        the interval (on a busy machine the last tick may come well before the end); a small upload
        still writes nothing."""
        if self.written:
            self.last_write = float("-inf")
            self.write()
