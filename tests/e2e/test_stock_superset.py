"""The README's "Add to an existing Superset", followed word for word on a stock Superset 6.1.

Superset runs on its default configuration (no ``SUPERSET_CONFIG_PATH``, no ``superset_config`` module) with no
``AMPLITUDE_*`` variable: only what Superset itself needs (``SUPERSET_SECRET_KEY``) and, for the test's
isolation, its home and cache folders in a temporary directory. The project is the Export API emulator, serving
30 generated days. In headless Chromium, the connection is made in the form, its ``uuid`` read from
``/api/v1/database/``, the ZIP written by the README's ``amplitude-dashboard`` line imported through
*Dashboards → Import*; then every chart and the native filters render with the numbers computed here from the
served records. Screenshots: ``test-output/e2e/stock-*.png``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shillelagh_amplitude.sample.emulator import ExportEmulator
from shillelagh_amplitude.sample.generator import generate_dataset, sample_window, write_export_zip

from ..expected import Session, kpis, sessions_from_records, user_property
from ..helpers import free_port, read_zip
from .browser import (
    CHART_AXES,
    DASHBOARD_STATE,
    filter_state_key,
    modal_button,
    open_connect_form,
    polling_wait,
    wait_for_dashboard,
)
from .conftest import OUTPUT, REPO, chromium, default_range, demo

pytestmark = pytest.mark.e2e

SECTION = "## Add to an existing Superset"
API_KEY = "stock-api-key"
SECRET_KEY = "stock-secret-" + secrets.token_hex(8)
EVENTS = 40_000
SLUG = "session-length"
CHARTS = len(list((REPO / "dashboards/session_length/charts").glob("*.yaml")))
DATASETS = [path.stem for path in (REPO / "dashboards/session_length/datasets").glob("*.yaml")]
LOAD_TIMEOUT_S = 180


def operator_section() -> str:
    """The README section this test follows."""
    readme = (REPO / "README.md").read_text()
    start = readme.index(f"\n{SECTION}\n")
    return readme[start:readme.index("\n## ", start + 1)]


def readme_command(section: str, program: str) -> str:
    """The line of the section's bash blocks that runs ``program``, as written."""
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    (line,) = [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith(program)]
    return line


@dataclass
class Stock:
    base: str
    password: str
    emulator: ExportEmulator
    sessions: list[Session]
    root: Path


