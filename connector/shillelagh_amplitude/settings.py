"""The settings of an Amplitude connection by name and type: one list for every layer that takes them (the
dialect converts them, the sync and the connection test refuse names that are not among them)."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import AmplitudeError

STRING_SETTINGS = ("api_key", "secret_key", "region", "base_url", "cache_dir", "lake")
INTEGER_SETTINGS = ("window_hours", "late_hours", "default_days")
BOOLEAN_SETTINGS = ("offline",)
FLOAT_SETTINGS = ("download_budget_s", "sync_interval_s")
SETTINGS = STRING_SETTINGS + INTEGER_SETTINGS + BOOLEAN_SETTINGS + FLOAT_SETTINGS


def refuse_unknown(names: Iterable[str]) -> None:
    """An :class:`AmplitudeError` naming every unknown setting among ``names`` and the accepted ones (a typo such
    as ``late_hour`` is never silently dropped)."""
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        raise AmplitudeError(f"Unknown Amplitude connection setting{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(repr, unknown))}; the accepted settings are {', '.join(SETTINGS)}.")
