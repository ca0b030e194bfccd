"""The hook that puts an Amplitude dataset's time column on a new chart's X axis (``FLASK_APP_MUTATOR``)."""

from __future__ import annotations

import json

import pytest
from flask import Flask, jsonify

from shillelagh_amplitude.superset.explore import register


def explore(result: dict) -> dict:
    """What ``GET /api/v1/explore/`` answers once the hook has run."""
    app = Flask(__name__)
    app.add_url_rule("/api/v1/explore/", "explore", lambda: jsonify(result=result))
    register(app)
    return json.loads(app.test_client().get("/api/v1/explore/").data)["result"]


def amplitude(backend: str = "amplitude", main_dttm_col: str | None = "session_start") -> dict:
    return {"database": {"backend": backend}, "main_dttm_col": main_dttm_col}


def test_a_new_chart_gets_the_dataset_time_column() -> None:
    result = explore({"form_data": {"datasource": "3__table"}, "dataset": amplitude(), "slice": None})
    assert result["form_data"] == {"datasource": "3__table", "granularity_sqla": "session_start"}


@pytest.mark.parametrize(
    "result",
    [
        {"form_data": {"x_axis": "session_end"}, "dataset": amplitude(), "slice": None},  # chosen already
        {"form_data": {}, "dataset": amplitude(), "slice": {"slice_id": 1}},  # a saved chart
        {"form_data": {}, "dataset": amplitude(backend="postgresql"), "slice": None},  # not ours
        {"form_data": {}, "dataset": amplitude(main_dttm_col=None), "slice": None},  # no time column
    ],
)
def test_other_charts_are_left_alone(result: dict) -> None:
    assert explore(result) == result
