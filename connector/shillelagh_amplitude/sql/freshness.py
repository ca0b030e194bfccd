"""What a query may answer from: the download budget's message, and the offline check of the stored span.

A query never answers from part of its range. Online with a ``download_budget_s`` (the web process), it fails
once the budget ran out, keeping every complete hour it downloaded, and says how to finish; offline, a range
reaching beyond what the store holds fails naming the stored span, and hours missing inside it are named.
"""

from __future__ import annotations

from datetime import datetime

from ..export.client import REGION_BASE_URLS, AmplitudeError
from ..export.loader import DownloadBudgetExceeded
from ..hours import contiguous_runs, format_hour
from ..store.hour_store import HourStore
from ..store.location import FileEntry


def _hour(value: datetime) -> str:
    return f"{value:%Y-%m-%dT%H:00}"


def sync_command(first: datetime, last: datetime, base_url: str) -> str:
    """The ``amplitude-sync`` command filling ``first..last`` of this connection's project (keys from the
    environment, never on the command line)."""
    command = f"amplitude-sync --start {_hour(first)} --end {_hour(last)}"
    region = next((name for name, url in REGION_BASE_URLS.items() if url == base_url), None)
    if region is None:
        command += f" --base-url {base_url}"
    elif region != "us":
        command += f" --region {region}"
    return command


def budget_message(exc: DownloadBudgetExceeded, budget_s: float, base_url: str) -> str:
    """Stored/needed hours, that the background sync fills them, and the exact command to fill them now."""
    return (
        f"Amplitude data for this query is not all downloaded yet: {exc.stored} of the {exc.wanted} upload hours "
        f"it needs ({_hour(exc.first)} to {_hour(exc.last)} UTC) are stored, and this connection's download "
        f"budget of {budget_s:g} s ran out{f' {exc.waiting_for}' if exc.waiting_for else ''}. "
        "No partial answer is given. The background sync is filling the store: run the query again in a few "
        "minutes (each try continues where the last one stopped), or fill the range now with: "
        f"{sync_command(exc.first, exc.last, base_url)}"
    )


def _runs(hours: list[datetime], shown: int = 3) -> str:
    """Runs of consecutive hours, the first ``shown`` of them: ``2026-03-02T05:00 to 2026-03-02T07:00, …``."""
    runs = contiguous_runs(hours)
    text = ", ".join(_hour(a) if a == b else f"{_hour(a)} to {_hour(b)}" for a, b in runs[:shown])
    return text + (f" and {len(runs) - shown} more" if len(runs) > shown else "")


def check_offline(store: HourStore, stored: list[tuple[datetime, FileEntry | None]], core_first: datetime,
                  core_last: datetime, query_range: str) -> None:
    """Offline: refuse a query the store cannot answer whole, naming the range it asked for (``query_range``).
    ``stored``: each upload hour the query reads, with its stored file or None (fresh hours however old: nothing
    refreshes them offline); ``core_first..core_last``: those of the queried range itself, without the padding for
    clock skew, late uploads, session length and the look-back of user sessions.

    Refused: a store holding none of the hours; a core range reaching beyond the stored span; hours of the core
    range missing inside it. Only padding may be missing."""
    if not stored:
        return
    if all(entry is None for _, entry in stored):
        raise AmplitudeError(
            f"This connection is offline and its store holds none of the upload hours {format_hour(stored[0][0])}.."
            f"{format_hour(stored[-1][0])} that this query ({query_range}) needs; load them with amplitude-load or "
            "amplitude-sync."
        )
    if core_first > core_last:
        return
    span = store.stored_span()
    if span is not None and (core_first < span[0] or core_last > span[1]):
        raise AmplitudeError(
            f"This connection is offline and its store holds upload hours {_hour(span[0])} to {_hour(span[1])} "
            f"UTC only, but this query asks for {query_range}, which needs upload hours {_hour(core_first)} to "
            f"{_hour(core_last)}: it is not answered "
            "from the stored part. Narrow the time range to the stored span, or load the missing hours "
            "(amplitude-load, or amplitude-sync on a connection that is not offline)."
        )
    gaps = [hour for hour, entry in stored if entry is None and core_first <= hour <= core_last]
    if gaps:
        raise AmplitudeError(
            f"This connection is offline and its store is missing {len(gaps)} of the upload hours "
            f"{_hour(core_first)} to {_hour(core_last)} UTC that this query ({query_range}) needs: {_runs(gaps)} "
            "UTC. It is not answered from the stored part. Load the missing hours (amplitude-load --start … --end … "
            "records the hours without events as stored; or amplitude-sync on a connection that is not offline), "
            "or narrow the time range."
        )
