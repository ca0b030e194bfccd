"""Simulated Superset users for ``benchmarks/load_test.py`` (run by locust, in its own virtual environment).

A dashboard viewer opens the bundled "Session length" dashboard: every chart-data request its charts make, with
the native filters varied (time range, plan, country, platform), as Superset's frontend sends them
(``POST /api/v1/chart/data`` with the chart's saved query context). A SQL Lab user runs the README's kind of
queries. Requests are named per chart (``chart: <name>``) and per query (``sqllab: <label>``), so locust's
statistics give p50/p95 per chart.

Environment: ``LOAD_PASSWORD`` (the admin's), ``LOAD_DAYS`` (the sample's days), ``LOAD_TOKEN_REFRESH_S`` (how
often a user refreshes its access token; default 600 s); the host is locust's ``--host``.
"""

from __future__ import annotations

import json
import os
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from locust import HttpUser, between, task

DASHBOARD = "session-length"
#: The sample's whole UTC days (``LOAD_DAYS``) end at the midnight at or before the newest exportable hour's end.
DAYS = int(os.environ.get("LOAD_DAYS", "30"))
END = (datetime.now(UTC) - timedelta(hours=2)).replace(hour=0, minute=0, second=0, microsecond=0)
#: The dashboard's time filter: the last day, the last week, the whole sample, and cleared (the connection's
#: default window of 30 days) when the sample holds 30 days; never beyond the sample: an offline store refuses a
#: range it does not hold.
TIME_RANGES = (*(f"{END - timedelta(days=days):%Y-%m-%d} : {END:%Y-%m-%d}" for days in sorted({1, min(7, DAYS), DAYS})),
               *(("No filter",) if DAYS >= 30 else ()))
#: Native filter values (those of the generated sample) and the share of views that set each filter.
SEGMENTS = {"plan": ("free", "starter", "pro", "enterprise"), "country": ("United States", "Germany", "India"),
            "platform": ("Web", "iOS", "Android")}
FILTER_SHARE = 0.4
#: Superset's access tokens expire after 15 minutes (flask-jwt-extended's default): a user refreshes its token
#: before that, with the refresh token of its login (a longer run otherwise fails with 401 "Token has expired").
TOKEN_REFRESH_S = float(os.environ.get("LOAD_TOKEN_REFRESH_S", "600"))
WEEK = f"session_start >= '{END - timedelta(days=min(7, DAYS)):%Y-%m-%d}' AND session_start < '{END:%Y-%m-%d}'"
DAY = f"event_time >= '{END - timedelta(days=1):%Y-%m-%d}' AND event_time < '{END:%Y-%m-%d}'"
SQL_LAB = {
    "KPIs by plan, 7 days": (
        "SELECT json_extract(user_properties, '$.plan') AS plan, count(*), avg(length_s), median(length_s), "
        f"percentile(length_s, 95) FROM amplitude_sessions WHERE {WEEK} GROUP BY 1"),
    "events per type, 1 day": (
        f"SELECT event_type, count(*) FROM amplitude_events WHERE {DAY} GROUP BY 1 ORDER BY 2 DESC"),
}


class SupersetUser(HttpUser):
    """Logs in through the REST API (JWT and CSRF token, as the e2e tests do)."""

    abstract = True
    wait_time = between(1, 3)

    def on_start(self) -> None:
        login = self.client.post("/api/v1/security/login", name="login", json={
            "username": "admin", "password": os.environ["LOAD_PASSWORD"], "provider": "db", "refresh": True})
        login.raise_for_status()
        self.refresh_token = login.json()["refresh_token"]
        self.use_token(login.json()["access_token"])
        token = self.client.get("/api/v1/security/csrf_token/", name="csrf token").json()["result"]
        self.client.headers.update({"X-CSRFToken": token, "Referer": self.host})

    def use_token(self, access_token: str) -> None:
        self.client.headers["Authorization"] = f"Bearer {access_token}"
        self.token_at = time.monotonic()

    def fresh_token(self) -> None:
        """Refresh the access token once it is ``TOKEN_REFRESH_S`` old (called at the start of every task)."""
        if time.monotonic() - self.token_at >= TOKEN_REFRESH_S:
            response = self.client.post("/api/v1/security/refresh", name="token refresh",
                                        headers={"Authorization": f"Bearer {self.refresh_token}"})
            response.raise_for_status()
            self.use_token(response.json()["access_token"])


class DashboardViewer(SupersetUser):
    weight = 3

    def on_start(self) -> None:
        super().on_start()
        charts = self.client.get(f"/api/v1/dashboard/{DASHBOARD}/charts", name="dashboard charts").json()["result"]
        self.charts: list[tuple[str, dict[str, Any]]] = []
        for chart in charts:
            saved = self.client.get(f"/api/v1/chart/{chart['id']}", name="chart definition").json()["result"]
            self.charts.append((chart["slice_name"], json.loads(saved["query_context"])))

    @task
    def open_dashboard(self) -> None:
        self.fresh_token()
        time_range = random.choice(TIME_RANGES)
        segments = {column: [random.choice(values)] for column, values in SEGMENTS.items()
                    if random.random() < FILTER_SHARE}
        for name, context in self.charts:
            with self.client.post("/api/v1/chart/data", name=f"chart: {name}", catch_response=True,
                                  json=filtered(context, time_range, segments)) as response:
                if response.status_code != 200:  # Superset's message, so that the error report says why
                    response.failure(f"{failure(response)} for {time_range!r} {segments}")


class SqlLabUser(SupersetUser):
    weight = 1

    def on_start(self) -> None:
        super().on_start()
        databases = self.client.get("/api/v1/database/", name="databases").json()["result"]
        self.database = next(db["id"] for db in databases if db["backend"] == "amplitude")

    @task
    def run_query(self) -> None:
        self.fresh_token()
        label, sql = random.choice(list(SQL_LAB.items()))
        with self.client.post("/api/v1/sqllab/execute/", name=f"sqllab: {label}", catch_response=True, json={
                "database_id": self.database, "sql": sql, "runAsync": False, "schema": "main"}) as response:
            if response.status_code != 200:
                response.failure(failure(response))
            elif response.json().get("status") not in ("success", None):
                response.failure(f"query status {response.json().get('status')}")


def failure(response: Any) -> str:
    """Why a request failed: Superset's status and message, or the connection's error (status 0)."""
    return f"{response.status_code}: {response.text[:300]}" if response.status_code else repr(response.error)


def filtered(context: dict[str, Any], time_range: str, segments: dict[str, list[str]]) -> dict[str, Any]:
    """A chart's query context with the dashboard's native filters applied: the time range on its time filter,
    the segments on charts that have one (those of the sessions dataset)."""
    context = json.loads(json.dumps(context))
    for query in context["queries"]:
        temporal = [flt for flt in query.get("filters", []) if flt.get("op") == "TEMPORAL_RANGE"]
        for flt in temporal:
            flt["val"] = time_range
        if temporal:
            query["filters"] += [{"col": column, "op": "IN", "val": values} for column, values in segments.items()]
    context["form_data"] = {**context.get("form_data", {}), "time_range": time_range}
    return context
