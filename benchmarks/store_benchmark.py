"""One range's queries with the hour store local, on an S3 server with a cold local cache, and warm, in one run.

    python benchmarks/store_benchmark.py [--events 1000000] [--repeat 3] [--work /tmp/amplitude-bench]

The S3 server is moto's (from PyPI) on 127.0.0.1, reached through pyarrow's S3 file system as in production;
the local store (filled as by ``amplitude-sync``, see ``query_benchmark.py``) is copied into its bucket. Every
figure comes from a new process (``query_benchmark.py --worker``): "first" is the query's first run in that
process, "repeated" the median of the next ones. "S3, cold" starts with an empty local cache folder, "S3, warm"
is a new process on the folder the cold run filled.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from query_benchmark import prepare, worker

from shillelagh_amplitude.store.location import StoreLocation

BUCKET = "amplitude-bench"
TIMED = ["sessions: KPIs", "sessions: per plan", "events: count(*)", "events: per event_type"]


def start_s3(port: int) -> subprocess.Popen:
    """moto's standalone S3 server, up and answering."""
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=1)
            return server
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("moto's S3 server did not start")


def copy_store(cache_dir: Path, bucket: StoreLocation) -> None:
    """Publish every file of a local store under the same names in the bucket (8 uploads at a time)."""
    files = [path for path in cache_dir.rglob("*") if path.is_file() and ".staging" not in path.parts[-2]]

    def upload(path: Path) -> None:
        bucket.publish_bytes(bucket.path(*path.relative_to(cache_dir).parts), path.read_bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(upload, files))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--port", type=int, default=5123)
    parser.add_argument("--work", type=Path, default=Path("/tmp/amplitude-bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cache_dir = prepare(args.work, args.events, args.days)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="true")
    server = start_s3(args.port)
    try:
        requests.put(f"http://127.0.0.1:{args.port}/{BUCKET}", timeout=10).raise_for_status()
        uri = f"s3://{BUCKET}/store?endpoint_override=127.0.0.1:{args.port}&scheme=http&region=us-east-1"
        began = time.perf_counter()
        copy_store(cache_dir, StoreLocation.open(uri))
        print(f"copied the store to {BUCKET} in {time.perf_counter() - began:.1f} s")
        with tempfile.TemporaryDirectory() as xdg:
            runs = {
                "local": lambda name: worker(args, [name], cache=str(cache_dir)),
                "S3, cold": lambda name: worker(args, [name], cache=uri, xdg=f"{xdg}/{name}"),
                "S3, warm": lambda name: worker(args, [name], cache=uri, xdg=f"{xdg}/{name}"),
            }
            figures = {run: {name: results(name) for name in TIMED} for run, results in runs.items()}
    finally:
        server.terminate()
    print(f"\n{args.events:,} events, queries over 25 of 30 days; seconds; every column a new process")
    print(f"{'query':26s} " + " ".join(f"{run + ' first':>15s} {'repeated':>8s}" for run in figures))
    for name in TIMED:
        cells = [f"{figures[run][name]['results'][name]['first']:15.3f} "
                 f"{figures[run][name]['results'][name]['repeated']:8.3f}" for run in figures]
        print(f"{name:26s} " + " ".join(cells))
    ratios = {name: figures["S3, warm"][name]["results"][name]["first"] / figures["local"][name]["results"][name]
              ["first"] for name in TIMED}
    print("\nS3 warm / local, first run in a new process: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))

if __name__ == "__main__":
    main()
