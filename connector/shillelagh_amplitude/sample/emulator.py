"""A local HTTP server that behaves like Amplitude's Export API (``GET /api/2/export``), for tests and demos.

It serves the export files under ``data_dir/<app>/`` (as written by :mod:`shillelagh_amplitude.sample.generator`):
HTTP Basic auth (403 ``Invalid API Key``), inclusive ``start``/``end`` upload hours (``YYYYMMDDTHH``), about
``latency_hours`` of export delay, 404 ``Raw data files were not found.`` for an empty window, and a streamed
zip of the matching members otherwise. Faults can be injected (window limits, queued faults) to test clients.
With ``identify_clients``, each request is logged with the id of the local process that sent it (the owner of
the client's socket, as the operating system reports it), so a test can tell which process downloaded.

Run ``python -m shillelagh_amplitude.sample.emulator --data DIR --port 8765 [--generate-days 30 --events 200000]``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import gzip
import hmac
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO
from urllib.parse import parse_qs, urlsplit

from ..hours import HOUR, floor_hour, format_hour, hour_count, parse_hour, to_utc
from .generator import Member, generate_dataset, list_members, write_zip

EXPORT_PATH = "/api/2/export"
INVALID_API_KEY = "Invalid API Key"
NO_DATA = "Raw data files were not found."
TOO_LARGE = (
    "The file size of the exported data is too large. Shorten the time ranges and try again. "
    "The limit size is 4GB."
)
TIMEOUT = (
    "The amount of data is large causing a timeout. For large amounts of data, use the Amazon S3 destination."
)
MAX_SPAN_HOURS = 365 * 24
#: ``add_fault`` kinds. ``truncated`` announces the full Content-Length then closes the connection early;
#: ``short_body`` announces the cut length (a complete HTTP answer holding half a zip).
FAULT_KINDS = ("status", "not_zip", "truncated", "short_body", "corrupt_gzip", "bad_json", "slow")
#: Faults that spoil a zip: they wait for a request that gets one (not a 400, 404 or 504).
BODY_FAULTS = frozenset({"truncated", "short_body", "corrupt_gzip", "bad_json"})
NOT_ZIP_BODY = b"<html><head><title>Rate limited</title></head><body><h1>Please slow down</h1></body></html>"
BAD_JSON_LINE = b'{"event_type": "page_view", "uuid": "broken\n'
_HOUR_PARAM = re.compile(r"^\d{8}T\d{2}$")
_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class RequestRecord:
    """One request the emulator answered."""

    path: str
    start: str | None
    end: str | None
    status: int
    authorized: bool
    #: The sending process (``identify_clients``): the owner of the client's socket; None if not asked or gone.
    client_pid: int | None = None


@dataclass
class Fault:
    """A queued fault for the next ``times`` matching requests."""

    kind: str
    times: int
    status: int | None = None
    retry_after: int | float | str | None = None
    delay: float | None = None
    hours: tuple[datetime, datetime] | None = None

    def applies(self, first: datetime, last: datetime, to_zip: bool) -> bool:
        """Whether the fault hits a request for hours ``first..last``, before (or, ``to_zip``, instead of)
        sending its zip."""
        if (self.kind in BODY_FAULTS) != to_zip:
            return False
        return self.hours is None or (
            first <= floor_hour(self.hours[1]) and last >= floor_hour(self.hours[0])
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: ExportEmulator) -> None:
        super().__init__(address, _Handler)
        self.emulator = emulator

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        """A client dropping its connection (the faults do it on purpose) is not an error worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AmplitudeExportEmulator/1.0"
    server: _Server

    def do_GET(self) -> None:
        self.server.emulator._serve(self)

    def send_response(self, code: int, message: str | None = None) -> None:
        """Log the request as its status line goes out, so a client never sees an answer not yet logged."""
        self.server.emulator._record(self, code)
        super().send_response(code, message)

    def log_message(self, *args: object) -> None:
        """Quiet: requests are in ``ExportEmulator.requests``."""


def _send(
    request: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    headers: dict[str, str] | None = None,
) -> None:
    """Send a complete answer with a small in-memory body."""
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        request.send_header(name, value)
    request.end_headers()
    request.wfile.write(body)


def _send_zip(request: BaseHTTPRequestHandler, body: IO[bytes], size: int, kind: str | None) -> None:
    """Stream a zip file; ``truncated``/``short_body`` send only its first half."""
    sent = size // 2 if kind in ("truncated", "short_body") else size
    request.send_response(200)
    request.send_header("Content-Type", "application/zip")
    request.send_header("Content-Length", str(sent if kind == "short_body" else size))
    request.send_header("Content-Disposition", 'attachment; filename="export.zip"')
    if kind == "truncated":
        request.send_header("Connection", "close")
        request.close_connection = True
    request.end_headers()
    body.seek(0)
    remaining = sent
    while remaining:
        chunk = body.read(min(_CHUNK_BYTES, remaining))
        request.wfile.write(chunk)
        remaining -= len(chunk)
    request.wfile.flush()


