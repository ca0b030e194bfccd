"""Each refusal of a query is logged as one line, on the path SQL Lab takes (measured in a running Superset 6.1:
``sql_lab.handle_query_error`` turns the database's exception into ``SupersetError``s through the engine spec's
``extract_errors(str(ex))``, ``sql_json_executer`` re-raises them as ``SupersetErrorsException`` without the
exception, and Flask logs that with its traceback). The e2e suite checks the same in the server's log
(``tests/e2e/test_first_run.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, exc, text

from shillelagh_amplitude.superset import logs
from shillelagh_amplitude.superset.engine_spec import AmplitudeEngineSpec

from ..conftest import API_KEY, SECRET_KEY
from ..helpers import free_port

REFUSALS = {
    "range-over-365-days": (
        "SELECT count(*) FROM amplitude_sessions WHERE session_start >= '2024-01-01' AND session_start < '2026-01-01'",
        "The time range 2024-01-01 to 2026-01-01 is over 365 days; narrow it.",
    ),
    "bad-date-literal": (
        "SELECT count(*) FROM amplitude_sessions WHERE session_start >= '2026-13-45'",
        "a time bound must be ISO 8601 text such as",
    ),
    "offline-range": (
        "SELECT count(*) FROM amplitude_sessions WHERE session_start >= '2020-01-01' AND session_start < '2020-01-02'",
        "This connection is offline and its store holds none of the upload hours",
    ),
    "unknown-table": ("SELECT count(*) FROM amplitude_session", "Unsupported table: amplitude_session"),
}


@pytest.fixture
def one_line_logs(superset_app) -> Iterator[None]:
    factory = logging.getLogRecordFactory()
    logs.install()
    yield
    logging.setLogRecordFactory(factory)


def _raised(engine, sql: str) -> exc.DBAPIError:
    with pytest.raises(exc.DBAPIError) as error, engine.connect() as connection:
        connection.execute(text(sql))
    return error.value


def _log_as_superset_does(database_error: Exception, caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    """SQL Lab's path: errors extracted by the engine spec, re-raised without a cause, logged with exc_info."""
    from superset.exceptions import SupersetErrorsException

    errors = AmplitudeEngineSpec.extract_errors(str(database_error.orig))
    caplog.clear()
    try:
        raise SupersetErrorsException(errors)
    except SupersetErrorsException:
        logging.getLogger("superset.views.error_handling").exception("Exception")
    (record,) = caplog.records
    return record


@pytest.mark.parametrize("name", list(REFUSALS))
def test_a_refusal_is_logged_as_one_line(name, loaded_cache, one_line_logs, caplog) -> None:
    sql, message = REFUSALS[name]
    engine = create_engine("amplitude://?offline=true", api_key=API_KEY, secret_key=SECRET_KEY,
                           cache_dir=str(loaded_cache))
    record = _log_as_superset_does(_raised(engine, sql), caplog)
    assert record.exc_info is None and record.exc_text is None
    line = caplog.text
    assert line.count("\n") == 1 and "Traceback" not in line
    assert message in line


def test_a_fault_keeps_its_traceback(tmp_path, one_line_logs, caplog) -> None:
    """Amplitude unreachable: not the user's, logged with the traceback."""
    engine = create_engine("amplitude://", connect_args={"adapter_kwargs": {"amplitude": {
        "api_key": "key", "secret_key": "secret", "base_url": f"http://127.0.0.1:{free_port()}",
        "cache_dir": str(tmp_path)}}})
    fault = _raised(engine, "SELECT count(*) FROM amplitude_sessions WHERE session_start >= '2026-03-01' "
                            "AND session_start < '2026-03-02'")
    record = _log_as_superset_does(fault, caplog)
    assert record.exc_info is not None and "Traceback" in caplog.text
