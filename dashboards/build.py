"""Build the importable Superset bundle (ZIP) from the YAML sources in ``dashboards/session_length/``.

    amplitude-dashboard [--output session_length_dashboard.zip] [--database-uuid UUID] [--engine amplitude|duckdb|spark]
    python dashboards/build.py ...   (the same, from a clone)

This folder is installed with the package as ``shillelagh_amplitude.dashboards`` (a link in ``connector/``), so
the console script ``amplitude-dashboard`` runs this file and reads these sources. ``--database-uuid`` binds the
datasets to a connection the operator already made (Superset's importer keeps an existing connection of that
UUID as it is, keys included); without it the bundle brings its own connection, "Amplitude", without keys.

The sources say what matters (datasets with columns and metrics, chart params, a grid of rows, filters);
this script adds what Superset's export format repeats: UUIDs derived from file names, each chart's
``query_context`` (what the chart editor would save, used by ``GET /api/v1/chart/<id>/data/``, reports and
cache warm-up), the dashboard's position tree and native filter configuration. The output is
deterministic: same sources, same bytes.

``--engine duckdb|spark`` builds the same dashboard over the lake: ``dashboards/engines/<engine>.yaml`` replaces
the connection, each dataset's SQL and the metric expressions written for that engine (see ``for_engine``).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import uuid
import zipfile
from pathlib import Path
from typing import Any

import yaml

SOURCES = Path(__file__).resolve().parent / "session_length"
#: Per-engine overrides of the sources (the dashboard over the lake); the sources themselves are amplitude://'s.
ENGINE_SOURCES = Path(__file__).resolve().parent / "engines"
DEFAULT_ENGINE = "amplitude"
ROOT = "session_length_dashboard"
VERSION = "1.0.0"
# Fixed, so that rebuilding gives the same bytes.
TIMESTAMP = "2026-01-01T00:00:00+00:00"
ZIP_DATE = (2026, 1, 1, 0, 0, 0)
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/shillelagh-amplitude/dashboards/session_length")
DATASOURCE_PLACEHOLDER = "0__table"  # the importer rewrites it to the imported dataset's id
DEFAULT_ROW_LIMIT = 10000
NO_FILTER = "No filter"

ECHARTS_DEFAULTS: dict[str, Any] = {
    "groupby": [],
    "row_limit": DEFAULT_ROW_LIMIT,
    "show_legend": True,
    "legendType": "scroll",
    "legendOrientation": "top",
    "rich_tooltip": True,
    # one date form on every day label ("Nov 05"); smart_date mixed "Thu 05", "Nov 29" and "2026"
    "x_axis_time_format": "%b %d",
    # room for tick labels up to "10,000" beside the title (at 30 the title overlapped them)
    "y_axis_title_margin": 75,
    "y_axis_title_position": "Left",
    "color_scheme": "supersetColors",
    "show_empty_columns": True,
    "comparison_type": "values",
    "annotation_layers": [],
    "sort_series_type": "name",
    "sort_series_ascending": True,
}
VIZ_DEFAULTS: dict[str, dict[str, Any]] = {
    "big_number_total": {
        "header_font_size": 0.4,
        "subheader_font_size": 0.15,
        "y_axis_format": "SMART_NUMBER",
        "time_format": "smart_date",
    },
    "echarts_timeseries_line": {**ECHARTS_DEFAULTS, "seriesType": "line", "markerEnabled": True, "markerSize": 4},
    # every category label shown (ECharts' "auto" hides every other one when they are close)
    "echarts_timeseries_bar": {**ECHARTS_DEFAULTS, "orientation": "vertical", "xAxisLabelInterval": 0},
    "table": {
        "query_mode": "aggregate",
        "groupby": [],
        "all_columns": [],
        "percent_metrics": [],
        "order_by_cols": [],
        "server_pagination": False,
        "show_cell_bars": True,
        "table_timestamp_format": "smart_date",
        "include_search": False,
        "color_pn": False,
    },
}


#: y-axis formats without decimals: their axis needs whole-number ticks (ECharts' fractional ticks, 0.5 apart on
#: small counts, would print as "0, 1, 1, 2, 2")
WHOLE_NUMBER_FORMATS = frozenset({",d", ",.0f"})


def echart_options(viz_type: str, params: dict[str, Any]) -> str | None:
    """The chart's "ECharts Options" (Superset 6.1's ``echart_options``, a JS object literal it validates and merges
    over its own options; no setting needed) for what the form data cannot say: whole-number ticks on a y axis
    whose format shows no decimals, and on a day axis no extra label forced at the axis' end (Superset's
    ``showMaxLabel``, drawn a few pixels from the regular label before it)."""
    if not viz_type.startswith("echarts_timeseries"):
        return None
    options: dict[str, Any] = {}
    if params.get("y_axis_format") in WHOLE_NUMBER_FORMATS:
        options["yAxis"] = {"minInterval": 1}
    if params.get("time_grain_sqla"):
        options["xAxis"] = {"axisLabel": {"showMaxLabel": False}}
    return json.dumps(options, sort_keys=True) if options else None


def load(path: Path) -> dict[str, Any]:
    """One YAML source file."""
    return yaml.safe_load(path.read_text())


def uuid_for(kind: str, key: str) -> str:
    """A stable UUID per object, so re-imports update rather than duplicate."""
    return str(uuid.uuid5(NAMESPACE, f"{kind}/{key}"))


def time_filter(column: str) -> dict[str, Any]:
    """The chart's time filter, open ("No filter"): the slot the dashboard's time range fills (Superset applies
    a native time filter to a chart's TEMPORAL_RANGE filters), so clearing the dashboard's really clears it."""
    return {
        "clause": "WHERE",
        "subject": column,
        "operator": "TEMPORAL_RANGE",
        "comparator": NO_FILTER,
        "expressionType": "SIMPLE",
    }


def chart_params(viz_type: str, params: dict[str, Any], dataset: dict[str, Any]) -> dict[str, Any]:
    """Full form data: viz defaults, an open time filter on the dataset's time column, the source's params.
    No time range of its own: the dashboard's time filter is the only one."""
    dttm = dataset.get("main_dttm_col")
    options = echart_options(viz_type, params)
    return {
        "datasource": DATASOURCE_PLACEHOLDER,
        "viz_type": viz_type,
        **VIZ_DEFAULTS[viz_type],
        "time_range": NO_FILTER,
        "adhoc_filters": [time_filter(dttm)] if dttm else [],
        "extra_form_data": {},
        **({"echart_options": options} if options else {}),
        **params,
    }


def query_object(params: dict[str, Any]) -> dict[str, Any]:
    """What the frontend's ``buildQueryObject`` derives from the form data, per viz type."""
    viz_type = params["viz_type"]
    query: dict[str, Any] = {
        "filters": [
            {"col": f["subject"], "op": f["operator"], "val": f["comparator"]} for f in params["adhoc_filters"]
        ],
        "extras": {"having": "", "where": ""},
        "applied_time_extras": {},
        "annotation_layers": [],
        "row_limit": params.get("row_limit", DEFAULT_ROW_LIMIT),
        "series_limit": 0,
        "order_desc": params.get("order_desc", True),
        "url_params": {},
        "custom_params": {},
        "custom_form_data": {},
    }
    if viz_type == "big_number_total":
        return {**query, "columns": [], "metrics": [params["metric"]], "post_processing": []}
    metrics = params["metrics"]
    sort_metric = params.get("timeseries_limit_metric")
    if sort_metric:
        query["series_limit_metric"] = sort_metric
    if viz_type == "table":
        return {
            **query,
            "columns": params["groupby"],
            "metrics": metrics,
            "orderby": [[sort_metric or metrics[0], not query["order_desc"]]],
            "post_processing": [],
        }
    x_axis = params["x_axis"]
    axis: dict[str, Any] = {
        "columnType": "BASE_AXIS",
        "sqlExpression": x_axis,
        "label": x_axis,
        "expressionType": "SQL",
    }
    if grain := params.get("time_grain_sqla"):
        axis["timeGrain"] = grain
    x_axis_sort = params.get("x_axis_sort")
    # "X-axis sort by" a metric the chart does not draw: the series limit metric, queried and sorted by, not shown
    extra = [sort_metric] if (sort_metric and sort_metric == x_axis_sort and sort_metric not in metrics
                              and not params["groupby"]) else []
    queried = [*metrics, *extra]
    post_processing: list[dict[str, Any]] = [
        {
            "operation": "pivot",
            "options": {
                "index": [x_axis],
                "columns": params["groupby"],
                "aggregates": {metric: {"operator": "mean"} for metric in queried},
                "drop_missing_columns": not params["show_empty_columns"],
            },
        }
    ]
    if x_axis_sort == x_axis:
        post_processing.append(
            {"operation": "sort", "options": {"is_sort_index": True, "ascending": params["x_axis_sort_asc"]}}
        )
    elif x_axis_sort in queried:
        post_processing.append(
            {"operation": "sort", "options": {"by": x_axis_sort, "ascending": params["x_axis_sort_asc"]}}
        )
    post_processing.append({"operation": "flatten"})
    return {
        **query,
        "columns": [axis, *params["groupby"]],
        "metrics": queried,
        "orderby": [[sort_metric or metrics[0], not query["order_desc"]]],
        "series_columns": params["groupby"],
        "time_offsets": [],
        "post_processing": post_processing,
    }


def query_context(params: dict[str, Any]) -> str:
    """The chart's saved query context (a JSON string in the bundle)."""
    return json.dumps(
        {
            "datasource": {"id": 0, "type": "table"},
            "force": False,
            "queries": [query_object(params)],
            "form_data": params,
            "result_format": "json",
            "result_type": "full",
        },
        sort_keys=True,
    )


def dataset_config(key: str, source: dict[str, Any], database_uuid: str) -> dict[str, Any]:
    """A dataset file: every column and saved metric spelled out."""
    columns = [
        {
            "column_name": column["column_name"],
            "verbose_name": column.get("verbose_name"),
            "type": column["type"],
            "is_dttm": column.get("is_dttm", False),
            "is_active": True,
            "groupby": column.get("groupby", True),
            "filterable": True,
            "expression": column.get("expression"),
            "description": column.get("description"),
            "python_date_format": None,
            "extra": {},
        }
        for column in source["columns"]
    ]
    metrics = [
        {
            "metric_name": metric["metric_name"],
            "verbose_name": metric.get("verbose_name"),
            "metric_type": None,
            "expression": metric["expression"],
            "description": metric.get("description"),
            "d3format": metric.get("d3format"),
            "warning_text": None,
            "extra": {},
        }
        for metric in source["metrics"]
    ]
    return {
        "table_name": source["table_name"],
        "main_dttm_col": source.get("main_dttm_col"),
        "description": source.get("description"),
        "default_endpoint": None,
        "offset": 0,
        "cache_timeout": None,
        "schema": None,
        "sql": source["sql"],
        "params": None,
        "template_params": None,
        "filter_select_enabled": True,
        "fetch_values_predicate": None,
        "extra": None,
        "normalize_columns": False,
        "uuid": uuid_for("dataset", key),
        "metrics": metrics,
        "columns": columns,
        "version": VERSION,
        "database_uuid": database_uuid,
    }


def position(dashboard: dict[str, Any], chart_ids: dict[str, int], charts: dict[str, dict[str, Any]]) -> dict:
    """Superset's layout tree: ROOT > GRID > one ROW per source row > CHART / MARKDOWN."""
    tree: dict[str, Any] = {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
        "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
        "HEADER_ID": {"type": "HEADER", "id": "HEADER_ID", "meta": {"text": dashboard["dashboard_title"]}},
    }
    for number, row in enumerate(dashboard["rows"], start=1):
        row_id = f"ROW-{number}"
        parents = ["ROOT_ID", "GRID_ID", row_id]
        children = []
        if "markdown" in row:
            item_id = f"MARKDOWN-{number}"
            tree[item_id] = {
                "type": "MARKDOWN",
                "id": item_id,
                "children": [],
                "parents": parents,
                "meta": {"width": 12, "height": row["height"], "code": row["markdown"]},
            }
            children.append(item_id)
        for key, width in row.get("charts", {}).items():
            item_id = f"CHART-{key}"
            tree[item_id] = {
                "type": "CHART",
                "id": item_id,
                "children": [],
                "parents": parents,
                "meta": {
                    "chartId": chart_ids[key],
                    "uuid": uuid_for("chart", key),
                    "width": width,
                    "height": row["height"],
                    "sliceName": charts[key]["slice_name"],
                },
            }
            children.append(item_id)
        tree[row_id] = {
            "type": "ROW",
            "id": row_id,
            "children": children,
            "parents": ["ROOT_ID", "GRID_ID"],
            "meta": {"background": "BACKGROUND_TRANSPARENT"},
        }
        tree["GRID_ID"]["children"].append(row_id)
    return tree


def label_colors(datasets: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Fixed series colours, by metric name and by its label: a metric keeps its colour whatever the filters."""
    colors = {}
    for dataset in datasets.values():
        for metric in dataset["metrics"]:
            if color := metric.get("color"):
                colors[metric["metric_name"]] = color
                if metric.get("verbose_name"):
                    colors[metric["verbose_name"]] = color
    return colors


def native_filter(source: dict[str, Any], default_time_range: str, excluded: list[int]) -> dict[str, Any]:
    """One native filter: the time range (with its default) or a value select on a dataset column."""
    key = source.get("column", "time_range")
    config: dict[str, Any] = {
        "id": f"NATIVE_FILTER-{key}",
        "name": source["name"],
        "filterType": source["type"],
        "type": "NATIVE_FILTER",
        "description": source.get("description", ""),
        "cascadeParentIds": [],
        "scope": {"rootPath": ["ROOT_ID"], "excluded": excluded},
        "tabsInScope": [],
    }
    if source["type"] == "filter_time":
        return {
            **config,
            "targets": [{}],
            "controlValues": {"enableEmptyFilter": False},
            "defaultDataMask": {
                "extraFormData": {"time_range": default_time_range},
                "filterState": {"value": default_time_range},
                "ownState": {},
            },
        }
    return {
        **config,
        "targets": [{"datasetUuid": uuid_for("dataset", source["dataset"]), "column": {"name": source["column"]}}],
        "controlValues": {
            "enableEmptyFilter": False,
            "defaultToFirstItem": False,
            "multiSelect": True,
            "searchAllOptions": False,
            "inverseSelection": False,
            "sortAscending": True,
        },
        "defaultDataMask": {"extraFormData": {}, "filterState": {}, "ownState": {}},
    }


def dashboard_config(
    dashboard: dict[str, Any], charts: dict[str, dict[str, Any]], datasets: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The dashboard file; chart ids are placeholders the importer remaps through ``position``."""
    chart_ids = {key: number for number, key in enumerate(sorted(charts), start=1)}
    excluded = [chart_ids[key] for key in dashboard.get("unfiltered_charts", [])]
    filters = [native_filter(f, dashboard["default_time_range"], excluded) for f in dashboard["filters"]]
    return {
        "dashboard_title": dashboard["dashboard_title"],
        "description": dashboard.get("description"),
        "css": "",
        "slug": dashboard["slug"],
        "certified_by": None,
        "certification_details": None,
        "published": dashboard.get("published", True),
        "uuid": uuid_for("dashboard", dashboard["slug"]),
        "position": position(dashboard, chart_ids, charts),
        "metadata": {
            "color_scheme": "supersetColors",
            "refresh_frequency": 0,
            "expanded_slices": {},
            "label_colors": label_colors(datasets),
            "shared_label_colors": [],
            "timed_refresh_immune_slices": [],
            "cross_filters_enabled": False,
            "default_filters": "{}",
            "chart_configuration": {},
            "global_chart_configuration": {"scope": {"rootPath": ["ROOT_ID"], "excluded": []}},
            "native_filter_configuration": filters,
        },
        "version": VERSION,
    }


def engines() -> list[str]:
    """The engines a bundle can be built for."""
    return [DEFAULT_ENGINE, *sorted(path.stem for path in ENGINE_SOURCES.glob("*.yaml"))]


def for_engine(engine: str, database: dict[str, Any], datasets: dict[str, dict[str, Any]],
               charts: dict[str, dict[str, Any]], dashboard: dict[str, Any], template_processing: bool) -> None:
    """Apply ``engines/<engine>.yaml`` in place: its connection, each dataset's ``sql`` and metric expressions,
    and names of their own for the datasets (Superset's metadata DB wants dataset names unique) and the dashboard,
    so that each engine's bundle imports beside the others.

    Left out: a dataset the engine has no SQL for, with its charts; and unless ``template_processing`` (a Superset
    with ENABLE_TEMPLATE_PROCESSING),
    the "Sessions that contain event" filter, whose SQL on these engines is Jinja (``template_where``), and its
    ``template_only`` dataset: on Superset's defaults a lake dashboard has every chart and the other filters."""
    overrides = load(ENGINE_SOURCES / f"{engine}.yaml")
    database.clear()
    database.update(overrides["database"])
    kept = {key for key, override in overrides["datasets"].items()
            if template_processing or not override.get("template_only")}
    for key in set(datasets) - kept:
        del datasets[key]
    for key in [key for key, chart in charts.items() if chart["dataset"] not in datasets]:
        del charts[key]
    dashboard["filters"] = [f for f in dashboard["filters"] if f.get("dataset", "sessions") in datasets]
    for key in kept:
        override = overrides["datasets"][key]
        dataset = datasets[key]
        dataset["table_name"] = f"{dataset['table_name']}_{engine}"
        where = override.get("template_where") if template_processing else None
        dataset["sql"] = f"{override['sql']}\n{where}" if where else override["sql"]
        expressions = override.get("metrics", {})
        unknown = set(expressions) - {metric["metric_name"] for metric in dataset["metrics"]}
        if unknown:
            raise ValueError(f"engines/{engine}.yaml: dataset {key} has no metrics {sorted(unknown)}")
        for metric in dataset["metrics"]:
            metric["expression"] = expressions.get(metric["metric_name"], metric["expression"])
    dashboard["dashboard_title"] = f"{dashboard['dashboard_title']} ({overrides['label']})"
    dashboard["slug"] = f"{dashboard['slug']}-{engine}"


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def scoped_uuids(value: Any, engine: str, keep: frozenset[str] = frozenset()) -> Any:
    """``value`` with every UUID but those in ``keep`` derived anew for ``engine``: its objects never overwrite
    another engine's."""
    if isinstance(value, dict):
        return {key: scoped_uuids(item, engine, keep) for key, item in value.items()}
    if isinstance(value, list):
        return [scoped_uuids(item, engine, keep) for item in value]
    if isinstance(value, str) and _UUID.fullmatch(value) and value not in keep:
        return str(uuid.uuid5(NAMESPACE, f"{engine}/{value}"))
    return value


def bundle_files(sources: Path = SOURCES, database_uuid: str | None = None, engine: str = DEFAULT_ENGINE,
                 sqlalchemy_uri: str | None = None, template_processing: bool = False) -> dict[str, dict[str, Any]]:
    """Every file of the bundle (path inside the root folder -> content); the connection's UUID is
    ``database_uuid`` (an existing connection's) or the bundle's own; ``sqlalchemy_uri`` replaces the
    connection's (e.g. where the Spark Thrift Server or the DuckDB file is); ``template_processing``: see
    :func:`for_engine` (amplitude://'s bundle needs none)."""
    database = load(sources / "database.yaml")
    datasets = {path.stem: load(path) for path in sorted((sources / "datasets").glob("*.yaml"))}
    charts = {path.stem: load(path) for path in sorted((sources / "charts").glob("*.yaml"))}
    dashboard = load(sources / "dashboard.yaml")
    if engine != DEFAULT_ENGINE:
        for_engine(engine, database, datasets, charts, dashboard, template_processing)
    if sqlalchemy_uri:
        database["sqlalchemy_uri"] = sqlalchemy_uri
    existing = frozenset({database_uuid} if database_uuid else ())
    database_uuid = database_uuid or uuid_for("database", database["database_name"])
    laid_out = [key for row in dashboard["rows"] for key in row.get("charts", {})]
    if sorted(laid_out) != sorted(charts):
        raise ValueError(f"dashboard.yaml must place each chart once: {sorted(laid_out)} vs {sorted(charts)}")

    files: dict[str, dict[str, Any]] = {
        "metadata.yaml": {"version": VERSION, "timestamp": TIMESTAMP},  # no type: dashboard and assets importers
        f"databases/{database['database_name']}.yaml": {**database, "uuid": database_uuid, "version": VERSION},
    }
    for key, source in datasets.items():
        files[f"datasets/{database['database_name']}/{key}.yaml"] = dataset_config(key, source, database_uuid)
    for key, chart in charts.items():
        params = chart_params(chart["viz_type"], chart["params"], datasets[chart["dataset"]])
        files[f"charts/{key}.yaml"] = {
            "slice_name": chart["slice_name"],
            "description": chart.get("description"),
            "certified_by": None,
            "certification_details": None,
            "viz_type": chart["viz_type"],
            "params": params,
            "query_context": query_context(params),
            "cache_timeout": None,
            "uuid": uuid_for("chart", key),
            "version": VERSION,
            "dataset_uuid": uuid_for("dataset", chart["dataset"]),
        }
    files[f"dashboards/{dashboard['slug']}.yaml"] = dashboard_config(dashboard, charts, datasets)
    return files if engine == DEFAULT_ENGINE else scoped_uuids(files, engine, existing)


def build(out: Path, sources: Path = SOURCES, database_uuid: str | None = None, engine: str = DEFAULT_ENGINE,
          sqlalchemy_uri: str | None = None, template_processing: bool = False) -> Path:
    """Write the bundle ZIP (sorted members, fixed timestamps) and return its path."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        files = bundle_files(sources, database_uuid, engine, sqlalchemy_uri, template_processing)
        for name, content in sorted(files.items()):
            info = zipfile.ZipInfo(f"{ROOT}/{name}", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, yaml.safe_dump(content, sort_keys=False, allow_unicode=True))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buffer.getvalue())
    return out


def connection_uuid(text: str) -> str:
    """A connection's UUID as Superset writes it (``GET /api/v1/database/`` lists each one's ``uuid``)."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r} (e.g. 2f1c0d4e-9b7a-4c55-8a0e-3d6f1b2c4a59)") from None


