"""Superset's "Test connection" and "Connect" ask Amplitude (here its emulator) once: a rejected key, an unknown
region or host, a closed port and a good key are distinct, readable errors within seconds, by REST and in the
browser form; the secret appears nowhere."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from shillelagh_amplitude.hours import floor_hour, format_hour
from shillelagh_amplitude.sample.emulator import ExportEmulator
from shillelagh_amplitude.sample.generator import generate_dataset

from .browser import modal_button, open_connect_form
from .conftest import OUTPUT, Superset, free_port

pytestmark = pytest.mark.e2e

API_KEY, SECRET_KEY = "check-key", "check-secret-5b2a"
WITHIN_S = 10


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExportEmulator]:
    data = tmp_path_factory.mktemp("check-project")
    end = floor_hour(datetime.now(UTC))
    generate_dataset(data, end - timedelta(hours=12), end, events=500, seed=9)
    with ExportEmulator(data, api_key=API_KEY, secret_key=SECRET_KEY) as emulator:
        yield emulator


def cases(emulator: ExportEmulator) -> dict[str, tuple[dict, str | None, str]]:
    """name -> (form parameters, error type or None for success, start of the message)."""
    wrong = f"wrong-{secrets.token_hex(6)}"
    port = free_port()
    return {
        "wrong secret": ({"password": wrong, "query": {"base_url": emulator.base_url}},
                         "CONNECTION_ACCESS_DENIED_ERROR",
                         "Amplitude rejected the credentials (403 'Invalid API Key')"),
        "unknown region": ({"query": {"region": "mars"}}, "CONNECTION_INVALID_HOSTNAME_ERROR",
                           "Unknown region 'mars': use 'us' or 'eu'"),
        "unknown host": ({"query": {"base_url": "https://analytics.eu.amplitude.invalid"}},
                         "CONNECTION_INVALID_HOSTNAME_ERROR", "Unknown host 'analytics.eu.amplitude.invalid'"),
        "closed port": ({"query": {"base_url": f"http://127.0.0.1:{port}"}}, "CONNECTION_PORT_CLOSED_ERROR",
                        f"Could not reach Amplitude's Export API at http://127.0.0.1:{port}: the connection was "
                        "refused"),
        "good key": ({"query": {"base_url": emulator.base_url}}, None, ""),
    }


def test_test_connection_over_rest(superset: Superset, api, project: ExportEmulator) -> None:
    timings = {}
    for name, (parameters, error_type, message) in cases(project).items():
        project.clear_requests()
        form = {"username": API_KEY, "password": SECRET_KEY, **parameters}
        started = time.monotonic()
        response = api.post(f"{superset.base}/api/v1/database/test_connection/", json={
            "database_name": f"Amplitude check ({name})", "engine": "amplitude",
            "configuration_method": "dynamic_form", "parameters": form,
        })
        timings[name] = round(time.monotonic() - started, 2)
        assert timings[name] < WITHIN_S, name
        assert form["password"] not in response.text, name
        if error_type is None:
            assert (response.status_code, response.json()) == (200, {"message": "OK"}), response.text[:500]
            # one small request: the newest exportable hour, with the keys given
            (request,) = project.requests
            newest = floor_hour(datetime.now(UTC)) - timedelta(hours=3)
            assert (request.start, request.end, request.authorized) == (format_hour(newest), format_hour(newest), True)
            continue
        assert response.status_code == 400, (name, response.text[:500])
        (error,) = response.json()["errors"]
        assert error["error_type"] == error_type, (name, error)
        assert error["message"].startswith(message), (name, error["message"])
        if name == "wrong secret":
            assert [r.status for r in project.requests] == [403]  # asked once, not retried
    superset.timings["test_connection_rest_s"] = timings
    # the form validates its fields on every change: that never calls Amplitude
    project.clear_requests()
    valid = api.post(f"{superset.base}/api/v1/database/validate_parameters/", json={
        "engine": "amplitude", "configuration_method": "dynamic_form",
        "parameters": {"username": API_KEY, "password": "half-typ", "query": {"base_url": project.base_url}},
    })
    assert valid.status_code == 200, valid.text[:500]
    assert project.requests == []
    assert secrets_absent(superset)


def secrets_absent(superset: Superset) -> bool:
    log = superset.layout.log.read_text()
    return SECRET_KEY not in log and "wrong-" not in log


def test_connect_form_in_the_browser_reports_each_problem(superset: Superset, api, browser,
                                                          project: ExportEmulator) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    def connect(name: str, password: str, query: str) -> None:
        open_connect_form(browser, superset.base).send_keys(API_KEY)
        browser.find_element(By.CSS_SELECTOR, ".ant-modal input[name=password]").send_keys(password)
        display = browser.find_element(By.CSS_SELECTOR, ".ant-modal input[name=database_name]")
        display.send_keys(Keys.CONTROL, "a")
        display.send_keys(f"Amplitude check form ({name})")
        browser.find_element(By.CSS_SELECTOR, ".ant-modal input[name=query_input]").send_keys(query, Keys.TAB)
        modal_button(browser, "Connect").click()

    def created(name: str) -> bool:
        databases = api.get(f"{superset.base}/api/v1/database/").json()["result"]
        return any(d["database_name"] == f"Amplitude check form ({name})" for d in databases)

    for name, (parameters, error_type, message) in cases(project).items():
        if name == "unknown region":  # the form itself refuses it before connecting (validate_parameters)
            continue
        password = parameters.get("password", SECRET_KEY)
        query = "&".join(f"{k}={v}" for k, v in parameters["query"].items())
        started = time.monotonic()
        connect(name, password, query)
        if error_type is None:
            WebDriverWait(browser, WITHIN_S).until(lambda _, name=name: created(name))
        else:
            shown = message[:60]
            try:
                # Superset's form says "We are unable to connect to your database." with "See more": the details
                more = WebDriverWait(browser, WITHIN_S).until(
                    lambda d: [e for e in d.find_elements(By.XPATH, "//*[text()='See more']") if e.is_displayed()])
                more[0].click()
                WebDriverWait(browser, 10).until(
                    lambda d, shown=shown: shown in d.find_element(By.TAG_NAME, "body").text)
            finally:
                browser.save_screenshot(str(OUTPUT / f"connect-{name.replace(' ', '-')}.png"))
                (OUTPUT / f"connect-{name.replace(' ', '-')}.txt").write_text(
                    browser.find_element(By.TAG_NAME, "body").text)
            assert not created(name)
        assert time.monotonic() - started < WITHIN_S + 5, name
        assert password not in browser.page_source or error_type is None and password not in browser.page_source
