"""A query's download budget is the query's: a join of both tables gets one budget, and a decode still running at
the deadline is not waited for."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from shillelagh.exceptions import ProgrammingError

from shillelagh_amplitude.export import loader
from shillelagh_amplitude.export.loader import DownloadBudgetExceeded, fill
from shillelagh_amplitude.hours import hour_range
from shillelagh_amplitude.sql.connection import AmplitudeConnection
from shillelagh_amplitude.store.hour_store import HourStore

from .conftest import API_KEY, SECRET_KEY, client_for

BUDGET_S = 5.0
#: Each scan of the join below needs one Export API request, answered after this long: one scan fits the budget,
#: two do not.
DELAY_S = 0.6 * BUDGET_S


def test_a_join_of_both_tables_gets_one_budget(tmp_path, emulator):
    connection = AmplitudeConnection({"api_key": API_KEY, "secret_key": SECRET_KEY, "base_url": emulator.base_url,
                                      "cache_dir": str(tmp_path), "late_hours": 0, "window_hours": 48,
                                      "download_budget_s": BUDGET_S})
    emulator.add_fault("slow", times=10, delay=DELAY_S)
    sql = ("SELECT count(*) FROM amplitude_events AS e "
           "JOIN amplitude_sessions AS s ON s.amplitude_id = e.amplitude_id "
           "WHERE e.event_time >= '2026-03-02T05:00' AND e.event_time < '2026-03-02T06:00' "
           "AND s.session_start >= '2026-03-03T05:00' AND s.session_start < '2026-03-03T06:00'")
    started = time.monotonic()
    with pytest.raises(ProgrammingError, match=f"download budget of {BUDGET_S:g} s ran out"):
        connection.cursor().execute(sql)
    assert BUDGET_S <= time.monotonic() - started < BUDGET_S + 2
    # the events' hours were downloaded; the sessions' request was dropped at the deadline, unanswered
    assert [(r.start, r.end) for r in emulator.requests] == [("20260302T04", "20260302T05")]

    # the next query has a budget of its own: the events' hours are stored, the sessions' request fits in it
    assert connection.cursor().execute(sql).fetchall()[0][0] >= 0
    assert [(r.start, r.end) for r in emulator.requests][-1] == ("20260303T04", "20260304T05")
    connection.close()


def test_a_decode_running_at_the_deadline_is_not_waited_for(tmp_path, emulator, monkeypatch):
    """Decoding takes longer than the budget: the fill ends at its deadline, publishing nothing partial."""
    real_stage = loader.stage_archive

    def slow_stage(*args):
        time.sleep(4)
        return real_stage(*args)

    monkeypatch.setattr(loader, "stage_archive", slow_stage)
    monkeypatch.setattr(loader, "_executor", lambda windows, workers: (ThreadPoolExecutor(2), 2))
    store = HourStore(tmp_path, emulator.base_url, API_KEY)
    hours = list(hour_range(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 4, 23, tzinfo=UTC)))
    now = datetime.now(UTC)
    started = time.monotonic()
    with pytest.raises(DownloadBudgetExceeded) as error:
        fill(store, client_for(emulator), hours[0], hours[-1], now=now, deadline=started + 1.5)
    assert 1.5 <= time.monotonic() - started < 3.5  # each decode takes 4 s
    assert error.value.stored == 0 and store.missing(hours, now) == hours
    time.sleep(4.5)  # the abandoned decodes end in the background: still nothing published
    assert store.missing(hours, now) == hours