def stock_env(root: Path) -> dict[str, str]:
    """Superset's defaults: nothing of ours; home and caches in ``root``. One AMPLITUDE_* variable: the emulator
    stands in for Amplitude at a loopback host, which the operator allows like any other ``base_url`` (a real
    project's ``region`` needs nothing)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMPLITUDE_", "SUPERSET_"))}
    env.pop("PYTHONPATH", None)
    env.update(SUPERSET_HOME=str(root / "superset"), SUPERSET_SECRET_KEY=secrets.token_urlsafe(32),
               FLASK_APP="superset", PYTHONUNBUFFERED="1", XDG_CACHE_HOME=str(root / "cache"),
               AMPLITUDE_ALLOWED_BASE_URLS="http://127.0.0.1:*")
    return env


@pytest.fixture(scope="module")
def stock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stock]:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    root = tmp_path_factory.mktemp("stock")
    env = stock_env(root)
    log = root / "superset" / "server.log"
    log.parent.mkdir()
    password = secrets.token_urlsafe(12)
    superset = str(demo.BIN / "superset")
    for command in ([superset, "db", "upgrade"], [superset, "init"],
                    [superset, "fab", "create-admin", "--username", "admin", "--firstname", "A", "--lastname", "B",
                     "--email", "admin@localhost", "--password", password]):
        with log.open("a") as out:
            subprocess.run(command, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT, check=True)
    now = datetime.now(UTC)  # the emulator's clock stays here: the served hours do not change during the test
    start, end, last_upload_hour = sample_window(30, now)
    generate_dataset(root / "data", start, end, events=EVENTS, seed=14)
    write_export_zip(root / "data", root / "served.zip", start, last_upload_hour)
    sessions = sessions_from_records(read_zip(root / "served.zip"))
    with ExportEmulator(root / "data", api_key=API_KEY, secret_key=SECRET_KEY, now=lambda: now) as emulator:
        base = f"http://127.0.0.1:{free_port()}"
        command = [str(demo.BIN / "gunicorn"), "--bind", base.removeprefix("http://"), *demo.GUNICORN_OPTIONS,
                   demo.GUNICORN_APP]
        with log.open("a") as out:
            process = subprocess.Popen(command, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        try:
            demo.wait_healthy(base, process, log)
            yield Stock(base, password, emulator, sessions, root)
        finally:
            process.terminate()
            process.wait(timeout=30)
            shutil.copy(log, OUTPUT / "stock-superset-server.log")


def test_the_section_asks_for_no_setting_and_its_pip_line_has_the_extra() -> None:
    section = operator_section()
    assert "**No setting is required**" in section
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert f"pip install '{project['name']}[superset]'" in section
    assert "rich" in project["optional-dependencies"]["superset"]  # what `superset db upgrade` needed


def test_connect_import_and_every_chart_on_a_stock_superset(stock: Stock) -> None:
    """Steps 1-4 of "Connect Amplitude and import the dashboard", in the browser."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    section = operator_section()
    api = demo.api_session(stock.base, "admin", stock.password)
    with chromium(stock.base, stock.password) as browser:
        wait = WebDriverWait(browser, 60)
        # 1. Settings -> Database Connections -> + Database, Amplitude Export API, Username/Password, Connect
        assert "*Settings → Database Connections → + Database*, choose **Amplitude Export API**" in section
        open_connect_form(browser, stock.base).send_keys(API_KEY)
        browser.find_element(By.CSS_SELECTOR, ".ant-modal input[name=password]").send_keys(SECRET_KEY)
        # the emulator is this project's Amplitude: its host instead of region=eu
        browser.find_element(By.CSS_SELECTOR, ".ant-modal input[name=query_input]").send_keys(
            f"base_url={stock.emulator.base_url}", Keys.TAB)
        connect = modal_button(browser, "Connect")
        browser.save_screenshot(str(OUTPUT / "stock-connect.png"))
        connect.click()
        WebDriverWait(browser, 60).until(lambda _: api.get(f"{stock.base}/api/v1/database/").json()["count"] == 1)

        # 2. the connection's uuid, from /api/v1/database/ in the same browser
        assert "open `/api/v1/database/` on your Superset" in section
        browser.get(f"{stock.base}/api/v1/database/")
        (listed,) = json.loads(browser.find_element(By.TAG_NAME, "body").text)["result"]
        assert listed["database_name"] == "Amplitude Export API"

        # 3. amplitude-dashboard, as the README writes it
        line = readme_command(section, "amplitude-dashboard")
        assert "<uuid>" in line
        arguments = shlex.split(line.replace("<uuid>", listed["uuid"]))
        workdir = stock.root / "operator"
        workdir.mkdir()
        subprocess.run([str(demo.BIN / arguments[0]), *arguments[1:]], cwd=workdir, check=True, capture_output=True)
        bundle = workdir / "session_length_dashboard.zip"
        assert f"select\n   `{bundle.name}`, and click **Import**" in section

        # 4. Dashboards -> Import dashboards -> the ZIP -> Import
        browser.get(f"{stock.base}/dashboard/list/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-test="import-button"]'))[0].click()
        upload = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".ant-modal input[type=file]"))[0]
        browser.execute_script("arguments[0].style.display = 'block';", upload)
        upload.send_keys(str(bundle))
        import_button = wait.until(lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, ".ant-modal-footer button")
                                              if b.text == "Import" and b.is_enabled()])[0]
        browser.save_screenshot(str(OUTPUT / "stock-import.png"))
        import_button.click()
        WebDriverWait(browser, 60).until(
            lambda _: [d["slug"] for d in api.get(f"{stock.base}/api/v1/dashboard/").json()["result"]] == [SLUG])

        # the import created no connection of its own: every dataset is on the operator's
        databases = api.get(f"{stock.base}/api/v1/database/").json()["result"]
        assert [d["uuid"] for d in databases] == [listed["uuid"]]
        datasets = api.get(f"{stock.base}/api/v1/dataset/?q=(page_size:100)").json()["result"]
        assert sorted(d["table_name"] for d in datasets) == sorted(DATASETS)
        assert {d["database"]["id"] for d in datasets} == {listed["id"]}

        # the dashboard: every chart, none in error, the native filters, the KPI as computed here
        _, first, end = default_range()
        sessions = f"{len([s for s in stock.sessions if first <= s.start < end]):,}"
        started = time.monotonic()
        browser.get(f"{stock.base}/superset/dashboard/{SLUG}/")
        state = wait_for_dashboard(browser, CHARTS, lambda s: s["numbers"].get("Sessions") == sessions)
        loaded_s = time.monotonic() - started
        browser.save_screenshot(str(OUTPUT / "stock-dashboard.png"))
        assert state["errors"] == [], state["errors"]
        filters = [e.text for e in browser.find_elements(By.CSS_SELECTOR, '[data-test="filter-control-name"]')]
        assert filters == ["Time range", "Plan", "Country", "Platform", "Sessions that contain event"]
        assert sessions in browser.find_element(By.TAG_NAME, "body").text
    (OUTPUT / "stock-timings.json").write_text(json.dumps({"dashboard_loaded_s": round(loaded_s, 2)}) + "\n")


