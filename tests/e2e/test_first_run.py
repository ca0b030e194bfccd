"""A new user's first run, on the demo as ``make demo`` serves it: the README's SQL as written, the errors a
typo gives, and the path through the UI (dashboard, clear filters, a 7-day range, a chart built in Explore,
the connection form), asserting on what a person sees against numbers computed here from the raw sample."""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from shillelagh_amplitude.superset.help_page import LINK as HELP_LINK

from ..expected import Session, percentile, sessions_from_records, user_property
from ..helpers import read_zip
from .browser import click, open_connect_form, pick_option, polling_wait
from .conftest import OUTPUT, REPO, SAMPLE_DAYS, Superset, default_range, whole_days_end

pytestmark = pytest.mark.e2e

SLUG = "session-length"
LOAD_TIMEOUT_S = 120
#: What the connection form's fields show before they are touched.
FORM_PLACEHOLDERS = {
    "username": "the Amplitude project's API key",
    "password": "the Amplitude project's secret key",
    "query_input": "region=eu for an EU project (empty for US)",
    "database_name": "e.g. Amplitude (production)",
}
SQL_BLOCK = re.compile(r"```sql\n(.*?)```", re.S)


@pytest.fixture(scope="module")
def sessions(superset: Superset) -> list[Session]:
    """Sessions computed in plain Python from the demo sample's raw records."""
    return sessions_from_records(read_zip(superset.layout.sample))


def today() -> datetime:
    """Midnight UTC: where SQLite's ``date('now')`` and Superset's "Last week" end."""
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def started(sessions: list[Session], start: datetime, end: datetime | None = None) -> list[Session]:
    return [s for s in sessions if start <= s.start and (end is None or s.start < end)]


def sql_lab(superset: Superset, api, sql: str):
    database = next(d for d in api.get(f"{superset.base}/api/v1/database/").json()["result"]
                    if d["database_name"] == "Amplitude")
    return api.post(f"{superset.base}/api/v1/sqllab/execute/", json={
        "database_id": database["id"], "sql": sql, "runAsync": False, "queryLimit": 1000,
    })


def sessions_dataset_id(superset: Superset, api) -> int:
    """The id of the bundle's ``sessions`` dataset."""
    datasets = api.get(f"{superset.base}/api/v1/dataset/?q=(page_size:100)").json()["result"]
    return next(d["id"] for d in datasets if d["table_name"] == "sessions")


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


def test_default_range_holds_whole_days_only(superset: Superset, api, sessions: list[Session]) -> None:
    """Per day, over the dashboard's default range: thirty whole UTC days, each as the raw sample counts it (the
    first day too: it is not cut at the hour the sample was made)."""
    written, first, end = default_range()
    response = api.post(f"{superset.base}/api/v1/chart/data", json={
        "datasource": {"id": sessions_dataset_id(superset, api), "type": "table"}, "force": True,
        "queries": [{"metrics": ["sessions"], "row_limit": 100, "orderby": [["session_start", True]],
                     "columns": [{"columnType": "BASE_AXIS", "sqlExpression": "session_start", "label": "session_start",
                                  "expressionType": "SQL", "timeGrain": "P1D"}],
                     "filters": [{"col": "session_start", "op": "TEMPORAL_RANGE", "val": written}]}],
        "result_format": "json", "result_type": "full",
    })
    rows = {datetime.fromtimestamp(r["session_start"] / 1000, UTC): r["sessions"]
            for r in response.json()["result"][0]["data"]}
    expected = Counter(s.start.replace(hour=0, minute=0, second=0, microsecond=0)
                       for s in started(sessions, first, end))
    assert rows == dict(expected)
    assert sorted(rows) == [end - timedelta(days=n) for n in range(30, 0, -1)]
    # the sample's sessions start in the first hours of its first day, not at the hour the sample was made
    assert min(s.start for s in started(sessions, min(rows))) < min(rows) + timedelta(hours=3)


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
    dataset_id = sessions_dataset_id(superset, api)
    written, first, end = default_range()
    window = started(sessions, first, end)
    unknown = sum(1 for s in window if s.first.get("country") is None)
    assert unknown > 0  # the sample has sessions whose country Amplitude could not tell
    response = api.post(f"{superset.base}/api/v1/chart/data", json={
        "datasource": {"id": dataset_id, "type": "table"}, "force": True,
        "queries": [{"metrics": ["sessions"], "columns": ["country"], "row_limit": 100,
                     "filters": [{"col": "session_start", "op": "TEMPORAL_RANGE", "val": written}]}],
        "result_format": "json", "result_type": "full",
    })
    rows = {row["country"]: row["sessions"] for row in response.json()["result"][0]["data"]}
    assert None not in rows and rows["(none)"] == unknown
    values = api.get(f"{superset.base}/api/v1/datasource/table/{dataset_id}/column/country/values/").json()
    assert "(none)" in values["result"] and None not in values["result"]


