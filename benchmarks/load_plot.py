"""The load test's plot: p50/p95 latency of all requests, and the RSS of each gunicorn worker and Celery worker
process, over the seconds of the load; the background sync's runs shaded.

    .venv-load/bin/python benchmarks/load_plot.py test-output/load     # writes load.png there

Reads locust's ``locust_stats_history.csv``, the load test's ``memory.csv`` and ``sync_runs.csv`` (all in unix
seconds); runs where matplotlib is (locust's virtual environment).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend


def main(folder: Path) -> None:
    with (folder / "locust_stats_history.csv").open() as handle:
        history = [row for row in csv.DictReader(handle) if row["Name"] == "Aggregated"]
    with (folder / "memory.csv").open() as handle:
        memory = list(csv.DictReader(handle))
    start, end = int(history[0]["Timestamp"]), int(history[-1]["Timestamp"])
    measured = [row for row in history if row["50%"] != "N/A"]
    figure, (latency, rss) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    seconds = [int(row["Timestamp"]) - start for row in measured]
    for percentile in ("50%", "95%"):
        latency.plot(seconds, [float(row[percentile]) for row in measured], label=f"p{percentile[:-1]}")
    with (folder / "sync_runs.csv").open() as handle:
        syncs = [row for row in csv.DictReader(handle) if row["succeeded"]]
    for row in syncs:  # the runs during the load
        begin, done = float(row["received"]) - start, float(row["succeeded"]) - start
        if done >= 0 and begin <= end - start:
            for axes in (latency, rss):
                axes.axvspan(begin, max(done, begin + 0.5), color="grey", alpha=0.25, lw=0)
    latency.set_title("latency and RSS; grey: background sync runs")
    latency.set_ylabel("latency (ms), all requests")
    latency.legend()
    for kind, pid in sorted({(row["kind"], row["pid"]) for row in memory}):
        rows = [row for row in memory if row["pid"] == pid and start <= float(row["time"]) <= end]
        if rows:
            rss.plot([float(row["time"]) - start for row in rows], [float(row["rss_mb"]) for row in rows],
                     label=f"{kind} {pid}")
    rss.set_ylabel("RSS (MB)")
    rss.set_xlabel("seconds of the load")
    rss.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(folder / "load.png", dpi=100)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
