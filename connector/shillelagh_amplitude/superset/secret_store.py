"""Superset keeps an Amplitude connection's secret key bound to its API key and destination.

Superset shows a stored secret masked and, when a form, an API call or an import leaves the mask in place, keeps the
stored secret whatever else changed: the URL's password (``Database.set_sqlalchemy_uri``) and the secure extra's
``secret_key`` (``unmask_encrypted_extra``, or ``reveal_sensitive`` on import). So before every insert and update
of an ``amplitude://`` row (SQLAlchemy mapper events on ``Database``: every save path goes through them):

- a secret typed now (bare) is stored bound to the connection's API key and destination
  (:func:`~shillelagh_amplitude.sql.secret_binding.bind`);
- a stored (bound) secret whose connection now names another API key or destination stops the save with
  :class:`SecretMustBeRetyped`, asking for the secret again; going back to where it was bound is fine;
- a bare secret stored before this check existed counts as bound to the values it was stored with.

Whatever path a secret takes to a request (a saved connection, a connection test, the background sync), the
dialect checks the binding again before using it (:func:`~shillelagh_amplitude.sql.dialect.usable_settings`).
"""

from __future__ import annotations

import json
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import event, inspect
from sqlalchemy.engine.url import make_url
from sqlalchemy.orm import Mapper
from superset.commands.database.exceptions import DatabaseInvalidError

from ..export.client import AmplitudeError
from ..sql.destination import destination
from ..sql.secret_binding import bind, bound_to, changed_message, is_bound, saved_for

BACKEND = "amplitude"


class SecretMustBeRetyped(DatabaseInvalidError):
    """A save that would carry a stored secret to another API key or destination (HTTP 422, with the reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, [ValidationError([reason], field_name="password")])
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


def _extra(encrypted_extra: str | None) -> dict[str, Any]:
    try:
        value = json.loads(encrypted_extra or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _settings(sqlalchemy_uri: str | None, encrypted_extra: str | None) -> tuple[str | None, str] | None:
    """(API key, destination) the dialect would use for a stored row, or None for another backend."""
    try:
        url = make_url(sqlalchemy_uri or "")
    except Exception:  # noqa: BLE001 - not a URL: not an Amplitude connection
        return None
    if url.get_backend_name() != BACKEND:
        return None
    extra, query = _extra(encrypted_extra), dict(url.query)
    try:
        where = destination(query.get("region") or extra.get("region"), query.get("base_url") or extra.get("base_url"))
    except AmplitudeError as exc:
        raise SecretMustBeRetyped(str(exc)) from None
    return url.username or extra.get("api_key"), where


def _committed(target: Any, name: str) -> Any:
    """An attribute's value as last loaded from the metadata DB (the current one for a new row)."""
    history = inspect(target).attrs[name].history
    return history.deleted[0] if history.deleted else getattr(target, name)


def _bound(value: str, carried: bool, now: tuple[str | None, str], before: tuple[str | None, str] | None) -> str:
    """The value to store for one secret slot, or :class:`SecretMustBeRetyped`. ``carried``: the value is the one
    already stored (kept from a mask); ``before``: the stored row's (API key, destination), None if unusable."""
    api_key, where = now
    if is_bound(value):
        if api_key and bound_to(value, api_key, where):
            return value
        raise SecretMustBeRetyped(changed_message(saved_for(value), where))
    if carried and before != now:  # a bare secret stored before binding existed, carried to another place
        raise SecretMustBeRetyped(changed_message(before[1] if before else "other settings", where))
    return bind(value, api_key, where) if api_key else value


def bind_secrets(mapper: Any, connection: Any, target: Any) -> None:
    """Before insert/update of a ``Database`` row: bind typed secrets, refuse carried ones that changed place."""
    if type(target).__name__ != "Database" or type(target).__module__ != "superset.models.core":
        return
    extra = _extra(target.encrypted_extra)
    extra_secret = extra.get("secret_key") if isinstance(extra.get("secret_key"), str) else None
    if not target.password and not extra_secret:
        return
    now = _settings(target.sqlalchemy_uri, target.encrypted_extra)
    if now is None:
        return
    stored = not (inspect(target).transient or inspect(target).pending)
    before = None
    if stored:
        try:
            before = _settings(_committed(target, "sqlalchemy_uri"), _committed(target, "encrypted_extra"))
        except SecretMustBeRetyped:  # stored settings no request could use
            before = None
    if target.password:
        carried = stored and target.password == _committed(target, "password")
        target.password = _bound(target.password, carried, now, before)
    if extra_secret:
        carried = stored and extra_secret == _extra(_committed(target, "encrypted_extra")).get("secret_key")
        bound = _bound(extra_secret, carried, now, before)
        if bound != extra_secret:
            target.encrypted_extra = json.dumps({**extra, "secret_key": bound})


def register() -> None:
    """Install the mapper events once per process. They listen on every mapper (and keep to ``Database`` rows), so
    they can be installed before Superset's models are imported: wherever the engine spec loads."""
    for name in ("before_insert", "before_update"):
        if not event.contains(Mapper, name, bind_secrets):
            event.listen(Mapper, name, bind_secrets)
