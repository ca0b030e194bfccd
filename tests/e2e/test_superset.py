"""Superset 6.1 end to end: import, connection form, every chart's data against independently computed
numbers, SQL Lab percentiles, filters, a wrong secret, and the dashboard in headless Chromium."""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime, timedelta

import pytest

from shillelagh_amplitude.hours import floor_hour
from shillelagh_amplitude.sample.emulator import ExportEmulator
from shillelagh_amplitude.sample.generator import generate_dataset

from ..expected import (
    USER_SESSION_COLUMNS,
    Session,
    kpis,
    percentile,
    sessions_from_records,
    user_property,
    user_sessions,
)
from ..helpers import read_zip
from ..scripts import REPO
from .browser import fill_fields, modal_button, open_connect_form, wait_for_dashboard
from .conftest import OUTPUT, Superset, default_range

pytestmark = pytest.mark.e2e

SLUG = "session-length"
DEFAULT_RANGE = default_range()[0]
CHART_LOAD_TIMEOUT_S = 120
#: The dashboard's charts: one per source file.
CHARTS = len(list((REPO / "dashboards/session_length/charts").glob("*.yaml")))
#: Grouping columns of the charts (they may hold NULL, e.g. an unknown country); every other value is a metric.
DIMENSIONS = {"session_start", "length_bucket", "plan", "user_type", "company_size", "platform", "signup_month",
              "country", "definition"}


@pytest.fixture(scope="module")
def sessions(superset: Superset) -> list[Session]:
    """Sessions computed in plain Python from the generated sample's raw records."""
    return sessions_from_records(read_zip(superset.layout.sample))


@pytest.fixture(scope="module")
def chart_data(superset: Superset, api) -> dict[str, dict]:
    """``GET /api/v1/chart/<id>/data/?force=true`` of every chart of the dashboard, by chart name."""
    charts = api.get(f"{superset.base}/api/v1/dashboard/{SLUG}/charts").json()["result"]
    results, started = {}, time.monotonic()
    for chart in charts:
        response = api.get(f"{superset.base}/api/v1/chart/{chart['id']}/data/?force=true")
        assert response.status_code == 200, (chart["slice_name"], response.text[:500])
        results[chart["slice_name"]] = response.json()["result"][0]
    superset.timings["all_chart_data_forced_s"] = round(time.monotonic() - started, 2)
    superset.timings["charts"] = len(results)
    return results


def amplitude_database(superset: Superset, api) -> dict:
    """The bundle's connection."""
    databases = api.get(f"{superset.base}/api/v1/database/").json()["result"]
    return next(database for database in databases if database["database_name"] == "Amplitude")


def in_range(sessions: list[Session], result: dict) -> list[Session]:
    """The sessions a chart result covers: started in its [from_dttm, to_dttm) (epoch ms); with no time range,
    the adapter's default window (the 30 whole UTC days the export holds, and on: the demo's sample)."""
    start, end = result_range(result)
    return [s for s in sessions if start <= s.start < end]


def result_range(result: dict) -> tuple[datetime, datetime]:
    """A chart result's [from_dttm, to_dttm), or the adapter's default window (open at its end) without one."""
    if result["from_dttm"] is None:
        return default_window()[0], default_window()[1] + timedelta(days=30)
    return (datetime.fromtimestamp(result["from_dttm"] / 1000, UTC),
            datetime.fromtimestamp(result["to_dttm"] / 1000, UTC))


def default_window() -> tuple[datetime, datetime]:
    """The dashboard's default range, computed here: the 30 whole UTC days the export holds."""
    return default_range()[1:]


def value(result: dict) -> float:
    (row,) = result["data"]
    (number,) = row.values()
    return number


def test_import_via_cli(imported) -> None:
    assert imported.returncode == 0, imported.stdout[-2000:] + imported.stderr[-2000:]


