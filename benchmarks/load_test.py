"""Load through Superset: simulated users (locust, ``benchmarks/locustfile.py``) against a real Superset started
the way the e2e suite and ``make demo`` start it (gunicorn with docker compose's workers x threads).

    make load-test                          # 30 days, about 1M events, 10 users for 5 minutes
    make load-smoke                         # 3 days, 30k events, 3 users for 30 s; exit 1 on any error

It records requests and errors, p50/p95 per chart and SQL Lab query (locust's statistics), each gunicorn worker's
RSS every second, and writes ``test-output/load/`` : ``summary.json``, ``summary.md`` (the table) and
``load.png`` (latency and memory over time, drawn by ``benchmarks/load_plot.py``).

locust runs from its own virtual environment (``.venv-load``, made by ``make``): its gevent needs a greenlet that
Superset 6.1's pin excludes. This process runs in the project's ``.venv`` (Superset, the connector).

Not yet here (issue 18): the Celery worker and beat syncing every minute against the emulator during the load
(the store is the demo's offline sample, so web processes make no Export API request by construction), and the
faults under load.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import demo  # noqa: E402 - the demo's functions start Superset, as the e2e suite does

OUTPUT = REPO / "test-output" / "load"
LOAD_BIN = REPO / ".venv-load" / "bin"
PROFILES = {
    "full": {"days": 30, "events": 1_000_000, "users": 10, "spawn_rate": 2, "seconds": 300},
    "smoke": {"days": 3, "events": 30_000, "users": 3, "spawn_rate": 3, "seconds": 30},
}


class MemorySampler(threading.Thread):
    """Every second, the RSS of the gunicorn master's worker processes: rows of (seconds, pid, MB)."""

    def __init__(self, master: int) -> None:
        super().__init__(daemon=True)
        self.master = psutil.Process(master)
        self.rows: list[tuple[float, int, float]] = []
        self.stop = threading.Event()
        self.started = time.monotonic()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            elapsed = round(time.monotonic() - self.started, 1)
            for worker in self.master.children():
                try:
                    self.rows.append((elapsed, worker.pid, round(worker.memory_info().rss / 2**20, 1)))
                except psutil.NoSuchProcess:
                    continue


def start_superset(var: Path, days: int, events: int) -> tuple[str, str, subprocess.Popen]:
    """Superset on a free port over a fresh sample, the bundle imported: (base URL, admin password, server)."""
    layout = demo.Layout(var)
    env = demo.superset_env(layout, live=False)
    password = demo.init_superset(layout, env)
    demo.prepare_sample(layout, env, days, events)
    bundle = demo.build_bundle(layout)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = demo.start_server(layout, env, "127.0.0.1", port)
    demo.wait_healthy(base, server, layout.log)
    session = demo.api_session(base, "admin", password)
    demo.import_assets(session, base, bundle)
    return base, password, server


def free_port() -> int:
    """A TCP port free on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_locust(base: str, password: str, profile: dict, out: Path) -> None:
    command = [str(LOAD_BIN / "locust"), "-f", str(REPO / "benchmarks" / "locustfile.py"), "--headless",
               "--host", base, "-u", str(profile["users"]), "-r", str(profile["spawn_rate"]),
               "-t", f"{profile['seconds']}s", "--csv", str(out / "locust"), "--csv-full-history", "--only-summary",
               "--stop-timeout", "30"]
    subprocess.run(command, env={**os.environ, "LOAD_PASSWORD": password, "LOAD_DAYS": str(profile["days"])},
                   check=False)


def summarise(out: Path, memory: list[tuple[float, int, float]], profile: dict) -> dict:
    """Requests, errors, p50/p95 per request name, RSS per worker at start and end."""
    with (out / "locust_stats.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    per_name = {row["Name"]: {"requests": int(row["Request Count"]), "errors": int(row["Failure Count"]),
                              "p50_ms": float(row["50%"]), "p95_ms": float(row["95%"])}
                for row in rows if row["Name"] != "Aggregated"}
    total = next(row for row in rows if row["Name"] == "Aggregated")
    workers: dict[int, list[float]] = {}
    for _, pid, rss in memory:
        workers.setdefault(pid, []).append(rss)
    return {"users": profile["users"], "seconds": profile["seconds"], "days": profile["days"],
            "events": profile["events"], "requests": int(total["Request Count"]),
            "errors": int(total["Failure Count"]), "per_name": per_name,
            "rss_mb": {str(pid): {"start": values[0], "end": values[-1], "max": max(values)}
                       for pid, values in workers.items()}}


def table(summary: dict) -> str:
    lines = [f"{summary['users']} users, {summary['seconds']} s, {summary['days']} days / {summary['events']:,} "
             f"generated events: {summary['requests']} requests, {summary['errors']} errors", "",
             "| request | requests | errors | p50 | p95 |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {row['requests']} | {row['errors']} | {row['p50_ms']:.0f} ms | {row['p95_ms']:.0f} ms |"
              for name, row in sorted(summary["per_name"].items())]
    lines += ["", "| worker pid | RSS start | RSS end | RSS max |", "| --- | --- | --- | --- |"]
    lines += [f"| {pid} | {rss['start']} MB | {rss['end']} MB | {rss['max']} MB |"
              for pid, rss in summary["rss_mb"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="30 s on a small sample; exit 1 on any error")
    args = parser.parse_args(argv)
    profile = PROFILES["smoke" if args.smoke else "full"]
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="amplitude-load-") as var:
        base, password, server = start_superset(Path(var), profile["days"], profile["events"])
        sampler = MemorySampler(server.pid)
        sampler.start()
        try:
            run_locust(base, password, profile, OUTPUT)
        finally:
            sampler.stop.set()
            server.terminate()
            server.wait(30)
    (OUTPUT / "memory.csv").write_text("seconds,pid,rss_mb\n" + "".join(f"{t},{p},{r}\n" for t, p, r in sampler.rows))
    summary = summarise(OUTPUT, sampler.rows, profile)
    (OUTPUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (OUTPUT / "summary.md").write_text(table(summary))
    subprocess.run([str(LOAD_BIN / "python"), str(REPO / "benchmarks" / "load_plot.py"), str(OUTPUT)], check=False)
    print(table(summary))
    return 1 if args.smoke and (summary["errors"] or not summary["requests"]) else 0


if __name__ == "__main__":
    sys.exit(main())
