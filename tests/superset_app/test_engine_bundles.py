"""The dashboard bundle built for each lake engine (``build.py --engine``): its own objects beside the amplitude://
bundle's, the same charts, only the engine's SQL differing. Its numbers are tested on the engines
(``tests/test_lake_engines.py``) and in Superset (``tests/e2e/test_lake_dashboards.py``)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ..scripts import load_script

build = load_script("dashboards/build.py")
LAKE_ENGINES = ("duckdb", "spark")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def uuids(value: Any) -> set[str]:
    return set(UUID.findall(repr(value)))


@pytest.fixture(scope="module")
def amplitude() -> dict[str, dict[str, Any]]:
    return build.bundle_files()


def test_engines_offered() -> None:
    assert build.engines() == ["amplitude", "duckdb", "spark"]


@pytest.mark.parametrize("engine", LAKE_ENGINES)
@pytest.mark.parametrize("template_processing", [False, True])
def test_an_engines_bundle_has_objects_of_its_own(amplitude: dict, engine: str, template_processing: bool) -> None:
    files = build.bundle_files(engine=engine, template_processing=template_processing)
    assert uuids(files) and not uuids(files) & uuids(amplitude)
    datasets = {config["table_name"] for name, config in files.items() if name.startswith("datasets/")}
    lake_datasets = ("sessions", "data_status", "session_definitions", *(("event_types",) * template_processing))
    assert datasets == {f"{name}_{engine}" for name in lake_datasets}
    (dashboard,) = [config for name, config in files.items() if name.startswith("dashboards/")]
    assert dashboard["slug"] == f"session-length-{engine}"
    # the native filters point at this bundle's datasets
    dataset_uuids = {config["uuid"] for name, config in files.items() if name.startswith("datasets/")}
    targets = {target["datasetUuid"] for f in dashboard["metadata"]["native_filter_configuration"]
               for target in f["targets"] if target}
    assert targets and targets <= dataset_uuids
    # every chart of amplitude://'s dashboard, the user-session definitions' included
    charts = sorted(name for name in files if name.startswith("charts/"))
    assert charts == sorted(name for name in amplitude if name.startswith("charts/")) and len(charts) == 21
    # on Superset's defaults (no template processing) the lake's SQL holds no Jinja, and the one filter that
    # needs it on these engines is left out
    names = [f["name"] for f in dashboard["metadata"]["native_filter_configuration"]]
    jinja = [c["sql"] for n, c in files.items() if n.startswith("datasets/") and "{%" in c["sql"]]
    if template_processing:
        assert names[-1] == "Sessions that contain event" and len(jinja) == 1
    else:
        assert names == ["Time range", "Plan", "Country", "Platform"] and jinja == []


def test_the_connection_uri_can_be_given() -> None:
    uri = "duckdb:////srv/views.duckdb?access_mode=read_only"
    files = build.bundle_files(engine="duckdb", sqlalchemy_uri=uri)
    (database,) = [config for name, config in files.items() if name.startswith("databases/")]
    assert (database["database_name"], database["sqlalchemy_uri"]) == ("Amplitude lake (DuckDB)", uri)


@pytest.mark.parametrize(("engine", "p95"), [("spark", "percentile(length_s, 0.95)"),
                                             ("duckdb", "quantile_cont(length_s, 0.95)")])
def test_percentiles_are_exact_and_never_median(engine: str, p95: str) -> None:
    """Spark: sqlglot's Hive dialect rewrites MEDIAN into a PERCENTILE_CONT Spark refuses; no approximations."""
    files = build.bundle_files(engine=engine)
    (sessions,) = [c for n, c in files.items() if n.startswith("datasets/") and c["table_name"].startswith("sessions")]
    metrics = {metric["metric_name"]: metric["expression"] for metric in sessions["metrics"]}
    assert metrics["p95_length_s"] == p95
    sql = [c["sql"] for n, c in files.items() if n.startswith("datasets/")] + list(metrics.values())
    assert not [text for text in sql if "median(" in text.lower() or "approx" in text.lower()]


def test_an_override_of_an_unknown_metric_is_refused(tmp_path, monkeypatch) -> None:
    (tmp_path / "x.yaml").write_text(
        "label: X\ndatabase: {database_name: X, sqlalchemy_uri: 'x://'}\n"
        "datasets: {sessions: {sql: SELECT 1, metrics: {p99_length_s: '1'}}}\n")
    monkeypatch.setattr(build, "ENGINE_SOURCES", tmp_path)
    with pytest.raises(ValueError, match=r"engines/x.yaml: dataset sessions has no metrics \['p99_length_s'\]"):
        build.bundle_files(engine="x")
