"""One-command demo: Superset 6.1 with the Amplitude connector and the bundled "Session length" dashboard.

    make demo                      # or: .venv/bin/python scripts/demo.py [--port 8088]

Without credentials it generates 30 whole UTC days of realistic events (exported as Amplitude would serve
them now), loads them into a local hour store through the real decode path (``amplitude-load``) and serves
them offline: no account, no network. With
``AMPLITUDE_API_KEY`` and ``AMPLITUDE_SECRET_KEY`` (and ``AMPLITUDE_REGION``) set, it pre-fills the store from
the live project with ``amplitude-sync`` and the same dashboard shows it.

Everything lives under ``var/`` (metadata DB, secret key, admin password, hour stores, logs). Re-running is
safe: Superset is initialised once, the sample is regenerated only when the newest whole day the export holds
has moved on, the bundle re-imported with overwrite, and a demo server still running from a previous run is
stopped first.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from importlib import metadata
from pathlib import Path

import requests

from shillelagh_amplitude.hours import whole_days_end

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DASHBOARD_SLUG = "session-length"
DEMO_API_KEY = "demo"
DEMO_SECRET_KEY = "demo-secret"  # the sample store's secret: any other one is refused, like a real project's
#: ``superset`` sub-commands that prepare the metadata DB (docker/init.sh runs the same).
SUPERSET_INIT = (("db", "upgrade"), ("init",))
#: How Superset is served (docker-compose.yml's web service uses the same options): one process, so the
#: adapter's table cache is shared by all requests, and threads for the dashboard's parallel chart queries.
#: Idle keep-alive connections stay open 75 s (gunicorn's default: 2 s), longer than a client or a load balancer
#: in front keeps one idle (60 s at most, e.g. AWS ALB's default), so that the client closes it, never the server
#: just as a request is sent on it (a connection reset; the load test met it with locust's 1-3 s pauses).
#: gthread holds idle connections in its poller, not in a thread.
GUNICORN_OPTIONS = (
    "--workers", "1", "--threads", "8", "--worker-class", "gthread", "--timeout", "120", "--keep-alive", "75",
    "--limit-request-line", "0", "--limit-request-field_size", "0",
)
GUNICORN_APP = "superset.app:create_app()"


@dataclass(frozen=True)
class Layout:
    """Where the demo keeps its state."""

    var: Path

    @property
    def superset_home(self) -> Path:
        return self.var / "superset"

    @property
    def demo_store(self) -> Path:
        return self.var / "demo-store"

    @property
    def live_store(self) -> Path:
        return self.var / "amplitude-store"

    @property
    def sample(self) -> Path:
        return self.var / "sample" / "sample.zip"

    @property
    def bundle(self) -> Path:
        return self.var / "session_length_dashboard.zip"

    @property
    def password_file(self) -> Path:
        return self.superset_home / "admin_password"

    @property
    def pid_file(self) -> Path:
        return self.superset_home / "server.pid"

    @property
    def log(self) -> Path:
        return self.superset_home / "server.log"


def live_credentials() -> bool:
    """True when the environment names a live Amplitude project."""
    return bool(os.environ.get("AMPLITUDE_API_KEY") and os.environ.get("AMPLITUDE_SECRET_KEY"))


def superset_env(layout: Layout, live: bool) -> dict[str, str]:
    """Environment of every Superset command and of the server: our config, our home, the project.

    Offline, a query without a time predicate reads from midnight 30 days ago (the connection's default
    window), exactly the sample's 30 whole UTC days: the dashboard's "No filter" shows the whole sample.
    """
    env = {
        **os.environ,
        "SUPERSET_CONFIG_PATH": str(REPO / "superset_config" / "superset_config.py"),
        "SUPERSET_HOME": str(layout.superset_home),
        "FLASK_APP": "superset",
        "PYTHONUNBUFFERED": "1",
    }
    # Connections may name the local Export API emulator (any port of the loopback host) as their base_url.
    env.setdefault("AMPLITUDE_ALLOWED_BASE_URLS", "http://127.0.0.1:*")
    if live:
        env["AMPLITUDE_CACHE_DIR"] = str(layout.live_store)
        env.pop("AMPLITUDE_OFFLINE", None)
    else:
        env.update(
            AMPLITUDE_API_KEY=DEMO_API_KEY,
            AMPLITUDE_SECRET_KEY=DEMO_SECRET_KEY,
            AMPLITUDE_OFFLINE="true",
            AMPLITUDE_CACHE_DIR=str(layout.demo_store),
        )
        for variable in ("AMPLITUDE_REGION", "AMPLITUDE_BASE_URL"):
            env.pop(variable, None)
    return env


def run(command: list[str], env: dict[str, str], log: Path) -> None:
    """Run a command, its output appended to ``log``; on failure show the log's tail and stop."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{' '.join(command)} failed (exit {result.returncode}); end of {log}:\n{tail}")


