"""The Superset engine spec: the "Connect a database" form, secrets masking, SQL dialect and errors."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy.engine.url import make_url
from superset.errors import SupersetErrorType
from superset.sql.parse import SQLGLOT_DIALECTS, SQLScript

from shillelagh_amplitude.superset.engine_spec import AUTH_ERROR_REGEX, AmplitudeEngineSpec

from ..scripts import REPO


def test_form_fields_are_ones_superset_renders() -> None:
    """Superset 6.1's form only draws known field names; ours are username, password and query."""
    schema = AmplitudeEngineSpec.parameters_json_schema()
    assert set(schema["properties"]) == {"username", "password", "query"}
    assert set(schema["required"]) == {"username", "password"}
    assert AmplitudeEngineSpec.get_public_information()["disable_ssh_tunneling"] is True


def test_form_round_trip_keeps_the_secret_out_of_the_stored_uri() -> None:
    uri = AmplitudeEngineSpec.build_sqlalchemy_uri(
        {"username": "api-key", "password": "s3cret", "query": {"region": "eu"}}
    )
    url = make_url(uri)
    assert (url.drivername, url.username, url.password, dict(url.query)) == ("amplitude", "api-key", "s3cret", {
        "region": "eu"
    })
    # Superset stores the password in its encrypted column and keeps this masked URI
    masked = url.set(password="XXXXXXXXXX").render_as_string(hide_password=False)
    assert AmplitudeEngineSpec.get_parameters_from_uri(masked) == {
        "username": "api-key",
        "password": "XXXXXXXXXX",
        "query": {"region": "eu"},
    }


def test_validate_parameters() -> None:
    assert AmplitudeEngineSpec.validate_parameters(
        {"parameters": {"username": "k", "password": "s", "query": {"region": "eu", "window_hours": "6"}}}
    ) == []
    missing, invalid = AmplitudeEngineSpec.validate_parameters(
        {"parameters": {"username": "k", "query": {"region": "mars", "secret_key": "s", "late": "1"}}}
    )
    assert missing.error_type == SupersetErrorType.CONNECTION_MISSING_PARAMETERS_ERROR
    assert missing.extra["invalid"] == ["password"]  # the form shows the message under that field
    assert missing.message.startswith("Password: the Amplitude project's secret key")
    assert "region=eu in Additional parameters" in missing.message
    assert invalid.extra["invalid"] == ["query"]
    for problem in ("secret_key cannot be an additional parameter", "'late'", "region must be one of us, eu"):
        assert problem in invalid.message


def test_credentials_cannot_ride_in_the_uri_query() -> None:
    assert AmplitudeEngineSpec.disallow_uri_query_params["apsw"] >= {"api_key", "secret_key", "cache_dir", "lake"}
    (invalid,) = AmplitudeEngineSpec.validate_parameters(
        {"parameters": {"username": "k", "password": "s", "query": {"lake": "/home/someone/lake"}}})
    assert "lake cannot be an additional parameter" in invalid.message


def test_secure_extra_is_masked_and_unmasked() -> None:
    stored = json.dumps({"api_key": "k", "secret_key": "s", "window_hours": 6})
    masked = json.loads(AmplitudeEngineSpec.mask_encrypted_extra(stored))
    assert masked == {"api_key": "XXXXXXXXXX", "secret_key": "XXXXXXXXXX", "window_hours": 6}
    edited = json.dumps({**masked, "window_hours": 12})
    assert json.loads(AmplitudeEngineSpec.unmask_encrypted_extra(stored, edited)) == {
        "api_key": "k",
        "secret_key": "s",
        "window_hours": 12,
    }


def test_sql_is_rewritten_as_sqlite_keeping_json_extract() -> None:
    sql = (
        "SELECT json_extract(user_properties, '$.plan') AS plan, user_properties -> '$.plan' AS raw, "
        "percentile(length_s, 95) FROM amplitude_sessions"
    )
    formatted = SQLScript(sql, "amplitude").format()
    assert "JSON_EXTRACT(user_properties, '$.plan') AS plan" in formatted
    assert "user_properties -> '$.plan' AS raw" in formatted
    assert "PERCENTILE(length_s, 95)" in formatted
    assert SQLGLOT_DIALECTS["shillelagh"] == "sqlite"  # what the generic shillelagh engine gets


@pytest.mark.parametrize(
    "message",
    [
        "Amplitude rejected the credentials (401 'Invalid') at https://amplitude.com: check the API key",
        "Both api_key and secret_key are required to reach Amplitude.",
        "The secret key does not match the one this project's local store was filled with.",
    ],
)
def test_authentication_errors_are_recognised(message: str) -> None:
    assert AUTH_ERROR_REGEX.search(f"amplitude error: {message}")["message"] == message


def test_form_help_names_every_field_and_links_the_readme_section() -> None:
    """What the engine spec can say in Superset 6.1's form: the per-field messages, the URI placeholder, the
    schema's descriptions and the docs metadata, all pointing to the README's "In Superset" section."""
    from shillelagh_amplitude.superset.engine_spec import HELP_URL

    readme = (REPO / "README.md").read_text()
    anchor = HELP_URL.split("#", 1)[1]
    headings = {
        re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in readme.splitlines() if line.startswith("#")
    }
    assert anchor in headings  # GitHub's anchor of a README heading
    errors = AmplitudeEngineSpec.validate_parameters({"parameters": {}})
    messages = {error.extra["invalid"][0]: error.message for error in errors}
    assert messages["username"].startswith("Username: the Amplitude project's API key")
    assert messages["password"].startswith("Password: the Amplitude project's secret key")
    assert all("region=eu in Additional parameters" in m and HELP_URL in m for m in messages.values())
    properties = AmplitudeEngineSpec.parameters_json_schema()["properties"]
    assert "API key" in properties["username"]["description"]
    assert "secret key" in properties["password"]["description"]
    assert "region=eu" in properties["query"]["description"]
    assert AmplitudeEngineSpec.sqlalchemy_uri_placeholder == "amplitude://<API key>:<secret key>@?region=eu"
    assert AmplitudeEngineSpec.metadata["docs_url"] == HELP_URL
    assert AmplitudeEngineSpec.engine_name != "Amplitude"  # the form's default display name; the demo's is that


def test_errors_carry_one_prefix(superset_app) -> None:
    """Superset titles an error "<engine name> Error"; the message adds no "amplitude error: " of its own."""
    (error,) = AmplitudeEngineSpec.extract_errors(Exception("no such column: lenght_s"))
    assert error.message == "no such column: lenght_s"
    assert error.extra["engine_name"] == "Amplitude Export API"


@pytest.mark.parametrize(("region", "problems"), [("EU", 0), ("eu", 0), ("Us", 0), ("mars", 1)])
def test_the_form_takes_a_region_in_any_case_as_connections_do(region: str, problems: int) -> None:
    from shillelagh_amplitude.export.client import REGION_BASE_URLS, resolve_base_url

    parameters = {"username": "key", "password": "secret", "query": {"region": region}}
    errors = AmplitudeEngineSpec.validate_parameters({"parameters": parameters})
    assert len(errors) == problems
    if not problems:
        assert resolve_base_url(region) == REGION_BASE_URLS[region.lower()]