def _chart_data(stock: Stock, api, metrics: list[str], filters: list[dict]) -> dict:
    """The sessions dataset's metrics over the dashboard's default range, as the dashboard asks for them."""
    datasets = api.get(f"{stock.base}/api/v1/dataset/?q=(page_size:100)").json()["result"]
    dataset_id = next(d["id"] for d in datasets if d["table_name"] == "sessions")
    written = default_range()[0]
    response = api.post(f"{stock.base}/api/v1/chart/data", json={
        "datasource": {"id": dataset_id, "type": "table"}, "force": True,
        "queries": [{"metrics": metrics, "columns": [],
                     "filters": [{"col": "session_start", "op": "TEMPORAL_RANGE", "val": written}, *filters]}],
        "result_format": "json", "result_type": "full",
    })
    assert response.status_code == 200, response.text[:500]
    (row,) = response.json()["result"][0]["data"]
    return row


def test_numbers_and_the_contains_event_filter_on_a_stock_superset(stock: Stock) -> None:
    """After the import above: the KPIs and "sessions that contain event" (no Jinja: template processing off)."""
    api = demo.api_session(stock.base, "admin", stock.password)
    _, first, end = default_range()
    window = [s for s in stock.sessions if first <= s.start < end]
    row = _chart_data(stock, api, ["sessions", "avg_length_s", "p50_length_s", "p95_length_s"], [])
    count, mean, median, p95 = kpis(window)
    assert row["sessions"] == count > 1000
    assert (row["avg_length_s"], row["p50_length_s"], row["p95_length_s"]) == pytest.approx((mean, median, p95))
    event = "invite_sent"
    row = _chart_data(stock, api, ["sessions"], [{"col": "contains_event", "op": "IN", "val": [event]}])
    assert row["sessions"] == sum(event in s.event_types for s in window) > 0


DAY_LABEL = re.compile(r"[A-Z][a-z]{2} \d{2}")  # "%b %d": "Nov 05"


def size_order(sizes: set[str]) -> list[str]:
    """Company sizes smallest first by their lower bound ("1-10", "11-50", ..., "1000+"), then "(none)"."""
    known = sorted((s for s in sizes if s != "(none)"), key=lambda s: int(re.match(r"\d+", s).group()))
    return known + ["(none)"] * ("(none)" in sizes)


