"""A new user's first run, on the demo as ``make demo`` serves it: the README's SQL as written, the errors a
typo gives, and the path through the UI (dashboard, clear filters, a 7-day range, a chart built in Explore,
the connection form), asserting on what a person sees against numbers computed here from the raw sample."""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from ..expected import Session, percentile, sessions_from_records, user_property
from ..helpers import read_zip
from .conftest import REPO, Superset

pytestmark = pytest.mark.e2e

SLUG = "session-length"
LOAD_TIMEOUT_S = 120
SQL_BLOCK = re.compile(r"```sql\n(.*?)```", re.S)


@pytest.fixture(scope="module")
def sessions(superset: Superset) -> list[Session]:
    """Sessions computed in plain Python from the demo sample's raw records."""
    return sessions_from_records(read_zip(superset.layout.sample))


def today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def started(sessions: list[Session], start: datetime, end: datetime | None = None) -> list[Session]:
    return [s for s in sessions if start <= s.start and (end is None or s.start < end)]


def sql_lab(superset: Superset, api, sql: str):
    database = next(d for d in api.get(f"{superset.base}/api/v1/database/").json()["result"]
                    if d["database_name"] == "Amplitude")
    return api.post(f"{superset.base}/api/v1/sqllab/execute/", json={
        "database_id": database["id"], "sql": sql, "runAsync": False, "queryLimit": 1000,
    })


def readme_statements() -> list[str]:
    """Every statement of every ```sql block of the README, as written."""
    blocks = SQL_BLOCK.findall((REPO / "README.md").read_text())
    return [statement.strip() for block in blocks for statement in block.split(";") if statement.strip()]


def test_readme_sql_runs_on_the_demo_as_written(superset: Superset, api, sessions: list[Session]) -> None:
    statements = readme_statements()
    assert len(statements) >= 2
    results = []
    for statement in statements:
        response = sql_lab(superset, api, statement)
        assert response.status_code == 200, (statement, response.text[:500])
        assert response.json()["data"], statement
        results.append(response.json()["data"])
    by_plan, (contains,) = results[0], results[1]
    week = started(sessions, today() - timedelta(days=7), today())
    expected = Counter(user_property(s, "plan") for s in week)
    assert {row["plan"]: row["sessions"] for row in by_plan} == dict(expected)
    for row in by_plan:
        lengths = [s.length_s for s in week if user_property(s, "plan") == row["plan"]]
        assert row["median_s"] == pytest.approx(percentile(lengths, 50))
        assert row["p95_s"] == pytest.approx(percentile(lengths, 95))
    month = started(sessions, today() - timedelta(days=30))
    assert list(contains.values()) == [sum("feature_used" in s.event_types for s in month)]


def test_a_typo_is_one_error_with_one_prefix_and_one_log_line(superset: Superset, api) -> None:
    log_before = superset.layout.log.read_text()
    response = sql_lab(superset, api, "SELECT lenght_s FROM amplitude_sessions WHERE session_start >= date('now')")
    (error,) = response.json()["errors"]
    assert error["message"] == "no such column: lenght_s"
    assert error["extra"]["engine_name"] == "Amplitude Export API"  # the frontend's title: "... Error"
    time.sleep(0.5)
    new = superset.layout.log.read_text()[len(log_before):]
    lines = [line for line in new.splitlines() if "lenght_s" in line]
    assert lines and "Traceback" not in new, new[-3000:]


def test_dataset_default_time_column_and_segments(superset: Superset, api) -> None:
    datasets = api.get(f"{superset.base}/api/v1/dataset/?q=(page_size:100)").json()["result"]
    assert {"sessions", "event_types", "data_status"} <= {d["table_name"] for d in datasets}
    dataset_id = next(d["id"] for d in datasets if d["table_name"] == "sessions")
    dataset = api.get(f"{superset.base}/api/v1/dataset/{dataset_id}").json()["result"]
    assert dataset["main_dttm_col"] == "session_start"
    columns = {c["column_name"]: c for c in dataset["columns"]}
    for segment in ("plan", "user_type", "company_size", "signup_month", "country", "platform"):
        assert columns[segment]["expression"] in (None, ""), segment  # a plain column: Explore's "Simple" tab
        assert columns[segment]["groupby"], segment


def test_missing_values_are_none_in_charts_and_filters(
    superset: Superset, api, sessions: list[Session]
) -> None:
    """A session without a country is "(none)" in the country chart and in the country filter's values."""
    dataset_id = next(d["id"] for d in api.get(f"{superset.base}/api/v1/dataset/?q=(page_size:100)").json()["result"]
                      if d["table_name"] == "sessions")
    window = started(sessions, today() - timedelta(days=30), today())
    unknown = sum(1 for s in window if s.first.get("country") is None)
    assert unknown > 0  # the sample has sessions whose country Amplitude could not tell
    response = api.post(f"{superset.base}/api/v1/chart/data", json={
        "datasource": {"id": dataset_id, "type": "table"}, "force": True,
        "queries": [{"metrics": ["sessions"], "columns": ["country"], "row_limit": 100,
                     "filters": [{"col": "session_start", "op": "TEMPORAL_RANGE",
                                  "val": 'DATEADD(DATETIME("today"), -30, day) : today'}]}],
        "result_format": "json", "result_type": "full",
    })
    rows = {row["country"]: row["sessions"] for row in response.json()["result"][0]["data"]}
    assert None not in rows and rows["(none)"] == unknown
    values = api.get(f"{superset.base}/api/v1/datasource/table/{dataset_id}/column/country/values/").json()
    assert "(none)" in values["result"] and None not in values["result"]
