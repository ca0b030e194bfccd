"""Superset configuration for the Amplitude connector (``SUPERSET_CONFIG_PATH`` points here).

Everything comes from the environment, so one file serves the local demo (SQLite metadata DB and file
caches under ``$SUPERSET_HOME``, default ``<repo>/var``) and docker compose (PostgreSQL, Redis, Celery):

- ``SUPERSET_SECRET_KEY`` (else a random key generated once into ``$SUPERSET_HOME/secret_key``);
- ``SUPERSET_DATABASE_URI`` (else ``sqlite:///$SUPERSET_HOME/superset.db``), ``REDIS_URL`` (optional);
- ``AMPLITUDE_API_KEY``, ``AMPLITUDE_SECRET_KEY``, ``AMPLITUDE_REGION`` (or ``AMPLITUDE_BASE_URL``: a proxy,
  the local emulator), ``AMPLITUDE_OFFLINE``, ``AMPLITUDE_DEFAULT_DAYS`` (the window read when a query has no
  time predicate): the project of every ``amplitude://`` connection that names no API key itself (the bundled
  one); ``AMPLITUDE_CACHE_DIR``: the hour store of all connections (default ``$SUPERSET_HOME/amplitude``);
- ``AMPLITUDE_DOWNLOAD_BUDGET_S`` (default 20; ``0``: unlimited): the longest a web request's query may spend
  downloading from Amplitude before it fails with a clear message (Celery workers are not limited);
- ``AMPLITUDE_SYNC_INTERVAL_S`` (default 900): how often Celery beat runs the background sync (with Celery);
  queries then leave the newest hours to it (the connections' ``sync_interval_s``);
- ``AMPLITUDE_ALLOWED_BASE_URLS`` (comma-separated; or the list of that name in this file): the Export API hosts
  a connection's ``base_url`` may name besides the regions' (``http://127.0.0.1:*``: every port of a host).
- ``AMPLITUDE_LAKE`` (a folder or object storage URI, optional): the lake the background sync publishes the
  environment's project to after each run; ``AMPLITUDE_LAKES`` below maps other connections (by database name)
  to theirs. A connection never chooses where the server writes: its own ``lake`` setting is dropped.
- ``AMPLITUDE_LAKE_SPARK`` (``hive://HOST:PORT/SCHEMA``, optional): the Spark Thrift Server serving
  ``AMPLITUDE_LAKE``, whose tables the background sync refreshes after each publish; ``AMPLITUDE_LAKES_SPARK``
  below maps the other lakes' servers (by database name). Never taken from a connection.
- ``SUPERSET_ENABLE_TEMPLATE_PROCESSING`` (``true``/``false``, default false): Superset's template processing
  (Jinja in SQL), which only the lake dashboards built with ``--template-processing`` need (their "Sessions that
  contain event" filter); the ``amplitude://`` dashboard needs none.

Superset's security defaults are kept (``PREVENT_UNSAFE_DB_CONNECTIONS``, Talisman, CSRF).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from sqlalchemy.engine.url import URL

from shillelagh_amplitude.sql.destination import allow_base_urls, destination
from shillelagh_amplitude.sql.secret_binding import bind
from shillelagh_amplitude.superset.explore import register as prefill_time_column
from shillelagh_amplitude.superset.help_link import register as retarget_help_link
from shillelagh_amplitude.superset.logs import install as one_line_user_errors
from shillelagh_amplitude.superset.secret_store import register as bind_stored_secrets
from shillelagh_amplitude.superset.task_binding import resolve_sql_lab_task

# A user's SQL mistake is logged as one line, without a traceback; real faults keep theirs.
one_line_user_errors()

HOME = Path(os.environ.get("SUPERSET_HOME") or Path(__file__).resolve().parents[1] / "var")
HOME.mkdir(parents=True, exist_ok=True)
DATA_DIR = str(HOME)


def _secret_key() -> str:
    """``SUPERSET_SECRET_KEY``, else a key generated once and kept (0600) beside the metadata DB."""
    if key := os.environ.get("SUPERSET_SECRET_KEY"):
        return key
    path = HOME / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


SECRET_KEY = _secret_key()


def _seconds(variable: str, default: float, unlimited: bool = False) -> float | None:
    """A number of seconds from the environment (``0``/``none``/``unlimited``: None when ``unlimited`` allows);
    anything else stops Superset's start with a message naming the variable."""
    text = (os.environ.get(variable) or str(default)).strip().lower()
    if unlimited and text in ("0", "none", "unlimited"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        allowed = " (0, none or unlimited: no limit)" if unlimited else ""
        raise ValueError(f"{variable} must be a positive number of seconds{allowed}, not {text!r}")
    return value


def _switch(variable: str) -> bool:
    """An on/off setting from the environment (``true``/``1``/``yes``/``on`` or ``false``/``0``/``no``/``off``;
    unset: off); anything else stops Superset's start with a message naming the variable."""
    text = (os.environ.get(variable) or "false").strip().lower()
    if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(f"{variable} must be true or false, not {text!r}")
    return text in ("1", "true", "yes", "on")


SQLALCHEMY_DATABASE_URI = os.environ.get("SUPERSET_DATABASE_URI") or f"sqlite:///{HOME / 'superset.db'}"

CACHE_DEFAULT_TIMEOUT = int(os.environ.get("SUPERSET_CACHE_TIMEOUT", "3600"))
REDIS_URL = os.environ.get("REDIS_URL")


def _cache(prefix: str) -> dict[str, Any]:
    """Redis when ``REDIS_URL`` is set (shared by web and workers), else files under ``$SUPERSET_HOME``."""
    if REDIS_URL:
        return {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": REDIS_URL, "CACHE_KEY_PREFIX": f"superset_{prefix}_"}
    return {"CACHE_TYPE": "FileSystemCache", "CACHE_DIR": str(HOME / "cache" / prefix)}


CACHE_CONFIG = _cache("metadata")
# Chart data: without it every dashboard load would re-read the hour store (or Amplitude).
DATA_CACHE_CONFIG = _cache("data")

AMPLITUDE_SYNC_INTERVAL_S = _seconds("AMPLITUDE_SYNC_INTERVAL_S", 15 * 60)

if REDIS_URL:
    from datetime import timedelta

    import redis
    from cachelib.redis import RedisCache

    class CeleryConfig:
        """Celery workers (async SQL Lab, cache warm-up, the Amplitude background sync) on Redis."""

        broker_url = REDIS_URL
        result_backend = REDIS_URL
        imports = ("superset.sql_lab", "superset.tasks.scheduler", "superset.tasks.cache",
                   "shillelagh_amplitude.superset.tasks")
        worker_prefetch_multiplier = 1
        task_acks_late = False
        # Exactly one beat process runs this schedule (compose's superset-worker-beat).
        beat_schedule = {
            "amplitude-sync": {
                "task": "amplitude.sync_stores",
                "schedule": timedelta(seconds=AMPLITUDE_SYNC_INTERVAL_S),
                "options": {"expires": AMPLITUDE_SYNC_INTERVAL_S},  # a missed run is not queued twice
            },
        }

    CELERY_CONFIG = CeleryConfig
    RESULTS_BACKEND = RedisCache(host=redis.from_url(REDIS_URL), key_prefix="superset_results_")


#: Export API hosts a connection's base_url may name besides the regions' (added to $AMPLITUDE_ALLOWED_BASE_URLS's);
#: the environment's project's own AMPLITUDE_BASE_URL is allowed too.
AMPLITUDE_ALLOWED_BASE_URLS: list[str] = []


def FLASK_APP_MUTATOR(app: Any) -> None:  # noqa: N802 - Superset's name
    """A new chart on an Amplitude dataset starts with session_start (the dataset's time column) on its X axis;
    the connection form's help link leads to the README's "In Superset" section; every save binds a connection's
    secret to its destination; the operator's allow-list of base URLs is installed; SQL Lab's Celery task is
    resolved before the first request (SQL Lab's first queries at once in a threaded worker could race to it)."""
    resolve_sql_lab_task()
    prefill_time_column(app)
    retarget_help_link(app)
    bind_stored_secrets()
    allow_base_urls([*app.config.get("AMPLITUDE_ALLOWED_BASE_URLS", []), os.environ.get("AMPLITUDE_BASE_URL", "")])


# Dataset creation would otherwise scan a time column with no time bound (a full export download).
DATASET_AUTO_DETECT_DATETIME_FORMATS = False
PREVENT_UNSAFE_DB_CONNECTIONS = True
# Template processing is off unless the operator turns it on (Superset's default): the amplitude:// dashboard needs
# no Jinja; the lake dashboards built with --template-processing need it for "Sessions that contain event".
FEATURE_FLAGS = {"ENABLE_TEMPLATE_PROCESSING": _switch("SUPERSET_ENABLE_TEMPLATE_PROCESSING")}

# The lake through Spark: Superset 6.1 resolves hive:// (PyHive, the Spark Thrift Server) to its Hive engine spec,
# whose time grains Spark refuses (weeks: pattern letter 'u') or returns as text (days). Spark's own date_trunc
# grains (those of Superset's SparkEngineSpec) replace them for hive:// connections.
TIME_GRAIN_ADDON_EXPRESSIONS = {
    "hive": {
        "PT1S": "date_trunc('second', {col})",
        "PT1M": "date_trunc('minute', {col})",
        "PT1H": "date_trunc('hour', {col})",
        "P1D": "date_trunc('day', {col})",
        "P1W": "date_trunc('week', {col})",
        "P1M": "date_trunc('month', {col})",
        "P3M": "date_trunc('quarter', {col})",
        "P1Y": "date_trunc('year', {col})",
        "P1W/1970-01-03T00:00:00Z": "date_trunc('week', {col} + interval '1 day') + interval '5 days'",
        "1969-12-28T00:00:00Z/P1W": "date_trunc('week', {col} + interval '1 day') - interval '1 day'",
    }
}

# The environment's project, by adapter kwarg: for connections that name no API key of their own.
AMPLITUDE_ENV = {
    "api_key": "AMPLITUDE_API_KEY",
    "secret_key": "AMPLITUDE_SECRET_KEY",
    "region": "AMPLITUDE_REGION",
    "base_url": "AMPLITUDE_BASE_URL",
    "offline": "AMPLITUDE_OFFLINE",
    "default_days": "AMPLITUDE_DEFAULT_DAYS",
}
AMPLITUDE_CACHE_DIR = os.environ.get("AMPLITUDE_CACHE_DIR") or str(HOME / "amplitude")
AMPLITUDE_DOWNLOAD_BUDGET_S = _seconds("AMPLITUDE_DOWNLOAD_BUDGET_S", 20, unlimited=True)
#: The lake of the environment's project, and of other ``amplitude://`` databases by name (the operator's choice).
AMPLITUDE_LAKE = os.environ.get("AMPLITUDE_LAKE") or None
AMPLITUDE_LAKES: dict[str, str] = {}
#: The Spark Thrift Server serving each lake (hive://HOST:PORT/SCHEMA), refreshed after each publish: the
#: environment's lake's, and by database name those of ``AMPLITUDE_LAKES``.
AMPLITUDE_LAKE_SPARK = os.environ.get("AMPLITUDE_LAKE_SPARK") or None
AMPLITUDE_LAKES_SPARK: dict[str, str] = {}


def _in_celery_task() -> bool:
    """True in a Celery worker's task (async SQL Lab, the sync): no web timeout to stay under there."""
    try:
        from celery import current_task
    except ImportError:
        return False
    return bool(current_task and current_task.request.id)


def DB_CONNECTION_MUTATOR(  # noqa: N802 - Superset's name
    uri: URL, params: dict[str, Any], username: str | None, security_manager: Any, source: Any
) -> tuple[URL, dict[str, Any]]:
    """Give ``amplitude://`` connections the operator's hour store, the web process's download budget, and the
    environment's project (and its lake, ``AMPLITUDE_LAKE``) to those that name none (no API key in their URI or
    secure extra); what a connection sets itself wins, except where the server writes (store, lake), and the
    environment's secret is bound to the environment's destination (a connection pointing elsewhere does not get
    it)."""
    if uri.get_backend_name() == "amplitude":
        if not uri.username and "api_key" not in params:
            for kwarg, variable in AMPLITUDE_ENV.items():
                if value := os.environ.get(variable):
                    params.setdefault(kwarg, value)
            secret = os.environ.get("AMPLITUDE_SECRET_KEY")
            if secret and params.get("secret_key") == secret and params.get("api_key"):
                home = destination(os.environ.get("AMPLITUDE_REGION"), os.environ.get("AMPLITUDE_BASE_URL"))
                params["secret_key"] = bind(secret, params["api_key"], home)
        params["cache_dir"] = AMPLITUDE_CACHE_DIR
        params.pop("lake", None)  # where the server writes is the operator's choice, never a connection's
        environment_key = os.environ.get("AMPLITUDE_API_KEY")
        if AMPLITUDE_LAKE and environment_key and not uri.username and params.get("api_key") == environment_key:
            params["lake"] = AMPLITUDE_LAKE  # the environment's project
        if AMPLITUDE_DOWNLOAD_BUDGET_S and not _in_celery_task():
            params.setdefault("download_budget_s", AMPLITUDE_DOWNLOAD_BUDGET_S)
        if REDIS_URL:  # Celery beat runs the background sync: queries leave it the newest hours (README)
            params.setdefault("sync_interval_s", AMPLITUDE_SYNC_INTERVAL_S)
    elif uri.get_backend_name() == "shillelagh":
        # a generic shillelagh connection could give the Amplitude adapter settings of its own (cache_dir)
        for where in (params, params.get("connect_args") or {}):
            if "amplitude" in (where.get("adapter_kwargs") or {}):
                raise ValueError("Amplitude is reached through amplitude:// connections only, not shillelagh ones.")
    return uri, params