def test_import_via_rest_api_twice(superset: Superset, api) -> None:
    for attempt in range(2):
        started = time.monotonic()
        with superset.bundle.open("rb") as handle:
            response = api.post(
                f"{superset.base}/api/v1/dashboard/import/",
                files={"formData": (superset.bundle.name, handle, "application/zip")},
                data={"overwrite": "true", "passwords": "{}"},
            )
        superset.timings[f"import_rest_{attempt + 1}_s"] = round(time.monotonic() - started, 2)
        assert (response.status_code, response.json()) == (200, {"message": "OK"})
    # imported twice, one dashboard (others, e.g. the lake engines' bundles, may have been imported beside it)
    dashboards = api.get(f"{superset.base}/api/v1/dashboard/?q=(page_size:100)").json()["result"]
    assert [d["dashboard_title"] for d in dashboards].count("Session length") == 1


def test_amplitude_is_offered_in_connect_a_database(superset: Superset, api) -> None:
    available = api.get(f"{superset.base}/api/v1/database/available/").json()["databases"]
    (amplitude,) = [engine for engine in available if engine["engine"] == "amplitude"]
    assert amplitude["name"] == "Amplitude Export API"  # also the default display name: not the bundled "Amplitude"
    assert set(amplitude["parameters"]["properties"]) == {"username", "password", "query"}
    ok = api.post(f"{superset.base}/api/v1/database/validate_parameters/", json={
        "engine": "amplitude", "configuration_method": "dynamic_form",
        "parameters": {"username": "key", "password": "secret", "query": {"region": "eu"}},
    })
    assert ok.status_code == 200, ok.text
    missing = api.post(f"{superset.base}/api/v1/database/validate_parameters/", json={
        "engine": "amplitude", "configuration_method": "dynamic_form", "parameters": {"username": "key"},
    })
    assert missing.status_code == 422
    assert "password" in missing.text


def test_tables_time_grains_and_functions(superset: Superset, api) -> None:
    database = amplitude_database(superset, api)
    assert database["backend"] == "amplitude"
    tables = api.get(f"{superset.base}/api/v1/database/{database['id']}/tables/?q=(schema_name:main)").json()
    assert sorted(table["value"] for table in tables["result"]) == [
        "amplitude_events", "amplitude_sessions", "amplitude_user_sessions"]
    functions = api.get(f"{superset.base}/api/v1/database/{database['id']}/function_names/").json()
    assert {"median", "percentile"} <= set(functions["function_names"])
    datasets = api.get(f"{superset.base}/api/v1/dataset/?q=(page_size:100)").json()["result"]
    sessions_dataset = next(d for d in datasets if d["table_name"] == "sessions")
    explore = api.get(
        f"{superset.base}/api/v1/explore/?datasource_id={sessions_dataset['id']}&datasource_type=table"
    ).json()["result"]["dataset"]
    assert {"PT1H", "P1D", "P1W", "P1M"} <= {grain for grain, _ in explore["time_grain_sqla"]}


def test_every_chart_returns_rows(chart_data: dict[str, dict]) -> None:
    assert len(chart_data) == CHARTS > 17
    for name, result in chart_data.items():
        assert (result["status"], result["error"]) == ("success", None), name
        assert result["rowcount"] > 0, name
        metrics = [v for row in result["data"] for k, v in row.items() if k not in DIMENSIONS]
        assert metrics and None not in metrics, name


def test_kpis_equal_the_independent_computation(chart_data: dict[str, dict], sessions: list[Session]) -> None:
    window = in_range(sessions, chart_data["Sessions"])
    count, mean, median, p95 = kpis([s for s in window])
    lengths = [s.length_s for s in window]
    assert value(chart_data["Sessions"]) == count > 1000
    assert value(chart_data["Average session length"]) == pytest.approx(mean)
    assert value(chart_data["Median session length"]) == pytest.approx(median)
    assert value(chart_data["p95 session length"]) == pytest.approx(p95)
    assert value(chart_data["Zero-length sessions"]) == pytest.approx(sum(x == 0 for x in lengths) / count)
    users = len({s.amplitude_id for s in window})
    assert value(chart_data["Sessions per user"]) == pytest.approx(count / users)
    assert value(chart_data["Events per session"]) == pytest.approx(sum(s.event_count for s in window) / count)
    daily = chart_data["Sessions per day"]["data"]
    assert sum(row["sessions"] for row in daily) == count
    buckets = chart_data["Session length distribution"]["data"]
    assert [row["length_bucket"][:2] for row in buckets] == [f"{n}:" for n in range(1, 10)]
    assert sum(row["sessions"] for row in buckets) == count


