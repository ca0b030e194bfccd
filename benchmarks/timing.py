"""Timing one query the same way in every benchmark: its first run, then the median of ``repeat`` more."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def time_query(run: Callable[[str], list], sql: str, repeat: int) -> dict[str, float | None]:
    """Run ``sql`` ``repeat + 1`` times: ``first`` and ``repeated`` (the median of the others, None without any)
    in seconds, ``repeated_cpu`` the same for this process's CPU time (less sensitive than wall time to other
    processes sharing the machine), and the ``rows`` it returned."""
    times, cpu = [], []
    for _ in range(repeat + 1):
        began, began_cpu = time.perf_counter(), time.process_time()
        rows = run(sql)
        times.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
    return {"first": times[0], "repeated": statistics.median(times[1:]) if repeat else None,
            "repeated_cpu": statistics.median(cpu[1:]) if repeat else None, "rows": len(rows)}
