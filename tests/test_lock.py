"""The store lock cannot hang the product: a holder that stopped (SIGSTOP) is given up on in bounded time by a
sync, the CLI, the Celery task and a web query, each naming the holder; a live holder renews its lease."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from shillelagh.exceptions import ProgrammingError

from shillelagh_amplitude.store.hour_store import HourStore
from shillelagh_amplitude.store.lock import RENEW_S, STALE_AFTER_S, LockTimeout, StoreLock

from .conftest import API_KEY, SECRET_KEY, sql_connection

HOLD_LOCK = """
import sys, time
from shillelagh_amplitude.store.hour_store import HourStore
lock = HourStore(sys.argv[1], sys.argv[2], sys.argv[3]).lock()
lock.acquire()
print("held", lock.holder()["since"], flush=True)
time.sleep(600)
"""


class Holder:
    """A process holding a store's lock (``since`` as it wrote it)."""

    def __init__(self, cache_dir: str, base_url: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, cache_dir, base_url, API_KEY],
                                        stdout=subprocess.PIPE, text=True)
        word, self.since = self.process.stdout.readline().split()
        assert word == "held"
        self.pid = self.process.pid

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def kill(self) -> None:
        self.process.kill()  # a stopped process dies of SIGKILL too
        self.process.wait()


@pytest.fixture
def holder(tmp_path, emulator) -> Iterator[Holder]:
    running = Holder(str(tmp_path), emulator.base_url)
    yield running
    running.kill()


def within(seconds: float, call: Callable[[], object]) -> object:
    """``call()``'s result or exception, failing (instead of hanging) if it takes over ``seconds``."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    return outcome[0]


def test_a_live_holder_renews_its_lease_and_a_stopped_one_is_given_up_on(tmp_path, emulator, holder, monkeypatch):
    monkeypatch.setattr(StoreLock, "stale_after_s", 2.5 * RENEW_S)
    lock = HourStore(tmp_path, emulator.base_url, API_KEY).lock()
    lease = lock.path.stat().st_mtime
    started = time.monotonic()
    error = within(20, lambda: lock.acquire(timeout=3 * RENEW_S))  # longer than a lease: renewed meanwhile
    assert isinstance(error, LockTimeout) and error.unrenewed is None
    assert 3 * RENEW_S <= time.monotonic() - started < 3 * RENEW_S + 2
    assert lock.path.stat().st_mtime > lease

    holder.stop()
    started = time.monotonic()
    error = within(30, lock.acquire)  # no budget: waits while the lease is renewed, not for a stopped holder
    waited = time.monotonic() - started
    assert isinstance(error, LockTimeout)
    assert 2.5 * RENEW_S - RENEW_S <= waited < 2.5 * RENEW_S + 2  # its last renewal was up to RENEW_S before
    assert str(error) == (
        f"The hour store {tmp_path / HourStore(tmp_path, emulator.base_url, API_KEY).project} is being filled by "
        f"process {holder.pid} on {socket.gethostname()} since {holder.since} (its lock has not been renewed for "
        f"{error.unrenewed:.0f} s: the process is stopped or hung); this run gave up after waiting {waited:.0f} s, "
        "downloaded nothing, and the next run will try again.")

    holder.kill()
    lock.acquire(timeout=1)
    assert lock.holder()["pid"] == os.getpid()
    lock.release()


def run_sync(emulator, cache_dir, *args: str) -> subprocess.CompletedProcess:
    command = [os.path.join(os.path.dirname(sys.executable), "amplitude-sync"), *args, "--api-key", API_KEY,
               "--base-url", emulator.base_url, "--cache-dir", str(cache_dir)]
    return subprocess.run(command, env={**os.environ, "AMPLITUDE_SECRET_KEY": SECRET_KEY}, capture_output=True,
                          text=True, timeout=STALE_AFTER_S + 45)


def test_the_cli_behind_a_stopped_holder_gives_up_naming_it_and_the_next_run_works(tmp_path, emulator, holder):
    holder.stop()
    started = time.monotonic()
    run = run_sync(emulator, tmp_path, "--start", "2026-03-01", "--end", "2026-03-01")
    assert run.returncode == 2, run.stderr
    assert STALE_AFTER_S - RENEW_S <= time.monotonic() - started < STALE_AFTER_S + 30
    project = HourStore(tmp_path, emulator.base_url, API_KEY).project
    assert (f"amplitude-sync: error: The hour store {tmp_path / project} is being filled by process {holder.pid} "
            f"on {socket.gethostname()} since {holder.since} (its lock has not been renewed for ") in run.stderr
    assert "the next run will try again." in run.stderr
    assert emulator.requests == []  # nothing was downloaded

    holder.kill()
    again = run_sync(emulator, tmp_path, "--start", "2026-03-01", "--end", "2026-03-01")
    assert again.returncode == 0, again.stderr
    assert "24 hours in range, 24 downloaded in 1 requests" in again.stdout


def test_the_celery_task_behind_a_stopped_holder_is_not_tied_up(tmp_path, emulator, holder, monkeypatch):
    from shillelagh_amplitude.superset import tasks

    monkeypatch.setattr(StoreLock, "stale_after_s", 2 * RENEW_S)
    settings = {"api_key": API_KEY, "secret_key": SECRET_KEY, "base_url": emulator.base_url,
                "cache_dir": str(tmp_path), "default_days": 1}
    monkeypatch.setattr(tasks, "amplitude_projects", lambda: [("Amplitude", settings, None)])
    holder.stop()
    results = within(30, tasks.sync_amplitude_stores.run)
    assert [(result["database"], result["ok"]) for result in results] == [("Amplitude", False)]
    assert f"is being filled by process {holder.pid} on " in results[0]["error"]
    assert "the next run will try again" in results[0]["error"]
    assert emulator.requests == []


def test_a_web_query_with_a_budget_gives_up_in_time_naming_the_holder(tmp_path, emulator, holder):
    cursor = sql_connection(cache_dir=str(tmp_path), base_url=emulator.base_url, download_budget_s=2).cursor()
    started = time.monotonic()
    with pytest.raises(ProgrammingError) as error:
        cursor.execute("SELECT count(*) FROM amplitude_sessions WHERE session_start >= '2026-03-02' "
                       "AND session_start < '2026-03-03'")
    assert 2 <= time.monotonic() - started < 5
    assert (f"this connection's download budget of 2 s ran out waiting for process {holder.pid} on "
            f"{socket.gethostname()}, filling the store since {holder.since}. No partial answer") in str(error.value)
    assert emulator.requests == []
