"""Shared fixtures: a generated dataset, loaded into a store through the real decode path, and SQL connections."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from shillelagh.backends.apsw.db import connect

from shillelagh_amplitude.export.client import ExportClient
from shillelagh_amplitude.export.loader import load_archive
from shillelagh_amplitude.sample.emulator import ExportEmulator
from shillelagh_amplitude.sample.generator import generate_dataset, write_export_zip
from shillelagh_amplitude.sql.destination import ALLOWED_ENV
from shillelagh_amplitude.sql.scan import TABLE_CACHE
from shillelagh_amplitude.store.hour_store import HourStore

from .helpers import read_dataset
from .object_store import GcsProxy, S3Proxy
from .spark_server import ThriftServer, thrift_server

DATASET_START = datetime(2026, 3, 1, tzinfo=UTC)
DATASET_END = datetime(2026, 3, 5, tzinfo=UTC)
# The operator's allow-list, as the tests' operator sets it: every port of the loopback host (the emulators).
os.environ[ALLOWED_ENV] = "http://127.0.0.1:*"
API_KEY = "test-key"
SECRET_KEY = "test-secret-9f8e7d"


@dataclass
class Dataset:
    data_dir: Path
    zip_path: Path
    records: list[dict]


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Dataset:
    """About 20k generated events whose sessions start 2026-03-01..03-05 (all edge cases included)."""
    root = tmp_path_factory.mktemp("dataset")
    generate_dataset(root / "data", DATASET_START, DATASET_END, events=20_000, seed=7)
    zip_path = root / "export.zip"
    write_export_zip(root / "data", zip_path)
    return Dataset(root / "data", zip_path, read_dataset(root / "data"))


@pytest.fixture(scope="session")
def loaded_cache(dataset, tmp_path_factory) -> Path:
    """A store holding the dataset, as `amplitude-load` leaves it."""
    cache_dir = tmp_path_factory.mktemp("cache")
    store = HourStore(cache_dir, "https://amplitude.com", API_KEY)
    load_archive(store, dataset.zip_path)
    store.remember_secret(SECRET_KEY)
    return cache_dir


@pytest.fixture(scope="session")
def spark_server(tmp_path_factory) -> Iterator[ThriftServer]:
    """One local Spark Thrift Server for the session's lake tests (each module its own database): started once."""
    with thrift_server(tmp_path_factory.mktemp("spark")) as server:
        yield server


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Proxy]:
    """moto's S3 server behind the logging, fault-injecting proxy of ``object_store.py``."""
    proxy = S3Proxy()
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def gcs(tmp_path_factory) -> Iterator[GcsProxy]:
    """gcp-storage-emulator behind the same proxy."""
    proxy = GcsProxy(tmp_path_factory.mktemp("gcs") / "credentials.json")
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture(autouse=True)
def _fresh_table_cache() -> Iterator[None]:
    TABLE_CACHE.clear()
    yield
    TABLE_CACHE.clear()


def sql_connection(**adapter_kwargs: Any):
    """A safe shillelagh connection with only the amplitude adapter."""
    kwargs = {"api_key": API_KEY, "secret_key": SECRET_KEY, **adapter_kwargs}
    return connect(":memory:", adapters=["amplitude"], adapter_kwargs={"amplitude": kwargs}, safe=True)


@pytest.fixture
def offline_sql(loaded_cache):
    """Run SQL against the loaded store, never contacting Amplitude."""
    connection = sql_connection(cache_dir=str(loaded_cache), offline=True)
    cursor = connection.cursor()

    def run(sql: str, *parameters: Any) -> list[tuple]:
        return cursor.execute(sql, parameters or None).fetchall()

    yield run
    connection.close()


@pytest.fixture
def emulator(dataset):
    """A live Export API emulator over the dataset (faults can be injected per test)."""
    with ExportEmulator(dataset.data_dir, api_key=API_KEY, secret_key=SECRET_KEY) as running:
        yield running


def client_for(emulator: ExportEmulator, **kwargs: Any) -> ExportClient:
    """A client of the emulator with quick retries."""
    options = {"backoff": 0.01, "max_retry_after": 2.0, **kwargs}
    return ExportClient(API_KEY, options.pop("secret_key", SECRET_KEY), base_url=emulator.base_url, **options)
