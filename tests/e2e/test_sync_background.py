"""The background sync the Superset way: Debian's redis-server, a real Celery worker and beat running
``superset_config``'s schedule, the Export API emulator as the live project. Beat fills the stores of every
Amplitude connection with no web request; the dashboard then loads with zero Export API requests; later syncs
re-read only the hours that are not final yet.

Named to run after test_superset.py: it shares that module's Superset metadata DB and turns on async SQL Lab for
the bundled connection (as docker/init.sh does), which the synchronous SQL Lab tests there do not expect."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shillelagh_amplitude.hours import HOUR, floor_hour, hour_range, parse_hour
from shillelagh_amplitude.sample.emulator import ExportEmulator
from shillelagh_amplitude.sample.generator import generate_dataset
from shillelagh_amplitude.store.hour_store import HourStore

from ..expected import sessions_from_records
from ..helpers import read_dataset
from ..scripts import load_script
from .conftest import OUTPUT, Superset, demo, free_port
from .test_superset import CHARTS, SLUG, in_range, value

pytestmark = pytest.mark.e2e

# Redis, worker and beat as docker compose runs them; shared with benchmarks/load_test.py.
stack_processes = load_script("scripts/celery_stack.py")
wait_for, window_hours = stack_processes.wait_for, stack_processes.window_hours
syncs_ended, stop = stack_processes.syncs_ended, stack_processes.stop
API_KEY, SECRET_KEY = "sync-key", "sync-secret-31f0"
OTHER_KEY, OTHER_SECRET = "other-key", "other-secret-77aa"
INTERVAL_S = 5
FILL_TIMEOUT_S = 240


@dataclass
class Stack:
    base: str
    password: str
    project: ExportEmulator
    other: ExportEmulator
    cache_dir: Path
    worker_log: Path
    started: float
    beat: subprocess.Popen
    timings: dict


def requested(emulator: ExportEmulator) -> Counter:
    return Counter(hour for r in emulator.requests if r.start
                   for hour in hour_range(parse_hour(r.start), parse_hour(r.end)))


def ensure_redis() -> None:
    """Debian's redis-server (the Makefile's test target installs it), else a clear stop."""
    if not stack_processes.REDIS_SERVER.exists():
        pytest.fail("The background-sync tests need Debian's redis-server: run `sudo apt-get install redis-server`")


@pytest.fixture(scope="module")
def stack(superset: Superset, api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """redis-server, Celery worker and beat, and a live Superset web process on the shared metadata DB."""
    ensure_redis()
    root = tmp_path_factory.mktemp("sync-stack")
    end = floor_hour(datetime.now(UTC))
    generate_dataset(root / "project", end - timedelta(days=4), end, events=8000, seed=21)
    generate_dataset(root / "other", end - timedelta(days=1), end, events=300, seed=22)
    project = ExportEmulator(root / "project", api_key=API_KEY, secret_key=SECRET_KEY)
    other = ExportEmulator(root / "other", api_key=OTHER_KEY, secret_key=OTHER_SECRET)
    project.start()
    other.start()
    redis_port, web_port = free_port(), free_port()
    env = {key: value for key, value in superset.env.items() if key != "AMPLITUDE_OFFLINE"}
    env.update(
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", AMPLITUDE_API_KEY=API_KEY, AMPLITUDE_SECRET_KEY=SECRET_KEY,
        AMPLITUDE_BASE_URL=project.base_url, AMPLITUDE_CACHE_DIR=str(root / "store"),
        AMPLITUDE_SYNC_INTERVAL_S=str(INTERVAL_S), AMPLITUDE_DOWNLOAD_BUDGET_S="20",
    )
    logs = OUTPUT / "background-sync"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    processes = [stack_processes.start_redis(redis_port, env, logs / "redis.log")]
    layout = demo.Layout(root / "web")
    layout.superset_home.mkdir(parents=True)
    web = demo.start_server(layout, env, "127.0.0.1", web_port)
    processes.append(web)
    try:
        base = f"http://127.0.0.1:{web_port}"
        demo.wait_healthy(base, web, layout.log)
        session = demo.api_session(base, "admin", superset.password)
        # a second project, as a user connects it: its own keys, kept encrypted by Superset
        created = session.post(f"{base}/api/v1/database/", json={
            "database_name": "Amplitude (second project)", "engine": "amplitude",
            "configuration_method": "dynamic_form",
            "parameters": {"username": OTHER_KEY, "password": OTHER_SECRET, "query": {"base_url": other.base_url}},
        })
        assert created.status_code == 201, created.text[:500]
        project.clear_requests()
        other.clear_requests()
        worker_log = logs / "worker.log"
        processes.append(stack_processes.start_worker(env, worker_log, "-c", "1"))
        beat = stack_processes.start_beat(env, root, logs / "beat.log")
        processes.append(beat)
        yield Stack(base, superset.password, project, other, root / "store", worker_log, started, beat,
                    superset.timings)
    finally:
        for process in reversed(processes):
            stop(process)
        shutil.copy(layout.log, logs / "superset-live-server.log")
        project.stop()
        other.stop()


def test_beat_fills_every_store_then_the_dashboard_needs_no_export_request(stack: Stack) -> None:
    project_store = HourStore(stack.cache_dir, stack.project.base_url, API_KEY)
    other_store = HourStore(stack.cache_dir, stack.other.base_url, OTHER_KEY)
    first_sync_at = datetime.now(UTC)
    hours = window_hours(first_sync_at)

    def filled() -> bool:
        now = datetime.now(UTC)
        return not project_store.missing(hours, now) and not other_store.missing(window_hours(now), now)

    wait_for(filled, FILL_TIMEOUT_S, "the beat-scheduled sync to fill both stores")
    stack.timings["background_sync"] = {"stack_start_to_stores_filled_s": round(time.monotonic() - stack.started, 1)}
    # let beat schedule at least one more run, then stop it and let the worker finish
    marker = f"amplitude sync: project {project_store.root.name}"  # logged once per sync of the project
    wait_for(lambda: stack.worker_log.read_text().count(marker) >= 2, INTERVAL_S * 6, "a second scheduled sync")
    stop(stack.beat)
    wait_for(lambda: syncs_ended(stack.worker_log.read_text()), FILL_TIMEOUT_S, "the last sync to end")
    runs = stack.worker_log.read_text().count(marker)
    assert runs >= 2

    # every hour of the window downloaded by the first sync, once; later syncs re-read only non-final hours
    counts = requested(stack.project)
    non_final = {hour for hour in hours if hour + 4 * HOUR > first_sync_at}
    assert set(counts) >= set(hours)
    assert {hour: n for hour, n in counts.items() if hour not in non_final} == {
        hour: 1 for hour in hours if hour not in non_final}
    assert non_final and all(1 <= counts[hour] <= runs for hour in non_final)
    later = [r for r in stack.project.requests if r.start][-1]
    assert parse_hour(later.start) in non_final | set(counts) - set(hours)
    assert {r.status for r in stack.project.requests} <= {200, 404}
    # the second project was synced with its own (decrypted) keys
    assert stack.other.requests and all(r.authorized for r in stack.other.requests)
    log = stack.worker_log.read_text()
    assert SECRET_KEY not in log and OTHER_SECRET not in log

    sync_requests = len(stack.project.requests)
    sync_lines = [line.split("amplitude sync: ", 1)[1] for line in log.splitlines() if marker in line]
    # the bundled dashboard, served entirely from the store
    stack.project.clear_requests()
    session = demo.api_session(stack.base, "admin", stack.password)
    charts = session.get(f"{stack.base}/api/v1/dashboard/{SLUG}/charts").json()["result"]
    results = {}
    for chart in charts:
        response = session.get(f"{stack.base}/api/v1/chart/{chart['id']}/data/?force=true", timeout=120)
        assert response.status_code == 200, (chart["slice_name"], response.text[:500])
        results[chart["slice_name"]] = response.json()["result"][0]
    served = time.monotonic() - stack.started
    assert stack.project.requests == []  # zero Export API requests
    assert len(results) == CHARTS and all(r["status"] == "success" for r in results.values())
    # independently: the sessions of every event Amplitude could export by the last sync (newest hour it asked)
    exported = [r for r in read_dataset(stack.project.data_dir)
                if floor_hour(datetime.fromisoformat(r["server_upload_time"]).replace(tzinfo=UTC)) <= max(counts)]
    sessions = sessions_from_records(exported)
    expected = in_range(sessions, results["Sessions"])
    assert value(results["Sessions"]) == len(expected) > 500
    stack.timings["background_sync"].update(
        stack_start_to_dashboard_from_store_s=round(served, 1), scheduled_sync_runs=runs,
        export_requests_by_all_syncs=sync_requests, syncs=sync_lines,
        export_requests_during_dashboard_load=len(stack.project.requests),
    )
    (OUTPUT / "timings-background-sync.json").write_text(json.dumps(stack.timings["background_sync"], indent=2))


def test_async_sql_lab_runs_on_the_worker(stack: Stack, superset: Superset) -> None:
    """docker/init.sh's step turns on async SQL Lab for the Amplitude connections; a query then runs on the worker."""
    env = {**superset.env, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([str(Path(demo.BIN) / "python"), "-m", "shillelagh_amplitude.superset.tasks",
                             "enable-async"], env=env, capture_output=True, text=True, check=False)
    marker = "asynchronous SQL Lab on for: "
    assert result.returncode == 0 and marker in result.stdout, result.stderr[-2000:]
    enabled = next(line for line in result.stdout.splitlines() if line.startswith(marker)).split(": ", 1)[1].split(", ")
    assert "Amplitude" in enabled
    session = demo.api_session(stack.base, "admin", stack.password)
    try:
        _runs_on_the_worker(stack, session)
    finally:  # the metadata database is the suite's: later tests run SQL Lab without a results backend
        for database in session.get(f"{stack.base}/api/v1/database/").json()["result"]:
            if database["database_name"] in enabled and database["allow_run_async"]:
                reset = session.put(f"{stack.base}/api/v1/database/{database['id']}", json={"allow_run_async": False})
                assert reset.status_code == 200, reset.text[:500]


def _runs_on_the_worker(stack: Stack, session) -> None:
    """An Amplitude query sent to SQL Lab asynchronously runs on the worker and returns every stored event."""
    databases = session.get(f"{stack.base}/api/v1/database/").json()["result"]
    database = next(d for d in databases if d["database_name"] == "Amplitude")
    assert database["allow_run_async"] is True
    response = session.post(f"{stack.base}/api/v1/sqllab/execute/", json={
        "database_id": database["id"], "runAsync": True, "client_id": "bgsync01",
        "sql": "SELECT count(*) AS n FROM amplitude_events",
    })
    assert response.status_code == 202, response.text[:500]

    def finished() -> dict | None:
        rows = session.get(f"{stack.base}/api/v1/query/updated_since?q=(last_updated_ms:0)").json()["result"]
        query = next((q for q in rows if q["id"] == "bgsync01"), None)
        return query if query and query["state"] in ("success", "failed") else None

    query = wait_for(finished, 120, "the async query")
    assert query["state"] == "success", query
    data = session.get(f"{stack.base}/api/v1/sqllab/results/", params={"q": f"(key:'{query['resultsKey']}')"})
    assert data.status_code == 200, data.text[:500]
    # every stored event: all of the project's, except those uploaded in hours not exportable yet
    newest = floor_hour(datetime.now(UTC)) - 3 * HOUR
    expected = sum(1 for r in read_dataset(stack.project.data_dir)
                   if floor_hour(datetime.fromisoformat(r["server_upload_time"]).replace(tzinfo=UTC)) <= newest)
    assert data.json()["data"] == [{"n": expected}] and expected > 0
    assert "Task sql_lab.get_sql_results" in stack.worker_log.read_text()  # executed by the worker
