"""Test helpers: build export archives from records, decode them independently of the code under test."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

from shillelagh_amplitude.sample.generator import write_events, write_export_zip


def export_zip(tmp_path: Path, events: list[dict], name: str = "export.zip") -> Path:
    """An Export-API-shaped zip holding ``events``."""
    data_dir = tmp_path / f"data-{name}"
    write_events(data_dir, events)
    path = tmp_path / name
    write_export_zip(data_dir, path)
    return path


def read_dataset(data_dir: Path) -> list[dict]:
    """Every record of a generated dataset, read with gzip + json only."""
    records = []
    for path in sorted(Path(data_dir).rglob("*.json.gz")):
        with gzip.open(path, "rt") as lines:
            records.extend(json.loads(line) for line in lines if line.strip())
    return records


def read_zip(path: Path) -> list[dict]:
    """Every record of an export zip, read with zipfile + gzip + json only."""
    records = []
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if member.endswith(".gz"):
                text = gzip.decompress(archive.read(member)).decode()
                records.extend(json.loads(line) for line in text.splitlines() if line.strip())
    return records


def parse_ts(text: str | None) -> datetime | None:
    """An export timestamp as an aware UTC datetime (independent of the archive decoder)."""
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("T", " ")).replace(tzinfo=UTC)


def free_port() -> int:
    """A TCP port free on the loopback interface (nothing listens there)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def amplitude_sql(cache_dir: Path, api_key: str, secret_key: str) -> Callable[[str], list[tuple]]:
    """Run SQL through ``amplitude://`` (the columnar cursor, as Superset's connection does) on a filled store,
    offline."""
    engine = create_engine("amplitude://?offline=true", api_key=api_key, secret_key=secret_key,
                           cache_dir=str(cache_dir))

    def run(sql: str) -> list[tuple]:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql)).fetchall()]

    return run


@dataclass(frozen=True)
class Outcome:
    """One query of a :class:`QueryLoad`: the phases it began and ended in, its rows or its error's text."""

    thread: int
    sql: str
    began: str
    ended: str
    rows: list[tuple] | None
    error: str | None


class QueryLoad:
    """``threads`` threads, each with its own connection (``connect()``), run ``sqls`` in turn until stopped.

    The test names the current ``phase`` (e.g. "outage"); every outcome records the phases it began and ended in.
    :meth:`wait_for` waits for a state of the outcomes, never for a time."""

    def __init__(self, connect: Callable[[], Callable[[str], list[tuple]]], sqls: list[str], threads: int) -> None:
        self.phase = "before"
        self.outcomes: list[Outcome] = []
        self._connect, self._sqls = connect, sqls
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def __enter__(self) -> QueryLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(300)

    def _run(self, number: int) -> None:
        run = self._connect()
        while not self._stop.is_set():
            for sql in self._sqls:
                began = self.phase
                try:
                    rows, error = run(sql), None
                except Exception as exc:  # noqa: BLE001 - every failure is an outcome the test judges
                    rows, error = None, str(exc)
                with self._changed:
                    self.outcomes.append(Outcome(number, sql, began, self.phase, rows, error))
                    self._changed.notify_all()

    def wait_for(self, state: Callable[[list[Outcome]], bool], timeout: float = 240) -> None:
        """Until ``state(outcomes)`` holds (AssertionError after ``timeout`` seconds)."""
        with self._changed:
            assert self._changed.wait_for(lambda: state(list(self.outcomes)), timeout), "the state was not reached"

    def each_thread(self, phase: str, count: int, ok: bool | None = None) -> Callable[[list[Outcome]], bool]:
        """A state: every thread has ``count`` outcomes that began and ended in ``phase`` (only failures with
        ``ok=False``, only answers with ``ok=True``)."""

        def reached(outcomes: list[Outcome]) -> bool:
            for number in range(len(self._threads)):
                mine = [o for o in outcomes if o.thread == number and o.began == o.ended == phase
                        and (ok is None or (o.error is None) == ok)]
                if len(mine) < count:
                    return False
            return True

        return reached
