"""Issue 16: a stored secret key never follows a connection to another host.

A real Superset (as ``make demo`` starts it) and two Export API emulators knowing the same keys: ``home``, where a
connection's secret was typed, and ``other``, the host an editor points the connection to afterwards while leaving
the secret masked. Every path must refuse before any request: ``other``'s request log stays empty (a request
carrying the stored secret would show there as authorised). Going back to ``home`` with the mask still works, and
the secret shows in no API answer, export, error or log.
"""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
import requests
import yaml

from shillelagh_amplitude.hours import floor_hour
from shillelagh_amplitude.sample.emulator import ExportEmulator
from shillelagh_amplitude.sample.generator import generate_dataset
from shillelagh_amplitude.sql.destination import canonical

from .browser import modal_button, polling_wait
from .conftest import OUTPUT, Superset, demo

pytestmark = pytest.mark.e2e

API_KEY, SECRET_KEY = "binding-key", "binding-secret-7c41e9"
MASK = "XXXXXXXXXX"
END = floor_hour(datetime.now(UTC)) - timedelta(hours=3)
SQL = ("SELECT COUNT(*) AS n FROM amplitude_events WHERE server_upload_time >= "
       f"'{END - timedelta(hours=5):%Y-%m-%d %H:%M:%S}' AND server_upload_time < '{END:%Y-%m-%d %H:%M:%S}'")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ExportEmulator, ExportEmulator]]:
    data = tmp_path_factory.mktemp("binding-project")
    generate_dataset(data, END - timedelta(hours=12), END + timedelta(hours=3), events=400, seed=16)
    with ExportEmulator(data, api_key=API_KEY, secret_key=SECRET_KEY) as home, \
            ExportEmulator(data, api_key=API_KEY, secret_key=SECRET_KEY) as other:
        yield home, other


def q(url: str) -> str:
    """A URL as it shows in a stored SQLAlchemy URI's query."""
    return quote(url, safe="")


def refusal(home: ExportEmulator, other: ExportEmulator | str) -> str:
    where = canonical(other if isinstance(other, str) else other.base_url)
    return (f"The stored secret key was saved for {canonical(home.base_url)} with another API key or destination; "
            f"it is not sent to {where}. Type the secret key again (Password, or secret_key in the Secure extra) "
            "to use it there.")


def form(base_url: str | None, password: str = MASK, **query: str) -> dict:
    return {"engine": "amplitude", "configuration_method": "dynamic_form", "parameters": {
        "username": API_KEY, "password": password, "query": {**({"base_url": base_url} if base_url else {}), **query}}}


def create(superset: Superset, api: requests.Session, name: str, payload: dict) -> int:
    response = api.post(f"{superset.base}/api/v1/database/", json={"database_name": name, "expose_in_sqllab": True,
                                                                   **payload})
    assert response.status_code == 201, response.text[:500]
    return response.json()["id"]


def connection(superset: Superset, api: requests.Session, database_id: int) -> dict:
    return api.get(f"{superset.base}/api/v1/database/{database_id}/connection").json()["result"]


def query(superset: Superset, api: requests.Session, database_id: int) -> requests.Response:
    return api.post(f"{superset.base}/api/v1/sqllab/execute/", json={
        "database_id": database_id, "sql": SQL, "runAsync": False})


def assert_nothing_sent(other: ExportEmulator) -> None:
    assert other.requests == [], [(r.path, r.authorized) for r in other.requests]


def assert_secret_absent(superset: Superset, *texts: str) -> None:
    for text in (*texts, superset.layout.log.read_text()):
        assert SECRET_KEY not in text