def test_per_plan_percentiles_equal_the_independent_computation(
    chart_data: dict[str, dict], sessions: list[Session]
) -> None:
    result = chart_data["Session length by plan"]
    by_plan: dict[str, list[float]] = {}
    for session in in_range(sessions, result):
        by_plan.setdefault(user_property(session, "plan") or "(none)", []).append(session.length_s)
    assert {row["plan"] for row in result["data"]} == set(by_plan)
    for row in result["data"]:
        lengths = by_plan[row["plan"]]
        assert row["p50_length_s"] == pytest.approx(percentile(lengths, 50)), row["plan"]
        assert row["p95_length_s"] == pytest.approx(percentile(lengths, 95)), row["plan"]


def test_session_definitions_equal_the_independent_computation(
    superset: Superset, chart_data: dict[str, dict], sessions: list[Session]
) -> None:
    """The "Session definition" section: Amplitude's sessions from the raw records in Python, user sessions at 30
    and 60 minutes from them in DuckDB SQL (tests/expected.py)."""
    result = chart_data["Session length by definition"]
    start, end = result_range(result)
    records = read_zip(superset.layout.sample)
    amplitude = [(s.amplitude_id, s.start, s.length_s, 1, 1) for s in in_range(sessions, result)]
    expected = {"Amplitude session_id": amplitude}
    for gap in (30, 60):
        rows = [dict(zip(USER_SESSION_COLUMNS, row, strict=True)) for row in user_sessions(records, start, end, gap)]
        expected[f"User, {gap}-minute gap"] = [(r["amplitude_id"], r["session_start"], r["length_s"], r["devices"],
                                                r["amplitude_sessions"]) for r in rows]
    assert [row["definition"] for row in result["data"]] == sorted(expected)
    for row in result["data"]:
        lengths = [length for _, _, length, _, _ in expected[row["definition"]]]
        assert row["avg_length_s"] == pytest.approx(sum(lengths) / len(lengths)), row["definition"]
        assert row["p50_length_s"] == pytest.approx(percentile(lengths, 50)), row["definition"]
        assert row["p95_length_s"] == pytest.approx(percentile(lengths, 95)), row["definition"]
    for row in chart_data["Sessions per user per day by definition"]["data"]:
        chosen = expected[row["definition"]]
        user_days = {(user, when.date()) for user, when, _, _, _ in chosen}
        assert row["sessions_per_user_day"] == pytest.approx(len(chosen) / len(user_days)), row["definition"]
    for row in chart_data["Sessions spanning devices or session ids"]["data"]:
        chosen = expected[row["definition"]]
        assert row["multi_device_share"] == pytest.approx(sum(d > 1 for *_, d, _ in chosen) / len(chosen))
        assert row["merged_share"] == pytest.approx(sum(m > 1 for *_, m in chosen) / len(chosen))
    merged = chart_data["Sessions spanning devices or session ids"]["data"][1]["merged_share"]
    assert merged > 0  # the 30-minute gap merges some of Amplitude's sessions in the sample


def test_dashboard_filters_plan_and_contains_event(
    superset: Superset, api, chart_data: dict[str, dict], sessions: list[Session]
) -> None:
    """The filters as the dashboard sends them: a plan, and an event type (the connection applies
    ``contains_event IN (...)``; template processing is off, Superset's default)."""
    datasets = api.get(f"{superset.base}/api/v1/dataset/?q=(page_size:100)").json()["result"]
    dataset_id = next(d["id"] for d in datasets if d["table_name"] == "sessions")
    event = "invite_sent"
    time_filter = {"col": "session_start", "op": "TEMPORAL_RANGE", "val": DEFAULT_RANGE}
    response = api.post(f"{superset.base}/api/v1/chart/data", json={
        "datasource": {"id": dataset_id, "type": "table"},
        "force": True,
        "queries": [{
            "metrics": ["sessions"],
            "columns": [],
            "filters": [
                time_filter,
                {"col": "plan", "op": "IN", "val": ["free"]},
                {"col": "contains_event", "op": "IN", "val": [event]},
            ],
        }],
        "result_format": "json",
        "result_type": "full",
    })
    assert response.status_code == 200, response.text[:500]
    result = response.json()["result"][0]
    assert (result["from_dttm"], result["to_dttm"]) == tuple(int(t.timestamp() * 1000) for t in default_window())
    window = in_range(sessions, result)
    expected = sum(1 for s in window if user_property(s, "plan") == "free" and event in s.event_types)
    assert value(result) == expected > 0
    assert {f["column"] for f in result["applied_filters"]} >= {"plan", "session_start", "contains_event"}
    assert result["rejected_filters"] == []


