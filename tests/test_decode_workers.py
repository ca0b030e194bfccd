"""Decode workers die with their parent: ``amplitude-sync`` killed with SIGKILL (as ``timeout -s KILL``, an OOM
kill or a Celery hard time limit would) leaves no worker process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from .conftest import API_KEY, SECRET_KEY


def decode_workers(process: psutil.Process) -> list[psutil.Process]:
    """The pool's spawned worker processes (not multiprocessing's resource tracker)."""
    return [child for child in process.children() if "--multiprocessing-fork" in child.cmdline()]


def test_decode_workers_exit_when_the_sync_is_killed(tmp_path, emulator):
    emulator.add_fault("slow", times=100, delay=1.0)  # the sync is still downloading when it is killed
    sync = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "amplitude-sync"), "--start", "2026-03-01", "--end",
         "2026-03-04", "--api-key", API_KEY, "--base-url", emulator.base_url, "--cache-dir", str(tmp_path)],
        env={**os.environ, "AMPLITUDE_SECRET_KEY": SECRET_KEY}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(sync.pid)
    workers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        # the pool starts a worker per decode waiting for one (an idle worker is reused first): with windows that
        # arrive one at a time, one worker may be all there is
        while not workers and time.monotonic() < deadline and sync.poll() is None:
            workers = decode_workers(parent)
            time.sleep(0.1)
        assert workers, "the sync never started a decode worker"
        os.kill(sync.pid, signal.SIGKILL)
        sync.wait()
        _, alive = psutil.wait_procs(workers, timeout=5)
        assert alive == [], f"decode workers {[worker.pid for worker in alive]} outlived their parent"
    finally:
        sync.kill()
        sync.wait()
        for worker in workers:
            if worker.is_running():
                worker.kill()
