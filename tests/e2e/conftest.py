"""End-to-end fixtures: a real Superset started the way ``make demo`` starts it, and a headless Chromium.

The server runs on a free loopback port with its own metadata DB and hour store in a temporary folder,
loaded with a generated sample through the real decode path (``amplitude-load``). Timings of every step
go to ``test-output/e2e/timings.json``; screenshots next to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
import requests
import yaml

from ..helpers import free_port
from ..scripts import REPO, load_script
from .browser import polling_wait

OUTPUT = REPO / "test-output" / "e2e"
SAMPLE_DAYS = 30
SAMPLE_EVENTS = 60_000
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
T = TypeVar("T")


# The tests drive scripts/demo.py's functions, so the demo's path is the tested one.
demo = load_script("scripts/demo.py")


@dataclass
class Superset:
    """A running Superset and what the tests need to talk to it."""

    base: str
    password: str
    env: dict[str, str]
    layout: object
    bundle: Path
    timings: dict[str, float] = field(default_factory=dict)

    def session(self) -> requests.Session:
        return demo.api_session(self.base, "admin", self.password)


def whole_days_end() -> datetime:
    """Where the demo's sample and the dashboard's default range end: the midnight at or before the end of the
    newest hour the Export API serves (hour H from H + 3 h), i.e. of now less 2 h."""
    return (datetime.now(UTC) - timedelta(hours=2)).replace(hour=0, minute=0, second=0, microsecond=0)


def default_range() -> tuple[str, datetime, datetime]:
    """The dashboard's default time range as its YAML writes it, and the 30 whole UTC days it means now."""
    written = yaml.safe_load((REPO / "dashboards/session_length/dashboard.yaml").read_text())["default_time_range"]
    return written, whole_days_end() - timedelta(days=30), whole_days_end()


def timed(timings: dict[str, float], name: str, action: Callable[..., T], *args: object) -> T:
    """Run one step and record its duration in seconds."""
    started = time.monotonic()
    result = action(*args)
    timings[name] = round(time.monotonic() - started, 2)
    return result


@pytest.fixture(scope="session")
def superset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Superset]:
    """Initialise, load the sample, build the bundle, serve; stop the server afterwards."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    layout = demo.Layout(tmp_path_factory.mktemp("var"))
    env = demo.superset_env(layout, live=False)
    # the tests' operator allows the emulators and the unresolvable host of the connection checks
    env["AMPLITUDE_ALLOWED_BASE_URLS"] = "http://127.0.0.1:*,https://analytics.eu.amplitude.invalid"
    # Jinja on, for the lake bundles built with --template-processing (test_lake_dashboards.py); the other bundles
    # hold no Jinja, and the amplitude:// one on Superset's defaults is test_stock_superset.py's
    env["SUPERSET_ENABLE_TEMPLATE_PROCESSING"] = "true"
    timings: dict[str, float] = {}
    password = timed(timings, "superset_init_s", demo.init_superset, layout, env)
    timed(timings, "sample_generate_and_load_s", demo.prepare_sample, layout, env, SAMPLE_DAYS, SAMPLE_EVENTS)
    bundle = timed(timings, "bundle_build_s", demo.build_bundle, layout)
    base = f"http://127.0.0.1:{free_port()}"
    process = demo.start_server(layout, env, "127.0.0.1", int(base.rsplit(":", 1)[1]))
    try:
        timings["server_start_s"] = round(demo.wait_healthy(base, process, layout.log), 2)
        yield Superset(base, password, env, layout, bundle, timings)
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.copy(layout.log, OUTPUT / "superset-server.log")
        (OUTPUT / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")


@pytest.fixture(scope="session")
def imported(superset: Superset) -> subprocess.CompletedProcess:
    """The bundle imported with ``superset import-dashboards`` (the CLI), as an operator would."""
    started = time.monotonic()
    result = subprocess.run(
        [str(demo.BIN / "superset"), "import-dashboards", "-p", str(superset.bundle), "-u", "admin"],
        env=superset.env, capture_output=True, text=True, check=False,
    )
    superset.timings["import_cli_s"] = round(time.monotonic() - started, 2)
    return result


@pytest.fixture(scope="session")
def api(superset: Superset, imported: subprocess.CompletedProcess) -> requests.Session:
    """A logged-in REST session, after the import."""
    return superset.session()


def ensure_chromium() -> None:
    """Debian's chromium and chromium-driver, installed with apt-get when missing (as root), else a clear stop."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    install = ["apt-get", "install", "-y", "chromium", "chromium-driver"]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail(f"Browser tests need Debian's Chromium: run `sudo apt-get update && sudo {' '.join(install)}`")
    subprocess.run(["apt-get", "update"], check=True, capture_output=True)
    subprocess.run(install, check=True, capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def login_steps(password: str, resend_s: float = 10) -> Callable[[object], bool]:
    """Logging in as admin by what the login page shows, one step a call: each field is typed until it holds its
    value (the page's script may draw the form again after the first keys), then the form is sent, again if the
    page still shows it ``resend_s`` later; True once the browser has left the login page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    sent = [float("-inf")]

    def step(driver) -> bool:
        if "/login" not in driver.current_url:
            return True
        for name, value in (("username", "admin"), ("password", password)):
            element = driver.find_element(By.ID, name)
            if element.get_attribute("value") != value:
                element.send_keys(Keys.CONTROL, "a")
                element.send_keys(value)
                return False
        if time.monotonic() - sent[0] > resend_s:
            driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            sent[0] = time.monotonic()
        return False

    return step


@contextlib.contextmanager
def chromium(base: str, password: str) -> Iterator[object]:
    """Headless Chromium, logged in as admin on the Superset at ``base``."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    ensure_chromium()
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,3400"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(f"{base}/login/")
        polling_wait(driver, 120, ignored=(WebDriverException,)).until(login_steps(password))
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def browser(superset: Superset) -> Iterator[object]:
    """Headless Chromium, logged in as admin."""
    with chromium(superset.base, superset.password) as driver:
        yield driver
