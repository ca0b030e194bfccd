"""A stored (bound) secret key is sent only to the API key and destination it was given for, and a base_url only
to hosts the operator allows: checked by the dialect and the adapter before any request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from shillelagh.backends.apsw.db import connect
from sqlalchemy import create_engine, text
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import ArgumentError

from shillelagh_amplitude.hours import floor_hour
from shillelagh_amplitude.sample.emulator import ExportEmulator
from shillelagh_amplitude.sample.generator import generate_dataset
from shillelagh_amplitude.sql import destination as destination_module
from shillelagh_amplitude.sql.destination import ALLOWED_ENV, allow_base_urls, canonical, check_base_url, destination
from shillelagh_amplitude.sql.dialect import AmplitudeDialect
from shillelagh_amplitude.sql.secret_binding import bind, usable_secret

from .conftest import API_KEY, SECRET_KEY

END = floor_hour(datetime.now(UTC))
QUERY = ("SELECT count(*) FROM amplitude_events WHERE "
         f"server_upload_time >= '{END - timedelta(hours=8):%Y-%m-%d %H:00}' "
         f"AND server_upload_time < '{END - timedelta(hours=4):%Y-%m-%d %H:00}'")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory) -> tuple[ExportEmulator, ExportEmulator]:
    """The connection's host and another one, both knowing the same keys (so a request carrying the stored secret
    shows as authorised in the other host's log)."""
    data = tmp_path_factory.mktemp("binding-data")
    generate_dataset(data, END - timedelta(hours=12), END, events=300, seed=3)
    with ExportEmulator(data, api_key=API_KEY, secret_key=SECRET_KEY) as home, \
            ExportEmulator(data, api_key=API_KEY, secret_key=SECRET_KEY) as other:
        yield home, other


def test_a_bound_secret_is_used_only_where_it_was_bound() -> None:
    home = destination(base_url="http://127.0.0.1:8001/")
    stored = bind(SECRET_KEY, API_KEY, home)
    assert SECRET_KEY in stored and stored != SECRET_KEY
    assert usable_secret(stored, API_KEY, home) == SECRET_KEY
    assert usable_secret(SECRET_KEY, API_KEY, "https://elsewhere:443") == SECRET_KEY  # a bare secret is the caller's
    for api_key, where in ((API_KEY, destination(base_url="http://127.0.0.1:8002")), ("other-key", home),
                           (None, home), (API_KEY, destination("us"))):
        with pytest.raises(Exception) as refused:
            usable_secret(stored, api_key, where)
        assert str(refused.value) == (
            f"The stored secret key was saved for {home} with another API key or destination; it is not sent to "
            f"{where}. Type the secret key again (Password, or secret_key in the Secure extra) to use it there.")
        assert SECRET_KEY not in str(refused.value)
    # a forged destination in the bound value does not help: the tag is keyed by the secret
    forged = stored.replace(home, "http://127.0.0.1:8002")
    with pytest.raises(Exception, match="saved for http://127.0.0.1:8002"):
        usable_secret(forged, API_KEY, destination(base_url="http://127.0.0.1:8002"))
    assert destination("us") == destination(base_url="https://AMPLITUDE.com/") == "https://amplitude.com:443"


def test_the_dialect_refuses_a_secret_bound_elsewhere_before_any_request(hosts, tmp_path) -> None:
    home, other = hosts
    stored = bind(SECRET_KEY, API_KEY, canonical(home.base_url))
    url = f"amplitude://{API_KEY}:{stored.replace(' ', '%20')}@"
    home.clear_requests()
    other.clear_requests()
    with create_engine(f"{url}?base_url={home.base_url}", cache_dir=str(tmp_path)).connect() as connection:
        assert connection.execute(text(QUERY)).scalar() > 0
    assert home.requests and all(r.authorized for r in home.requests)
    for where, kwargs in ((f"?base_url={other.base_url}", {}), ("", {"base_url": other.base_url})):  # URL, kwarg
        with pytest.raises(ArgumentError, match=f"it is not sent to {other.base_url}\\."):
            create_engine(f"{url}{where}", cache_dir=str(tmp_path), **kwargs).connect()
    # the adapter checks too (kwargs reaching it some other way, e.g. a generic shillelagh connection)
    with pytest.raises(Exception, match="it is not sent to"):
        connect(":memory:", adapters=["amplitude"], safe=True, adapter_kwargs={"amplitude": {
            "api_key": API_KEY, "secret_key": stored, "base_url": other.base_url, "cache_dir": str(tmp_path)}},
        ).cursor().execute(QUERY)
    assert other.requests == []


def test_a_base_url_must_be_allowed_by_the_operator(monkeypatch, hosts) -> None:
    home, _ = hosts
    monkeypatch.setattr(destination_module, "_ALLOWED_BY_CONFIG", set())  # this test's configuration only
    monkeypatch.setenv(ALLOWED_ENV, "http://127.0.0.1:*, https://proxy.example:8443/amplitude")
    check_base_url(home.base_url)
    check_base_url("https://proxy.example:8443/amplitude/")
    check_base_url("https://analytics.eu.amplitude.com")  # a region's host
    refusals = {
        "http://localhost:9999": "http://localhost:9999",
        "https://proxy.example/amplitude": "https://proxy.example:443",
        "https://proxy.example:8443/other": "https://proxy.example:8443",
        "http://user:pw@evil.example/x": "http://evil.example:80",
    }
    for base_url, shown in refusals.items():
        with pytest.raises(Exception) as refused:
            check_base_url(base_url)
        message = str(refused.value)
        assert message.startswith(f"base_url {shown}")
        assert message.endswith(f"is not an allowed Amplitude destination: use region=us or region=eu, or ask the "
                                f"operator to allow this host ({ALLOWED_ENV}={shown} in Superset's environment, or "
                                f"{ALLOWED_ENV} = ['{shown}'] in superset_config).")
        assert "pw" not in message
    with pytest.raises(ArgumentError, match="http://localhost:9999 is not an allowed"):
        AmplitudeDialect().create_connect_args(make_url("amplitude://k:s@?base_url=http://localhost:9999"))
    monkeypatch.delenv(ALLOWED_ENV)
    with pytest.raises(ArgumentError, match="is not an allowed Amplitude destination"):
        AmplitudeDialect().create_connect_args(make_url(f"amplitude://k:s@?base_url={home.base_url}"))
    assert AmplitudeDialect().create_connect_args(make_url("amplitude://k:s@?region=eu"))[1]["adapter_kwargs"]
    allow_base_urls([home.base_url])  # the operator's configuration (superset_config)
    check_base_url(home.base_url)