def main(argv: list[str] | None = None) -> None:
    """Command line entry: build the bundle."""
    parser = argparse.ArgumentParser(
        prog="amplitude-dashboard",
        description="Write the importable ZIP of the \"Session length\" dashboard (Superset: Dashboards > Import).",
    )
    parser.add_argument("--output", "--out", type=Path, default=Path(f"{ROOT}.zip"),
                        help=f"ZIP to write (default ./{ROOT}.zip)")
    parser.add_argument(
        "--database-uuid", type=connection_uuid,
        help="use your existing Amplitude connection (its uuid, from /api/v1/database/ in Superset): the import "
             "then creates no connection of its own; without it the import creates one named \"Amplitude\", "
             "without keys",
    )
    parser.add_argument("--engine", choices=engines(), default=DEFAULT_ENGINE,
                        help="amplitude:// (default), or the lake through duckdb-engine or Spark's Thrift Server")
    parser.add_argument("--sqlalchemy-uri", help="the connection's URI, e.g. hive://hive@spark:10000/amplitude or "
                        "duckdb:////lake/_amplitude_lake.duckdb?access_mode=read_only (default: the engine's example)")
    parser.add_argument("--template-processing", action="store_true",
                        help="with --engine: your Superset has ENABLE_TEMPLATE_PROCESSING on, so the lake dashboard "
                        "gets the \"Sessions that contain event\" filter (Jinja on these engines); without it "
                        "that filter is left out")
    args = parser.parse_args(argv)
    print(build(args.output, database_uuid=args.database_uuid, engine=args.engine,
                sqlalchemy_uri=args.sqlalchemy_uri, template_processing=args.template_processing))


if __name__ == "__main__":
    main()
