"""The dashboard over the lake in the real Superset of the e2e suite: the bundle built for Spark (``hive://`` to a
local Spark Thrift Server) and for DuckDB (duckdb-engine, a read-only DuckDB file of views), imported beside the
amplitude:// one. Every chart gives the amplitude:// dashboard's numbers, through the API and in Chromium; and,
with the bundle built with ``--template-processing`` (this Superset runs with SUPERSET_ENABLE_TEMPLATE_PROCESSING),
so does the "Sessions that contain event" filter, whose SQL on these engines is Jinja."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
import yaml

from shillelagh_amplitude.export.client import resolve_base_url
from shillelagh_amplitude.lake.ddl import ddl
from shillelagh_amplitude.lake.layout import PART_FILE, STATUS
from shillelagh_amplitude.lake.pins import VIEWS_FILE
from shillelagh_amplitude.lake.publish import publish
from shillelagh_amplitude.store.hour_store import HourStore

from ..scripts import load_script
from ..spark_server import ThriftServer
from .browser import CHART_AXES, filter_state_key, wait_for_dashboard
from .conftest import OUTPUT, Superset, demo

pytestmark = pytest.mark.e2e

build = load_script("dashboards/build.py")
SLUG = "session-length"
CHARTS = 21


@pytest.fixture(scope="module")
def lake(superset: Superset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The e2e sample's store published as a folder lake."""
    folder = tmp_path_factory.mktemp("lake")
    publish(HourStore(superset.layout.demo_store, resolve_base_url(), demo.DEMO_API_KEY), folder)
    return folder


@pytest.fixture(scope="module")
def spark_uri(lake: Path, spark_server: ThriftServer) -> str:
    """The lake's tables in database ``e2e`` of the session's Spark Thrift Server."""
    spark_server.run(*ddl(lake, "spark", schema="e2e"))
    return spark_server.uri("e2e")


@pytest.fixture(scope="module")
def duckdb_uri(lake: Path) -> str:
    """The lake's DuckDB views file (the publisher keeps it), which Superset opens read-only."""
    return f"duckdb:///{lake / VIEWS_FILE}?access_mode=read_only"


def import_bundle(superset: Superset, api: requests.Session, engine: str, uri: str, folder: Path,
                  template_processing: bool = False) -> None:
    """The engine's bundle built (``--template-processing`` or not) and imported, overwriting what it names."""
    name = f"{engine}-template" if template_processing else engine
    bundle = build.build(folder / f"{name}.zip", engine=engine, sqlalchemy_uri=uri,
                         template_processing=template_processing)
    started = time.monotonic()
    demo.import_assets(api, superset.base, bundle)
    superset.timings[f"lake_{name}_import_s"] = round(time.monotonic() - started, 2)


@pytest.fixture(scope="module", params=["spark", "duckdb"])
def engine(request: pytest.FixtureRequest, superset: Superset, api: requests.Session,
           tmp_path_factory: pytest.TempPathFactory) -> str:
    """The engine's bundle imported (the amplitude:// one is imported by the suite's ``api`` fixture)."""
    uri = request.getfixturevalue(f"{request.param}_uri")
    import_bundle(superset, api, request.param, uri, tmp_path_factory.mktemp(f"bundle-{request.param}"))
    return request.param


def dashboard_data(superset: Superset, api: requests.Session, slug: str) -> dict[str, dict]:
    """Every chart's ``GET /api/v1/chart/<id>/data/?force=true``, by chart name."""
    charts = api.get(f"{superset.base}/api/v1/dashboard/{slug}/charts").json()["result"]
    results = {}
    for chart in charts:
        response = api.get(f"{superset.base}/api/v1/chart/{chart['id']}/data/?force=true", timeout=300)
        assert response.status_code == 200, (slug, chart["slice_name"], response.text[:500])
        results[chart["slice_name"]] = response.json()["result"][0]
    return results


@pytest.fixture(scope="module")
def amplitude_data(superset: Superset, api: requests.Session) -> dict[str, dict]:
    return dashboard_data(superset, api, SLUG)


def comparable(value: object) -> object:
    """A chart value compared across engines: floats to 1e-9 relative; a time axis as epoch ms."""
    if isinstance(value, float) and not math.isnan(value):
        return pytest.approx(value, rel=1e-9)
    return value


def on_the_lake(rows: list[dict]) -> list[dict]:
    """amplitude://'s chart rows without the user sessions at the 60-minute gap, which the lake does not publish
    (a row of that definition, or a column of it when the chart pivots definitions into columns)."""
    return [{key: value for key, value in row.items() if "60-minute" not in key} for row in rows
            if "60-minute" not in str(row.get("definition", ""))]