def kpi(browser, title: str) -> str:
    """The number a KPI tile shows (the line after its title and its filter badge)."""
    from selenium.webdriver.common.by import By

    for holder in browser.find_elements(By.CSS_SELECTOR, '[data-test="dashboard-component-chart-holder"]'):
        lines = holder.text.splitlines()
        if lines and lines[0] == title:
            return next((line for line in lines[1:] if re.fullmatch(r"[\d,.%]+", line) and line != "1"), "")
    return ""


def wait_for_kpis(browser, expected: dict[str, str]) -> None:
    """Wait until the KPI tiles show the expected numbers; fail showing what they show."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(browser, LOAD_TIMEOUT_S, poll_frequency=0.5).until(
            lambda d: {title: kpi(d, title) for title in expected} == expected
        )
    except TimeoutException:
        pytest.fail(f"KPIs show {({title: kpi(browser, title) for title in expected})}, expected {expected}")


def shown(window: list[Session]) -> dict[str, str]:
    """What the KPI tiles must show for these sessions, formatted as the metrics' d3 formats do."""
    lengths = [s.length_s for s in window]
    return {
        "Sessions": f"{len(window):,}",
        "Median session length": f"{percentile(lengths, 50):,.1f}",
        "p95 session length": f"{percentile(lengths, 95):,.1f}",
    }