def test_the_dynamic_form_over_rest(superset: Superset, api, hosts) -> None:
    """``PUT /api/v1/database/<id>`` as the edit form sends it: base_url or region changed, password masked."""
    home, other = hosts
    database_id = create(superset, api, "Amplitude (binding, form)", form(home.base_url, SECRET_KEY))
    shown = connection(superset, api, database_id)
    assert shown["sqlalchemy_uri"] == f"amplitude://{API_KEY}:{MASK}@?base_url={q(home.base_url)}"
    other.clear_requests()
    answers = []
    for changed, where in ((form(other.base_url), other), (form(None, region="eu"), "https://analytics.eu.amplitude.com"),
                           (form(None), "https://amplitude.com")):
        edited = api.put(f"{superset.base}/api/v1/database/{database_id}", json=changed)
        answers.append(edited.text)
        assert edited.status_code == 422, edited.text[:500]
        assert edited.json()["message"] == {"password": [refusal(home, where)]}
    assert q(home.base_url) in connection(superset, api, database_id)["sqlalchemy_uri"]  # nothing was saved
    # the connection test of the same edit, by the connection's name
    tested = api.post(f"{superset.base}/api/v1/database/test_connection/", json={
        "database_name": "Amplitude (binding, form)", **form(other.base_url)})
    answers.append(tested.text)
    assert tested.status_code == 400, tested.text[:500]
    assert tested.json()["errors"][0]["message"].startswith("The secret key is masked")
    assert_nothing_sent(other)

    # back where it was bound, the mask still works: nothing changed where the secret goes
    home.clear_requests()
    assert api.put(f"{superset.base}/api/v1/database/{database_id}", json=form(home.base_url)).status_code == 200
    tested = api.post(f"{superset.base}/api/v1/database/test_connection/", json={
        "database_name": "Amplitude (binding, form)", **form(home.base_url)})
    assert tested.status_code == 200, tested.text[:500]
    result = query(superset, api, database_id)
    assert result.status_code == 200 and result.json()["data"][0]["n"] > 0, result.text[:500]
    assert home.requests and all(r.authorized for r in home.requests)

    # typed again, the secret may go to the other (allowed) host
    assert api.put(f"{superset.base}/api/v1/database/{database_id}",
                   json=form(other.base_url, SECRET_KEY)).status_code == 200
    assert query(superset, api, database_id).json()["data"][0]["n"] > 0
    assert other.requests and all(r.authorized for r in other.requests)
    assert_secret_absent(superset, *answers, json.dumps(connection(superset, api, database_id)),
                         api.get(f"{superset.base}/api/v1/database/{database_id}").text)


def test_the_uri_form_with_the_secure_extra(superset: Superset, api, hosts) -> None:
    """The keys in the secure extra (masked on read): a new URI with the extra left masked, saved and tested."""
    home, other = hosts
    extra = json.dumps({"api_key": API_KEY, "secret_key": SECRET_KEY})
    database_id = create(superset, api, "Amplitude (binding, URI)", {
        "sqlalchemy_uri": f"amplitude://?base_url={home.base_url}", "masked_encrypted_extra": extra,
        "configuration_method": "sqlalchemy_form"})
    shown = connection(superset, api, database_id)
    masked = shown["masked_encrypted_extra"]
    assert json.loads(masked) == {"api_key": MASK, "secret_key": MASK}
    other.clear_requests()
    moved = {"sqlalchemy_uri": f"amplitude://?base_url={other.base_url}", "masked_encrypted_extra": masked,
             "configuration_method": "sqlalchemy_form"}
    edited = api.put(f"{superset.base}/api/v1/database/{database_id}", json=moved)
    assert edited.status_code == 422 and edited.json()["message"] == {"password": [refusal(home, other)]}, \
        edited.text[:500]
    tested = api.post(f"{superset.base}/api/v1/database/test_connection/", json={
        "database_name": "Amplitude (binding, URI)", **moved})
    assert tested.status_code == 400, tested.text[:500]
    (error,) = tested.json()["errors"]
    assert (error["error_type"], error["message"]) == ("CONNECTION_ACCESS_DENIED_ERROR", refusal(home, other))
    assert_nothing_sent(other)
    # the password in the URI, masked, is the same case
    uri_id = create(superset, api, "Amplitude (binding, URI password)", {
        "sqlalchemy_uri": f"amplitude://{API_KEY}:{SECRET_KEY}@?base_url={home.base_url}",
        "configuration_method": "sqlalchemy_form"})
    edited = api.put(f"{superset.base}/api/v1/database/{uri_id}", json={
        "sqlalchemy_uri": f"amplitude://{API_KEY}:{MASK}@?base_url={other.base_url}",
        "configuration_method": "sqlalchemy_form"})
    assert edited.status_code == 422 and edited.json()["message"] == {"password": [refusal(home, other)]}
    # back home with the mask: saved, tested and queried
    back = {**moved, "sqlalchemy_uri": f"amplitude://?base_url={home.base_url}"}
    assert api.put(f"{superset.base}/api/v1/database/{database_id}", json=back).status_code == 200
    tested = api.post(f"{superset.base}/api/v1/database/test_connection/", json={
        "database_name": "Amplitude (binding, URI)", **back})
    assert tested.status_code == 200, tested.text[:500]
    assert query(superset, api, database_id).json()["data"][0]["n"] > 0
    assert_nothing_sent(other)
    assert_secret_absent(superset, edited.text, tested.text, json.dumps(connection(superset, api, database_id)))


