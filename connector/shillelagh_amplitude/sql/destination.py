"""Where a connection's requests go, and which destinations the operator allows.

A connection's destination is its Export API host: the region's (``region=us|eu``, open to everyone) or a
``base_url`` (a proxy, the local emulator). A ``base_url`` is refused unless the operator lists it, in the
environment (``AMPLITUDE_ALLOWED_BASE_URLS``, comma-separated) or in ``superset_config``
(:func:`allow_base_urls`). An entry is ``scheme://host[:port][/path]``; ``scheme://host:*`` allows every port of
a host (the tests' emulators). The region hosts are always allowed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from urllib.parse import urlsplit

from ..export.client import REGION_BASE_URLS, AmplitudeError, resolve_base_url

ALLOWED_ENV = "AMPLITUDE_ALLOWED_BASE_URLS"
DEFAULT_PORTS = {"http": 80, "https": 443}
ANY_PORT = "*"
#: Entries allowed by the operator's configuration (``superset_config``), besides the environment's.
_ALLOWED_BY_CONFIG: set[str] = set()


class DestinationRefused(AmplitudeError):
    """A ``base_url`` the operator did not allow."""


def _parts(url: str, entry: bool = False) -> tuple[str, str, str, str]:
    """(scheme, host, port, path) of a URL; the port explicit (``*`` kept in an allow-list entry)."""
    text = url.strip()
    any_port = entry and text.split("//", 1)[-1].split("/", 1)[0].endswith(":" + ANY_PORT)
    if any_port:
        text = text.replace(":" + ANY_PORT, "", 1)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise DestinationRefused(f"Not a URL: {text.split('@')[-1]!r}") from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in DEFAULT_PORTS or not host:
        raise DestinationRefused(f"Not an http(s) URL: {parts.netloc.split('@')[-1] or text.split('@')[-1]!r}")
    return scheme, host, ANY_PORT if any_port else str(port or DEFAULT_PORTS[scheme]), parts.path.rstrip("/")


def canonical(url: str) -> str:
    """``scheme://host:port/path``: one spelling per destination (no credentials, explicit port, no final ``/``)."""
    scheme, host, port, path = _parts(url)
    return f"{scheme}://{host}:{port}{path}"


def destination(region: str | None = "us", base_url: str | None = None) -> str:
    """The canonical destination of a connection's settings."""
    return canonical(resolve_base_url(region or "us", base_url))


def allow_base_urls(urls: Iterable[str]) -> None:
    """The operator's configuration allows these destinations (``superset_config``); each entry is checked now."""
    entries = {url.strip() for url in urls if url and url.strip()}
    for entry in entries:
        _parts(entry, entry=True)
    _ALLOWED_BY_CONFIG.update(entries)


def allowed_entries() -> list[str]:
    """The operator's allow-list: the environment's entries and the configuration's."""
    from_env = os.environ.get(ALLOWED_ENV, "").replace(" ", ",").split(",")
    return sorted({entry.strip() for entry in from_env if entry.strip()} | _ALLOWED_BY_CONFIG)


def _allows(entry: str, url: tuple[str, str, str, str]) -> bool:
    try:
        scheme, host, port, path = _parts(entry, entry=True)
    except DestinationRefused:
        return False
    return ((scheme, host) == url[:2] and port in (ANY_PORT, url[2])
            and (url[3] == path or url[3].startswith(path + "/")))


def check_base_url(base_url: str | None) -> None:
    """Nothing when ``base_url`` is unset, a region's host or allowed by the operator; else
    :class:`DestinationRefused` saying how to allow it."""
    if not base_url:
        return
    parts = _parts(base_url)
    if canonical(base_url) in {canonical(url) for url in REGION_BASE_URLS.values()}:
        return
    if any(_allows(entry, parts) for entry in allowed_entries()):
        return
    shown = f"{parts[0]}://{parts[1]}:{parts[2]}"
    raise DestinationRefused(
        f"base_url {shown}{parts[3]} is not an allowed Amplitude destination: use region=us or region=eu, or ask "
        f"the operator to allow this host ({ALLOWED_ENV}={shown} in Superset's environment, or "
        f"{ALLOWED_ENV} = ['{shown}'] in superset_config)."
    )