COMPLETE_THROUGH = "Data complete through"


def test_every_chart_gives_amplitudes_numbers(superset: Superset, api: requests.Session, engine: str, lake: Path,
                                              amplitude_data: dict[str, dict]) -> None:
    """Every chart, *Data complete through* included: the lake's status (``amplitude_lake_status``, published from
    the same store) is amplitude://'s value, at any time of day (the demo's sample is loaded by hand, so the store
    holds it final through its last midnight, which the clock's rule would deny for 3 h after)."""
    started = time.monotonic()
    lake_data = dashboard_data(superset, api, f"{SLUG}-{engine}")
    superset.timings[f"lake_{engine}_all_chart_data_forced_s"] = round(time.monotonic() - started, 2)
    assert len(lake_data) == CHARTS and set(lake_data) == set(amplitude_data)
    (status,) = pq.read_table(lake / STATUS / PART_FILE)["data_complete_through"].to_pylist()
    assert amplitude_data[COMPLETE_THROUGH]["data"] == [{"complete_through_ms": int(status.timestamp() * 1000)}]
    for name, result in lake_data.items():
        expected = amplitude_data[name]
        assert (result["status"], result["error"]) == ("success", None), (engine, name)
        rows = [{key: comparable(value) for key, value in row.items()} for row in on_the_lake(expected["data"])]
        assert len(result["data"]) == len(rows) > 0, (engine, name)
        assert result["data"] == rows, (engine, name)


def test_plan_filter(superset: Superset, api: requests.Session, engine: str) -> None:
    """The dashboard's plan filter on the sessions dataset, each engine against amplitude://'s, over the
    dashboard's default range. (The bundles built without --template-processing have no "Sessions that contain
    event" filter: test_sessions_that_contain_event imports those built with it.)"""
    datasets = api.get(f"{superset.base}/api/v1/dataset/?q=(page_size:100)").json()["result"]
    by_name = {d["table_name"]: d["id"] for d in datasets}
    default_range = build.load(build.SOURCES / "dashboard.yaml")["default_time_range"]

    def sessions(dataset_id: int) -> dict:
        response = api.post(f"{superset.base}/api/v1/chart/data", json={
            "datasource": {"id": dataset_id, "type": "table"},
            "force": True,
            "queries": [{
                "metrics": ["sessions", "p95_length_s"],
                "columns": [],
                "filters": [
                    {"col": "session_start", "op": "TEMPORAL_RANGE", "val": default_range},
                    {"col": "plan", "op": "IN", "val": ["free"]},
                ],
            }],
            "result_format": "json",
            "result_type": "full",
        })
        assert response.status_code == 200, response.text[:500]
        return response.json()["result"][0]

    expected = sessions(by_name["sessions"])
    result = sessions(by_name[f"sessions_{engine}"])
    (row,) = result["data"]
    assert row == {key: comparable(value) for key, value in expected["data"][0].items()}
    assert row["sessions"] > 0


@pytest.mark.parametrize("grain", ["P1W", "P1M", "PT1H"])
def test_time_grains(superset: Superset, api: requests.Session, engine: str, grain: str) -> None:
    """Sessions per week, month and hour on the engine's dataset, as Explore offers them (on Spark through the Hive
    engine spec hive:// resolves to, its grains replaced by Spark's date_trunc in superset_config.py): months and
    hours equal amplitude://'s; weeks start on Monday, so they are amplitude://'s days summed by ISO week
    (amplitude://'s own "Week", SQLite's in Superset, starts on Sunday)."""
    datasets = api.get(f"{superset.base}/api/v1/dataset/?q=(page_size:100)").json()["result"]
    by_name = {d["table_name"]: d["id"] for d in datasets}
    default_range = build.load(build.SOURCES / "dashboard.yaml")["default_time_range"]

    def per_bucket(dataset_id: int, time_grain: str) -> dict[int, int]:
        axis = {"columnType": "BASE_AXIS", "sqlExpression": "session_start", "label": "session_start",
                "expressionType": "SQL", "timeGrain": time_grain}
        response = api.post(f"{superset.base}/api/v1/chart/data", json={
            "datasource": {"id": dataset_id, "type": "table"},
            "force": True,
            "queries": [{"metrics": ["sessions"], "columns": [axis],
                         "filters": [{"col": "session_start", "op": "TEMPORAL_RANGE", "val": default_range}]}],
            "result_format": "json",
            "result_type": "full",
        })
        assert response.status_code == 200, response.text[:500]
        return {int(row["session_start"]): row["sessions"] for row in response.json()["result"][0]["data"]}

    if grain == "P1W":
        expected: dict[int, int] = {}
        for day_ms, sessions in per_bucket(by_name["sessions"], "P1D").items():
            day = datetime.fromtimestamp(day_ms / 1000, UTC)
            monday = int((day - timedelta(days=day.weekday())).timestamp() * 1000)
            expected[monday] = expected.get(monday, 0) + sessions
    else:
        expected = per_bucket(by_name["sessions"], grain)
    assert len(expected) > 1
    assert per_bucket(by_name[f"sessions_{engine}"], grain) == expected


