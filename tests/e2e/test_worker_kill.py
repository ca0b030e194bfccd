"""One web worker of a Superset with several gunicorn workers killed (SIGKILL) in the middle of a query, while
threads send SQL Lab queries: the other workers keep answering, gunicorn replaces the dead one, and every hour
and derived file of the store still reads back whole, with exact counts."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import psutil
import pyarrow.feather as feather
import pytest

from shillelagh_amplitude.store.hour_store import project_key

from ..expected import sessions_from_records
from ..helpers import QueryLoad, free_port, parse_ts, read_zip
from .conftest import Superset, demo, whole_days_end

pytestmark = pytest.mark.e2e

WORKERS = 3
THREADS = 4
#: Days of the sample queried, one SQL Lab query each: every one builds (and stores) its own derived sessions.
DAYS = [whole_days_end() - timedelta(days=n) for n in range(2, 8)]


def sessions_sql(day) -> str:
    return (f"SELECT count(*) AS sessions FROM amplitude_sessions WHERE session_start >= '{day:%Y-%m-%d}' "
            f"AND session_start < '{day + timedelta(days=1):%Y-%m-%d}'")


@pytest.fixture(scope="module")
def workers_server(superset: Superset, imported) -> Iterator[tuple[str, subprocess.Popen]]:
    """A second server on the same metadata DB and store, run as the demo runs it but with ``WORKERS`` gunicorn
    workers (an operator may run several); its base URL and its master process."""
    options = list(demo.GUNICORN_OPTIONS)
    options[options.index("--workers") + 1] = str(WORKERS)
    base = f"http://127.0.0.1:{free_port()}"
    log = Path(superset.layout.var) / "workers-server.log"
    command = [str(demo.BIN / "gunicorn"), "--bind", base.removeprefix("http://"), *options, demo.GUNICORN_APP]
    with log.open("a") as output:
        process = subprocess.Popen(command, env=superset.env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        demo.wait_healthy(base, process, log, timeout=300)
        yield base, process
    finally:
        process.terminate()
        process.wait(60)


def sql_lab(base: str, password: str, database_id: int) -> Callable[[str], list[tuple]]:
    """Run SQL through SQL Lab's synchronous execute, each request on a new connection (a kept-alive one could
    lead to the killed worker)."""
    session = demo.api_session(base, "admin", password)
    session.headers["Connection"] = "close"

    def run(sql: str) -> list[tuple]:
        response = session.post(f"{base}/api/v1/sqllab/execute/", timeout=300, json={
            "database_id": database_id, "sql": sql, "runAsync": False, "queryLimit": 100})
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
        return [tuple(row.values()) for row in response.json()["data"]]

    return run


def serving(master: psutil.Process, port: int) -> psutil.Process | None:
    """A worker holding a connection of the server's port: one in the middle of a request."""
    for worker in master.children():
        try:
            if any(c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
                   for c in worker.net_connections(kind="tcp")):
                return worker
        except psutil.NoSuchProcess:
            continue
    return None


def alive(process: psutil.Process) -> bool:
    """Whether a process still runs (a zombie, dead but not reaped yet, does not)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(state: Callable[[], object], timeout: float = 240) -> object:
    """The first true value of ``state()``, polled (AssertionError after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not (value := state()):
        assert time.monotonic() < deadline, "the state was not reached"
        time.sleep(0.05)
    return value


def test_a_worker_killed_mid_query_leaves_the_others_answering_and_the_store_whole(superset: Superset, api,
                                                                                   workers_server):
    base, process = workers_server
    database_id = next(d["id"] for d in api.get(f"{superset.base}/api/v1/database/").json()["result"]
                       if d["database_name"] == "Amplitude")
    records = read_zip(superset.layout.sample)
    sessions = sessions_from_records(records)
    answers = {sessions_sql(day): [(sum(1 for s in sessions if day <= s.start < day + timedelta(days=1)),)]
               for day in DAYS}
    master, port = psutil.Process(process.pid), int(base.rsplit(":", 1)[1])
    wait_until(lambda: len(master.children()) == WORKERS)
    with QueryLoad(lambda: sql_lab(base, superset.password, database_id), list(answers), THREADS) as load:
        load.wait_for(load.each_thread("before", 1))
        victim = wait_until(lambda: serving(master, port))
        load.phase = "kill"
        os.kill(victim.pid, signal.SIGKILL)
        wait_until(lambda: not alive(victim))
        load.phase = "after"
        replaced = wait_until(lambda: len(children := master.children()) == WORKERS
                              and victim.pid not in {c.pid for c in children})
        load.wait_for(load.each_thread("after", len(answers)))
    assert replaced and process.poll() is None  # gunicorn replaced the worker and runs on
    before = [o for o in load.outcomes if o.ended == "before"]
    after = [o for o in load.outcomes if o.began == "after"]
    assert before and [o for o in before if o.rows != answers[o.sql]] == []
    assert after and [(o.sql, o.error) for o in after if o.rows != answers[o.sql]] == []
    # the store: every file reads back; hour files hold exactly the sample's events of their upload hour
    per_hour = Counter(parse_ts(r["server_upload_time"]).replace(minute=0, second=0, microsecond=0)
                       for r in records)
    project = Path(superset.env["AMPLITUDE_CACHE_DIR"]) / project_key("https://amplitude.com",
                                                                    superset.env["AMPLITUDE_API_KEY"])
    derived = list((project / "derived").glob("*.arrow"))
    assert derived  # the queries stored their sessions
    for path in derived:
        feather.read_table(path)
    stored = 0
    for path in project.glob("[0-9]*/*.arrow"):
        hour = parse_ts(f"{path.parent.name[:4]}-{path.parent.name[4:6]}-{path.parent.name[6:]} {path.name[:2]}:00")
        assert feather.read_table(path).num_rows == per_hour[hour], path
        stored += per_hour[hour]
    assert stored == len(records)
