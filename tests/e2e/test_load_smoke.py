"""The load test's smoke profile (``make load-smoke``) in ``make test``: 3 simulated users for 30 s against Superset
served as compose serves it, while a Celery worker and beat sync the store from the Export API emulator every 10 s.
Fails on any failed request, on an Export API request from a web process, and on a chart no user requested.

Reads what ``benchmarks/load_test.py`` wrote: locust's own statistics and failures, the emulator's request log
(each request's process, from the operating system) and the pids of the gunicorn workers seen during the run."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..scripts import REPO

pytestmark = pytest.mark.e2e

SMOKE = REPO / "test-output" / "load" / "smoke"
LOCUST = REPO / ".venv-load" / "bin" / "locust"
DASHBOARD = REPO / "dashboards" / "session_length"


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def dashboard_charts() -> set[str]:
    """The names of the charts the bundled dashboard lays out, from its YAML."""
    layout = yaml.safe_load((DASHBOARD / "dashboard.yaml").read_text())
    files = [name for row in layout["rows"] for name in row.get("charts", {})]
    return {yaml.safe_load((DASHBOARD / "charts" / f"{name}.yaml").read_text())["slice_name"] for name in files}


def test_smoke_load_with_background_sync_has_no_error_and_no_web_export_request() -> None:
    if not LOCUST.exists():
        pytest.fail("The load smoke test needs locust in .venv-load: run `make .venv-load/.installed`")
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "load_test.py"), "--smoke"],
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    stats = {row["Name"]: row for row in rows(SMOKE / "locust_stats.csv")}
    assert int(stats.pop("Aggregated")["Failure Count"]) == 0
    assert rows(SMOKE / "locust_failures.csv") == []
    assert all(int(row["Failure Count"]) == 0 for row in stats.values())
    # every chart of the dashboard requested by the users, and nothing else named as a chart
    requested = {name.removeprefix("chart: ") for name, row in stats.items()
                 if name.startswith("chart: ") and int(row["Request Count"]) > 0}
    assert requested == dashboard_charts() and len(requested) >= 20
    assert all(int(stats[name]["Request Count"]) > 0 for name in stats if name.startswith("sqllab: "))
    assert int(stats["token refresh"]["Request Count"]) > 0  # as a run past the tokens' 15 minutes needs

    # the Export API: every request's process known, none a gunicorn worker or master, the worker syncing meanwhile
    export = rows(SMOKE / "export_requests.csv")
    web = {int(row["pid"]) for row in rows(SMOKE / "memory.csv") if row["kind"] == "web"}
    assert export and web and all(row["pid"] for row in export)
    assert not {int(row["pid"]) for row in export} & web
    summary = json.loads((SMOKE / "summary.json").read_text())
    assert {row["kind"] for row in export} == {"celery"} and summary["export_requests"]["web"] == 0
    assert any(row["during_load"] == "True" for row in export)  # later syncs re-read hours not final yet
    assert {row["status"] for row in export} <= {"200", "404"}