def _export(superset: Superset, api: requests.Session, database_id: int) -> dict[str, bytes]:
    response = api.get(f"{superset.base}/api/v1/database/export/?q=!({database_id})")
    assert response.status_code == 200, response.text[:500]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_imports_bringing_another_base_url(superset: Superset, api, hosts) -> None:
    """An export of the connection, edited to another base_url and imported over it (database and assets
    imports overwrite; a dashboard import keeps existing connections as they are)."""
    home, other = hosts
    database_id = create(superset, api, "Amplitude (binding, import)", form(home.base_url, SECRET_KEY))
    files = _export(superset, api, database_id)
    assert not any(SECRET_KEY.encode() in content for content in files.values())
    (name,) = [n for n in files if "/databases/" in n]
    config = yaml.safe_load(files[name])
    assert config["sqlalchemy_uri"] == f"amplitude://{API_KEY}:{MASK}@?base_url={q(home.base_url)}"
    config["sqlalchemy_uri"] = config["sqlalchemy_uri"].replace(q(home.base_url), q(other.base_url))
    files[name] = yaml.safe_dump(config).encode()
    other.clear_requests()
    for endpoint, kind, field in (("database", "Database", "formData"), ("assets", "assets", "bundle")):
        metadata = next(n for n in files if n.endswith("metadata.yaml"))
        files[metadata] = yaml.safe_dump({**yaml.safe_load(files[metadata]), "type": kind}).encode()
        imported = api.post(f"{superset.base}/api/v1/{endpoint}/import/", files={
            field: ("export.zip", _zip(files), "application/zip")}, data={"overwrite": "true"},
            headers={"Accept": "application/json"})  # as Superset's import dialog asks (else an HTML error page)
        if endpoint == "database":
            assert imported.status_code == 422, imported.text[:500]
            assert imported.json()["errors"][0]["message"] == refusal(home, other)
        else:  # the assets import answers any failure with its own words; the reason is in the log
            assert (imported.status_code, imported.json()["errors"][0]["message"]) == (
                500, "Import failed for an unknown reason"), imported.text[:500]
            assert f"SecretMustBeRetyped: {refusal(home, other)}" in superset.layout.log.read_text()
        assert SECRET_KEY not in imported.text
    assert q(home.base_url) in connection(superset, api, database_id)["sqlalchemy_uri"]
    assert query(superset, api, database_id).json()["data"][0]["n"] > 0
    assert_nothing_sent(other)

    # the bundled dashboard, its connection moved to the other host: the existing connection is kept as it is
    bundle = {n: p for n, p in _read_zip(superset.bundle).items()}
    (db_file,) = [n for n in bundle if "/databases/" in n]
    bundled = yaml.safe_load(bundle[db_file])
    bundled["sqlalchemy_uri"] = f"amplitude://?base_url={other.base_url}"
    bundle[db_file] = yaml.safe_dump(bundled).encode()
    imported = api.post(f"{superset.base}/api/v1/dashboard/import/", files={
        "formData": ("bundle.zip", _zip(bundle), "application/zip")}, data={"overwrite": "true"})
    assert imported.status_code == 200, imported.text[:500]
    amplitude = next(d for d in api.get(f"{superset.base}/api/v1/database/").json()["result"]
                     if d["database_name"] == bundled["database_name"])
    assert q(other.base_url) not in connection(superset, api, amplitude["id"])["sqlalchemy_uri"]
    assert_nothing_sent(other)