def test_first_run_path_in_the_browser(superset: Superset, api, browser, sessions: list[Session]) -> None:
    """Dashboard (default: 30 whole days), "Clear all" (really no filter), a 7-day range, a chart built in
    Explore and saved, then the connection form: each step checked on what the page shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    wait = polling_wait(browser, LOAD_TIMEOUT_S)
    _, first, last = default_range()

    # 1. the dashboard opens on the 30 whole UTC days the export holds, shown as a closed range
    browser.get(f"{superset.base}/superset/dashboard/{SLUG}/")
    trigger = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-test="time-range-trigger"]'))[0]
    assert trigger.text == f"{first:%Y-%m-%d} ≤ col < {last:%Y-%m-%d}"
    wait_for_kpis(browser, shown(started(sessions, first, last)))
    assert "(none)" in browser.find_element(By.TAG_NAME, "body").text  # the plan / country charts
    browser.save_screenshot(str(OUTPUT / "first-run-dashboard.png"))

    # 2. "Clear all": no time range at all (the connection's default window: the whole demo sample)
    browser.find_element(By.CSS_SELECTOR, '[data-test="filter-bar__clear-button"]').click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '[data-test="time-range-trigger"]').text == "No filter")
    browser.find_element(By.CSS_SELECTOR, '[data-test="filter-bar__apply-button"]').click()
    window_start = whole_days_end() - timedelta(days=SAMPLE_DAYS)  # the default window: whole days
    wait_for_kpis(browser, shown(started(sessions, window_start)))

    # 3. a 7-day range, picked as a person does: Range type "Last", "Last week"
    trigger.click()
    click(browser, '.ant-popover [data-test="Range type"]')
    click(browser, ".ant-select-dropdown .ant-select-item-option", text="Last")
    click(browser, ".ant-popover label", text="Last week")
    week = (today() - timedelta(days=7), today())
    popover = browser.find_element(By.CSS_SELECTOR, ".ant-popover")
    wait.until(lambda _: f"{week[0]:%Y-%m-%d} ≤ col < {week[1]:%Y-%m-%d}" in popover.text)  # "Actual time range"
    click(browser, '[data-test="date-filter-control__apply-button"]')
    click(browser, '[data-test="filter-bar__apply-button"]')
    wait_for_kpis(browser, shown(started(sessions, *week)))
    browser.save_screenshot(str(OUTPUT / "first-run-7-days.png"))

    # 4. a new time-series chart in Explore: X axis pre-filled, a saved metric, "Plan" under Simple; saved
    dataset_id = sessions_dataset_id(superset, api)
    browser.get(f"{superset.base}/explore/?datasource_type=table&datasource_id={dataset_id}"
                "&viz_type=echarts_timeseries_line")
    x_axis = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-test="x_axis"]'))[0]
    wait.until(lambda _: "Session start (UTC)" in x_axis.text)
    click(browser, xpath='//*[@data-test="metrics"]//*[contains(text(), "Drop columns/metrics")]')
    click(browser, '.ant-popover [data-test="Select saved metrics"]')
    pick_option(browser, "Median length", "Median length (s)")
    click(browser, '[data-test="AdhocMetricEdit#save"]')
    click(browser, xpath='//*[@data-test="groupby"]//*[contains(text(), "Drop columns here")]')
    click(browser, ".ant-popover .ant-tabs-tab", text="Simple")
    click(browser, ".ant-popover .ant-tabs-tabpane-active .ant-select")
    pick_option(browser, "Plan", "Plan")
    click(browser, '[data-test="ColumnEdit#save"]')
    wait.until(lambda d: "Plan" in d.find_element(By.CSS_SELECTOR, '[data-test="groupby"]').text)
    click(browser, '[data-test="query-save-button"]')
    name = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-test="new-chart-name"]'))[0]
    name.send_keys(Keys.CONTROL, "a")
    name.send_keys("Median length per day by plan")
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '[data-test="btn-modal-save"]').is_enabled())
    click(browser, '[data-test="btn-modal-save"]')

    def saved() -> dict | None:
        charts = api.get(f"{superset.base}/api/v1/chart/?q=(page_size:100)").json()["result"]
        return next((c for c in charts if c["slice_name"] == "Median length per day by plan"), None)

    chart = wait.until(lambda _: saved())
    data = api.get(f"{superset.base}/api/v1/chart/{chart['id']}/data/?force=true").json()["result"][0]
    days: dict[tuple[datetime, str], list[float]] = {}
    for s in started(sessions, window_start):
        day = s.start.replace(hour=0, minute=0, second=0, microsecond=0)
        days.setdefault((day, user_property(s, "plan") or "(none)"), []).append(s.length_s)
    assert data["colnames"] == ["session_start", *sorted({plan for _, plan in days})]  # one series per plan
    rows = {(datetime.fromtimestamp(row["session_start"] / 1000, UTC), plan): median
            for row in data["data"] for plan, median in row.items() if plan != "session_start" and median is not None}
    assert rows.keys() == days.keys()
    for key, median in rows.items():
        assert median == pytest.approx(percentile(days[key], 50)), key

    # 5. the connection form says what goes where, and its default name is free
    open_connect_form(browser, superset.base)
    display_name = browser.find_element(By.CSS_SELECTOR, ".ant-modal input[name=database_name]")
    assert display_name.get_attribute("value") == "Amplitude Export API"
    # every field shows what goes in it before it is touched (superset_config's FLASK_APP_MUTATOR)
    for name, placeholder in FORM_PLACEHOLDERS.items():
        field = browser.find_element(By.CSS_SELECTOR, f".ant-modal [name={name}]")
        wait.until(lambda _, f=field, p=placeholder: f.get_attribute("placeholder") == p)
    # through the fields, leaving them empty: the form asks the engine spec what they need
    click(browser, ".ant-modal input[name=username]")
    click(browser, ".ant-modal input[name=password]")
    click(browser, ".ant-modal input[name=database_name]")
    modal = browser.find_element(By.CSS_SELECTOR, ".ant-modal")
    wait.until(lambda _: "Username: the Amplitude project's API key" in modal.text)
    text = modal.text
    assert "Password: the Amplitude project's secret key" in text
    assert "region=eu in Additional parameters" in text
    # "Need help? Learn more about connecting to Amplitude Export API." leads to the README's connection
    # section, served by this Superset (no network needed), not to Superset's missing docs page
    help_link = browser.find_element(By.PARTIAL_LINK_TEXT, "connecting to Amplitude Export API")
    wait.until(lambda _: help_link.get_attribute("href") == f"{superset.base}{HELP_LINK}")
    browser.save_screenshot(str(OUTPUT / "first-run-connection-form.png"))
    browser.get(help_link.get_attribute("href"))
    heading = wait.until(lambda d: d.find_elements(By.ID, "in-superset"))[0]
    assert heading.text == "In Superset"
    assert "Username = the project's API key" in browser.find_element(By.TAG_NAME, "body").text


@pytest.mark.parametrize(("sql", "message"), [
    ("SELECT count(*) FROM amplitude_sessions WHERE session_start >= '2024-01-01' AND session_start < '2026-01-01'",
     "The time range 2024-01-01 to 2026-01-01 is over 365 days; narrow it."),
    ("SELECT count(*) FROM amplitude_sessions WHERE session_start >= '2026-13-45'",
     "a time bound must be ISO 8601 text such as"),
    ("SELECT count(*) FROM amplitude_sessions WHERE session_start >= '2020-01-01' AND session_start < '2020-01-02'",
     "This connection is offline"),
    ("SELECT count(*) FROM amplitude_session", "amplitude_session"),
], ids=["range-over-365-days", "bad-date-literal", "offline-range", "unknown-table"])
def test_a_refusal_is_one_error_and_one_log_line(superset: Superset, api, sql: str, message: str) -> None:
    """Each refusal the README lists: the user reads why, the server log gets one line and no traceback."""
    log_before = superset.layout.log.read_text()
    response = sql_lab(superset, api, sql)
    (error,) = response.json()["errors"]
    assert message in error["message"]
    time.sleep(0.5)
    new = superset.layout.log.read_text()[len(log_before):]
    assert "Traceback" not in new, new[-3000:]
    assert len([line for line in new.splitlines() if message in line]) == 1, new[-3000:]


def test_sql_lab_keeps_a_querys_own_limit(superset: Superset, api) -> None:
    """apache/superset#40070 worked around (engine spec's FETCH_MANY): "LIMIT 3" gives 3 rows, and a query
    without a LIMIT stops at SQL Lab's row limit."""
    sql = "SELECT session_id FROM amplitude_sessions WHERE session_start >= date('now', '-30 days')"
    response = sql_lab(superset, api, f"{sql} LIMIT 3")
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["data"]) == 3
    database = next(d for d in api.get(f"{superset.base}/api/v1/database/").json()["result"]
                    if d["database_name"] == "Amplitude")
    limited = api.post(f"{superset.base}/api/v1/sqllab/execute/", json={
        "database_id": database["id"], "sql": sql, "runAsync": False, "queryLimit": 10})
    assert len(limited.json()["data"]) == 10
