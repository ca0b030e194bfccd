"""The load test's plot: p50/p95 latency of all requests and each gunicorn worker's RSS over time.

    .venv-load/bin/python benchmarks/load_plot.py test-output/load     # writes load.png there

Reads locust's ``locust_stats_history.csv`` and the load test's ``memory.csv``; runs where matplotlib is (locust's
virtual environment).
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
        history = [row for row in csv.DictReader(handle) if row["Name"] == "Aggregated" and row["50%"] != "N/A"]
    with (folder / "memory.csv").open() as handle:
        memory = list(csv.DictReader(handle))
    start = int(history[0]["Timestamp"]) if history else 0
    figure, (latency, rss) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    seconds = [int(row["Timestamp"]) - start for row in history]
    for percentile in ("50%", "95%"):
        latency.plot(seconds, [float(row[percentile]) for row in history], label=f"p{percentile[:-1]}")
    latency.set_ylabel("latency (ms), all requests")
    latency.legend()
    for pid in sorted({row["pid"] for row in memory}):
        rows = [row for row in memory if row["pid"] == pid]
        rss.plot([float(row["seconds"]) for row in rows], [float(row["rss_mb"]) for row in rows],
                 label=f"worker {pid}")
    rss.set_ylabel("RSS (MB)")
    rss.set_xlabel("seconds")
    rss.legend()
    figure.tight_layout()
    figure.savefig(folder / "load.png", dpi=100)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
