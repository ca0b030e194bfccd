"""Cold fetch into an empty store vs a bare decode and DuckDB's read_json, on one generated 30-day export.

    python benchmarks/fetch_benchmark.py [--events 1000000] [--days 30] [--work /tmp/amplitude-bench]

Each measurement runs in its own process (so its peak RSS is its own), one after the other, on the same data:
- fetch+store (24 h windows): the connector downloads every upload hour from the local emulator, decodes it
  and writes the hour store (the emulator runs in this parent process);
- fetch+store (720 h window): the same in one 30-day window, to show memory does not grow with the window;
- bare decode: zipfile + gzip + orjson over the whole archive, nothing kept;
- DuckDB read_json: ``CREATE TABLE AS SELECT * FROM read_json(<the .json.gz members>)``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psutil

from shillelagh_amplitude.export.client import ExportClient
from shillelagh_amplitude.export.loader import fill
from shillelagh_amplitude.sample.emulator import ExportEmulator
from shillelagh_amplitude.sample.generator import generate_dataset, write_export_zip
from shillelagh_amplitude.store.hour_store import HourStore

END = datetime(2026, 10, 1, tzinfo=UTC)


class TreeMemory:
    """Samples the memory of this process and its children (the decode workers) every 20 ms.

    Each process counts its proportional set size (PSS): pages shared between them (the libraries every worker
    maps) are split among them instead of counted once per process, so the sum is the memory the tree holds.
    """

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.02):
            total = 0
            for process in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += process.memory_full_info().pss
            self.peak = max(self.peak, total)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def phase_fetch(base_url: str, days: int, window_hours: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        store = HourStore(cache, base_url, "bench-key")
        client = ExportClient("bench-key", "bench-secret", base_url=base_url)
        began = time.perf_counter()
        report = fill(store, client, END - timedelta(days=days), END + timedelta(days=2), now=datetime.now(UTC),
                      window_hours=window_hours)
        seconds = time.perf_counter() - began
        return {"seconds": seconds, "events": report.events, "requests": len(report.windows)}


def phase_decode(zip_path: Path) -> dict:
    began = time.perf_counter()
    events = 0
    with zipfile.ZipFile(zip_path) as archive:
        for member in archive.namelist():
            with archive.open(member) as raw, gzip.GzipFile(fileobj=raw) as lines:
                for line in lines:
                    orjson.loads(line)
                    events += 1
    return {"seconds": time.perf_counter() - began, "events": events}


def phase_duckdb(data_dir: Path) -> dict:
    import duckdb

    pattern = str(data_dir / "*" / "*.json.gz")
    began = time.perf_counter()
    connection = duckdb.connect()
    connection.execute(f"CREATE TABLE events AS SELECT * FROM read_json('{pattern}', format='newline_delimited')")
    events = connection.execute("SELECT count(*) FROM events").fetchone()[0]
    return {"seconds": time.perf_counter() - began, "events": events}


def run_phase(args: list[str]) -> dict:
    """Run one phase in a fresh interpreter; returns its JSON result with its peak RSS."""
    output = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path("/tmp/amplitude-bench"))
    parser.add_argument("--phase", choices=["fetch", "decode", "duckdb"], help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--window-hours", type=int, default=24, help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = args.work / f"data-{args.events}-{args.days}"
    zip_path = args.work / f"export-{args.events}-{args.days}.zip"

    if args.phase:
        run = {
            "fetch": lambda: phase_fetch(args.base_url, args.days, args.window_hours),
            "decode": lambda: phase_decode(zip_path),
            "duckdb": lambda: phase_duckdb(data_dir),
        }[args.phase]
        with TreeMemory() as memory:
            result = run()
        own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({**result, "peak_rss_mb": max(memory.peak, own_peak) / 1e6}))
        return

    args.work.mkdir(parents=True, exist_ok=True)
    if not zip_path.exists():
        summary = generate_dataset(data_dir, END - timedelta(days=args.days), END, events=args.events)
        write_export_zip(data_dir, zip_path)
        print(f"generated {summary.events} events ({summary.bytes_written / 1e6:.0f} MB of .json.gz)")
    common = ["--events", str(args.events), "--days", str(args.days), "--work", str(args.work)]
    results = {}
    with ExportEmulator(data_dir, api_key="bench-key", secret_key="bench-secret") as emulator:
        for hours in (24, 720):
            results[f"fetch+store ({hours} h windows)"] = run_phase(
                [*common, "--phase", "fetch", "--base-url", emulator.base_url, "--window-hours", str(hours)]
            )
    results["bare decode (zip+gzip+orjson)"] = run_phase([*common, "--phase", "decode"])
    results["DuckDB read_json"] = run_phase([*common, "--phase", "duckdb"])

    duck = results["DuckDB read_json"]["seconds"]
    print(f"\n{'':34s} {'events':>9s} {'wall s':>8s} {'events/s':>10s} {'peak mem MB*':>12s} {'vs DuckDB':>10s}")
    for name, result in results.items():
        rate = result["events"] / result["seconds"]
        print(f"{name:34s} {result['events']:9d} {result['seconds']:8.2f} {rate:10.0f} {result['peak_rss_mb']:12.0f} "
              f"{result['seconds'] / duck:9.2f}x")
    print("* the phase's process and its decode workers together (sum of PSS sampled every 20 ms, or the process's"
          " own peak RSS if higher)")


if __name__ == "__main__":
    main()
