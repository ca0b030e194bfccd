"""Superset engine spec for ``amplitude://`` (registered through the ``superset.db_engine_specs`` entry point).

SQL is SQLite (shillelagh/APSW), so time grains and functions come from ``ShillelaghEngineSpec``. In
"Connect a database" Superset 6.1 renders only a fixed set of field names, so the form uses *Username*
for the API key, *Password* for the secret key (kept encrypted and masked by Superset) and *Additional
parameters* for ``region=eu`` and the other adapter options. Configured through a URI instead, the keys
go into the secure extra ``{"api_key": ..., "secret_key": ...}``, masked on read.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypedDict

from flask import has_request_context, request
from flask_babel import gettext as __
from marshmallow import Schema, fields
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlglot import exp
from sqlglot.dialects.sqlite import SQLite
from superset.constants import PASSWORD_MASK
from superset.databases.utils import make_url_safe
from superset.db_engine_specs.base import BasicParametersMixin, DatabaseCategory, LimitMethod
from superset.db_engine_specs.shillelagh import ShillelaghEngineSpec
from superset.errors import ErrorLevel, SupersetError, SupersetErrorType
from superset.sql.parse import SQLGLOT_DIALECTS

from ..export.client import AmplitudeError
from ..export.probe import check_connection
from ..settings import SETTINGS
from ..sql.destination import check_base_url
from ..sql.dialect import coerce
from .secret_store import register as bind_stored_secrets

# Every save of an amplitude:// connection binds its secret to its API key and destination (see secret_store).
bind_stored_secrets()


class AmplitudeSQLite(SQLite):
    """SQLite as sqlglot writes it, except that ``json_extract()`` stays a function call.

    Superset re-writes SQL Lab and chart SQL with sqlglot, whose SQLite dialect turns ``json_extract(x, p)``
    into ``x -> p``; in SQLite ``->`` returns JSON (``'"free"'``, quotes included) where ``json_extract``
    returns the SQL value (``'free'``).
    """

    class Generator(SQLite.Generator):
        def jsonextract_sql(self, expression: exp.JSONExtract) -> str:
            if expression.args.get("only_json_types") is None:  # parsed from json_extract(), not from ->
                return self.func("JSON_EXTRACT", expression.this, expression.expression, *expression.expressions)
            return super().jsonextract_sql(expression)


# Superset looks the SQL dialect up by engine name (``shillelagh`` and ``gsheets`` map to plain SQLite).
SQLGLOT_DIALECTS.setdefault("amplitude", AmplitudeSQLite)

#: The project's home; the one place its URL is written (the placeholder until the repository is published).
PROJECT_URL = "https://github.com/shillelagh-amplitude/shillelagh-amplitude"
#: The README section on connecting in Superset (GitHub's anchor of "### In Superset").
HELP_URL = f"{PROJECT_URL}#in-superset"
#: What goes where in "Connect a database" (Superset 6.1 draws its own labels for these fields).
FORM_HELP = {
    "username": "Username: the Amplitude project's API key",
    "password": "Password: the Amplitude project's secret key (stored encrypted)",
    "query": "Additional parameters: region=eu for an EU project",
}
REGIONS = ("us", "eu")
#: Adapter settings only the operator chooses (``DB_CONNECTION_MUTATOR``), never a connection: the hour store's
#: location (``AMPLITUDE_CACHE_DIR``) and the lake's (``AMPLITUDE_LAKE``). Refused in a connection's URI, secure
#: extra and engine parameters.
OPERATOR_SETTINGS = {"cache_dir": "AMPLITUDE_CACHE_DIR", "lake": "AMPLITUDE_LAKE"}
#: Not accepted in a URI's query string: credentials would show unmasked, and the operator's settings.
FORBIDDEN_QUERY_PARAMS = {"api_key", "secret_key", *OPERATOR_SETTINGS}
#: The adapter's credential errors (they name the problem and never include the secret), kept word for word.
AUTH_ERROR_REGEX = re.compile(
    r"(?P<message>(Amplitude rejected the credentials|The secret key does not match|"
    r"No Amplitude API key and secret key)[^\n]*)"
)
#: A stored secret that would go elsewhere, an unreadable store verifier: they say what to do, kept word for word.
SECRET_ERROR_REGEX = re.compile(
    r"(?P<message>(The stored secret key was saved for|The secret key verifier of the store|The secret key is masked)"
    r"[^\n]*)"
)
#: A connection test whose password is the mask Superset shows, but whose settings differ from the stored ones.
MASKED_SECRET = ("The secret key is masked: Superset uses the stored one only with the stored settings. Type the "
                 "secret key again (Password) to test these settings.")
DESTINATION_ERROR_REGEX = re.compile(r"(?P<message>base_url \S+ is not an allowed Amplitude destination[^\n]*)")
#: The connection test's (and queries') network errors: an unknown region or host, a closed port, no answer.
HOST_ERROR_REGEX = re.compile(r"(?P<message>(Unknown host '|Unknown region ')[^\n]*)")
PORT_ERROR_REGEX = re.compile(
    r"(?P<message>Could not reach Amplitude's Export API at [^\n]*connection was refused[^\n]*)"
)
DOWN_ERROR_REGEX = re.compile(
    r"(?P<message>(Amplitude's Export API at \S+ did not answer|Could not reach Amplitude's Export API)[^\n]*)"
)


class AmplitudeParametersSchema(Schema):
    """The dynamic form: Superset 6.1 shows only known field names, with their built-in labels."""

    username = fields.String(required=True, metadata={"description": __(FORM_HELP["username"])})
    password = fields.String(required=True, metadata={"description": __(FORM_HELP["password"])})
    query = fields.Dict(
        keys=fields.Str(),
        values=fields.Raw(),
        metadata={"description": __(FORM_HELP["query"] + " (and other adapter options)")},
    )


class AmplitudeParametersType(TypedDict, total=False):
    """Parameters of the dynamic form."""

    username: str | None
    password: str | None
    query: dict[str, Any]


class AmplitudePropertiesType(TypedDict, total=False):
    """What ``POST /api/v1/database/validate_parameters/`` passes."""

    parameters: AmplitudeParametersType


class AmplitudeEngineSpec(BasicParametersMixin, ShillelaghEngineSpec):
    """Amplitude's Export API as tables: ``amplitude_events``, ``amplitude_sessions``, ``amplitude_user_sessions``."""

    engine = "amplitude"
    # Also the form's default display name: not "Amplitude", the bundled connection's name.
    engine_name = "Amplitude Export API"
    drivers = {"apsw": "Amplitude Export API through shillelagh"}
    default_driver = "apsw"
    sqlalchemy_uri_placeholder = "amplitude://<API key>:<secret key>@?region=eu"
    parameters_schema = AmplitudeParametersSchema()

    # SQL Lab's row limit is applied by fetching (cursor.fetchmany), not by rewriting the query's LIMIT: Superset
    # 6.1's default (FORCE_LIMIT) replaces a query's own "LIMIT 3" with the dropdown's 1,001 (apache/superset#40070).
    limit_method = LimitMethod.FETCH_MANY
    disable_ssh_tunneling = True
    supports_file_upload = False
    disallow_uri_query_params = {"apsw": FORBIDDEN_QUERY_PARAMS}
    encrypted_extra_sensitive_fields = {"$.api_key": "API key", "$.secret_key": "Secret key"}

    custom_errors = {
        SECRET_ERROR_REGEX: ("%(message)s", SupersetErrorType.CONNECTION_ACCESS_DENIED_ERROR, {}),
        DESTINATION_ERROR_REGEX: ("%(message)s", SupersetErrorType.CONNECTION_INVALID_HOSTNAME_ERROR, {}),
        AUTH_ERROR_REGEX: (
            "%(message)s (Username = API key, Password = secret key, Additional parameters: region=eu for an "
            f"EU project; see {HELP_URL})",
            SupersetErrorType.CONNECTION_ACCESS_DENIED_ERROR,
            {},
        ),
        HOST_ERROR_REGEX: ("%(message)s", SupersetErrorType.CONNECTION_INVALID_HOSTNAME_ERROR, {}),
        PORT_ERROR_REGEX: ("%(message)s", SupersetErrorType.CONNECTION_PORT_CLOSED_ERROR, {}),
        DOWN_ERROR_REGEX: ("%(message)s", SupersetErrorType.CONNECTION_HOST_DOWN_ERROR, {}),
    }

    metadata = {
        "description": "Amplitude product analytics events and sessions, read through the Export API.",
        "homepage_url": PROJECT_URL,
        "docs_url": HELP_URL,
        "categories": [DatabaseCategory.OTHER, DatabaseCategory.OPEN_SOURCE],
        "pypi_packages": ["shillelagh-amplitude"],
        "connection_string": "amplitude://<API key>:<secret key>@?region=eu",
        "parameters": dict(FORM_HELP),
        "notes": "API key and secret key go in the form, or in the secure extra as api_key / secret_key.",
    }

    @classmethod
    def extract_error_message(cls, ex: Exception) -> str:
        """The error itself: Superset already titles it with the engine's name (no "amplitude error: ")."""
        return cls._extract_error_message(ex)

    @classmethod
    def build_sqlalchemy_uri(
        cls, parameters: AmplitudeParametersType, encrypted_extra: dict[str, Any] | None = None
    ) -> str:
        """``amplitude://<api key>:<secret key>@?region=...``; Superset stores the password apart, encrypted."""
        return str(
            URL.create(
                cls.engine,
                username=parameters.get("username") or None,
                password=parameters.get("password") or None,
                query=parameters.get("query") or {},
            )
        )

    @classmethod
    def get_parameters_from_uri(
        cls, uri: str, encrypted_extra: dict[str, Any] | None = None
    ) -> AmplitudeParametersType:
        """Form values of a stored URI (the password arrives masked)."""
        url = make_url_safe(uri)
        return {"username": url.username, "password": url.password, "query": dict(url.query)}

    @classmethod
    def validate_parameters(cls, properties: AmplitudePropertiesType) -> list[SupersetError]:  # type: ignore[override]
        """Missing keys, an unknown region or an unknown/ill-typed option; no network call."""
        parameters = properties.get("parameters", {})
        errors: list[SupersetError] = []
        # Under the empty field, the form shows what goes there (Superset 6.1 draws no help text of ours).
        for name in ("username", "password"):
            if not parameters.get(name):
                errors.append(
                    SupersetError(
                        message=f"{FORM_HELP[name]}; for an EU project add region=eu in Additional parameters. "
                        f"Help: {HELP_URL}",
                        error_type=SupersetErrorType.CONNECTION_MISSING_PARAMETERS_ERROR,
                        level=ErrorLevel.WARNING,
                        extra={"missing_parameter": name, "invalid": [name]},
                    )
                )
        query = parameters.get("query") or {}
        problems = [f"{name} cannot be an additional parameter" for name in sorted(FORBIDDEN_QUERY_PARAMS & set(query))]
        for name, value in query.items():
            try:
                coerce(name, value)
            except ArgumentError as ex:
                problems.append(str(ex))
        if str(query.get("region", "us")).lower() not in REGIONS:
            problems.append(f"region must be one of {', '.join(REGIONS)}")
        try:
            check_base_url(query.get("base_url"))
        except AmplitudeError as exc:
            problems.append(str(exc))
        if problems:
            errors.append(
                SupersetError(
                    message="; ".join(problems),
                    error_type=SupersetErrorType.INVALID_PAYLOAD_SCHEMA_ERROR,
                    level=ErrorLevel.ERROR,
                    extra={"invalid": ["query"]},
                )
            )
        return errors

    @classmethod
    def get_function_names(cls, database: Any) -> list[str]:
        """SQLite's functions plus the percentile aggregates of the SQLite bundled with apsw."""
        return super().get_function_names(database) + ["median", "percentile", "percentile_cont", "percentile_disc"]

    @staticmethod
    def update_params_from_encrypted_extra(database: Any, params: dict[str, Any]) -> None:
        """The secure extra's keys become dialect kwargs. Amplitude settings never come from *Engine parameters*
        (``params`` holds them by now) and the operator's settings from neither."""
        from_engine_params = sorted(set(params) & set(SETTINGS))
        if from_engine_params or "adapter_kwargs" in (params.get("connect_args") or {}):
            raise ArgumentError(
                f"Amplitude settings cannot be Engine parameters ({', '.join(from_engine_params) or 'adapter_kwargs'}"
                "): put region or base_url in the URI (Additional parameters) and the keys in the Secure extra."
            )
        if not database.encrypted_extra:
            return
        extra = json.loads(database.encrypted_extra)
        if operator := sorted(set(extra) & set(OPERATOR_SETTINGS)):
            raise ArgumentError(
                f"{', '.join(operator)} is the operator's setting ({', '.join(OPERATOR_SETTINGS[n] for n in operator)}"
                "), not a connection's: remove it from the Secure extra."
            )
        params.update(extra)

    @staticmethod
    def mutate_db_for_connection_test(database: Any) -> None:
        """"Test connection" and "Connect": ask Amplitude once (or look at the offline store) with the settings
        the connection will really use (its decrypted keys, the environment's project, the operator's store).

        Superset also calls this hook from ``validate_parameters``, which the form runs on every change of a field:
        no request to Amplitude there (half-typed keys, one request per keystroke)."""
        if has_request_context() and request.path.rstrip("/").endswith("/validate_parameters"):
            return
        # Superset restores a masked password only for the stored URI unchanged; otherwise the mask is all it has.
        if make_url_safe(database.sqlalchemy_uri).password == PASSWORD_MASK and not database.password:
            raise DBAPIError(None, None, AmplitudeConnectionError(MASKED_SECRET))
        try:
            with database.get_sqla_engine() as engine:
                settings = engine.dialect.create_connect_args(engine.url)[1]["adapter_kwargs"]["amplitude"]
            check_connection(**settings)
        except (AmplitudeError, ArgumentError) as exc:  # no request made for a refused secret or destination
            raise DBAPIError(None, None, AmplitudeConnectionError(str(exc))) from None


class AmplitudeConnectionError(Exception):
    """What the connection test found wrong (a readable message without the secret)."""
