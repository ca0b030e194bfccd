"""Offline, a wrong secret key is refused, always: a store without a verifier accepts none, an unreadable verifier
is refused with how to repair it, and ``amplitude-load`` requires the secret or the operator's explicit
``--open-to-any-secret``."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from shillelagh.backends.apsw.db import connect

from shillelagh_amplitude.cli import load_main
from shillelagh_amplitude.export.client import AuthenticationError
from shillelagh_amplitude.export.loader import load_archive
from shillelagh_amplitude.export.probe import check_connection
from shillelagh_amplitude.sql import adapter
from shillelagh_amplitude.store.hour_store import VERIFIER_NAME, HourStore, VerifierUnreadable

from .conftest import API_KEY, SECRET_KEY

HOST = "https://amplitude.com"
QUERY = "SELECT count(*) FROM amplitude_events WHERE event_time >= '2026-03-02' AND event_time < '2026-03-03'"
UNVERIFIED = ("The secret key does not match: this project's local store holds no secret key verifier, so offline no "
              "secret key is accepted.")


@pytest.fixture(autouse=True)
def _no_memory_of_verified_secrets(monkeypatch) -> None:
    monkeypatch.setattr(adapter, "_VERIFIED_SECRETS", set())


def offline_count(cache_dir: str, secret_key: str | None) -> int:
    kwargs = {"api_key": API_KEY, "cache_dir": cache_dir, "offline": True}
    if secret_key is not None:
        kwargs["secret_key"] = secret_key
    connection = connect(":memory:", adapters=["amplitude"], adapter_kwargs={"amplitude": kwargs}, safe=True)
    try:
        return connection.cursor().execute(QUERY).fetchone()[0]
    finally:
        connection.close()


def loaded(tmp_path, dataset) -> HourStore:
    store = HourStore(tmp_path, HOST, API_KEY)
    load_archive(store, dataset.zip_path)
    return store


def expected_count(dataset) -> int:
    first, end = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)
    return sum(first <= datetime.fromisoformat(r["event_time"]).replace(tzinfo=UTC) < end for r in dataset.records)


def test_a_store_without_a_verifier_accepts_no_secret_offline(tmp_path, dataset) -> None:
    loaded(tmp_path, dataset)
    for secret in (SECRET_KEY, "anything", "", None):
        with pytest.raises(Exception, match="holds no secret key verifier") as error:
            offline_count(str(tmp_path), secret)
        assert error.value.__class__.__name__ == "ProgrammingError"
        with pytest.raises(AuthenticationError) as refused:
            check_connection(API_KEY, secret or "x", base_url=HOST, cache_dir=str(tmp_path), offline=True)
        assert str(refused.value).startswith(UNVERIFIED)


def test_a_verified_store_accepts_only_its_secret_offline(tmp_path, dataset) -> None:
    loaded(tmp_path, dataset).remember_secret(SECRET_KEY)
    assert offline_count(str(tmp_path), SECRET_KEY) == expected_count(dataset) > 0
    for wrong in ("wrong", "", None):
        with pytest.raises(Exception, match="does not match the one this project's local store was filled with"):
            offline_count(str(tmp_path), wrong)


@pytest.mark.parametrize("verifier", [b"not-hex:00ff", b"00ff:not-hex", b"00ff:\xc3\xa9\xc3\xa9", b"\xff\xfe:00",
                                      b"00:11:22", b"", b"00ff", b"00ff:00ff", b"open to any secret key"])
def test_an_unreadable_verifier_is_refused_with_how_to_repair_it(tmp_path, dataset, verifier) -> None:
    store = loaded(tmp_path, dataset)
    (store.root / VERIFIER_NAME).write_bytes(verifier)
    with pytest.raises(VerifierUnreadable) as error:
        store.secret_status(SECRET_KEY)
    message = str(error.value)
    assert message.startswith(f"The secret key verifier of the store at {store.root} ({VERIFIER_NAME}) is unreadable")
    assert message.endswith(f"To repair it, delete that {VERIFIER_NAME} file, then run amplitude-sync, or "
                            "amplitude-load with the project's secret key in AMPLITUDE_SECRET_KEY.")
    with pytest.raises(AuthenticationError, match="is unreadable"):
        check_connection(API_KEY, SECRET_KEY, base_url=HOST, cache_dir=str(tmp_path), offline=True)
    with pytest.raises(Exception, match="is unreadable .* To repair it, delete that secret.verifier file"):
        offline_count(str(tmp_path), SECRET_KEY)
    # the repair the message gives
    (store.root / VERIFIER_NAME).unlink()
    store.remember_secret(SECRET_KEY)
    assert offline_count(str(tmp_path), SECRET_KEY) == expected_count(dataset)


def test_load_requires_the_secret_or_the_operators_flag(tmp_path, dataset, monkeypatch, capsys) -> None:
    monkeypatch.delenv("AMPLITUDE_SECRET_KEY", raising=False)
    arguments = [str(dataset.zip_path), "--api-key", API_KEY, "--cache-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as refused:
        load_main(arguments)
    assert refused.value.code == 2
    assert "the project's secret key is needed in $AMPLITUDE_SECRET_KEY" in capsys.readouterr().err
    assert not (tmp_path / HourStore(tmp_path, HOST, API_KEY).project / VERIFIER_NAME).exists()

    monkeypatch.setenv("AMPLITUDE_SECRET_KEY", SECRET_KEY)
    with pytest.raises(SystemExit):
        load_main([*arguments, "--open-to-any-secret"])
    assert "give either $AMPLITUDE_SECRET_KEY or --open-to-any-secret, not both" in capsys.readouterr().err

    assert load_main(arguments) == 0
    assert offline_count(str(tmp_path), SECRET_KEY) == expected_count(dataset)
    with pytest.raises(Exception, match="does not match"):
        offline_count(str(tmp_path), "another secret")


def test_open_to_any_secret_is_the_operators_explicit_choice(tmp_path, dataset, capsys) -> None:
    load = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "amplitude-load"), str(dataset.zip_path), "--api-key",
         API_KEY, "--cache-dir", str(tmp_path), "--open-to-any-secret"],
        env={k: v for k, v in os.environ.items() if k != "AMPLITUDE_SECRET_KEY"},
        capture_output=True, text=True, timeout=300, check=False)
    assert load.returncode == 0, load.stderr
    assert load.stdout.rstrip().endswith("(open to any secret key)")
    for secret in ("anything", SECRET_KEY):
        assert offline_count(str(tmp_path), secret) == expected_count(dataset)
    assert check_connection(API_KEY, "anything", base_url=HOST, cache_dir=str(tmp_path), offline=True).startswith(
        "offline store with upload hours")
