"""What a query may answer from: the download budget's message, and the offline check of the stored span.

A query never answers from part of its range. Online with a ``download_budget_s`` (the web process), it fails
once the budget ran out, keeping every complete hour it downloaded, and says how to finish; offline, a range
reaching beyond what the store holds fails naming the stored span.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..export.client import REGION_BASE_URLS, AmplitudeError
from ..export.loader import DownloadBudgetExceeded
from ..store.hour_store import HourStore


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


def check_offline_span(store: HourStore, first: datetime, last: datetime, before: timedelta, after: timedelta,
                       query_range: str) -> None:
    """Offline: refuse a range that reaches beyond the store's stored span, naming the range the query asked for
    (``query_range``). The hours read ``before`` the range (clock skew, the look-back of user sessions) and
    ``after`` it (late uploads, session length) may stay outside it. A store holding none of the range keeps its
    own error."""
    span = store.stored_span()
    if span is None or last < span[0] or first > span[1]:
        return
    core_first = first + before
    core_last = last - after
    if core_first <= core_last and (core_first < span[0] or core_last > span[1]):
        raise AmplitudeError(
            f"This connection is offline and its store holds upload hours {_hour(span[0])} to {_hour(span[1])} "
            f"UTC only, but this query asks for {query_range}, which needs upload hours {_hour(core_first)} to "
            f"{_hour(core_last)}: it is not answered "
            "from the stored part. Narrow the time range to the stored span, or load the missing hours "
            "(amplitude-load, or amplitude-sync on a connection that is not offline)."
        )
