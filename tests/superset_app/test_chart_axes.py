"""Chart axes in every engine's bundle, on Superset 6.1's defaults: company sizes in size order, whole-number y ticks
where the format shows no decimals, day axes in one date form with no label forced at their end. What the browser
draws from them is tested in ``tests/e2e/test_stock_superset.py``."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

import duckdb
import pytest

from shillelagh_amplitude.sample.generator import _COMPANY_SIZES

from ..scripts import load_script

build = load_script("dashboards/build.py")
BUNDLES = [("amplitude", False), ("duckdb", False), ("duckdb", True), ("spark", False), ("spark", True)]


def bundle(engine: str, template_processing: bool) -> dict[str, dict[str, Any]]:
    return build.bundle_files(engine=engine, template_processing=template_processing)


def charts(files: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name.removeprefix("charts/").removesuffix(".yaml"): config for name, config in files.items()
            if name.startswith("charts/")}


def sessions_dataset(files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (dataset,) = [config for name, config in files.items()
                  if name.startswith("datasets/") and config["table_name"].startswith("sessions")]
    return dataset


def size_order(sizes: list[str]) -> list[str]:
    """Smallest first by the lower bound written in the label, "(none)" last."""
    known = sorted((s for s in sizes if s != "(none)"), key=lambda s: int(re.match(r"\d+", s).group()))
    return known + ["(none)"] * ("(none)" in sizes)


@pytest.mark.parametrize(("engine", "template_processing"), BUNDLES)
def test_company_sizes_sort_in_size_order(engine: str, template_processing: bool) -> None:
    """The company-size chart sorts its x axis by a metric it queries but does not draw (Superset's "X-axis sort
    by" the "Series limit sort by" metric); that metric, run on the generator's sizes, orders them smallest first."""
    files = bundle(engine, template_processing)
    params = charts(files)["by_company_size"]["params"]
    order_metric = params["x_axis_sort"]
    # what Superset's extractExtraMetrics needs to query the metric without drawing it
    assert params["timeseries_limit_metric"] == order_metric and order_metric not in params["metrics"]
    assert params["x_axis_sort_asc"] is True and params["groupby"] == []
    (query,) = json.loads(charts(files)["by_company_size"]["query_context"])["queries"]
    assert query["metrics"] == [*params["metrics"], order_metric]
    assert [p["operation"] for p in query["post_processing"]] == ["pivot", "sort", "flatten"]
    assert query["post_processing"][1]["options"] == {"by": order_metric, "ascending": True}

    (metric,) = [m for m in sessions_dataset(files)["metrics"] if m["metric_name"] == order_metric]
    # Superset 6.1 renames data columns to verbose names, then leaves out the sort metric by its name: with a
    # verbose name it would be drawn
    assert metric["verbose_name"] is None
    sizes = [size for size, _ in _COMPANY_SIZES] + ["(none)", "5000-10000"]
    expected = size_order(sizes[:-1])
    assert expected != sorted(expected)  # text order would differ
    sql = (f"SELECT company_size FROM (SELECT company_size, {metric['expression']} AS o FROM sizes "
           f"GROUP BY company_size) ORDER BY o, company_size")
    with sqlite3.connect(":memory:") as sqlite:
        sqlite.execute("CREATE TABLE sizes (company_size TEXT)")
        sqlite.executemany("INSERT INTO sizes VALUES (?)", [(size,) for size in reversed(sizes)])
        in_sqlite = [row[0] for row in sqlite.execute(sql)]
    lake = duckdb.connect()
    lake.execute("CREATE TABLE sizes (company_size TEXT)")
    lake.executemany("INSERT INTO sizes VALUES (?)", [(size,) for size in reversed(sizes)])
    in_duckdb = [row[0] for row in lake.execute(sql).fetchall()]
    # a size the dashboard does not know goes after the known ones, before "(none)"
    assert in_sqlite == in_duckdb == [*expected[:-1], "5000-10000", "(none)"]


def whole_number_format(d3_format: str) -> bool:
    """A d3 number format that prints no decimals: an integer type (``d``) or precision 0."""
    return d3_format.endswith("d") or bool(re.search(r"\.0[a-z%]*$", d3_format))


@pytest.mark.parametrize(("engine", "template_processing"), BUNDLES)
def test_ticks_and_day_labels(engine: str, template_processing: bool) -> None:
    """Whole-number y ticks on every axis whose format shows no decimals (counts above all), none elsewhere; day
    axes in one date form with no extra label at their end; every label of the category axes drawn."""
    files = bundle(engine, template_processing)
    timeseries = {key: chart["params"] for key, chart in charts(files).items()
                  if chart["viz_type"].startswith("echarts_timeseries")}
    dttm = sessions_dataset(files)["main_dttm_col"]
    assert {"sessions_per_day", "length_distribution", "length_per_day", "by_company_size"} <= set(timeseries)
    for key, params in timeseries.items():
        options = json.loads(params.get("echart_options", "{}"))  # JSON is a JS object literal Superset accepts
        whole = whole_number_format(params["y_axis_format"])
        assert options.get("yAxis") == ({"minInterval": 1} if whole else None), key
        if params["x_axis"] == dttm:
            assert params["x_axis_time_format"] == "%b %d" and params["time_grain_sqla"] == "P1D", key
            assert options["xAxis"] == {"axisLabel": {"showMaxLabel": False}}, key
        else:
            assert "xAxis" not in options and params["xAxisLabelInterval"] == 0, key
    for key in ("sessions_per_day", "length_distribution"):  # counts of sessions
        assert timeseries[key]["metrics"] == ["sessions"]
        assert json.loads(timeseries[key]["echart_options"])["yAxis"]["minInterval"] == 1, key
