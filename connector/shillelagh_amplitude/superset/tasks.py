"""Superset's Celery task keeping the hour store of every Amplitude connection current.

``superset_config`` registers it when Celery is configured (``REDIS_URL``): the module is in
``CeleryConfig.imports`` and ``CeleryConfig.beat_schedule`` runs it every ``AMPLITUDE_SYNC_INTERVAL_S`` seconds
(15 minutes by default) on one beat. Each run covers every ``amplitude://`` database in Superset's metadata, with
its own decrypted credentials and the operator's settings (``DB_CONNECTION_MUTATOR``), plus the environment's
project; each store once, offline connections skipped. Interactive queries then find their hours stored.

A project with a ``lake`` setting is then published to it: the partitions the synced upload hours touch, those
whose hours changed, then the lake's status, *Data complete through* on the lake engines
(:func:`..lake.publish.publish`). In Superset the setting is the operator's only: ``AMPLITUDE_LAKE`` for the
environment's project (given by ``DB_CONNECTION_MUTATOR``, which drops a connection's own), ``AMPLITUDE_LAKES``
by database name for the others. After publishing, the Spark Thrift Server serving that lake, if the operator
names one, is refreshed (:func:`..lake.refresh.refresh_spark`): ``AMPLITUDE_LAKE_SPARK`` for ``AMPLITUDE_LAKE``,
``AMPLITUDE_LAKES_SPARK`` by database name for the others (never from a connection's settings). A server that
cannot be refreshed is a warning: the sync succeeds, and the next run refreshes it again.

``python -m shillelagh_amplitude.superset.tasks enable-async`` turns on asynchronous SQL Lab execution (on the
Celery workers) for the Amplitude connections, as docker compose's init does.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from superset.extensions import celery_app

from ..export.client import AmplitudeError, AmplitudeFault, resolve_base_url
from ..export.sync import SyncResult, sync_project
from ..lake.publish import PublishReport, publish
from ..lake.refresh import SparkRefreshError, refresh_spark
from ..sql.dialect import ADAPTER, coerce
from ..store.hour_store import HourStore

_logger = logging.getLogger(__name__)

TASK_NAME = "amplitude.sync_stores"


def _settings_of(database: Any) -> dict[str, Any]:
    """The adapter kwargs a database's queries would use (decrypted secret, environment, operator's store)."""
    with database.get_sqla_engine() as engine:
        return engine.dialect.create_connect_args(engine.url)[1]["adapter_kwargs"][ADAPTER]


def _environment_project(config: dict) -> dict[str, Any]:
    variables = config.get("AMPLITUDE_ENV", {})
    settings = {kwarg: coerce(kwarg, os.environ[name]) for kwarg, name in variables.items() if os.environ.get(name)}
    if config.get("AMPLITUDE_CACHE_DIR"):
        settings["cache_dir"] = config["AMPLITUDE_CACHE_DIR"]
    return settings


def _with_lake(settings: dict[str, Any], config: dict, name: str | None) -> dict[str, Any]:
    """``settings`` with the lake the operator mapped the database to (``AMPLITUDE_LAKES``; the environment's
    project, ``name`` None: ``AMPLITUDE_LAKE``), if any."""
    lake = config.get("AMPLITUDE_LAKE") if name is None else config.get("AMPLITUDE_LAKES", {}).get(name)
    return {**settings, "lake": lake} if lake else settings


def _spark_of(lake: str | None, config: dict, name: str | None) -> str | None:
    """The Spark Thrift Server (``hive://`` URI) the operator says serves ``lake``: ``AMPLITUDE_LAKES_SPARK`` by
    database name, else ``AMPLITUDE_LAKE_SPARK`` for the environment's lake ``AMPLITUDE_LAKE``; None without a
    lake."""
    if not lake:
        return None
    if name is not None and name in config.get("AMPLITUDE_LAKES_SPARK", {}):
        return config["AMPLITUDE_LAKES_SPARK"][name]
    return config.get("AMPLITUDE_LAKE_SPARK") if lake == config.get("AMPLITUDE_LAKE") else None


def amplitude_projects() -> list[tuple[str, dict[str, Any], str | None]]:
    """(name, settings, Spark Thrift Server of its lake) of every project to keep current, one per hour store."""
    from flask import current_app
    from superset import db
    from superset.models.core import Database

    candidates = [(database.database_name, database) for database in db.session.query(Database).all()
                  if database.backend == "amplitude"]
    projects: dict[tuple, tuple[str, dict[str, Any], str | None]] = {}
    for name, source in [*candidates, ("the environment's project", None)]:
        try:
            settings = _settings_of(source) if source is not None else _environment_project(current_app.config)
            settings = _with_lake(settings, current_app.config, name if source is not None else None)
            if settings.get("offline") or not settings.get("api_key"):
                continue
            spark = _spark_of(settings.get("lake"), current_app.config, name if source is not None else None)
            key = (settings.get("cache_dir"), resolve_base_url(settings.get("region", "us"), settings.get("base_url")),
                   settings["api_key"], settings.get("lake"), spark)
        except Exception as exc:  # noqa: BLE001 - one bad connection must not stop the others
            _logger.warning("Amplitude sync: skipping %s: %s", name, exc)
            continue
        projects.setdefault(key, (name, settings, spark))
    return list(projects.values())


@celery_app.task(name=TASK_NAME)
def sync_amplitude_stores() -> list[dict[str, Any]]:
    """Bring every Amplitude project's store current; one result per project (no credentials in it).

    A project that fails is logged (Amplitude's refusals in one line, any other fault with its traceback) and the
    next one is synced all the same. Spark not refreshed after a publish is a warning (``spark_error``), not a
    failure."""
    results = []
    for name, settings, spark in amplitude_projects():
        try:
            result = sync_project(**settings)
            published = _publish_lake(result, settings)
            refreshed = _refresh_spark(spark) if published else None
        except Exception as exc:  # noqa: BLE001 - one project's fault must not stop the others
            if isinstance(exc, AmplitudeError) and not isinstance(exc, AmplitudeFault):  # a refusal: one line
                _logger.warning("Amplitude sync of %s failed: %s", name, exc)
            else:  # Amplitude, the network or the store failing, or a bug: with its traceback
                _logger.exception("Amplitude sync of %s failed unexpectedly", name)
            error = str(exc) if isinstance(exc, AmplitudeError) else f"{type(exc).__name__}: {exc}"
            results.append({"database": name, "ok": False, "error": error})
            continue
        results.append({"database": name, "ok": True, "summary": result.summary(),
                        "hours_downloaded": result.hours_downloaded, "requests": result.requests,
                        **({"lake": published.summary(), "partitions_written": len(published.written)}
                           if published else {}), **(refreshed or {})})
    return results


def _publish_lake(result: SyncResult, settings: dict[str, Any]) -> PublishReport | None:
    """Publish the project's lake, if it has one, for the upload hours the sync covered."""
    if not settings.get("lake"):
        return None
    store = HourStore(settings.get("cache_dir"), result.host, settings["api_key"])
    report = publish(store, settings["lake"], late_hours=settings.get("late_hours", 48), first=result.first,
                     last=result.last)
    _logger.info("amplitude sync: %s", report.summary())
    return report


def _refresh_spark(spark: str | None) -> dict[str, str] | None:
    """Refresh the lake's Spark Thrift Server, if there is one: ``{"spark": summary}``, or ``{"spark_error": …}``
    logged as a warning (the lake is published; the next run refreshes again)."""
    if not spark:
        return None
    try:
        summary = refresh_spark(spark)
    except SparkRefreshError as exc:
        _logger.warning("amplitude sync: %s", exc)
        return {"spark_error": str(exc)}
    _logger.info("amplitude sync: %s", summary)
    return {"spark": summary}


def enable_async_sql_lab() -> tuple[list[str], list[str]]:
    """Turn on "Asynchronous query execution" for every Amplitude database, each saved on its own: the names of
    those turned on, and of those whose save was refused, with the reason (a connection whose stored secret must
    be typed again stops only its own change)."""
    from superset import db
    from superset.models.core import Database

    changed, refused = [], []
    ids = [database.id for database in db.session.query(Database).all() if database.backend == "amplitude"]
    for database_id in ids:
        database = db.session.get(Database, database_id)
        name = database.database_name
        database.allow_run_async = True
        try:
            db.session.commit()
        except Exception as exc:  # noqa: BLE001 - any refused save: reported, the others go on
            db.session.rollback()
            refused.append(f"{name} ({exc})")
        else:
            changed.append(name)
    return changed, refused


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["enable-async"]:
        print("usage: python -m shillelagh_amplitude.superset.tasks enable-async", file=sys.stderr)
        return 2
    from superset.app import create_app

    with create_app().app_context():
        names, refused = enable_async_sql_lab()
    print(f"asynchronous SQL Lab on for: {', '.join(names) or 'no Amplitude database'}")
    if refused:
        print(f"not changed (fix these connections in Superset): {'; '.join(refused)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
