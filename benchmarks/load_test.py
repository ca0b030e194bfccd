"""Load through Superset: simulated users (locust, ``benchmarks/locustfile.py``) against a real Superset served
like docker compose serves it (gunicorn, compose's workers x threads), while a Celery worker and beat (compose's
commands, ``scripts/celery_stack.py``) sync the store from the Export API emulator every minute.

    make load-test                          # 30 days, about 1M events, 10 users for 5 minutes, sync every 60 s
    .venv/bin/python benchmarks/load_test.py --seconds 900    # the same for 15 minutes
    make load-smoke                         # 3 days, 30k events, 3 users for 30 s, sync every 10 s; exit 1 on any
                                            # error or any Export API request from a web process

The generated events are served by the emulator, which logs each request with the process that sent it (the owner
of the client's socket). The store starts empty: beat's first sync fills it (30 days and the 48 h look-back of
user sessions), then the users start; every later sync re-reads the hours not final yet, during the load.

Written to ``test-output/load/`` (the smoke run: ``test-output/load/smoke/``): ``summary.json``, ``summary.md``
(the table: requests, errors, p50/p95 per chart and SQL Lab query, RSS per process at start, half-time and end,
Export API requests per kind of process), ``memory.csv`` (RSS of each gunicorn worker and Celery worker process
every second), ``export_requests.csv`` (the emulator's log, with each request's process and its kind),
``sync_runs.csv`` (each sync task the worker ran: when, and the hours it downloaded), locust's CSV files and
``load.png`` (latency and memory over time, sync runs marked, drawn by ``benchmarks/load_plot.py``).

locust runs from its own virtual environment (``.venv-load``, made by ``make``): its gevent needs a greenlet that
Superset 6.1's pin excludes. This process runs in the project's ``.venv`` (Superset, the connector).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from shillelagh_amplitude.hours import floor_hour, whole_days_end
from shillelagh_amplitude.sample.emulator import ExportEmulator
from shillelagh_amplitude.sample.generator import generate_dataset
from shillelagh_amplitude.store.hour_store import HourStore

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import celery_stack  # noqa: E402 - Redis, Celery worker and beat, as the background-sync e2e test starts them
import demo  # noqa: E402 - the demo's functions start Superset, as the e2e suite does

OUTPUT = REPO / "test-output" / "load"
LOAD_BIN = REPO / ".venv-load" / "bin"
PROFILES = {
    "full": {"days": 30, "events": 1_000_000, "users": 10, "spawn_rate": 2, "seconds": 300, "sync_interval_s": 60,
             "token_refresh_s": 600},
    # the smoke run refreshes the users' access tokens every 10 s, so that the refresh is exercised
    "smoke": {"days": 3, "events": 30_000, "users": 3, "spawn_rate": 3, "seconds": 30, "sync_interval_s": 10,
              "token_refresh_s": 10},
}
API_KEY, SECRET_KEY = "load-key", "load-secret-8c21"
#: docker compose's superset-worker options.
WORKER_OPTIONS = ("-O", "fair", "-c", "2")
FILL_TIMEOUT_S = 1800


class ProcessSampler(threading.Thread):
    """Every second, the RSS of the gunicorn master's workers (``web``) and of the Celery worker's processes
    (``celery``: its main process and pool children): rows of (unix time, kind, pid, MB). Every pid seen is kept
    per kind, to tell which process sent an Export API request."""

    def __init__(self, web_master: int, celery_main: int) -> None:
        super().__init__(daemon=True)
        self.web_master = psutil.Process(web_master)
        self.celery_main = psutil.Process(celery_main)
        self.rows: list[tuple[float, str, int, float]] = []
        self.pids: dict[str, set[int]] = {"web": {web_master}, "celery": {celery_main}}
        self.stop = threading.Event()

    def processes(self) -> list[tuple[str, psutil.Process]]:
        web = [("web", worker) for worker in self.web_master.children(recursive=True)]
        return web + [("celery", p) for p in (self.celery_main, *self.celery_main.children(recursive=True))]

    def run(self) -> None:
        while True:
            now = round(time.time(), 1)
            for kind, process in self.processes():
                try:
                    rss = round(process.memory_info().rss / 2**20, 1)
                except psutil.NoSuchProcess:
                    continue
                self.pids[kind].add(process.pid)
                self.rows.append((now, kind, process.pid, rss))
            if self.stop.wait(1.0):
                return

    def kind_of(self, pid: int | None) -> str:
        """``web``, ``celery``, ``other`` (any other process) or ``unidentified`` (no pid logged)."""
        if pid is None:
            return "unidentified"
        return next((kind for kind, pids in self.pids.items() if pid in pids), "other")


def generate(data: Path, days: int, events: int) -> None:
    """The project's events: the sample's whole days, their 48 h look-back and an hour, up to the current hour."""
    end = floor_hour(datetime.now(UTC))
    generate_dataset(data, whole_days_end(end) - timedelta(days=days, hours=49), end, events=events, seed=18)


def store_filled(store: HourStore) -> bool:
    """Every hour a first sync covers is in the store (final or not)."""
    now = datetime.now(UTC)
    return not store.missing(celery_stack.window_hours(now), now)


def run_locust(base: str, password: str, profile: dict, out: Path) -> None:
    command = [str(LOAD_BIN / "locust"), "-f", str(REPO / "benchmarks" / "locustfile.py"), "--headless",
               "--host", base, "-u", str(profile["users"]), "-r", str(profile["spawn_rate"]),
               "-t", f"{profile['seconds']}s", "--csv", str(out / "locust"), "--csv-full-history", "--only-summary",
               "--stop-timeout", "30"]
    subprocess.run(command, env={**os.environ, "LOAD_PASSWORD": password, "LOAD_DAYS": str(profile["days"]),
                                 "LOAD_TOKEN_REFRESH_S": str(profile["token_refresh_s"])}, check=False)


def run(profile: dict, var: Path, out: Path) -> dict:
    """Start the stack, fill the store with beat's sync, run the users; the summary."""
    layout = demo.Layout(var)
    generate(var / "export", profile["days"], profile["events"])
    emulator = ExportEmulator(var / "export", api_key=API_KEY, secret_key=SECRET_KEY, identify_clients=True)
    emulator.start()
    redis_port, web_port = free_port(), free_port()
    env = demo.superset_env(layout, live=True)
    env.update(REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", AMPLITUDE_API_KEY=API_KEY,
               AMPLITUDE_SECRET_KEY=SECRET_KEY, AMPLITUDE_BASE_URL=emulator.base_url,
               AMPLITUDE_SYNC_INTERVAL_S=str(profile["sync_interval_s"]), AMPLITUDE_DOWNLOAD_BUDGET_S="20")
    password = demo.init_superset(layout, env)
    bundle = demo.build_bundle(layout)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes = [celery_stack.start_redis(redis_port, env, logs / "redis.log")]
    try:
        worker = celery_stack.start_worker(env, logs / "worker.log", *WORKER_OPTIONS)
        processes += [worker, celery_stack.start_beat(env, var, logs / "beat.log")]
        base = f"http://127.0.0.1:{web_port}"
        web = demo.start_server(layout, env, "127.0.0.1", web_port)
        processes.append(web)
        sampler = ProcessSampler(web.pid, worker.pid)
        sampler.start()
        demo.wait_healthy(base, web, layout.log)
        demo.import_assets(demo.api_session(base, "admin", password), base, bundle)
        started = time.monotonic()
        store = HourStore(Path(env["AMPLITUDE_CACHE_DIR"]), emulator.base_url, API_KEY)
        celery_stack.wait_for(lambda: store_filled(store), FILL_TIMEOUT_S, "beat's first sync to fill the store", 2)
        filled_s = round(time.monotonic() - started, 1)
        load_start, before = time.time(), len(emulator.requests)
        run_locust(base, password, profile, out)
        load_end, after = time.time(), len(emulator.requests)
        sampler.stop.set()
        sampler.join()
    finally:
        for process in reversed(processes):
            celery_stack.stop(process)
        emulator.stop()
        shutil.copy(layout.log, logs / "superset.log")
    worker_log = (logs / "worker.log").read_text()
    received, ended = celery_stack.sync_runs(worker_log)
    write_csv(out / "sync_runs.csv", ("task", "received", "succeeded", "hours_downloaded"), sync_times(worker_log))
    requests = [(r, sampler.kind_of(r.client_pid), before <= index < after)
                for index, r in enumerate(emulator.requests)]
    write_csv(out / "export_requests.csv", ("start", "end", "status", "pid", "kind", "during_load"),
              [(r.start, r.end, r.status, r.client_pid, kind, during) for r, kind, during in requests])
    write_csv(out / "memory.csv", ("time", "kind", "pid", "rss_mb"), sampler.rows)
    summary = summarise(out, [row for row in sampler.rows if load_start <= row[0] <= load_end], profile)
    summary.update(seconds_to_fill_store=filled_s, sync_tasks_received=len(received), sync_tasks_ended=len(ended),
                   export_requests={kind: sum(1 for _, k, _ in requests if k == kind)
                                    for kind in ("web", "celery", "other", "unidentified")},
                   export_requests_during_load={kind: sum(1 for _, k, during in requests if k == kind and during)
                                                for kind in ("web", "celery", "other", "unidentified")})
    return summary