def two_sessions(sessions: list[Session], first: datetime, end: datetime) -> tuple[datetime, datetime]:
    """A range of whole seconds, within one UTC day of [first, end), in which exactly two sessions start."""
    starts = sorted(s.start for s in sessions if first <= s.start < end)
    for before, one, two, after in zip(starts, starts[1:], starts[2:], starts[3:], strict=False):
        since = one.replace(microsecond=0)
        until = two.replace(microsecond=0) + timedelta(seconds=1)
        if before < since and after >= until and since.date() == two.date():
            return since, until
    raise AssertionError("no range with exactly two sessions")


def shown(axis: dict) -> list[str]:
    return [label["text"] for label in axis["labels"] if label["shown"]]


def test_chart_axes_on_a_stock_superset(stock: Stock) -> None:
    """After the import above, in Chromium, from each chart's ECharts instance: company sizes in size order with
    every label drawn; day axes in one date form, no label over another; and, over a range holding two sessions,
    whole-number y ticks (fractional ticks would print "0, 1, 1, 2, 2")."""
    _, first, end = default_range()
    window = [s for s in stock.sessions if first <= s.start < end]
    sizes = size_order({user_property(s, "company_size") or "(none)" for s in window})
    assert sizes != sorted(sizes)  # text order is not size order ("1000+" before "11-50")
    with chromium(stock.base, stock.password) as browser:
        browser.get(f"{stock.base}/superset/dashboard/{SLUG}/")
        charts = polling_wait(browser, LOAD_TIMEOUT_S).until(
            lambda d: (c := d.execute_script(CHART_AXES)) and all(
                c.get(name, {}).get("data") for name in ("Session length by company size", "Sessions per day",
                                                         "Session length per day")) and c)
        browser.save_screenshot(str(OUTPUT / "stock-axes.png"))
        assert len(charts["Session length by company size"]["series"]) == 2  # median and p95, not the sort key
        company = charts["Session length by company size"]["xAxis"]
        assert [label["text"] for label in company["labels"]] == sizes
        assert shown(company) == sizes  # none hidden
        for name in ("Sessions per day", "Session length per day", "Median session length per day by definition"):
            axis = charts[name]["xAxis"]
            labels = [label for label in axis["labels"] if label["shown"]]
            assert axis["type"] == "time" and len(labels) >= 4, name
            assert all(DAY_LABEL.fullmatch(label["text"]) for label in labels), (name, shown(axis))
            assert all(a["right"] < b["left"] for a, b in zip(labels, labels[1:], strict=False)), (name, labels)

        since, until = two_sessions(stock.sessions, first, end)
        key = filter_state_key(browser, SLUG, f"{since:%Y-%m-%dT%H:%M:%S} : {until:%Y-%m-%dT%H:%M:%S}")
        browser.get(f"{stock.base}/superset/dashboard/{SLUG}/?native_filters_key={key}")
        charts = polling_wait(browser, LOAD_TIMEOUT_S).until(
            lambda d: d.execute_script(DASHBOARD_STATE)["numbers"].get("Sessions") == "2"
            and (c := d.execute_script(CHART_AXES)).get("Sessions per day", {}).get("data")
            and c.get("Session length distribution", {}).get("data") and c)
        browser.save_screenshot(str(OUTPUT / "stock-axes-two-sessions.png"))
    day_ms = int(datetime.combine(since.date(), datetime.min.time(), UTC).timestamp() * 1000)
    assert charts["Sessions per day"]["data"] == [[day_ms, 2]]
    assert sum(count or 0 for _, count in charts["Session length distribution"]["data"]) == 2
    for name in ("Sessions per day", "Session length distribution"):
        ticks = shown(charts[name]["yAxis"])
        highest = max(count or 0 for _, count in charts[name]["data"])
        assert ticks == [str(n) for n in range(len(ticks))] and len(ticks) > highest, (name, ticks)