def test_sql_lab_percentiles(superset: Superset, api, chart_data: dict[str, dict], sessions: list[Session]) -> None:
    database = amplitude_database(superset, api)
    first, last = default_window()
    result = {"from_dttm": first.timestamp() * 1000, "to_dttm": last.timestamp() * 1000}
    start, end = f"{first:%Y-%m-%d %H:%M:%S}", f"{last:%Y-%m-%d %H:%M:%S}"
    sql = (
        "SELECT COUNT(*) AS sessions, median(length_s) AS p50, percentile(length_s, 95) AS p95, "
        "percentile_disc(length_s, 0.9) AS p90_disc FROM amplitude_sessions "
        f"WHERE session_start >= '{start}' AND session_start < '{end}'"
    )
    started = time.monotonic()
    response = api.post(f"{superset.base}/api/v1/sqllab/execute/", json={
        "database_id": database["id"], "sql": sql, "runAsync": False, "queryLimit": 100,
    })
    superset.timings["sqllab_percentiles_s"] = round(time.monotonic() - started, 2)
    assert response.status_code == 200, response.text[:500]
    (row,) = response.json()["data"]
    count, _, median, p95 = kpis(in_range(sessions, result))
    assert (row["sessions"], row["p50"], row["p95"]) == (count, pytest.approx(median), pytest.approx(p95))
    lengths = sorted(s.length_s for s in in_range(sessions, result))
    assert row["p90_disc"] in lengths
    plans = api.post(f"{superset.base}/api/v1/sqllab/execute/", json={
        "database_id": database["id"], "runAsync": False,
        "sql": "SELECT json_extract(user_properties, '$.plan') AS plan FROM amplitude_sessions "
               f"WHERE session_start >= '{start}' AND session_start < '{end}' GROUP BY 1",
    }).json()["data"]
    assert {r["plan"] for r in plans} == {user_property(s, "plan") for s in in_range(sessions, result)}