def test_dashboard_in_headless_chromium(superset: Superset, browser, engine: str) -> None:
    """Both dashboards in Chromium: every chart drawn, none in error, the same text on each chart and the same
    axis labels drawn (company sizes in size order, whole-number ticks: tests/e2e/test_stock_superset.py)."""
    seen = {}
    for slug, charts in ((SLUG, CHARTS), (f"{SLUG}-{engine}", CHARTS)):
        started = time.monotonic()
        browser.get(f"{superset.base}/superset/dashboard/{slug}/")
        # every chart drawn: a chart not started yet shows no loading indicator either, so the wait is also for
        # the eight big numbers (or an error)
        state = wait_for_dashboard(browser, charts, lambda s: len(s["numbers"]) == 8)
        superset.timings[f"dashboard_{slug}_loaded_in_browser_s"] = round(time.monotonic() - started, 2)
        seen[slug] = {**state, "axes": browser.execute_script(CHART_AXES)}
        browser.save_screenshot(str(OUTPUT / f"dashboard-{slug}.png"))
        assert seen[slug]["errors"] == [], slug
    assert len(seen[SLUG]["numbers"]) == 8  # the seven KPIs and "Data complete through"
    numbers = {slug: {name: text for name, text in seen[slug]["numbers"].items() if name != COMPLETE_THROUGH}
               for slug in seen}  # that tile's value is checked in test_every_chart_gives_amplitudes_numbers
    assert numbers[f"{SLUG}-{engine}"] == numbers[SLUG]
    lake_axes = seen[f"{SLUG}-{engine}"]["axes"]
    assert set(lake_axes) == set(seen[SLUG]["axes"]) and len(lake_axes) == 12  # the ECharts charts
    # the Session definition charts hold fewer definitions on the lake (no 60-minute gap): their axes differ
    definitions = {yaml.safe_load(path.read_text())["slice_name"]
                   for path in (build.SOURCES / "charts").glob("definition_*.yaml")}
    for name, axes in lake_axes.items():
        if name in definitions:
            continue
        for axis in ("xAxis", "yAxis"):
            drawn = [label["text"] for label in axes[axis]["labels"] if label["shown"]]
            assert drawn == [label["text"] for label in seen[SLUG]["axes"][name][axis]["labels"] if label["shown"]], (
                engine, name, axis)


#: The "Sessions that contain event" filter's values in the test (as in tests/test_lake_engines.py): a rare and a
#: common event type of the sample.
CONTAINS_EVENT = {"col": "contains_event", "op": "IN", "val": ["invite_sent", "search"]}


@pytest.fixture
def template_engine(request: pytest.FixtureRequest, superset: Superset, api: requests.Session, engine: str,
                    tmp_path: Path) -> Iterator[str]:
    """The engine's bundle built with ``--template-processing`` imported over its plain one (same UUIDs and slug),
    and the plain one imported back afterwards, so that no other test meets it whatever the order."""
    uri = request.getfixturevalue(f"{engine}_uri")
    import_bundle(superset, api, engine, uri, tmp_path, template_processing=True)
    yield engine
    import_bundle(superset, api, engine, uri, tmp_path)


