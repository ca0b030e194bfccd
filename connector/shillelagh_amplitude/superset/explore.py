"""A new chart on an Amplitude dataset starts with its time column on the X axis.

Superset 6.1 pre-fills a new chart's X axis only from the form data's ``granularity_sqla`` (never from the
dataset's default time column), so this ``after_request`` hook adds the dataset's ``main_dttm_col`` there when
``GET /api/v1/explore/`` opens a new chart (no saved chart, no X axis yet) on an ``amplitude://`` dataset.
``superset_config.py`` registers it through ``FLASK_APP_MUTATOR``.
"""

from __future__ import annotations

import json
from typing import Any

EXPLORE_PATH = "/api/v1/explore/"


def prefill_time_column(response: Any) -> Any:
    """Flask ``after_request`` hook: the dataset's default time column as a new chart's X axis."""
    from flask import request

    if request.method != "GET" or request.path != EXPLORE_PATH or response.status_code != 200 or not response.is_json:
        return response
    payload = response.get_json()
    result = payload.get("result") or {}
    form_data, dataset = result.get("form_data") or {}, result.get("dataset") or {}
    if (
        result.get("slice")
        or form_data.get("x_axis")
        or form_data.get("granularity_sqla")
        or (dataset.get("database") or {}).get("backend") != "amplitude"
        or not dataset.get("main_dttm_col")
    ):
        return response
    form_data["granularity_sqla"] = dataset["main_dttm_col"]
    response.set_data(json.dumps(payload))
    return response


def register(app: Any) -> None:
    """``FLASK_APP_MUTATOR``: install the hook."""
    app.after_request(prefill_time_column)