def test_connect_a_database_form_in_the_browser(superset: Superset, api, browser) -> None:
    """Amplitude in "Connect a database": its fields, filled in, give a working connection with a masked secret."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    field = open_connect_form(browser, superset.base)
    labels = [label.text for label in browser.find_elements(By.CSS_SELECTOR, ".ant-modal label")]
    assert labels == ["Username", "Password", "Display Name", "Additional Parameters"]
    secret = superset.env["AMPLITUDE_SECRET_KEY"]
    field.send_keys(superset.env["AMPLITUDE_API_KEY"])
    browser.find_element(By.CSS_SELECTOR, ".ant-modal input[name=password]").send_keys(secret)
    name = browser.find_element(By.CSS_SELECTOR, ".ant-modal input[name=database_name]")
    name.send_keys(Keys.CONTROL, "a")
    name.send_keys("Amplitude (form)")
    browser.find_element(By.CSS_SELECTOR, ".ant-modal input[name=query_input]").send_keys("offline=true", Keys.TAB)
    connect = modal_button(browser, "Connect")  # once the form's parameters are validated
    browser.save_screenshot(str(OUTPUT / "connect-a-database.png"))
    connect.click()

    def created() -> dict | None:
        databases = api.get(f"{superset.base}/api/v1/database/").json()["result"]
        return next((d for d in databases if d["database_name"] == "Amplitude (form)"), None)

    database = WebDriverWait(browser, 60).until(lambda _: created())
    connection = api.get(f"{superset.base}/api/v1/database/{database['id']}/connection").json()["result"]
    assert connection["sqlalchemy_uri"] == "amplitude://demo:XXXXXXXXXX@?offline=true"
    assert secret not in json.dumps(connection)
    # same range on both (the bundled connection's default window is the demo's, one day longer)
    sql = ("SELECT COUNT(*) AS n, percentile(length_s, 95) AS p95 FROM amplitude_sessions "
           "WHERE session_start >= date('now', '-29 days')")
    rows = [
        api.post(f"{superset.base}/api/v1/sqllab/execute/", json={
            "database_id": database_id, "sql": sql, "runAsync": False,
        }).json()["data"]
        for database_id in (database["id"], amplitude_database(superset, api)["id"])
    ]
    assert rows[0] == rows[1] and rows[0][0]["n"] > 0


def test_wrong_secret_is_a_readable_error_without_the_secret(superset: Superset, api, browser) -> None:
    """A connection made with the form but a wrong secret key: SQL Lab, chart data and the chart page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    secret = f"wrong-{secrets.token_hex(8)}"
    payload = {
        "database_name": "Amplitude (wrong secret)",
        "engine": "amplitude",
        "configuration_method": "dynamic_form",
        "parameters": {"username": "demo", "password": secret, "query": {"offline": "true"}},
        "expose_in_sqllab": True,
    }
    refused = api.post(f"{superset.base}/api/v1/database/", json=payload)  # "Connect" tests the keys first
    assert refused.status_code == 400 and "secret key does not match" in refused.text, refused.text[:500]
    assert secret not in refused.text
    # created with the right secret, then the secret is changed (no connection test on edit): a stale key
    payload["parameters"]["password"] = superset.env["AMPLITUDE_SECRET_KEY"]
    created = api.post(f"{superset.base}/api/v1/database/", json=payload)
    assert created.status_code == 201, created.text[:500]
    database_id = created.json()["id"]
    edited = api.put(f"{superset.base}/api/v1/database/{database_id}", json={
        "engine": "amplitude", "configuration_method": "dynamic_form",
        "parameters": {"username": "demo", "password": secret, "query": {"offline": "true"}},
    })
    assert edited.status_code == 200, edited.text[:500]
    stored = api.get(f"{superset.base}/api/v1/database/{database_id}/connection").text
    assert secret not in stored

    sqllab = api.post(f"{superset.base}/api/v1/sqllab/execute/", json={
        "database_id": database_id, "sql": "SELECT COUNT(*) FROM amplitude_sessions", "runAsync": False,
    })
    assert sqllab.status_code != 200
    assert "secret key does not match" in sqllab.text
    assert secret not in sqllab.text and "CREATE VIRTUAL TABLE" not in sqllab.text
    assert "CONNECTION_ACCESS_DENIED_ERROR" in sqllab.text

    dataset = api.post(f"{superset.base}/api/v1/dataset/", json={
        "database": database_id, "schema": "main", "table_name": "amplitude_sessions",
    })
    assert dataset.status_code == 201, dataset.text[:500]
    params = {
        "viz_type": "big_number_total",
        "datasource": f"{dataset.json()['id']}__table",
        "metric": {"expressionType": "SQL", "sqlExpression": "COUNT(*)", "label": "sessions"},
        "adhoc_filters": [],
    }
    chart = api.post(f"{superset.base}/api/v1/chart/", json={
        "slice_name": "Wrong secret", "viz_type": "big_number_total", "datasource_id": dataset.json()["id"],
        "datasource_type": "table", "params": json.dumps(params),
    })
    assert chart.status_code == 201, chart.text[:500]
    data = api.post(f"{superset.base}/api/v1/chart/data", json={
        "datasource": {"id": dataset.json()["id"], "type": "table"},
        "queries": [{"metrics": [params["metric"]], "columns": [], "filters": []}],
        "result_format": "json", "result_type": "full",
    })
    assert data.status_code == 400
    assert "secret key does not match" in data.text and secret not in data.text

    browser.get(f"{superset.base}/explore/?slice_id={chart.json()['id']}")
    WebDriverWait(browser, CHART_LOAD_TIMEOUT_S).until(
        lambda d: "secret key does not match" in d.find_element(By.TAG_NAME, "body").text
    )
    browser.save_screenshot(str(OUTPUT / "wrong-secret-chart.png"))
    assert secret not in browser.page_source
    log = superset.layout.log.read_text()
    assert secret not in log and superset.env["AMPLITUDE_SECRET_KEY"] not in log


