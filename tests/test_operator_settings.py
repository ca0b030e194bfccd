"""The operator's side of issue 16 in ``superset_config``: the environment's secret is bound to the environment's
destination, and a generic shillelagh connection cannot give the Amplitude adapter settings of its own."""

from __future__ import annotations

import pytest
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import ArgumentError

from shillelagh_amplitude.sql.dialect import AmplitudeDialect

from .test_superset_config import load_config


def test_the_environments_secret_goes_only_to_the_environments_destination(monkeypatch, tmp_path) -> None:
    config = load_config(monkeypatch, tmp_path, AMPLITUDE_API_KEY="env-key", AMPLITUDE_SECRET_KEY="env-secret-31",
                         AMPLITUDE_REGION="eu")
    _, params = config.DB_CONNECTION_MUTATOR(make_url("amplitude://"), {}, None, None, None)
    assert params["secret_key"] != "env-secret-31"  # bound, not bare
    settings = AmplitudeDialect(**params).create_connect_args(make_url("amplitude://"))[1]["adapter_kwargs"]
    assert settings["amplitude"]["secret_key"] == "env-secret-31"
    for elsewhere in ("amplitude://?region=us", "amplitude://?base_url=http://127.0.0.1:9"):
        _, params = config.DB_CONNECTION_MUTATOR(make_url(elsewhere), {}, None, None, None)
        with pytest.raises(ArgumentError) as refused:
            AmplitudeDialect(**params).create_connect_args(make_url(elsewhere))
        assert str(refused.value).startswith(
            "The stored secret key was saved for https://analytics.eu.amplitude.com:443 with another API key or "
            "destination; it is not sent to ")
        assert "env-secret-31" not in str(refused.value)


def test_a_shillelagh_connection_cannot_configure_the_amplitude_adapter(monkeypatch, tmp_path) -> None:
    config = load_config(monkeypatch, tmp_path)
    url = make_url("shillelagh+safe://")
    kwargs = {"amplitude": {"api_key": "k", "secret_key": "s", "cache_dir": "/etc"}}
    for params in ({"adapter_kwargs": kwargs}, {"connect_args": {"adapter_kwargs": kwargs}}):
        with pytest.raises(ValueError, match="Amplitude is reached through amplitude:// connections only"):
            config.DB_CONNECTION_MUTATOR(url, params, None, None, None)
    other = {"adapter_kwargs": {"gsheetsapi": {"access_token": "t"}}}
    assert config.DB_CONNECTION_MUTATOR(url, dict(other), None, None, None) == (url, other)