def init_superset(layout: Layout, env: dict[str, str]) -> str:
    """Migrate the metadata DB, sync roles and create the admin once; return the admin password."""
    log = layout.superset_home / "init.log"
    superset = str(BIN / "superset")
    upgrade, init = SUPERSET_INIT
    run([superset, *upgrade], env, log)
    stamp, version = layout.superset_home / "initialised", metadata.version("apache-superset")
    if not stamp.exists() or stamp.read_text() != version:  # roles and permissions of this Superset version
        run([superset, *init], env, log)
        stamp.write_text(version)
    if not layout.password_file.exists():
        password = os.environ.get("SUPERSET_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        run([superset, "fab", "create-admin", "--username", "admin", "--firstname", "Superset", "--lastname",
             "Admin", "--email", "admin@localhost", "--password", password], env, log)
        fd = os.open(layout.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password)
    return layout.password_file.read_text().strip()


def prepare_sample(layout: Layout, env: dict[str, str], days: int, events: int) -> bool:
    """Generate and load the sample unless one ending where a sample made now would is already loaded (the same
    newest whole UTC day the Export API serves); True if (re)loaded."""
    if layout.sample.exists():
        made = datetime.fromtimestamp(layout.sample.stat().st_mtime, UTC)
        if whole_days_end(made) == whole_days_end(datetime.now(UTC)):
            return False
    log = layout.var / "sample" / "load.log"
    shutil.rmtree(layout.demo_store, ignore_errors=True)
    partial = layout.sample.with_suffix(".partial.zip")
    partial.parent.mkdir(parents=True, exist_ok=True)
    run([str(BIN / "python"), "-m", "shillelagh_amplitude.sample.generator", "--days", str(days), "--events",
         str(events), "--out", str(partial)], env, log)
    # With the demo's secret key in the environment: its store then refuses any other secret, offline too.
    run([str(BIN / "amplitude-load"), str(partial), "--api-key", env["AMPLITUDE_API_KEY"], "--cache-dir",
         env["AMPLITUDE_CACHE_DIR"]], env, log)
    partial.replace(layout.sample)
    return True


def sync_live(layout: Layout, env: dict[str, str], days: int) -> None:
    """Download the live project's last ``days`` days into the store (missing hours only)."""
    end = datetime.now(UTC)
    start = end - timedelta(days=days)
    command = [str(BIN / "amplitude-sync"), "--start", start.strftime("%Y-%m-%dT%H:00"), "--end",
               end.strftime("%Y-%m-%dT%H:00"), "--cache-dir", env["AMPLITUDE_CACHE_DIR"]]
    if base_url := env.get("AMPLITUDE_BASE_URL"):
        command += ["--base-url", base_url]
    if subprocess.run(command, env=env, check=False).returncode:
        raise SystemExit("amplitude-sync failed: check AMPLITUDE_API_KEY, AMPLITUDE_SECRET_KEY and AMPLITUDE_REGION")


def build_bundle(layout: Layout) -> Path:
    """Build the dashboard bundle from ``dashboards/``."""
    run([str(BIN / "python"), str(REPO / "dashboards" / "build.py"), "--out", str(layout.bundle)], dict(os.environ),
        layout.superset_home / "init.log")
    return layout.bundle


def stop_previous(layout: Layout) -> None:
    """Stop a demo server left running by an earlier run (only the process recorded in our pid file)."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        pid = int(layout.pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"superset.app:create_app" in cmdline:
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
    layout.pid_file.unlink(missing_ok=True)


def port_in_use(host: str, port: int) -> bool:
    """True if something already listens there (whose /health would fool ``wait_healthy``)."""
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


def start_server(layout: Layout, env: dict[str, str], host: str, port: int) -> subprocess.Popen:
    """Gunicorn serving Superset in the background, its output in the log."""
    command = [str(BIN / "gunicorn"), "--bind", f"{host}:{port}", *GUNICORN_OPTIONS, GUNICORN_APP]
    log = layout.log.open("a")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    layout.pid_file.write_text(str(process.pid))
    return process


def wait_healthy(base: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> float:
    """Seconds until ``/health`` answers OK; stop with the log's tail if the server dies or never answers."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"Superset exited with {process.returncode}; see {log}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{base}/health", timeout=2).text == "OK":
                return time.monotonic() - started
        time.sleep(0.3)
    raise SystemExit(f"Superset did not answer on {base} within {timeout:.0f} s; see {log}")


