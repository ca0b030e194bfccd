"""HTTP client for Amplitude's Export API (``GET /api/2/export``).

Follows https://amplitude.com/docs/apis/analytics/export: HTTP Basic ``api_key:secret_key``; ``start``/``end`` are
inclusive UTC hours (``YYYYMMDDTHH``) of *upload* time; 404 "Raw data files were not found." is an empty window;
400 "too large" (over 4 GB) and 504 are answered by halving the window down to one hour; 429 and other 5xx are
retried with backoff (``Retry-After`` honoured, bounded). Bodies are streamed to a temporary file.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ..errors import AmplitudeError, AmplitudeFault, AuthenticationError
from ..hours import HOUR, format_hour, hour_count

_logger = logging.getLogger(__name__)

REGION_BASE_URLS = {"us": "https://amplitude.com", "eu": "https://analytics.eu.amplitude.com"}
EXPORT_PATH = "/api/2/export"
MAX_SPAN_HOURS = 365 * 24
CHUNK_BYTES = 1024 * 1024
#: Statuses retried with backoff. 504 is absent: it means "too much data", answered by splitting.
RETRY_STATUSES = (429, 500, 502, 503)

#: What a query or a connection test says when the project's keys are missing, in a Superset user's terms.
MISSING_KEYS = ("No Amplitude API key and secret key for this connection: set the API key and secret key on the "
                "connection (Username, Password) or AMPLITUDE_API_KEY/AMPLITUDE_SECRET_KEY.")


class DeadlinePassed(AmplitudeError):  # noqa: N818 - reads as what happened
    """The client's ``deadline`` passed during a request or a body's download (nothing of it is kept)."""


class HostNotFoundError(AmplitudeError):
    """The API host's name does not resolve: a wrong region or ``base_url``."""


class UnreachableError(AmplitudeFault):
    """The host resolved but did not accept a connection or answer in time (network, proxy, firewall, port)."""


class TruncatedBodyError(AmplitudeFault):
    """The body ended before its announced length (the window is downloaded again)."""


class ExportTooLargeError(AmplitudeFault):
    """One hour is more than the Export API can return (400 too large or 504 at one hour)."""


def resolve_base_url(region: str = "us", base_url: str | None = None) -> str:
    """The API host: an explicit ``base_url`` wins, else the region's host."""
    if base_url:
        return base_url.rstrip("/")
    try:
        return REGION_BASE_URLS[region.lower()]
    except KeyError:
        raise AmplitudeError(f"Unknown region {region!r}: use 'us' or 'eu' (or set base_url).") from None


def seconds_left(deadline: float | None) -> float | None:
    """Seconds before ``deadline`` (a ``time.monotonic()``; None: no deadline); :class:`DeadlinePassed` once it
    has passed."""
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlinePassed("the download deadline passed")
    return remaining


class BoundedRetry(Retry):
    """urllib3 retry whose ``Retry-After`` waits are capped, so total retry time stays bounded, and which neither
    waits nor tries again past its client's deadline (urllib3 copies a retry at each attempt: :meth:`new` keeps
    both settings)."""

    max_retry_after = 60.0
    deadline_of: Callable[[], float | None] = staticmethod(lambda: None)

    def new(self, **kw: Any) -> BoundedRetry:
        retry = super().new(**kw)
        retry.max_retry_after, retry.deadline_of = self.max_retry_after, self.deadline_of
        return retry

    def _until_deadline(self, wait: float) -> float:
        deadline = self.deadline_of()
        return wait if deadline is None else min(wait, max(0.0, deadline - time.monotonic()))

    def parse_retry_after(self, retry_after: str) -> float:
        return self._until_deadline(min(super().parse_retry_after(retry_after), self.max_retry_after))

    def get_backoff_time(self) -> float:
        return self._until_deadline(super().get_backoff_time())

    def sleep(self, response: Any = None) -> None:
        """Wait before the next attempt; none is made once the deadline has passed."""
        super().sleep(response)
        seconds_left(self.deadline_of())

    def is_exhausted(self) -> bool:
        deadline = self.deadline_of()
        return super().is_exhausted() or (deadline is not None and time.monotonic() >= deadline)