def _corrupt_gzip(member: Member) -> bytes:
    """The member's gzip stream cut in half."""
    data = member.path.read_bytes()
    return data[: max(10, len(data) // 2)]


def _with_bad_json(member: Member) -> bytes:
    """The member with a line that is not JSON inserted half-way."""
    lines = gzip.decompress(member.path.read_bytes()).splitlines(keepends=True)
    lines.insert(len(lines) // 2, BAD_JSON_LINE)
    return gzip.compress(b"".join(lines), mtime=0)


def _socket_owner(client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The local process holding the client's end of a connection to this server (open while it waits for the
    answer): the socket from ``client`` to ``server``, both ends compared, as another connection may use the same
    local port towards another address. None if it is gone or not visible."""
    import psutil  # only when identifying clients: a test dependency, not the connector's

    return next((conn.pid for conn in psutil.net_connections("tcp4") if conn.pid and conn.raddr
                 and (conn.laddr.ip, conn.laddr.port) == tuple(client[:2])
                 and (conn.raddr.ip, conn.raddr.port) == tuple(server[:2])), None)


def _parse_window(start: str | None, end: str | None) -> tuple[datetime, datetime] | str:
    """``(first, last)`` hours, or the 400 message."""
    hours = []
    for name, value in (("start", start), ("end", end)):
        if value is None:
            return f"Missing required parameter '{name}' (format YYYYMMDDTHH, e.g. 20240302T05)."
        try:
            if not _HOUR_PARAM.match(value):
                raise ValueError(value)
            hours.append(parse_hour(value))
        except ValueError:
            return f"Invalid '{name}' parameter {value!r}: expected YYYYMMDDTHH, e.g. 20240302T05."
    first, last = hours
    if first > last:
        return "The 'start' hour must not be after the 'end' hour."
    if hour_count(first, last) > MAX_SPAN_HOURS:
        return "The time range must not be longer than 365 days."
    return first, last


class ExportEmulator:
    """Amplitude's Export API on ``127.0.0.1``, serving the export files under ``data_dir``.

    Hour ``H`` becomes exportable at ``H + 1 h + latency_hours`` (by ``now()``), as Amplitude documents.
    Limits for fault injection: ``max_window_hours`` and ``too_large_hours`` (400 "too large"),
    ``timeout_window_hours`` (504); see also :meth:`add_fault`.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        api_key: str = "test-key",
        secret_key: str = "test-secret",
        now: Callable[[], datetime] | None = None,
        latency_hours: int = 2,
        port: int = 0,
        identify_clients: bool = False,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.api_key = api_key
        self.secret_key = secret_key
        self.now = now or (lambda: datetime.now(UTC))
        self.latency_hours = latency_hours
        self.max_window_hours: int | None = None
        self.too_large_hours: set[datetime] = set()
        self.timeout_window_hours: int | None = None
        self._port = port
        self.identify_clients = identify_clients
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._requests: list[RequestRecord] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on 127.0.0.1 (a free port unless one was given) in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._server = _Server(("127.0.0.1", self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="export-emulator", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> ExportEmulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: the API host, without ``/api/2/export``."""
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- request log and faults ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request answered so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def add_fault(
        self,
        kind: str,
        *,
        times: int = 1,
        status: int | None = None,
        retry_after: int | float | str | None = None,
        delay: float | None = None,
        hours: tuple[datetime, datetime] | None = None,
    ) -> None:
        """Spoil the next ``times`` authorized, valid requests (only windows overlapping ``hours``, if given).

        Kinds: ``status`` (answer ``status``, default 500, with ``Retry-After: retry_after`` if given),
        ``not_zip`` (200 with an HTML page), ``truncated`` (full Content-Length, half the zip, connection
        closed), ``short_body`` (Content-Length of half the zip), ``corrupt_gzip`` (last member's gzip cut
        in half), ``bad_json`` (a line that is not JSON in the last member), ``slow`` (wait ``delay``
        seconds, then answer normally). ``delay`` also works with the other kinds. Faults are used first come,
        first served: per request at most one of ``status``/``not_zip``/``slow`` (checked first) and one of
        the zip-spoiling kinds, which wait for a request that gets a zip (not a 400, 404 or 504).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}: use one of {', '.join(FAULT_KINDS)}")
        if times < 1:
            raise ValueError("times must be at least 1")
        if kind == "slow" and not delay:
            raise ValueError("a 'slow' fault needs a delay in seconds")
        with self._lock:
            self._faults.append(Fault(kind, times, status, retry_after, delay, hours))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> list[Fault]:
        """Queued faults not used up yet (a copy)."""
        with self._lock:
            return [Fault(**vars(fault)) for fault in self._faults]

    def _take_fault(self, first: datetime, last: datetime, to_zip: bool) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.applies(first, last, to_zip):
                    fault.times -= 1
                    if not fault.times:
                        self._faults.remove(fault)
                    return fault
        return None

    # --- serving --------------------------------------------------------------------------------------------

    def exportable(self, hour: datetime) -> bool:
        """Whether an upload hour is past the export latency: ``hour + 1 h + latency_hours <= now()``."""
        return floor_hour(hour) + HOUR + timedelta(hours=self.latency_hours) <= to_utc(self.now())

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user.encode(), self.api_key.encode()) and hmac.compare_digest(
            password.encode(), self.secret_key.encode()
        )

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        start, end = (query.get(name, [None])[0] for name in ("start", "end"))
        authorized = self._authorized(request.headers.get("Authorization"))
        request.asked = (url.path, start, end, authorized)  # logged by _record with the status
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client hung up mid-body
            self._answer(request, url.path, start, end, authorized)

    def _record(self, request: BaseHTTPRequestHandler, status: int) -> None:
        path, start, end, authorized = request.asked
        pid = _socket_owner(request.client_address, request.server.server_address) if self.identify_clients else None
        with self._lock:
            self._requests.append(RequestRecord(path, start, end, status, authorized, pid))

    def _answer(
        self, request: BaseHTTPRequestHandler, path: str, start: str | None, end: str | None, authorized: bool
    ) -> int:
        """Answer one GET; returns the status sent."""
        if path != EXPORT_PATH:
            _send(request, 404, b"Not Found")
            return 404
        if not authorized:
            _send(request, 403, INVALID_API_KEY.encode())
            return 403
        window = _parse_window(start, end)
        if isinstance(window, str):
            _send(request, 400, window.encode())
            return 400
        first, last = window
        members = [
            member for member in list_members(self.data_dir, first, last) if self.exportable(member.hour)
        ]
        fault = self._take_fault(first, last, to_zip=False)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.kind == "status":
            status = fault.status or 500
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
            _send(request, status, HTTPStatus(status).phrase.encode(), headers=headers)
            return status
        if fault is not None and fault.kind == "not_zip":
            _send(request, 200, NOT_ZIP_BODY, "text/html; charset=utf-8")
            return 200
        hours = hour_count(first, last)
        too_large = {floor_hour(hour) for hour in self.too_large_hours}
        if (self.max_window_hours is not None and hours > self.max_window_hours) or any(
            first <= hour <= last for hour in too_large
        ):
            _send(request, 400, TOO_LARGE.encode())
            return 400
        if self.timeout_window_hours is not None and hours > self.timeout_window_hours:
            _send(request, 504, TIMEOUT.encode())
            return 504
        if not members:
            _send(request, 404, NO_DATA.encode())
            return 404
        fault = self._take_fault(first, last, to_zip=True)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        kind = fault.kind if fault is not None else None
        replace = {}
        if kind == "corrupt_gzip":
            replace[members[-1].name] = _corrupt_gzip(members[-1])
        elif kind == "bad_json":
            replace[members[-1].name] = _with_bad_json(members[-1])
        with tempfile.TemporaryFile() as body:
            write_zip(body, members, replace)
            size = body.tell()
            _send_zip(request, body, size, kind)
        return 200


def main(argv: list[str] | None = None) -> None:
    """Serve an Export API emulator over ``--data`` until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m shillelagh_amplitude.sample.emulator", description=main.__doc__)
    parser.add_argument(
        "--data", type=Path, required=True, help="directory of export files (<app>/...json.gz)"
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--secret-key", default="test-secret")
    parser.add_argument("--latency-hours", type=int, default=2)
    parser.add_argument(
        "--generate-days", type=int, help="first generate this many days up to the current hour"
    )
    parser.add_argument("--events", type=int, default=200_000, help="events to generate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.generate_days:
        end = floor_hour(datetime.now(UTC))
        start = end - timedelta(days=args.generate_days)
        summary = generate_dataset(args.data, start, end, events=args.events, seed=args.seed)
        print(f"generated {summary.events} events in {len(summary.files)} files under {args.data}")
    members = list_members(args.data)
    emulator = ExportEmulator(
        args.data,
        api_key=args.api_key,
        secret_key=args.secret_key,
        latency_hours=args.latency_hours,
        port=args.port,
    )
    emulator.start()
    print(f"Export API emulator on {emulator.base_url}{EXPORT_PATH} (Ctrl-C to stop)")
    if members:
        window = f"start={format_hour(members[0].hour)}&end={format_hour(members[-1].hour)}"
        url = f"{emulator.base_url}{EXPORT_PATH}?{window}"
        print(f"try: curl -u {args.api_key}:{args.secret_key} -o export.zip '{url}'")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
