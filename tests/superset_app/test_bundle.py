"""The dashboard bundle built from ``dashboards/``: deterministic, valid for Superset's importers, consistent.

Importing it into a running Superset (CLI and REST) is tested in ``tests/e2e``.
"""

from __future__ import annotations

import json
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..scripts import REPO, load_script

build = load_script("dashboards/build.py")


@pytest.fixture(scope="module")
def files() -> dict[str, dict[str, Any]]:
    return build.bundle_files()


def default_time_range() -> str:
    return yaml.safe_load((REPO / "dashboards/session_length/dashboard.yaml").read_text())["default_time_range"]


def of_kind(files: dict[str, dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {name: config for name, config in files.items() if name.startswith(f"{kind}/")}


def test_build_is_deterministic(tmp_path: Path) -> None:
    first = build.build(tmp_path / "a.zip").read_bytes()
    second = build.build(tmp_path / "b.zip").read_bytes()
    assert first == second
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        names = archive.namelist()
        assert names == sorted(names)
        assert all(name.startswith(f"{build.ROOT}/") for name in names)
        assert {info.date_time for info in archive.infolist()} == {build.ZIP_DATE}
        assert yaml.safe_load(archive.read(f"{build.ROOT}/metadata.yaml"))["version"] == "1.0.0"


def test_every_file_passes_superset_import_schemas(superset_app, files) -> None:
    from superset.charts.schemas import ImportV1ChartSchema
    from superset.commands.importers.v1.utils import load_metadata
    from superset.dashboards.schemas import ImportV1DashboardSchema
    from superset.datasets.schemas import ImportV1DatasetSchema

    # The database file's schema looks the database up in the metadata DB; the e2e import covers it.
    schemas = {
        "datasets": ImportV1DatasetSchema(),
        "charts": ImportV1ChartSchema(),
        "dashboards": ImportV1DashboardSchema(),
    }
    load_metadata({"metadata.yaml": yaml.safe_dump(files["metadata.yaml"])})
    for name, config in files.items():
        if (kind := name.split("/")[0]) in schemas:
            assert schemas[kind].validate(config) == {}, name  # unknown or missing keys, wrong types
    assert {name.split("/")[0] for name in files} == {"metadata.yaml", "databases", *schemas}


def test_query_contexts_are_valid_and_match_their_datasets(superset_app, files) -> None:
    from superset.charts.schemas import ChartDataQueryContextSchema

    datasets = {config["uuid"]: config for config in of_kind(files, "datasets").values()}
    for name, chart in of_kind(files, "charts").items():
        dataset = datasets[chart["dataset_uuid"]]
        columns = {column["column_name"] for column in dataset["columns"]}
        metrics = {metric["metric_name"] for metric in dataset["metrics"]}
        context = json.loads(chart["query_context"])
        assert ChartDataQueryContextSchema().validate(context) == {}, name
        (query,) = context["queries"]
        assert query["metrics"] and set(query["metrics"]) <= metrics, name
        used = {column if isinstance(column, str) else column["sqlExpression"] for column in query["columns"]}
        assert used <= columns, name
        assert {flt["col"] for flt in query["filters"]} <= columns, name


def test_datasets_carry_columns_and_percentile_metrics(files) -> None:
    datasets = of_kind(files, "datasets")
    assert all(config["columns"] and config["metrics"] for config in datasets.values())
    (sessions,) = [config for config in datasets.values() if config["table_name"] == "sessions"]
    expressions = {metric["metric_name"]: metric["expression"] for metric in sessions["metrics"]}
    assert expressions["p50_length_s"] == "median(length_s)"
    assert expressions["p95_length_s"] == "percentile(length_s, 95)"
    assert {"plan", "user_type", "company_size", "signup_month", "country", "platform"} <= {
        column["column_name"] for column in sessions["columns"] if column["groupby"]
    }


def test_dataset_names_and_segments_match_the_docs(files) -> None:
    """The names dashboards/README.md uses; segments are plain columns (Explore's "Simple" tab lists only
    columns without an expression), "(none)" when missing; measures, ids and JSON are not offered to group by."""
    datasets = {config["table_name"]: config for config in of_kind(files, "datasets").values()}
    assert set(datasets) == {"sessions", "event_types", "data_status", "session_definitions"}
    readme = (REPO / "dashboards" / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in datasets)
    sessions = datasets["sessions"]
    assert sessions["main_dttm_col"] == "session_start"
    segments = {"plan", "user_type", "company_size", "signup_month", "country", "platform", "os_name",
                "device_type", "region", "city", "language", "version_name", "length_bucket", "first_event_type",
                "last_event_type", "session_start"}
    columns = {column["column_name"]: column for column in sessions["columns"]}
    assert {name for name, column in columns.items() if column["groupby"]} == segments
    assert all(column["expression"] is None for column in columns.values())
    for segment in ("plan", "user_type", "company_size", "signup_month", "country", "platform"):
        assert f"'(none)') AS {segment}" in sessions["sql"], segment


def test_session_definitions_are_plain_sql_over_both_tables(files) -> None:
    """The "Session definition" section's dataset: no Jinja, Amplitude's sessions beside user sessions at the
    30- and 60-minute gaps, dated by their start, with the columns the dashboard's segment filters target."""
    datasets = {config["table_name"]: config for config in of_kind(files, "datasets").values()}
    definitions = datasets["session_definitions"]
    assert "{%" not in definitions["sql"] and "{{" not in definitions["sql"]
    assert "FROM amplitude_sessions" in definitions["sql"]
    assert all(f"FROM amplitude_user_sessions\nWHERE gap_minutes = {gap}" in definitions["sql"] for gap in (30, 60))
    assert definitions["main_dttm_col"] == "session_start"
    assert {"plan", "country", "platform"} <= {column["column_name"] for column in definitions["columns"]}
    expressions = {metric["metric_name"]: metric["expression"] for metric in definitions["metrics"]}
    assert expressions["p50_length_s"] == "median(length_s)"
    assert expressions["p95_length_s"] == "percentile(length_s, 95)"


def test_charts_carry_no_time_range_of_their_own(files) -> None:
    """The dashboard's time filter is the only one: a chart's time filter is an open slot ("No filter") that
    the dashboard's range fills, so "No filter" on the dashboard really means none."""
    datasets = {config["uuid"]: config for config in of_kind(files, "datasets").values()}
    for name, chart in of_kind(files, "charts").items():
        (query,) = json.loads(chart["query_context"])["queries"]
        assert chart["params"]["time_range"] == "No filter", name
        dttm = datasets[chart["dataset_uuid"]]["main_dttm_col"]
        expected = [{"col": dttm, "op": "TEMPORAL_RANGE", "val": "No filter"}] if dttm else []
        assert query["filters"] == expected, name
        assert [(f["subject"], f["comparator"]) for f in chart["params"]["adhoc_filters"]] == [
            (f["col"], f["val"]) for f in expected], name


def test_series_colours_axes_and_labels(files) -> None:
    """Median and p95 keep one colour each on every chart; axis titles clear the tick labels; every bucket
    label of the distribution is drawn."""
    (dashboard,) = of_kind(files, "dashboards").values()
    colors = dashboard["metadata"]["label_colors"]
    assert len({colors["avg_length_s"], colors["p50_length_s"], colors["p95_length_s"]}) == 3
    assert colors["Median length (s)"] == colors["p50_length_s"]
    assert colors["p95 length (s)"] == colors["p95_length_s"]
    charts = of_kind(files, "charts")
    for name, chart in charts.items():
        params = chart["params"]
        if params.get("y_axis_title"):
            # the widest tick label is "10,000" (6 characters of about 7 px at 12 px) plus a gap
            assert params["y_axis_title_margin"] >= 6 * 7 + 15, name
    for key in ("length_distribution", "by_signup_month", "by_company_size"):  # every category label drawn
        params = charts[f"charts/{key}.yaml"]["params"]
        assert (params["xAxisLabelInterval"], params["xAxisLabelRotation"]) == (0, 45), key
    for name, chart in charts.items():  # day axes: one date form, labels spaced by ECharts
        params = chart["params"]
        if params.get("x_axis") == "session_start":
            assert params["x_axis_time_format"] == "%b %d", name
            assert params.get("xAxisLabelInterval", "auto") == "auto", name


def test_dashboard_places_every_chart_and_filters_target_real_columns(files) -> None:
    (dashboard,) = of_kind(files, "dashboards").values()
    charts = of_kind(files, "charts")
    placed = [item["meta"] for item in dashboard["position"].values() if isinstance(item, dict) and
              item.get("type") == "CHART"]
    assert sorted(meta["uuid"] for meta in placed) == sorted(chart["uuid"] for chart in charts.values())
    chart_ids = {meta["chartId"] for meta in placed}
    columns = {
        config["uuid"]: {column["column_name"] for column in config["columns"]}
        for config in of_kind(files, "datasets").values()
    }
    filters = dashboard["metadata"]["native_filter_configuration"]
    assert [f["name"] for f in filters] == [
        "Time range", "Plan", "Country", "Platform", "Sessions that contain event"
    ]
    default_range = default_time_range()
    assert filters[0]["defaultDataMask"]["extraFormData"] == {"time_range": default_range}
    for native_filter in filters:
        assert set(native_filter["scope"]["excluded"]) <= chart_ids
        for target in native_filter["targets"]:
            if target:
                assert target["column"]["name"] in columns[target["datasetUuid"]]


@pytest.mark.parametrize(
    ("now", "first", "end"),
    [
        ("2026-12-01T14:10:00", "2026-11-01", "2026-12-01"),
        ("2026-12-01T02:00:00", "2026-11-01", "2026-12-01"),  # 2026-11-30T23 exportable: the day is whole
        ("2026-12-01T01:59:00", "2026-10-31", "2026-11-30"),  # 2026-11-30T23 not yet: the day is not whole
        ("2026-12-01T00:00:00", "2026-10-31", "2026-11-30"),
    ],
)
def test_default_time_range_is_the_30_whole_days_the_export_holds(superset_app, now, first, end) -> None:
    """Superset evaluates the dashboard's default range (here at a given "now") to 30 whole UTC days ending at
    the midnight at or before the end of the newest exportable hour (hour H is served from H + 3 h)."""
    from superset.utils.date_parser import get_since_until

    default_range = default_time_range()
    assert default_range.count('DATETIME("now")') == 2
    since, until = get_since_until(default_range.replace('DATETIME("now")', f'DATETIME("{now}")'))
    assert (since, until) == (datetime.fromisoformat(first), datetime.fromisoformat(end))


def _sql_texts(files: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Every SQL text of the bundle that Superset can run through its template processor."""
    texts = {}
    for name, config in of_kind(files, "datasets").items():
        texts[f"{name}: sql"] = config["sql"]
        texts.update({f"{name}: {m['metric_name']}": m["expression"] for m in config["metrics"]})
        texts.update({f"{name}: {c['column_name']}": c["expression"] for c in config["columns"] if c["expression"]})
    for name, config in of_kind(files, "charts").items():
        for query in json.loads(config["query_context"])["queries"]:
            texts.update({f"{name}: axis": c["sqlExpression"] for c in query["columns"] if isinstance(c, dict)})
    return texts


def test_the_bundle_needs_no_template_processing_and_is_unchanged_by_it(superset_app, files) -> None:
    """Superset's default (template processing off) runs the SQL as written; with it on, Superset's Jinja
    processor renders every SQL text to itself: the same queries, so the same numbers."""
    from superset.jinja_context import JinjaTemplateProcessor
    from superset.models.core import Database

    processor = JinjaTemplateProcessor(database=Database(database_name="Amplitude", sqlalchemy_uri="amplitude://"))
    texts = _sql_texts(files)
    assert any("contains_event" in sql for sql in texts.values())
    for name, sql in texts.items():
        assert not any(mark in sql for mark in ("{{", "{%", "{#")), name
        assert processor.process_template(sql) == sql, name
