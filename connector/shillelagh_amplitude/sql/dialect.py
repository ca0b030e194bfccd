"""SQLAlchemy dialect ``amplitude://``: shillelagh (APSW) with only the safe ``amplitude`` adapter loaded.

Adapter kwargs come from three places, later ones winning:

1. dialect kwargs: ``create_engine("amplitude://", api_key=..., secret_key=...)``; Superset passes its
   encrypted extra (``{"api_key": ..., "secret_key": ...}``) and ``DB_CONNECTION_MUTATOR`` params this way;
2. the URL's user and password: ``amplitude://<api_key>:<secret_key>@`` (Superset keeps the password
   encrypted and masked, the dynamic "Connect a database" form writes this form);
3. the URL query: ``amplitude://?region=eu&offline=true``.

Connections are :class:`~.connection.AmplitudeConnection`: the columnar cursor, integers as integers.

Values may be strings (URL, environment) and are converted by name. Only ``amplitude_events``,
``amplitude_sessions`` and ``amplitude_user_sessions`` exist, so they are listed without asking the adapter.

The merged settings are checked before any use (:func:`usable_settings`): a ``base_url`` must be allowed by the
operator (:mod:`.destination`) and a stored secret must be bound to where the requests go (:mod:`.secret_binding`).
"""

from __future__ import annotations

from typing import Any

from shillelagh.backends.apsw.dialects.base import APSWDialect
from sqlalchemy.engine import Connection
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import ArgumentError

from ..export.client import AmplitudeError
from ..settings import BOOLEAN_SETTINGS, FLOAT_SETTINGS, INTEGER_SETTINGS, SETTINGS
from .connection import AmplitudeConnection
from .destination import check_base_url, destination
from .secret_binding import is_bound, usable_secret

ADAPTER = "amplitude"
TABLES = ("amplitude_events", "amplitude_sessions", "amplitude_user_sessions")


TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def coerce(name: str, value: Any) -> Any:
    """Convert one adapter kwarg (possibly a string from a URL or the environment) to its type."""
    if name not in SETTINGS:
        raise ArgumentError(f"Unknown Amplitude connection parameter {name!r}; known: {', '.join(SETTINGS)}")
    if name in INTEGER_SETTINGS:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ArgumentError(f"Amplitude parameter {name!r} must be an integer, got {value!r}") from None
    if name in BOOLEAN_SETTINGS and not isinstance(value, bool):
        text = str(value).strip().lower()
        if text not in TRUE | FALSE:
            raise ArgumentError(f"Amplitude parameter {name!r} must be true or false, got {value!r}")
        return text in TRUE
    if name in FLOAT_SETTINGS:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ArgumentError(f"Amplitude parameter {name!r} must be a number of seconds, got {value!r}") from None
        if number <= 0:
            raise ArgumentError(f"Amplitude parameter {name!r} must be positive, got {value!r}")
        return number
    return value


def url_kwargs(url: URL) -> dict[str, Any]:
    """Adapter kwargs carried by an ``amplitude://`` URL (user, password, query)."""
    if url.host or url.port or url.database:
        raise ArgumentError("amplitude:// URLs take no host, port or path: use ?region=us|eu or ?base_url=...")
    kwargs = {name: coerce(name, value) for name, value in url.query.items()}
    if url.username:
        kwargs["api_key"] = url.username
    if url.password:
        kwargs["secret_key"] = url.password
    return kwargs


def usable_settings(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The adapter kwargs as they may be used: the ``base_url`` allowed by the operator, a bound secret checked
    against the API key and destination and replaced by the bare secret; else :class:`ArgumentError`."""
    try:
        check_base_url(kwargs.get("base_url"))
        if is_bound(secret := kwargs.get("secret_key")):
            where = destination(kwargs.get("region"), kwargs.get("base_url"))
            kwargs = {**kwargs, "secret_key": usable_secret(secret, kwargs.get("api_key"), where)}
    except AmplitudeError as exc:
        raise ArgumentError(str(exc)) from None
    return kwargs


class AmplitudeDialect(APSWDialect):
    """``amplitude://``: one in-memory APSW database with the safe Amplitude adapter and nothing else."""

    name = "amplitude"
    driver = "apsw"
    supports_statement_cache = True

    def __init__(  # one keyword per adapter kwarg: create_engine() only forwards declared names
        self,
        api_key: str | None = None,
        secret_key: str | None = None,
        region: str | None = None,
        base_url: str | None = None,
        cache_dir: str | None = None,
        window_hours: int | str | None = None,
        late_hours: int | str | None = None,
        default_days: int | str | None = None,
        offline: bool | str | None = None,
        download_budget_s: float | str | None = None,
        sync_interval_s: float | str | None = None,
        lake: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        given = {
            "api_key": api_key,
            "secret_key": secret_key,
            "region": region,
            "base_url": base_url,
            "cache_dir": cache_dir,
            "window_hours": window_hours,
            "late_hours": late_hours,
            "default_days": default_days,
            "offline": offline,
            "download_budget_s": download_budget_s,
            "sync_interval_s": sync_interval_s,
            "lake": lake,
        }
        self.amplitude_kwargs = {name: coerce(name, value) for name, value in given.items() if value is not None}

    def create_connect_args(self, url: URL) -> tuple[tuple[()], dict[str, Any]]:
        """Always ``:memory:``, safe mode and the single ``amplitude`` adapter, with :func:`usable_settings`."""
        return (), {
            "path": ":memory:",
            "adapters": [ADAPTER],
            "adapter_kwargs": {ADAPTER: usable_settings({**self.amplitude_kwargs, **url_kwargs(url)})},
            "safe": True,
            "isolation_level": self.isolation_level,
        }

    def connect(self, *cargs: Any, **cparams: Any) -> AmplitudeConnection:
        """The columnar connection; ``connect_args`` may replace adapter kwargs, nothing else (no path, no adapters,
        no unsafe mode)."""
        adapter_kwargs = cparams.get("adapter_kwargs", {}).get(ADAPTER, {})
        return AmplitudeConnection(adapter_kwargs, cparams.get("isolation_level"))

    def get_table_names(
        self, connection: Connection, schema: str | None = None, sqlite_include_internal: bool = False, **kw: Any
    ) -> list[str]:
        """The adapter's tables, without instantiating it."""
        return list(TABLES)

    def has_table(self, connection: Connection, table_name: str, schema: str | None = None, **kw: Any) -> bool:
        """True for the adapter's tables."""
        return table_name in TABLES

    def get_view_names(
        self, connection: Connection, schema: str | None = None, sqlite_include_internal: bool = False, **kw: Any
    ) -> list[str]:
        """No views."""
        return []

    def get_pk_constraint(
        self, connection: Connection, table_name: str, schema: str | None = None, **kw: Any
    ) -> dict[str, Any]:
        """Virtual tables have no primary key."""
        return {"constrained_columns": [], "name": None}

    def get_foreign_keys(
        self, connection: Connection, table_name: str, schema: str | None = None, **kw: Any
    ) -> list[dict[str, Any]]:
        """Virtual tables have no constraints or indexes."""
        return []

    get_indexes = get_foreign_keys
    get_unique_constraints = get_foreign_keys
    get_check_constraints = get_foreign_keys