def api_session(base: str, username: str, password: str) -> requests.Session:
    """A logged-in REST session carrying the JWT and the CSRF token that POSTs need."""
    session = requests.Session()
    login = session.post(f"{base}/api/v1/security/login", timeout=30,
                         json={"username": username, "password": password, "provider": "db", "refresh": True})
    login.raise_for_status()
    session.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
    token = session.get(f"{base}/api/v1/security/csrf_token/", timeout=30).json()["result"]
    session.headers.update({"X-CSRFToken": token, "Referer": base})
    return session


def import_assets(session: requests.Session, base: str, bundle: Path) -> None:
    """Import the bundle overwriting database, datasets, charts and dashboard (so upgrades apply)."""
    with bundle.open("rb") as handle:
        response = session.post(f"{base}/api/v1/assets/import/", timeout=120,
                                files={"bundle": (bundle.name, handle, "application/zip")})
    if response.status_code != 200:
        raise SystemExit(f"bundle import failed ({response.status_code}): {response.text[:500]}")


def warm_up(session: requests.Session, base: str) -> list[str]:
    """Query every chart of the dashboard once (fills the adapter's table cache); the errors met."""
    charts = session.get(f"{base}/api/v1/dashboard/{DASHBOARD_SLUG}/charts", timeout=30).json()["result"]
    errors = []
    for chart in charts:
        response = session.get(f"{base}/api/v1/chart/{chart['id']}/data/", timeout=300)
        if response.status_code != 200:
            errors.append(f"{chart['slice_name']}: {response.text[:300]}")
    return errors


def main(argv: list[str] | None = None) -> None:
    """Prepare everything, serve until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--days", type=int, default=30, help="days of data (sample or live sync)")
    parser.add_argument("--events", type=int, default=200_000, help="events in the generated sample")
    parser.add_argument("--var", type=Path, default=REPO / "var", help="state folder")
    args = parser.parse_args(argv)

    started = time.monotonic()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so `finally` stops the server
    layout = Layout(args.var.resolve())
    live = live_credentials()
    env = superset_env(layout, live)
    stop_previous(layout)
    if port_in_use(args.host, args.port):
        raise SystemExit(f"{args.host}:{args.port} is already in use: stop what runs there or pass --port")
    if live:
        print(f"Syncing the last {args.days} days of the live Amplitude project ...", flush=True)
        prepare = partial(sync_live, layout, env, args.days)
    else:
        print(f"Preparing a generated sample: {args.days} days, about {args.events} events ...", flush=True)
        prepare = partial(prepare_sample, layout, env, args.days, args.events)
    print("Initialising Superset (metadata DB, roles, admin) ...", flush=True)
    with ThreadPoolExecutor(max_workers=1) as pool:  # the data and Superset's metadata DB are independent
        data = pool.submit(prepare)
        password = init_superset(layout, env)
        data.result()
    shutil.rmtree(layout.superset_home / "cache", ignore_errors=True)  # charts cached from older data or mode
    bundle = build_bundle(layout)

    base = f"http://{args.host}:{args.port}"
    print(f"Starting Superset on {base} (log: {layout.log}) ...", flush=True)
    server = start_server(layout, env, args.host, args.port)
    try:
        wait_healthy(base, server, layout.log)
        session = api_session(base, "admin", password)
        import_assets(session, base, bundle)
        for error in warm_up(session, base):
            print(f"Warning: chart {error}", flush=True)
        print(
            f"\nReady in {time.monotonic() - started:.0f} s: {base}/superset/dashboard/{DASHBOARD_SLUG}/\n"
            f"  log in as admin / {password}   (password kept in {layout.password_file})\n"
            f"  data: {'live Amplitude project' if live else 'generated sample, offline'}   Ctrl-C stops.",
            flush=True,
        )
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
        layout.pid_file.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