def test_wrong_secret_against_the_export_api(superset: Superset, api, tmp_path) -> None:
    """Live: Amplitude (here its emulator) answers 403; SQL Lab shows that, typed, without the secret."""
    end = floor_hour(datetime.now(UTC)) - timedelta(days=1)
    generate_dataset(tmp_path, end - timedelta(hours=6), end, events=300, seed=5)
    secret = f"wrong-{secrets.token_hex(8)}"
    with ExportEmulator(tmp_path, api_key="live-key", secret_key="right-secret") as emulator:
        form = {"engine": "amplitude", "configuration_method": "dynamic_form", "parameters": {
            "username": "live-key", "password": "right-secret", "query": {"base_url": emulator.base_url}}}
        created = api.post(f"{superset.base}/api/v1/database/", json={
            "database_name": "Amplitude (live, wrong secret)", **form})
        assert created.status_code == 201, created.text[:500]
        form["parameters"]["password"] = secret  # the key rotated in Amplitude, the connection kept the old one
        assert api.put(f"{superset.base}/api/v1/database/{created.json()['id']}", json=form).status_code == 200
        emulator.clear_requests()
        response = api.post(f"{superset.base}/api/v1/sqllab/execute/", json={
            "database_id": created.json()["id"], "runAsync": False,
            "sql": "SELECT COUNT(*) FROM amplitude_sessions WHERE session_start >= "
                   f"'{end - timedelta(hours=6):%Y-%m-%d %H:%M:%S}'",
        })
        assert {r.status for r in emulator.requests} == {403}
    error = response.json()["errors"][0]
    assert error["error_type"] == "CONNECTION_ACCESS_DENIED_ERROR"
    assert error["message"].startswith("Amplitude rejected the credentials (403 'Invalid API Key')")
    assert "check the API key and secret key" in error["message"]
    assert secret not in response.text and secret not in superset.layout.log.read_text()


def test_dashboard_in_headless_chromium(superset: Superset, browser, chart_data: dict[str, dict]) -> None:
    """Log in, open the dashboard, wait for every chart: none in error, KPI as computed, a screenshot."""
    from selenium.webdriver.common.by import By

    started = time.monotonic()
    browser.get(f"{superset.base}/superset/dashboard/{SLUG}/")
    sessions = f"{value(chart_data['Sessions']):,}"
    # every chart drawn (or failed): a chart not started yet shows no loading indicator either, so the wait is
    # also for the KPI's number on the page
    final = wait_for_dashboard(browser, CHARTS, lambda s: s["numbers"].get("Sessions") == sessions)
    superset.timings["dashboard_loaded_in_browser_s"] = round(time.monotonic() - started, 2)
    browser.save_screenshot(str(OUTPUT / "dashboard.png"))
    assert final["errors"] == []
    text = browser.find_element(By.TAG_NAME, "body").text
    assert sessions in text
    assert "Session definition" in text and "Session length by definition" in text
    filters = [e.text for e in browser.find_elements(By.CSS_SELECTOR, '[data-test="filter-control-name"]')]
    assert filters == ["Time range", "Plan", "Country", "Platform", "Sessions that contain event"]


def test_the_first_connect_click_connects_with_the_cursor_still_in_a_field(superset: Superset, api, browser) -> None:
    """Superset's form validates a field on its blur, and enables "Connect" only after a validation: a field just
    typed in kept it disabled until the cursor left, and leaving a field disabled "Connect" mid-click, losing the
    first click. Now the field being typed in is validated once typing pauses, and one click connects."""
    from selenium.webdriver.support.ui import WebDriverWait

    open_connect_form(browser, superset.base)
    fill_fields(browser, {"username": superset.env["AMPLITUDE_API_KEY"],
                          "password": superset.env["AMPLITUDE_SECRET_KEY"],
                          "database_name": "Amplitude (one click)"})
    modal_button(browser, "Connect")  # validated: no validation is under way when the last field changes
    fill_fields(browser, {"query_input": "offline=true"})  # the demo's store is offline; the cursor stays here
    modal_button(browser, "Connect").click()  # once

    def names() -> list[str]:
        return [d["database_name"] for d in api.get(f"{superset.base}/api/v1/database/").json()["result"]]

    WebDriverWait(browser, 30).until(lambda _: "Amplitude (one click)" in names())
