"""The connection test: one small Export API request, or, offline, a look at the store the connection points to.

Superset's "Test connection" and "Connect" run it (``AmplitudeEngineSpec.mutate_db_for_connection_test``), so
a wrong key, an unknown region or host and an unreachable network show up at once, as distinct errors, within
about ``CONNECT_TIMEOUT_S + READ_TIMEOUT_S`` seconds: no retries, short timeouts, and the answer's body (an
hour of the project's events) is never read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..hours import format_hour, newest_exportable_hour
from ..settings import refuse_unknown
from ..store.hour_store import HourStore
from .client import MISSING_KEYS, AmplitudeError, AuthenticationError, ExportClient, Window, resolve_base_url

CONNECT_TIMEOUT_S = 4.0
READ_TIMEOUT_S = 6.0
OFFLINE_MISMATCH = "The secret key does not match the one this project's local store was filled with."
OFFLINE_UNVERIFIED = (
    "The secret key does not match: this project's local store holds no secret key verifier, so offline no secret "
    "key is accepted. Load the store with amplitude-load with the project's secret key in AMPLITUDE_SECRET_KEY (or "
    "--open-to-any-secret for sample data), or fill it once online (amplitude-sync)."
)


def check_connection(
    api_key: str | None = None,
    secret_key: str | None = None,
    *,
    region: str = "us",
    base_url: str | None = None,
    cache_dir: str | None = None,
    offline: bool = False,
    now: datetime | None = None,
    **other_settings: Any,
) -> str:
    """What was checked, or an :class:`AmplitudeError` saying what is wrong (never containing the secret).

    ``other_settings``: the connection's settings that do not matter here; an unknown name (a typo) is refused."""
    refuse_unknown(other_settings)
    host = resolve_base_url(region, base_url)
    if not api_key or not secret_key:
        raise AuthenticationError(MISSING_KEYS)
    if offline:
        store = HourStore(cache_dir, host, api_key)
        span = store.stored_span()
        if span is None:
            raise AmplitudeError(
                "This connection is offline and its store holds no upload hours for this API key yet: load them "
                "with amplitude-load or amplitude-sync."
            )
        known = store.secret_status(secret_key)
        if not known:
            raise AuthenticationError(OFFLINE_UNVERIFIED if known is None else OFFLINE_MISMATCH)
        return f"offline store with upload hours {format_hour(span[0])}..{format_hour(span[1])}"
    client = ExportClient(api_key, secret_key, base_url=host, retries=0, connect_timeout=CONNECT_TIMEOUT_S,
                          timeout=READ_TIMEOUT_S, body_attempts=1)
    hour = newest_exportable_hour(now or datetime.now(UTC))
    client.answer(Window(hour, hour))
    return f"Amplitude at {host} accepted the keys (upload hour {format_hour(hour)})"


__all__ = ["AmplitudeError", "check_connection"]
