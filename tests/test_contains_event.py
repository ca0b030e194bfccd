"""``contains_event``: the sessions' filter column that Superset's native filter uses without Jinja.

``contains_event IN (...)`` keeps the sessions in which one of the listed event types happened, counted once each,
through ``amplitude://``'s cursor (an ``IN`` list reaches it all at once). Expected numbers come from sessions
computed from the raw records.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from shillelagh_amplitude.sql.sessions import contains_any, json_string_lists

from .conftest import API_KEY, SECRET_KEY, sql_connection
from .expected import sessions_from_records
from .helpers import amplitude_sql

DAY = "session_start >= '2026-03-02' AND session_start < '2026-03-03'"
START, END = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)
# What Superset writes for a virtual dataset: the dataset's SQL as a subquery, the filters outside it.
VIRTUAL = ("SELECT count(*), avg(length_s) FROM (SELECT session_start, length_s, contains_event, "
           "COALESCE(platform, '(none)') AS platform FROM amplitude_sessions) AS virtual_table WHERE {where}")


@pytest.fixture
def fast(loaded_cache):
    """Run SQL through amplitude:// on the loaded store."""
    return amplitude_sql(loaded_cache, API_KEY, SECRET_KEY)


@pytest.fixture(scope="module")
def day_sessions(dataset):
    return [s for s in sessions_from_records(dataset.records) if START <= s.start < END]


def _types_by_frequency(sessions) -> list[str]:
    return [name for name, _ in Counter(t for s in sessions for t in s.event_types).most_common()]


def test_one_event_type_keeps_the_sessions_holding_it(fast, day_sessions) -> None:
    rare = _types_by_frequency(day_sessions)[-1]
    expected = sum(1 for s in day_sessions if rare in s.event_types)
    assert 0 < expected < len(day_sessions)
    assert fast(f"SELECT count(*) FROM amplitude_sessions WHERE {DAY} AND contains_event = '{rare}'") == [(expected,)]
    assert fast(f"SELECT count(*) FROM amplitude_sessions WHERE {DAY} AND contains_event IN ('{rare}')") == [
        (expected,)]


def test_an_in_list_counts_each_session_once(fast, day_sessions) -> None:
    first, second = _types_by_frequency(day_sessions)[:2]
    both = [s for s in day_sessions if first in s.event_types and second in s.event_types]
    assert both  # sessions holding both: counted once, not once per value
    either = [s for s in day_sessions if first in s.event_types or second in s.event_types]
    (count, average), = fast(VIRTUAL.format(where=f"{DAY} AND contains_event IN ('{first}', '{second}')"))
    assert count == len(either)
    assert average == pytest.approx(sum(s.length_s for s in either) / len(either))


def test_it_combines_with_segment_filters(fast, day_sessions) -> None:
    first, second = _types_by_frequency(day_sessions)[1:3]
    web = [s for s in day_sessions if (s.first.get("platform") or "(none)") == "Web"]
    expected = sum(1 for s in web if first in s.event_types or second in s.event_types)
    assert 0 < expected < len(web)
    where = f"{DAY} AND platform = 'Web' AND contains_event IN ('{first}', '{second}')"
    assert fast(VIRTUAL.format(where=where))[0][0] == expected


def test_unknown_event_type_selects_nothing_and_the_column_reads_null(fast, day_sessions) -> None:
    assert fast(f"SELECT count(*) FROM amplitude_sessions WHERE {DAY} AND contains_event IN ('no such event')") == [
        (0,)]
    assert fast(f"SELECT count(*), count(contains_event) FROM amplitude_sessions WHERE {DAY}") == [
        (len(day_sessions), 0)]


def test_generic_path_lists_the_column_as_null(loaded_cache, day_sessions) -> None:
    """Documented: only amplitude:// applies the filter; shillelagh+safe:// serves the column as NULL."""
    cursor = sql_connection(cache_dir=str(loaded_cache), offline=True).cursor()
    assert cursor.execute(f"SELECT count(*), count(contains_event) FROM amplitude_sessions WHERE {DAY}").fetchall() == [
        (len(day_sessions), 0)]


@pytest.mark.parametrize("wanted", [["a"], [","], ['x"'], ["a,b"], ["é s"], ["\\"], ["b", "y"], ['"']])
def test_matching_is_exact_for_awkward_names(wanted: list[str]) -> None:
    lists = [["a", "b"], [","], ['x"', "y"], ["a,b"], [], ["é s", "z"], ["\\", "q"], ["ab"], ['"a"']]
    encoded = json_string_lists(pa.array(lists, pa.list_(pa.string())))
    assert contains_any(encoded, wanted).tolist() == [any(w in names for w in wanted) for names in lists]


def test_two_conditions_on_it_are_one_value_to_sqlite(fast, day_sessions) -> None:
    """Documented: SQLite takes the column as one value per row, so ``= 'a' AND IN ('b')`` is empty."""
    first, second = _types_by_frequency(day_sessions)[:2]
    assert any(first in s.event_types and second in s.event_types for s in day_sessions)
    where = f"{DAY} AND contains_event = '{first}' AND contains_event IN ('{second}')"
    assert fast(f"SELECT count(*) FROM amplitude_sessions WHERE {where}") == [(0,)]