def _read_zip(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_a_destination_changed_behind_superset_is_refused_at_use(superset: Superset, api, hosts) -> None:
    """The metadata DB edited directly (no save path at all): the dialect still refuses, for queries and tests."""
    home, other = hosts
    database_id = create(superset, api, "Amplitude (binding, metadata)", form(home.base_url, SECRET_KEY))
    with sqlite3.connect(superset.layout.superset_home / "superset.db") as metadata:
        metadata.execute("UPDATE dbs SET sqlalchemy_uri = replace(sqlalchemy_uri, ?, ?) WHERE id = ?",
                         (q(home.base_url), q(other.base_url), database_id))
    other.clear_requests()
    result = query(superset, api, database_id)
    assert result.status_code != 200
    assert refusal(home, other) in result.json()["errors"][0]["message"], result.text[:500]
    shown = connection(superset, api, database_id)
    tested = api.post(f"{superset.base}/api/v1/database/test_connection/", json={
        "database_name": "Amplitude (binding, metadata)", "sqlalchemy_uri": shown["sqlalchemy_uri"],
        "configuration_method": "sqlalchemy_form"})
    assert tested.status_code == 400 and tested.json()["errors"][0]["message"] == refusal(home, other)
    assert_nothing_sent(other)
    assert_secret_absent(superset, result.text, tested.text)


def test_the_secret_is_in_no_export(superset: Superset, api, hosts) -> None:
    """``/api/v1/database/export/`` and ``superset export-dashboards`` (a dashboard on the connection)."""
    home, _ = hosts
    database_id = create(superset, api, "Amplitude (binding, export)", form(home.base_url, SECRET_KEY))
    assert not any(SECRET_KEY.encode() in content for content in _export(superset, api, database_id).values())
    created: list[str] = []  # removed afterwards: the other tests expect the bundled dashboard and datasets only
    try:
        # a table no other test makes a dataset of: Superset's SQLite metadata DB keeps a unique constraint on
        # tables.table_name alone (test_superset.py makes an amplitude_sessions dataset on another connection)
        dataset = api.post(f"{superset.base}/api/v1/dataset/", json={
            "database": database_id, "schema": "main", "table_name": "amplitude_events"})
        assert dataset.status_code == 201, dataset.text[:500]
        created.append(f"dataset/{dataset.json()['id']}")
        dashboard = api.post(f"{superset.base}/api/v1/dashboard/", json={"dashboard_title": "Binding export"})
        created.insert(0, f"dashboard/{dashboard.json()['id']}")
        chart = api.post(f"{superset.base}/api/v1/chart/", json={
            "slice_name": "Binding export", "viz_type": "table", "datasource_id": dataset.json()["id"],
            "datasource_type": "table", "dashboards": [dashboard.json()["id"]], "params": "{}"})
        assert chart.status_code == 201, chart.text[:500]
        created.insert(0, f"chart/{chart.json()['id']}")
        target = OUTPUT / "binding-export.zip"
        exported = subprocess.run([str(demo.BIN / "superset"), "export-dashboards", "-f", str(target)],
                                  env=superset.env, capture_output=True, text=True, check=False)
        assert exported.returncode == 0, exported.stderr[-2000:]
        files = _read_zip(target)
        assert any(f"base_url={q(home.base_url)}".encode() in content for content in files.values())
        assert not any(SECRET_KEY.encode() in content for content in files.values())
        assert SECRET_KEY not in exported.stdout + exported.stderr
    finally:
        for path in created:
            assert api.delete(f"{superset.base}/api/v1/{path}").status_code == 200, path


def test_the_browser_edit_form_refuses_a_masked_secret_for_another_host(superset: Superset, api, browser,
                                                                        hosts) -> None:
    """Edit the connection in the browser: only the base URL changes, the password stays masked; Finish."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    home, other = hosts
    name = "Amplitude (binding, browser)"
    database_id = create(superset, api, name, form(home.base_url, SECRET_KEY))
    other.clear_requests()
    browser.get(f"{superset.base}/databaseview/list/")
    wanted = f"base_url={other.base_url}"

    def edit_form_drawn(d) -> bool:
        """The edit modal, drawn with the stored connection (the masked password). Until then: the list is
        narrowed to this connection through its own Name search (the list shows 25 of the suite's connections
        per page, so the row may be on another), and the row's edit button is (re)clicked: the list re-renders
        as it loads, and a click on a replaced button is lost."""
        if [f for f in d.find_elements(By.CSS_SELECTOR, ".ant-modal input[name=password]")
                if f.get_attribute("value") == MASK]:
            return True
        if d.find_elements(By.CSS_SELECTOR, ".ant-modal"):
            return False
        search = d.find_element(By.CSS_SELECTOR, 'input[data-test="filters-search"]')
        if search.get_attribute("value") != name:
            search.send_keys(Keys.CONTROL, "a")
            search.send_keys(name, Keys.ENTER)
            return False
        edit = next((e for r in d.find_elements(By.CSS_SELECTOR, "tr") if name in r.text
                     for e in r.find_elements(By.CSS_SELECTOR, '[data-test="database-edit"]')), None)
        if edit is not None:
            d.execute_script("arguments[0].scrollIntoView(); arguments[0].click()", edit)
        return False

    def base_url_typed(d) -> bool:
        """Only the base URL changed, typed into the field the form shows now."""
        field = d.find_element(By.CSS_SELECTOR, ".ant-modal input[name=query_input]")
        if field.get_attribute("value") == wanted:
            field.send_keys(Keys.TAB)
            return True
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(wanted)
        return False

    wait = polling_wait(browser, ignored=(WebDriverException,))
    wait.until(edit_form_drawn)
    wait.until(base_url_typed)
    finish = modal_button(browser, "Finish")
    finish.click()
    expected = refusal(home, other)
    try:
        # Superset's modal says "We are unable to connect to your database." with "See more": the details
        more = WebDriverWait(browser, 30).until(
            lambda d: [e for e in d.find_elements(By.XPATH, "//*[text()='See more']") if e.is_displayed()])
        more[0].click()
        WebDriverWait(browser, 10).until(lambda d: expected in d.find_element(By.TAG_NAME, "body").text)
    finally:
        browser.save_screenshot(str(OUTPUT / "binding-edit-form.png"))
        (OUTPUT / "binding-edit-form.txt").write_text(browser.find_element(By.TAG_NAME, "body").text)
    assert q(home.base_url) in connection(superset, api, database_id)["sqlalchemy_uri"]
    assert_nothing_sent(other)
    assert SECRET_KEY not in browser.page_source


LEGACY_WRITE = """
import sys
from sqlalchemy import update
from superset.app import create_app

with create_app().app_context():
    from superset import db
    from superset.models.core import Database

    table = Database.__table__  # a Core update: no mapper events, as a secret saved before they existed
    db.session.execute(update(table).where(table.c.id == int(sys.argv[1])).values(password=sys.argv[2]))
    db.session.commit()
"""


def test_a_secret_saved_before_binding_counts_as_bound_where_it_was_saved(superset: Superset, api, hosts) -> None:
    """A bare secret in the metadata DB (saved by an earlier version): carried to another host it is refused like
    a bound one; saved in place it is bound."""
    home, other = hosts
    database_id = create(superset, api, "Amplitude (binding, legacy)", form(home.base_url, SECRET_KEY))
    written = subprocess.run([str(demo.BIN / "python"), "-c", LEGACY_WRITE, str(database_id), SECRET_KEY],
                             env=superset.env, capture_output=True, text=True, check=False)
    assert written.returncode == 0, written.stderr[-2000:]
    other.clear_requests()
    edited = api.put(f"{superset.base}/api/v1/database/{database_id}", json=form(other.base_url))
    assert edited.status_code == 422 and edited.json()["message"] == {"password": [refusal(home, other)]}, \
        edited.text[:500]
    assert api.put(f"{superset.base}/api/v1/database/{database_id}", json=form(home.base_url)).status_code == 200
    edited = api.put(f"{superset.base}/api/v1/database/{database_id}", json=form(other.base_url))
    assert edited.status_code == 422 and edited.json()["message"] == {"password": [refusal(home, other)]}
    assert query(superset, api, database_id).json()["data"][0]["n"] > 0
    assert_nothing_sent(other)
