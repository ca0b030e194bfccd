"""The dashboard bundle built from ``dashboards/``: deterministic, valid for Superset's importers, consistent.

Importing it into a running Superset (CLI and REST) is tested in ``tests/e2e``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..scripts import load_script

build = load_script("dashboards/build.py")


@pytest.fixture(scope="module")
def files() -> dict[str, dict[str, Any]]:
    return build.bundle_files()


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
        assert context["form_data"] == chart["params"], name
        (query,) = context["queries"]
        assert query["metrics"] and set(query["metrics"]) <= metrics, name
        used = {column if isinstance(column, str) else column["sqlExpression"] for column in query["columns"]}
        assert used <= columns, name
        assert {flt["col"] for flt in query["filters"]} <= columns, name


def test_datasets_carry_columns_and_percentile_metrics(files) -> None:
    datasets = of_kind(files, "datasets")
    assert all(config["columns"] and config["metrics"] for config in datasets.values())
    (sessions,) = [config for config in datasets.values() if config["main_dttm_col"] == "session_start"]
    expressions = {metric["metric_name"]: metric["expression"] for metric in sessions["metrics"]}
    assert expressions["p50_length_s"] == "median(length_s)"
    assert expressions["p95_length_s"] == "percentile(length_s, 95)"
    assert {"plan", "user_type", "company_size", "signup_month", "country", "platform"} <= {
        column["column_name"] for column in sessions["columns"] if column["groupby"]
    }


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
    assert filters[0]["defaultDataMask"]["extraFormData"] == {"time_range": "Last 30 days"}
    for native_filter in filters:
        assert set(native_filter["scope"]["excluded"]) <= chart_ids
        for target in native_filter["targets"]:
            if target:
                assert target["column"]["name"] in columns[target["datasetUuid"]]
