"""Test helpers: build export archives from records, decode them independently of the code under test."""

from __future__ import annotations

import gzip
import json
import socket
import zipfile
from collections.abc import Callable
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
