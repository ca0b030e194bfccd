"""The ``amplitude://`` SQLAlchemy dialect: where adapter kwargs come from, safety, reflection, SQL."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import ArgumentError

from shillelagh_amplitude.sql.dialect import TABLES, AmplitudeDialect, coerce, url_kwargs

from .conftest import API_KEY, SECRET_KEY, sql_connection


def test_entry_points_installed() -> None:
    """``amplitude://`` resolves through SQLAlchemy's entry point (``pip install -e .`` registers it)."""
    (dialect,) = entry_points(group="sqlalchemy.dialects", name="amplitude")
    assert dialect.load() is AmplitudeDialect
    (spec,) = entry_points(group="superset.db_engine_specs", name="amplitude")
    assert spec.value == "shillelagh_amplitude.superset.engine_spec:AmplitudeEngineSpec"


def connect_args(url: str, **kwargs: object) -> dict:
    """What the dialect hands to shillelagh's ``connect()`` for a URL and dialect kwargs."""
    dialect = AmplitudeDialect(**kwargs)
    return dialect.create_connect_args(make_url(url))[1]


def test_download_budget_from_kwargs_and_url_query() -> None:
    assert connect_args("amplitude://", download_budget_s="20")["adapter_kwargs"]["amplitude"] == {
        "download_budget_s": 20.0}
    assert connect_args("amplitude://?download_budget_s=7.5", download_budget_s=20)["adapter_kwargs"][
        "amplitude"] == {"download_budget_s": 7.5}


def test_only_the_safe_amplitude_adapter_in_memory() -> None:
    args = connect_args("amplitude://")
    assert (args["path"], args["adapters"], args["safe"]) == (":memory:", ["amplitude"], True)
    assert args["adapter_kwargs"] == {"amplitude": {}}


def test_kwargs_url_credentials_and_query_in_order_of_precedence() -> None:
    args = connect_args(
        "amplitude://url-key:url-secret@?region=eu&offline=true&window_hours=6",
        api_key="kw-key",
        secret_key="kw-secret",
        region="us",
        late_hours="12",
        cache_dir="/tmp/store",
    )
    assert args["adapter_kwargs"]["amplitude"] == {
        "api_key": "url-key",
        "secret_key": "url-secret",
        "region": "eu",
        "offline": True,
        "window_hours": 6,
        "late_hours": 12,
        "cache_dir": "/tmp/store",
    }


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [("offline", "TRUE", True), ("offline", "0", False), ("offline", False, False), ("default_days", "7", 7),
     ("download_budget_s", "20", 20.0), ("download_budget_s", 2.5, 2.5)],
)
def test_coerce_strings_from_urls_and_environment(name: str, value: object, expected: object) -> None:
    assert coerce(name, value) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("amplitude://?regoin=eu", "Unknown Amplitude connection parameter 'regoin'"),
        ("amplitude://?window_hours=many", "must be an integer"),
        ("amplitude://?offline=maybe", "must be true or false"),
        ("amplitude://?download_budget_s=soon", "must be a number of seconds"),
        ("amplitude://?download_budget_s=0", "must be positive"),
        ("amplitude://analytics.eu.amplitude.com", "take no host"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ArgumentError, match=message):
        url_kwargs(make_url(url))


def test_connect_args_cannot_load_other_adapters_or_unsafe_mode(loaded_cache) -> None:
    engine = create_engine(
        "amplitude://",
        api_key=API_KEY,
        secret_key=SECRET_KEY,
        cache_dir=str(loaded_cache),
        offline=True,
        connect_args={"adapters": ["csvfile"], "safe": False, "path": "/tmp/x.db"},
    )
    raw = engine.raw_connection().dbapi_connection
    assert ([adapter.__name__ for adapter in raw._adapters], raw.safe) == (["AmplitudeAPI"], True)
    with engine.connect() as connection, pytest.raises(Exception, match="Unsupported table"):
        connection.execute(text('SELECT * FROM "/etc/passwd"'))


def test_tables_listed_and_reflected_without_querying(loaded_cache) -> None:
    engine = create_engine("amplitude://", api_key=API_KEY, cache_dir=str(loaded_cache), offline=True)
    inspector = inspect(engine)
    assert inspector.get_table_names() == list(TABLES)
    assert inspector.get_view_names() == []
    assert inspector.has_table("amplitude_sessions") and not inspector.has_table("users")
    columns = {c["name"]: str(c["type"]) for c in inspector.get_columns("amplitude_sessions")}
    assert columns["session_start"] == "TIMESTAMP"
    assert columns["length_s"] == "REAL"
    assert columns["event_count"] == "INTEGER"
    assert columns["length_bucket"] == "TEXT"
    assert inspector.get_pk_constraint("amplitude_sessions")["constrained_columns"] == []
    assert inspector.get_foreign_keys("amplitude_sessions") == inspector.get_indexes("amplitude_sessions") == []


def test_sql_through_the_dialect_matches_the_adapter(loaded_cache) -> None:
    sql = "SELECT COUNT(*), median(length_s), percentile(length_s, 95) FROM amplitude_sessions"
    bounded = f"{sql} WHERE session_start >= '2026-03-01 00:00:00' AND session_start < '2026-03-05 00:00:00'"
    engine = create_engine(
        "amplitude://?offline=true", api_key=API_KEY, secret_key=SECRET_KEY, cache_dir=str(loaded_cache)
    )
    with engine.connect() as connection:
        through_dialect = connection.execute(text(bounded)).fetchall()
    direct = sql_connection(cache_dir=str(loaded_cache), offline=True).cursor().execute(bounded).fetchall()
    assert through_dialect == direct
    assert through_dialect[0][0] > 0