def filtered_data(superset: Superset, api: requests.Session, slug: str, dataset: str,
                  native_filter: dict) -> dict[str, dict]:
    """The chart data of the dashboard's charts on ``dataset`` as the dashboard asks for it with a native filter
    set: each chart's saved query context, the filter's ``extra_form_data`` filter appended to every query's
    ``filters`` (where Superset's frontend puts it, and where ``filter_values`` reads it), by chart name."""
    datasets = api.get(f"{superset.base}/api/v1/dataset/?q=(page_size:100)").json()["result"]
    (dataset_id,) = [d["id"] for d in datasets if d["table_name"] == dataset]
    charts = api.get(f"{superset.base}/api/v1/dashboard/{slug}/charts").json()["result"]
    results = {}
    for chart in charts:
        if chart["form_data"]["datasource"] != f"{dataset_id}__table":
            continue
        context = json.loads(api.get(f"{superset.base}/api/v1/chart/{chart['id']}").json()["result"]["query_context"])
        context["force"] = True
        context["form_data"]["extra_form_data"] = {"filters": [native_filter]}
        for query in context["queries"]:
            query["filters"] = [*query.get("filters", []), native_filter]
        response = api.post(f"{superset.base}/api/v1/chart/data", json=context, timeout=300)
        assert response.status_code == 200, (slug, chart["slice_name"], response.text[:500])
        results[chart["slice_name"]] = response.json()["result"][0]
    return results


def test_sessions_that_contain_event(superset: Superset, api: requests.Session, template_engine: str,
                                     amplitude_data: dict[str, dict]) -> None:
    """The "Sessions that contain event" filter with two event types, on every chart of the sessions dataset: the
    lake dashboard built with --template-processing (a WHERE EXISTS in Jinja, from ``filter_values``) gives
    amplitude://'s numbers (a condition its connection applies), which differ from the unfiltered ones."""
    started = time.monotonic()
    lake_data = filtered_data(superset, api, f"{SLUG}-{template_engine}", f"sessions_{template_engine}",
                              CONTAINS_EVENT)
    superset.timings[f"lake_{template_engine}_contains_event_forced_s"] = round(time.monotonic() - started, 2)
    expected_data = filtered_data(superset, api, SLUG, "sessions", CONTAINS_EVENT)
    on_sessions = {chart["slice_name"] for chart in map(build.load, (build.SOURCES / "charts").glob("*.yaml"))
                   if chart["dataset"] == "sessions"}
    assert set(lake_data) == set(expected_data) == on_sessions and len(on_sessions) > 10
    for name, result in lake_data.items():
        expected, unfiltered = expected_data[name], amplitude_data[name]
        assert (result["status"], result["error"]) == ("success", None), (template_engine, name)
        # the values reach the dataset's SQL through the Jinja, which takes the filter off the outer query
        assert all(f"'{value}'" in result["query"] for value in CONTAINS_EVENT["val"]), (template_engine, name)
        assert "contains_event" not in result["query"], (template_engine, name)
        rows = [{key: comparable(value) for key, value in row.items()} for row in expected["data"]]
        assert len(result["data"]) == len(rows) > 0, (template_engine, name)
        assert result["data"] == rows, (template_engine, name)
        assert result["data"] != [{key: comparable(value) for key, value in row.items()}
                                  for row in unfiltered["data"]], (template_engine, name)


def test_sessions_that_contain_event_in_chromium(superset: Superset, browser, template_engine: str) -> None:
    """The lake dashboard built with --template-processing opened with "Sessions that contain event" set (and the
    default time range): every chart drawn, and its big numbers are amplitude://'s with the same filter, not the
    unfiltered ones."""
    default_range = build.load(build.SOURCES / "dashboard.yaml")["default_time_range"]
    numbers = {}
    for slug, filtered in ((SLUG, False), (SLUG, True), (f"{SLUG}-{template_engine}", True)):
        query = ""
        if filtered:
            key = filter_state_key(browser, slug, default_range, {"NATIVE_FILTER-contains_event": CONTAINS_EVENT})
            query = f"?native_filters_key={key}"
        started = time.monotonic()
        browser.get(f"{superset.base}/superset/dashboard/{slug}/{query}")
        state = wait_for_dashboard(browser, CHARTS, lambda s: len(s["numbers"]) == 8)
        if slug != SLUG:  # amplitude://'s load times are test_dashboard_in_headless_chromium's
            superset.timings[f"dashboard_{slug}_contains_event_loaded_in_browser_s"] = round(
                time.monotonic() - started, 2)
        browser.save_screenshot(str(OUTPUT / f"dashboard-{slug}{'-contains-event' * filtered}.png"))
        assert state["errors"] == [], slug
        numbers[slug, filtered] = {name: text for name, text in state["numbers"].items() if name != COMPLETE_THROUGH}
    assert len(numbers[SLUG, True]) == 7
    assert numbers[f"{SLUG}-{template_engine}", True] == numbers[SLUG, True]
    assert numbers[SLUG, True]["Sessions"] != numbers[SLUG, False]["Sessions"]