@dataclass(frozen=True)
class Window:
    """An inclusive range of upload hours and, once downloaded, where its zip is (None: no data, 404)."""

    start: datetime
    end: datetime
    path: Path | None = None

    @property
    def hours(self) -> int:
        return hour_count(self.start, self.end)

    def __str__(self) -> str:
        return f"{format_hour(self.start)}..{format_hour(self.end)}"


def build_session(retries: int, backoff: float, max_retry_after: float, connect_retries: int | None = None,
                  deadline_of: Callable[[], float | None] | None = None) -> requests.Session:
    """A requests session with bounded retries for 429/5xx and connection errors (none after ``deadline_of()``)."""
    retry = BoundedRetry(
        total=retries,
        connect=retries if connect_retries is None else connect_retries,
        read=retries,
        status=retries,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        backoff_factor=backoff,
        backoff_max=max_retry_after,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    retry.max_retry_after = max_retry_after
    if deadline_of is not None:
        retry.deadline_of = deadline_of
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def _is_too_large(response: requests.Response) -> bool:
    return response.status_code == 504 or (
        response.status_code == 400 and "too large" in response.text.lower()
    )


class ExportClient:
    """Downloads inclusive upload-hour windows of a project's raw events."""

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        *,
        region: str = "us",
        base_url: str | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        retries: int = 5,
        connect_retries: int = 2,
        backoff: float = 1.0,
        max_retry_after: float = 60.0,
        body_attempts: int = 3,
        temp_dir: Path | None = None,
    ) -> None:
        if not api_key or not secret_key:
            raise AuthenticationError(MISSING_KEYS)
        self.base_url = resolve_base_url(region, base_url)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.temp_dir = temp_dir
        self.body_attempts = body_attempts
        #: ``time.monotonic()`` after which no request starts and a body being read is dropped (None: no limit).
        #: Retry waits (``Retry-After``, backoff) are cut at it; a body is checked after each chunk it receives.
        self.deadline: float | None = None
        self._auth = (api_key, secret_key)
        self._session = build_session(retries, backoff, max_retry_after, min(connect_retries, retries),
                                      lambda: self.deadline)

    def export(self, start: datetime, end: datetime) -> Iterator[Window]:
        """Download ``start..end``, halving on 400-too-large/504; yields windows with their zip (or None).

        Every hour of the range is covered by exactly one yielded window. The caller owns (and deletes) the files.
        """
        if hour_count(start, end) > MAX_SPAN_HOURS:
            raise AmplitudeError("The Export API serves at most 365 days per request; narrow the time range.")
        pending = [Window(start, end)]
        while pending:
            window = pending.pop(0)
            outcome = self.download(window)
            if outcome is not None:
                yield outcome
                continue
            if window.hours == 1:
                raise ExportTooLargeError(
                    f"Amplitude cannot export upload hour {format_hour(window.start)} through the Export API "
                    "(too large even as a single hour). Use Amplitude's Amazon S3 export for that hour and load "
                    "the files with `amplitude-load`."
                )
            middle = window.start + (window.hours // 2 - 1) * HOUR
            _logger.info("Export window %s too large, splitting", window)
            pending[:0] = [Window(window.start, middle), Window(middle + HOUR, window.end)]

    def download(self, window: Window) -> Window | None:
        """The window with its zip file (``path=None`` if empty, 404); None if too large (split it).

        A body that breaks off is downloaded again, ``body_attempts`` times at most.
        """
        problem = ""
        for _ in range(self.body_attempts):
            response = self._get(window)
            with response:
                status = response.status_code
                if status != 200:
                    return self._non_200(window, response)
                try:
                    return Window(window.start, window.end, self._save_body(response))
                except TruncatedBodyError as exc:
                    problem = str(exc)
                    _logger.warning("Export %s: %s; downloading again", window, problem)
        raise AmplitudeFault(
            f"The export of upload hours {window} broke off {self.body_attempts} times ({problem}); try again later."
        )

    def answer(self, window: Window) -> int:
        """The status the Export API answers for ``window`` (200, or 404: no data), its body left unread; other
        answers raise as in :meth:`download` (a hour too large to export counts as an answer)."""
        response = self._get(window)
        with response:
            if response.status_code != 200:
                self._non_200(window, response)
            return response.status_code

    def _get(self, window: Window) -> requests.Response:
        params = {"start": format_hour(window.start), "end": format_hour(window.end)}
        url = self.base_url + EXPORT_PATH
        remaining = seconds_left(self.deadline)
        timeout = (self.connect_timeout, self.timeout) if remaining is None else (
            min(self.connect_timeout, remaining), min(self.timeout, remaining))
        _logger.info("GET %s start=%s end=%s", url, params["start"], params["end"])
        try:
            return self._session.get(url, params=params, auth=self._auth, stream=True, timeout=timeout)
        except requests.RequestException as exc:
            seconds_left(self.deadline)  # a timeout cut short by the deadline is not the network's fault
            raise self._connection_error(exc) from None

    def _connection_error(self, exc: requests.RequestException) -> AmplitudeError:
        """A readable error telling an unknown host from an unreachable one (never the credentials)."""
        host = urlsplit(self.base_url).hostname or self.base_url
        causes = []
        cause: BaseException | None = exc
        while cause is not None and len(causes) < 10:
            causes.append(cause)
            cause = cause.__cause__ or cause.__context__ or next(
                (arg for arg in getattr(cause, "args", ()) if isinstance(arg, BaseException)), None)
            if cause is None and causes and getattr(causes[-1], "reason", None) is not None:
                cause = causes[-1].reason
        text = " ".join(f"{type(c).__name__} {c}" for c in causes)
        if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.ReadTimeout) or "timed out" in text:
            return UnreachableError(
                f"Amplitude's Export API at {self.base_url} did not answer within {self.connect_timeout:g} s "
                f"(connect) / {self.timeout:g} s (read): check the network, a proxy or a firewall."
            )
        if any(isinstance(c, socket.gaierror) for c in causes) or "NameResolutionError" in text or (
                "Name or service not known" in text or "nodename nor servname" in text):
            return HostNotFoundError(
                f"Unknown host {host!r}: its name does not resolve. Check the region ('us' or 'eu') or base_url "
                "of this connection, and that this server can resolve internet names (DNS)."
            )
        if "Connection refused" in text or any(isinstance(c, ConnectionRefusedError) for c in causes):
            return UnreachableError(
                f"Could not reach Amplitude's Export API at {self.base_url}: the connection was refused "
                "(wrong port, or nothing listening there)."
            )
        return UnreachableError(
            f"Could not reach Amplitude's Export API at {self.base_url}: {type(exc).__name__}; check the network."
        )

    def _non_200(self, window: Window, response: requests.Response) -> Window | None:
        """Empty window for 404, None for too large; any other status raises."""
        status = response.status_code
        if status == 404:
            return Window(window.start, window.end, None)
        if _is_too_large(response):
            return None
        if status in (401, 403):
            raise AuthenticationError(
                f"Amplitude rejected the credentials ({status} {response.text[:80].strip()!r}) at "
                f"{self.base_url}: check the API key and secret key, and the region — a project in "
                "Amplitude's EU data center needs region 'eu' (a US one, 'us')."
            )
        if status in RETRY_STATUSES:
            seconds_left(self.deadline)  # retrying may have stopped at the deadline rather than after every attempt
            raise AmplitudeFault(f"Amplitude kept answering {status} for {window} after retrying; try again later.")
        raise AmplitudeFault(f"Amplitude answered {status} for {window}: {response.text[:200].strip()}")

    def _save_body(self, response: requests.Response) -> Path:
        """Stream the body to a temporary file; a short or broken body raises AmplitudeError."""
        started = time.monotonic()
        fd, name = tempfile.mkstemp(prefix="amplitude-export-", suffix=".zip", dir=self.temp_dir)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in response.iter_content(CHUNK_BYTES):
                    handle.write(chunk)
                    seconds_left(self.deadline)
        except DeadlinePassed:
            path.unlink(missing_ok=True)
            raise
        except requests.RequestException as exc:
            path.unlink(missing_ok=True)
            seconds_left(self.deadline)
            raise TruncatedBodyError(f"the download broke off: {type(exc).__name__}") from None
        expected = response.headers.get("Content-Length")
        if expected is not None and path.stat().st_size != int(expected):
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            raise TruncatedBodyError(f"got {size} of {expected} bytes")
        _logger.debug("saved %d bytes in %.1fs", path.stat().st_size, time.monotonic() - started)
        return path