def free_port() -> int:
    """A TCP port free on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sync_times(worker_log: str) -> list[tuple[str, float, float | None, int | None]]:
    """Each sync task of the worker's log: its id, unix times received and succeeded, hours it downloaded."""
    def stamp(text: str) -> float:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()  # the worker logs local time

    prefix = r"^\[([\d-]+ [\d:,]+): INFO/\w+(?:-\d+)?\] Task amplitude\.sync_stores\[([0-9a-f-]+)\] "
    received = {task: stamp(at) for at, task in re.findall(prefix + "received", worker_log, re.M)}
    succeeded = {task: (stamp(at), int(hours)) for at, task, hours in re.findall(
        prefix + r"succeeded.*'hours_downloaded': (\d+)", worker_log, re.M)}
    return [(task, at, *succeeded.get(task, (None, None))) for task, at in received.items()]


def write_csv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def summarise(out: Path, memory: list[tuple[float, str, int, float]], profile: dict) -> dict:
    """Requests, errors, p50/p95 per request name, RSS per process during the load at start, half-time, end."""
    with (out / "locust_stats.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    per_name = {row["Name"]: {"requests": int(row["Request Count"]), "errors": int(row["Failure Count"]),
                              "p50_ms": float(row["50%"]), "p95_ms": float(row["95%"])}
                for row in rows if row["Name"] != "Aggregated"}
    total = next(row for row in rows if row["Name"] == "Aggregated")
    processes: dict[tuple[str, int], list[float]] = {}
    for _, kind, pid, rss in memory:
        processes.setdefault((kind, pid), []).append(rss)
    return {**profile, "requests": int(total["Request Count"]), "errors": int(total["Failure Count"]),
            "per_name": per_name,
            "rss_mb": {f"{kind} {pid}": {"start": values[0], "half": values[len(values) // 2], "end": values[-1],
                                         "max": max(values)}
                       for (kind, pid), values in sorted(processes.items())}}


def table(summary: dict) -> str:
    export = summary["export_requests"]
    lines = [f"{summary['users']} users, {summary['seconds']} s, {summary['days']} days / {summary['events']:,} "
             f"generated events, sync every {summary['sync_interval_s']} s: {summary['requests']} requests, "
             f"{summary['errors']} errors", "",
             f"Export API requests: {export['web']} from web processes, {export['celery']} from the Celery worker, "
             f"{export['other']} from other processes, {export['unidentified']} unidentified "
             f"({summary['export_requests_during_load']['celery']} from the worker during the load); "
             f"{summary['sync_tasks_received']} sync tasks received by the worker, {summary['sync_tasks_ended']} "
             f"ended; store filled by the first sync {summary['seconds_to_fill_store']} s after Superset was up", "",
             "| request | requests | errors | p50 | p95 |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {row['requests']} | {row['errors']} | {row['p50_ms']:.0f} ms | {row['p95_ms']:.0f} ms |"
              for name, row in sorted(summary["per_name"].items())]
    lines += ["", "| process (during the load) | RSS start | RSS half-time | RSS end | RSS max |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {rss['start']} MB | {rss['half']} MB | {rss['end']} MB | {rss['max']} MB |"
              for name, rss in summary["rss_mb"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="30 s on a small sample; exit 1 on any error or web Export API request")
    parser.add_argument("--seconds", type=int, help="how long the users run (default: the profile's)")
    args = parser.parse_args(argv)
    profile = PROFILES["smoke" if args.smoke else "full"]
    profile = {**profile, "seconds": args.seconds or profile["seconds"]}
    out = OUTPUT / "smoke" if args.smoke else OUTPUT
    shutil.rmtree(out / "logs", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="amplitude-load-") as var:
        summary = run(profile, Path(var), out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(table(summary))
    subprocess.run([str(LOAD_BIN / "python"), str(REPO / "benchmarks" / "load_plot.py"), str(out)], check=False)
    print(table(summary))
    failed = summary["errors"] or not summary["requests"] or summary["export_requests"]["web"]
    return 1 if args.smoke and failed else 0


if __name__ == "__main__":
    sys.exit(main())
