"""Server log hygiene: a user's mistake (a typo in SQL Lab, a bad option) is logged as one line, without a
traceback; real faults (anything else) keep theirs.

An exception is the user's when it, or what it wraps, is a known user error. The walk down its causes passes
only through the wrappers of Superset, SQLAlchemy and shillelagh: a fault met on the way (Amplitude or the store
failing, a ``KeyError`` raised while handling a typo) makes it a fault.

Superset logs a failed query with ``exc_info`` wherever it catches it (SQL Lab, chart data, dataset
refresh), so the filter sits where every record is made: :func:`install` wraps the log record factory.
``superset_config.py`` calls it; importing this module imports nothing of Superset.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import apsw
from shillelagh.exceptions import ProgrammingError as ShillelaghProgrammingError
from sqlalchemy.exc import ProgrammingError as SQLAlchemyProgrammingError

#: Errors in what the user wrote: SQLite's "no such column" or syntax errors, and the adapter's own
#: refusals (a range over 365 days, a bad option, hours missing offline), which it raises as ProgrammingError
#: (its faults, as OperationalError).
USER_ERRORS: tuple[type[BaseException], ...] = (apsw.SQLError, ShillelaghProgrammingError, SQLAlchemyProgrammingError)
#: Superset's and sqlglot's SQL parse errors, by class name (importing Superset here would be circular).
USER_ERROR_NAMES = frozenset({"SupersetParseError", "ParseError", "TokenError"})
#: Superset re-raises a failed query's errors as ``SupersetErrorsException`` (no cause attached), and a form's
#: validation errors likewise: these types and SQLite's compile-time messages are the user's, whatever the engine.
USER_ERROR_TYPES = frozenset({
    "SYNTAX_ERROR", "COLUMN_DOES_NOT_EXIST_ERROR", "TABLE_DOES_NOT_EXIST_ERROR", "CONNECTION_ACCESS_DENIED_ERROR",
    "INVALID_PAYLOAD_SCHEMA_ERROR", "INVALID_PAYLOAD_FORMAT_ERROR", "INVALID_TEMPLATE_PARAMS_ERROR",
    "MISSING_TEMPLATE_PARAMS_ERROR", "INVALID_SQL_ERROR", "CONNECTION_MISSING_PARAMETERS_ERROR",
})
#: The adapter's refusals (a range over 365 days, a bad time literal, hours missing offline or not downloaded
#: within the budget, an unknown table) as SQL Lab passes them on: text only, in a ``SupersetError`` of the generic
#: type (``sql_lab.handle_query_error`` hands the engine spec ``str(ex)``).
REFUSAL_MESSAGE = re.compile(
    r"The time range \S+ to \S+ is over \d+ days|: a time bound must be ISO 8601 text|"
    r"This connection is offline and its store holds|Amplitude data for this query is not all downloaded yet|"
    r"^Unsupported table: |^Unknown table "
)
#: Packages whose exceptions wrap another one (the walk goes on through them); anything else is a fault.
WRAPPER_PACKAGES = frozenset({"superset", "sqlalchemy", "shillelagh", "flask_appbuilder"})
SQLITE_USER_MESSAGE = re.compile(
    r"^(no such (column|table|function)|near \"[^\"]*\": syntax error|incomplete input|ambiguous column name|"
    r"wrong number of arguments|misuse of (aggregate|window) function|.* syntax error)"
)


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _superset_errors(exc: BaseException) -> list[object]:
    """The ``SupersetError``s an exception carries (``errors`` or ``error``), by duck typing."""
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list):
        return errors
    error = getattr(exc, "error", None)
    return [error] if hasattr(error, "error_type") else []


def _user_superset_error(error: object) -> bool:
    error_type = getattr(getattr(error, "error_type", None), "value", None)
    message = str(getattr(error, "message", ""))
    return (error_type in USER_ERROR_TYPES or bool(SQLITE_USER_MESSAGE.match(message))
            or bool(REFUSAL_MESSAGE.search(message)))


def is_user_error(exc: BaseException | None) -> bool:
    """True when ``exc`` (or what it wraps) is a mistake in the query, not a fault of the system."""
    for e in _chain(exc):
        if isinstance(e, USER_ERRORS) or type(e).__name__ in USER_ERROR_NAMES:
            return True
        if (errors := _superset_errors(e)) and all(_user_superset_error(error) for error in errors):
            return True
        if type(e).__module__.split(".")[0] not in WRAPPER_PACKAGES:
            return False
    return False


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def install() -> None:
    """Make every log record carrying a user error one line without a traceback (idempotent)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "amplitude_one_line", False):
        return

    def make_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if record.exc_info and record.exc_info[1] is not None and is_user_error(record.exc_info[1]):
            exc, message = record.exc_info[1], record.getMessage()
            errors = _superset_errors(exc)
            detail = "; ".join(str(getattr(error, "message", error)) for error in errors) if errors else str(exc)
            record.msg = one_line(message if detail in message else f"{message} ({type(exc).__name__}: {detail})")
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return record

    make_record.amplitude_one_line = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)
