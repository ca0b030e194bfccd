"""What a connection's secure extra and engine parameters may set: never the operator's settings, and Amplitude
settings only where the binding of the secret sees them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from sqlalchemy.exc import ArgumentError

from shillelagh_amplitude.superset.engine_spec import AmplitudeEngineSpec


def merged(params: dict, encrypted_extra: dict | None) -> dict:
    database = SimpleNamespace(encrypted_extra=json.dumps(encrypted_extra) if encrypted_extra else None)
    AmplitudeEngineSpec.update_params_from_encrypted_extra(database, params)
    return params


def test_the_secure_extra_gives_the_keys() -> None:
    assert merged({"connect_args": {}}, {"api_key": "k", "secret_key": "s", "region": "eu"}) == {
        "connect_args": {}, "api_key": "k", "secret_key": "s", "region": "eu"}


def test_the_secure_extra_cannot_set_the_operators_settings() -> None:
    with pytest.raises(ArgumentError) as refused:
        merged({}, {"api_key": "k", "secret_key": "s", "cache_dir": "/etc"})
    assert str(refused.value) == ("cache_dir is the operator's setting (AMPLITUDE_CACHE_DIR), not a connection's: "
                                  "remove it from the Secure extra.")


@pytest.mark.parametrize("engine_params", [
    {"base_url": "http://127.0.0.1:9"},
    {"cache_dir": "/etc"},
    {"connect_args": {"adapter_kwargs": {"amplitude": {"api_key": "k", "base_url": "http://127.0.0.1:9"}}}},
])
def test_engine_parameters_cannot_set_amplitude_settings(engine_params: dict) -> None:
    with pytest.raises(ArgumentError, match=r"^Amplitude settings cannot be Engine parameters \((base_url|cache_dir|"
                                            r"adapter_kwargs)\): put region or base_url in the URI"):
        merged(dict(engine_params), {"api_key": "k", "secret_key": "s"})


def test_the_form_refuses_a_base_url_the_operator_did_not_allow() -> None:
    (error,) = AmplitudeEngineSpec.validate_parameters(
        {"parameters": {"username": "k", "password": "s", "query": {"base_url": "http://localhost:9"}}})
    assert error.extra["invalid"] == ["query"]
    assert error.message.startswith("base_url http://localhost:9 is not an allowed Amplitude destination")
    assert "AMPLITUDE_ALLOWED_BASE_URLS=http://localhost:9" in error.message
    assert AmplitudeEngineSpec.validate_parameters(
        {"parameters": {"username": "k", "password": "s", "query": {"base_url": "http://127.0.0.1:9"}}}) == []
