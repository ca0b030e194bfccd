"""A query's download budget is the query's: one deadline however many table scans the query makes.

An ``amplitude://`` connection starts its :class:`QueryClock` at every ``execute``; each of its tables takes the
deadline from it, so a join of ``amplitude_events`` and ``amplitude_sessions``, or a table scanned again for an
``IN`` list, shares one budget. shillelagh's generic path (``shillelagh+safe://``) has no hook at the start of a
query: there the clock is never started, and each table scan has a budget of its own.
"""

from __future__ import annotations

import time


class QueryClock:
    """When the current query started (``time.monotonic()``), shared by the tables of one connection."""

    def __init__(self) -> None:
        self.started: float | None = None

    def start(self) -> None:
        """A new query begins."""
        self.started = time.monotonic()

    def deadline(self, budget_s: float | None) -> float | None:
        """The end of a budget of ``budget_s`` seconds (None: unlimited), counted from the query's start, or from
        now when no query was started (a scan of the generic path)."""
        if budget_s is None:
            return None
        return (time.monotonic() if self.started is None else self.started) + budget_s
