"""Redis, a Celery worker and beat started as docker compose starts them, for the background-sync tests
(``tests/e2e/test_sync_background.py``) and the load test (``benchmarks/load_test.py``).

Debian's redis-server is the broker; the worker and beat run ``superset_config``'s Celery app, so beat schedules
the Amplitude sync (``amplitude.sync_stores``) every ``AMPLITUDE_SYNC_INTERVAL_S`` seconds of their environment.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from shillelagh_amplitude.hours import HOUR, floor_hour, hour_range

BIN = Path(sys.executable).parent
REDIS_SERVER = Path("/usr/bin/redis-server")
CELERY_APP = "--app=superset.tasks.celery_app:app"
#: What docker compose's superset-worker and superset-worker-beat run (tests/test_docker.py checks it): the worker's
#: prefork pool runs tasks in daemonic processes, which may not start processes of their own.
WORKER = ("celery", CELERY_APP, "worker", "--pool=prefork")
BEAT = ("celery", CELERY_APP, "beat")
#: The connection's default window (days) that a first sync fills.
DEFAULT_DAYS = 30
T = TypeVar("T")


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A process in a session of its own, its output to ``log``."""
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """Terminate (then kill after 30 s) a process started here."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_redis(port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    """redis-server on the loopback, nothing persisted."""
    return start([str(REDIS_SERVER), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                 env, log)


def start_worker(env: dict[str, str], log: Path, *options: str) -> subprocess.Popen:
    """A Celery worker (``options``: e.g. compose's ``-O fair -c 2``), logging each task at INFO."""
    return start([str(BIN / WORKER[0]), *WORKER[1:], *options, "--loglevel=INFO"], env, log)


def start_beat(env: dict[str, str], folder: Path, log: Path) -> subprocess.Popen:
    """Celery beat, its schedule and pid files in ``folder``."""
    return start([str(BIN / BEAT[0]), *BEAT[1:], "--schedule", str(folder / "celerybeat-schedule"),
                  "--pidfile", str(folder / "celerybeat.pid"), "--loglevel=INFO"], env, log)


def wait_for(condition: Callable[[], T], timeout: float, what: str, poll: float = 0.5) -> T:
    """``condition()``'s first true result, polled until ``timeout`` seconds; AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def window_hours(now: datetime) -> list[datetime]:
    """What a first sync covers: the ``DEFAULT_DAYS`` whole UTC days the export holds (those whose 23:00 is
    exportable), less the 48 h look-back of user sessions and an hour, through the emulator's newest exportable
    hour (what the dashboard's default range reads)."""
    midnight = floor_hour(now - 2 * HOUR).replace(hour=0)
    return list(hour_range(midnight - timedelta(days=DEFAULT_DAYS, hours=48) - HOUR, floor_hour(now) - 3 * HOUR))


def sync_runs(worker_log: str) -> tuple[set[str], set[str]]:
    """The ids of the sync tasks the worker received, and of those that ended: succeeded, failed, or discarded
    unrun (a task still queued when its schedule's next run is due expires: "Discarding revoked task")."""
    received = set(re.findall(r"Task amplitude\.sync_stores\[([0-9a-f-]+)\] received", worker_log))
    ended = set(re.findall(r"Task amplitude\.sync_stores\[([0-9a-f-]+)\] (?:succeeded|failed|raised)", worker_log))
    ended |= set(re.findall(r"Discarding revoked task: amplitude\.sync_stores\[([0-9a-f-]+)\]", worker_log))
    return received, ended


def syncs_ended(worker_log: str) -> bool:
    """Every sync task the worker received has ended (and it received one)."""
    received, ended = sync_runs(worker_log)
    return bool(received) and received <= ended
