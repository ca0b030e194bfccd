"""Telling a running Spark Thrift Server about a publish: ``amplitude-sync --spark hive://HOST:PORT/SCHEMA`` and the
background sync (``AMPLITUDE_LAKE_SPARK``) run :func:`.ddl.refresh_statements` on it after each publish.

A long-running Thrift Server lists a table's partitions and files once; it sees new partitions and replaced files
only after ``MSCK REPAIR TABLE … SYNC PARTITIONS`` and ``REFRESH TABLE``. The syncs run them after every publish
(not only those that wrote something): seven metadata statements, and a refresh that failed, or a publish made by
another process (``amplitude-lake publish``), is covered by the next run without remembering anything.

Bounded: connecting and every call to the server time out after ``timeout_s``, and the statements must finish
within ``deadline_s`` (run asynchronously and polled, cancelled past it). A failure is a :class:`SparkRefreshError`
of one line naming the server's ``host:port`` only (never the URI's credentials): the syncs report it as a warning,
the lake stays published.
"""

from __future__ import annotations

import getpass
import time
from dataclasses import dataclass
from socket import create_connection
from typing import Any

from sqlalchemy.engine.url import make_url

from .ddl import refresh_statements

#: Seconds to connect, and for each call to the server.
TIMEOUT_S = 30.0
#: Seconds the refresh statements may take in all.
DEADLINE_S = 300.0
POLL_S = 0.2
AUTHS = ("NONE", "NOSASL", "LDAP", "CUSTOM")


class SparkRefreshError(Exception):
    """The Thrift Server could not be refreshed (one line, no credentials)."""


@dataclass(frozen=True)
class SparkTarget:
    """Where the refresh statements go: ``hive://[user[:password]@]HOST[:PORT]/SCHEMA[?auth=NONE|NOSASL|LDAP|CUSTOM]``
    (PyHive's URI, as Superset's connection to the server; port 10000 and schema ``amplitude`` by default)."""

    host: str
    port: int
    schema: str
    username: str | None = None
    password: str | None = None
    auth: str = "NONE"

    @classmethod
    def parse(cls, uri: str) -> SparkTarget:
        """The target of ``uri``; a :class:`ValueError` (without the URI's password) if it is not one."""
        try:
            url = make_url(uri)
            port = url.port
        except Exception:  # noqa: BLE001 - sqlalchemy's parse errors echo the URI: say what is expected instead
            raise ValueError("the Spark Thrift Server must be given as hive://HOST:PORT/SCHEMA") from None
        if url.drivername != "hive" or not url.host:
            raise ValueError(f"the Spark Thrift Server must be given as hive://HOST:PORT/SCHEMA, not {url.drivername}://"
                             f"{url.host or ''}")
        unknown = sorted(set(url.query) - {"auth"})
        if unknown:
            raise ValueError(f"unsupported parameter {', '.join(unknown)} for the Spark Thrift Server {url.host}; "
                             "only auth is accepted")
        auth = str(url.query.get("auth", "NONE")).upper()
        if auth not in AUTHS:
            raise ValueError(f"auth={auth} is not supported for refreshing Spark: use one of {', '.join(AUTHS)}")
        return cls(url.host, port or 10000, url.database or "amplitude", url.username, url.password, auth)

    @property
    def display(self) -> str:
        """``host:port``: how messages name the server."""
        return f"{self.host}:{self.port}"


def refresh_spark(uri: str, *, timeout_s: float = TIMEOUT_S, deadline_s: float = DEADLINE_S) -> str:
    """Run the lake's refresh statements for schema ``SCHEMA`` on the Thrift Server of ``uri``; a one-line summary.

    Raises :class:`SparkRefreshError` if the URI is not one, PyHive is missing, or the server cannot be reached,
    refuses a statement, or is slower than the bounds."""
    try:
        target = SparkTarget.parse(uri)
    except ValueError as exc:
        raise SparkRefreshError(f"Spark not refreshed: {exc}") from None
    statements = refresh_statements("spark", target.schema)
    started = time.monotonic()
    try:
        connection = _connect(target, timeout_s)
        try:
            cursor = connection.cursor()
            for statement in statements:
                _run(cursor, statement, started + deadline_s)
        finally:
            connection.close()
    except ImportError:
        raise SparkRefreshError(f"Spark Thrift Server {target.display} not refreshed: PyHive is not installed "
                                "(pip install 'shillelagh-amplitude[spark]')") from None
    except Exception as exc:  # noqa: BLE001 - the network, Thrift or the server: reported in one line
        raise SparkRefreshError(f"Spark Thrift Server {target.display} not refreshed ({_reason(exc)}); "
                                "the next sync refreshes it again") from None
    return (f"Spark Thrift Server {target.display}: {target.schema}'s tables refreshed ({len(statements)} statements "
            f"in {time.monotonic() - started:.1f} s)")


def _connect(target: SparkTarget, timeout_s: float) -> Any:
    """A PyHive connection whose socket times out after ``timeout_s`` (PyHive's own transports, plus the timeout)."""
    from pyhive import hive
    from thrift.transport.TSocket import TSocket
    from thrift.transport.TTransport import TBufferedTransport

    class QuietSocket(TSocket):
        """Thrift's socket, opened without Thrift's own logging of a failure (an error, with a traceback when the
        name does not resolve): the refresh reports it, in one line."""

        def open(self) -> None:
            self.handle = create_connection((target.host, target.port), timeout=timeout_s)

    socket = QuietSocket(target.host, target.port)
    socket.setTimeout(timeout_s * 1000)
    username = target.username or getpass.getuser()
    if target.auth == "NOSASL":
        transport = TBufferedTransport(socket)
    else:
        import thrift_sasl

        password = target.password or "x"  # PLAIN needs one; the server ignores it with authentication NONE
        transport = thrift_sasl.TSaslClientTransport(
            lambda: hive.get_installed_sasl(host=target.host, sasl_auth="PLAIN", username=username, password=password),
            "PLAIN", socket)
    return hive.connect(thrift_transport=transport, username=username, database=target.schema)


def _run(cursor: Any, statement: str, deadline: float) -> None:
    """Run ``statement`` asynchronously and wait for it until ``deadline`` (then cancel it)."""
    from TCLIService.ttypes import TOperationState

    cursor.execute(statement, async_=True)
    while True:
        status = cursor.poll(get_progress_update=False)
        state = status.operationState
        if state == TOperationState.FINISHED_STATE:
            return
        if state in (TOperationState.ERROR_STATE, TOperationState.CANCELED_STATE, TOperationState.CLOSED_STATE):
            raise RuntimeError(f"{statement}: {_short(status.errorMessage or 'failed')}")
        if time.monotonic() > deadline:
            cursor.cancel()
            raise TimeoutError(f"still running past the deadline: {statement}")
        time.sleep(POLL_S)


def _reason(exc: BaseException) -> str:
    """A failure in one line: the server's own message (PyHive wraps the response, or its status) or the
    exception's."""
    response = exc.args[0] if exc.args else None
    status = getattr(response, "status", response)
    message = getattr(status, "errorMessage", None) or str(exc) or type(exc).__name__
    return _short(message)


def _short(text: str, limit: int = 300) -> str:
    """The first line of ``text`` without the Java exceptions it is wrapped in (Spark's ``[ERROR_CLASS] reason``)."""
    line = text.strip().splitlines()[0] if text.strip() else text
    line = line.rsplit("Exception: ", 1)[-1]
    return line if len(line) <= limit else line[:limit] + "…"
