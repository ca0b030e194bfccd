"""superset_config/superset_config.py: secrets from the environment, caches, safety defaults, the mutator."""

from __future__ import annotations

import importlib.util
import stat
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy.engine.url import make_url

from .helpers import free_port

CONFIG = Path(__file__).resolve().parents[1] / "superset_config" / "superset_config.py"
AMPLITUDE_VARIABLES = ("AMPLITUDE_API_KEY", "AMPLITUDE_SECRET_KEY", "AMPLITUDE_REGION", "AMPLITUDE_BASE_URL",
                       "AMPLITUDE_OFFLINE", "AMPLITUDE_DEFAULT_DAYS", "AMPLITUDE_CACHE_DIR", "SUPERSET_SECRET_KEY",
                       "SUPERSET_DATABASE_URI", "REDIS_URL", "AMPLITUDE_DOWNLOAD_BUDGET_S", "AMPLITUDE_SYNC_INTERVAL_S",
                       "AMPLITUDE_LAKE", "AMPLITUDE_LAKE_SPARK", "SUPERSET_ENABLE_TEMPLATE_PROCESSING")


def load_config(monkeypatch: pytest.MonkeyPatch, home: Path, **env: str) -> ModuleType:
    """Import the config afresh with only the given environment variables set."""
    for name in AMPLITUDE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SUPERSET_HOME", str(home))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("superset_config_under_test", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_local_defaults_keep_superset_safe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = load_config(monkeypatch, tmp_path)
    key_file = tmp_path / "secret_key"
    assert key_file.read_text() == config.SECRET_KEY and len(config.SECRET_KEY) >= 48
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_config(monkeypatch, tmp_path).SECRET_KEY == config.SECRET_KEY  # generated once
    assert f"sqlite:///{tmp_path / 'superset.db'}" == config.SQLALCHEMY_DATABASE_URI
    assert config.DATA_CACHE_CONFIG["CACHE_TYPE"] == "FileSystemCache"
    assert config.DATASET_AUTO_DETECT_DATETIME_FORMATS is False
    assert config.PREVENT_UNSAFE_DB_CONNECTIONS is True
    assert config.FEATURE_FLAGS == {"ENABLE_TEMPLATE_PROCESSING": False}  # Superset's default
    assert not hasattr(config, "CELERY_CONFIG")


def test_production_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = load_config(
        monkeypatch, tmp_path, SUPERSET_SECRET_KEY="k" * 50, REDIS_URL="redis://redis:6379/0",
        SUPERSET_DATABASE_URI="postgresql+psycopg2://superset:pw@postgres/superset",
    )
    assert config.SECRET_KEY == "k" * 50 and not (tmp_path / "secret_key").exists()
    assert config.SQLALCHEMY_DATABASE_URI.startswith("postgresql+psycopg2://")
    assert config.DATA_CACHE_CONFIG == {
        "CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": "redis://redis:6379/0", "CACHE_KEY_PREFIX": "superset_data_"
    }
    assert config.CELERY_CONFIG.broker_url == "redis://redis:6379/0"


def test_mutator_fills_amplitude_connections_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = load_config(
        monkeypatch, tmp_path, AMPLITUDE_API_KEY="env-key", AMPLITUDE_SECRET_KEY="env-secret",
        AMPLITUDE_OFFLINE="true", AMPLITUDE_DEFAULT_DAYS="31", AMPLITUDE_CACHE_DIR="/srv/store",
    )
    url = make_url("amplitude://")
    _, params = config.DB_CONNECTION_MUTATOR(url, {"secret_key": "from-secure-extra", "cache_dir": "/etc"},
                                             "admin", None, None)
    assert params == {
        "api_key": "env-key",
        "secret_key": "from-secure-extra",  # the connection's own setting wins
        "offline": "true",
        "default_days": "31",
        "cache_dir": "/srv/store",  # the operator's choice, always
        "download_budget_s": 20.0,  # the web process's default budget
    }
    # a connection naming its own project gets none of the environment's (not its secret, not offline)
    for own_uri, own_params in ((make_url("amplitude://key:secret@"), {}), (url, {"api_key": "extra-key"})):
        assert config.DB_CONNECTION_MUTATOR(own_uri, dict(own_params), None, None, None)[1] == {
            **own_params, "cache_dir": "/srv/store", "download_budget_s": 20.0
        }
    other = make_url("postgresql://u@h/db")
    assert config.DB_CONNECTION_MUTATOR(other, {}, "admin", None, None) == (other, {})
    default_store = load_config(monkeypatch, tmp_path).DB_CONNECTION_MUTATOR(url, {}, None, None, None)[1]
    assert default_store == {"cache_dir": str(tmp_path / "amplitude"), "download_budget_s": 20.0}


def test_the_lake_is_the_operators_choice_never_a_connections(monkeypatch, tmp_path) -> None:
    config = load_config(monkeypatch, tmp_path, AMPLITUDE_LAKE="/srv/lake", AMPLITUDE_API_KEY="env-key")
    assert config.AMPLITUDE_LAKE == "/srv/lake" and config.AMPLITUDE_LAKES == {}
    assert config.AMPLITUDE_LAKE_SPARK is None and config.AMPLITUDE_LAKES_SPARK == {}
    url = make_url("amplitude://")
    # the environment's project gets the environment's lake, whatever the connection says
    assert config.DB_CONNECTION_MUTATOR(url, {"lake": "/home/someone"}, None, None, None)[1]["lake"] == "/srv/lake"
    # a connection on its own project gets none, and its own is dropped
    for own_uri, own_params in ((make_url("amplitude://key:secret@"), {}), (url, {"api_key": "extra-key"})):
        params = config.DB_CONNECTION_MUTATOR(own_uri, {**own_params, "lake": "/home/someone"}, None, None, None)[1]
        assert "lake" not in params
    unset = load_config(monkeypatch, tmp_path, AMPLITUDE_API_KEY="env-key")
    assert unset.AMPLITUDE_LAKE is None and unset.AMPLITUDE_LAKE_SPARK is None
    assert "lake" not in unset.DB_CONNECTION_MUTATOR(url, {"lake": "/home/someone"}, None, None, None)[1]
    served = load_config(monkeypatch, tmp_path, AMPLITUDE_LAKE="/srv/lake", AMPLITUDE_LAKE_SPARK="hive://spark:10000/a")
    assert served.AMPLITUDE_LAKE_SPARK == "hive://spark:10000/a"


def test_download_budget_from_the_environment_and_not_in_celery_tasks(monkeypatch, tmp_path) -> None:
    url = make_url("amplitude://")
    config = load_config(monkeypatch, tmp_path, AMPLITUDE_DOWNLOAD_BUDGET_S="7.5")
    assert config.DB_CONNECTION_MUTATOR(url, {}, None, None, None)[1]["download_budget_s"] == 7.5
    # a connection's own budget wins
    assert config.DB_CONNECTION_MUTATOR(url, {"download_budget_s": "60"}, None, None, None)[1][
        "download_budget_s"] == "60"
    unlimited = load_config(monkeypatch, tmp_path, AMPLITUDE_DOWNLOAD_BUDGET_S="0")
    assert "download_budget_s" not in unlimited.DB_CONNECTION_MUTATOR(url, {}, None, None, None)[1]
    # inside a Celery task (async SQL Lab on a worker) there is no web timeout: no budget
    from celery import Celery

    app = Celery("budget-test")

    @app.task
    def mutate() -> dict:
        return config.DB_CONNECTION_MUTATOR(url, {}, None, None, None)[1]

    assert "download_budget_s" not in mutate.apply().get()


def test_celery_beat_runs_the_amplitude_sync(monkeypatch, tmp_path) -> None:
    config = load_config(monkeypatch, tmp_path, REDIS_URL="redis://redis:6379/0")
    assert "shillelagh_amplitude.superset.tasks" in config.CELERY_CONFIG.imports
    entry = config.CELERY_CONFIG.beat_schedule["amplitude-sync"]
    assert (entry["task"], entry["schedule"].total_seconds()) == ("amplitude.sync_stores", 900)
    faster = load_config(monkeypatch, tmp_path, REDIS_URL="redis://r:6379/0", AMPLITUDE_SYNC_INTERVAL_S="30")
    assert faster.CELERY_CONFIG.beat_schedule["amplitude-sync"]["schedule"].total_seconds() == 30


def test_queries_know_the_background_sync_runs_only_where_beat_runs_it(monkeypatch, tmp_path) -> None:
    """With Celery (REDIS_URL) every amplitude:// connection's queries get the beat's interval, so that they leave
    the newest hours to the sync; without Celery nothing syncs, and queries download what they need."""
    url = make_url("amplitude://")
    synced = load_config(monkeypatch, tmp_path, REDIS_URL="redis://r:6379/0", AMPLITUDE_SYNC_INTERVAL_S="30")
    assert synced.DB_CONNECTION_MUTATOR(url, {}, None, None, None)[1]["sync_interval_s"] == 30
    alone = load_config(monkeypatch, tmp_path)
    assert "sync_interval_s" not in alone.DB_CONNECTION_MUTATOR(url, {}, None, None, None)[1]
    assert "sync_interval_s" not in alone.DB_CONNECTION_MUTATOR(make_url("sqlite://"), {}, None, None, None)[1]


def test_user_errors_are_logged_as_one_line_and_faults_keep_their_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    import apsw
    from shillelagh.exceptions import ProgrammingError

    factory = logging.getLogRecordFactory()
    try:
        load_config(monkeypatch, tmp_path)
        logger = logging.getLogger("superset.test")
        for raised in (apsw.SQLError("SQLError: no such column: lenght_s"), KeyError("hour")):
            try:
                try:
                    raise raised
                except apsw.SQLError as exc:  # how shillelagh wraps SQLite's error
                    raise ProgrammingError(str(exc)) from exc
            except Exception:
                logger.warning("Query %s failed", "SELECT lenght_s\nFROM amplitude_sessions", exc_info=True)
        typo, fault = caplog.records
        assert typo.getMessage() == (
            "Query SELECT lenght_s FROM amplitude_sessions failed "
            "(ProgrammingError: SQLError: no such column: lenght_s)"
        )
        assert typo.exc_info is None
        assert fault.exc_info is not None and fault.exc_info[0] is KeyError
        assert caplog.text.count("Traceback") == 1  # the fault's only
    finally:
        logging.setLogRecordFactory(factory)


def test_a_failed_query_re_raised_by_superset_counts_as_the_users_error() -> None:
    """SQL Lab re-raises a failed query's errors as SupersetErrorsException, with no cause attached."""
    from superset.errors import ErrorLevel, SupersetError, SupersetErrorType
    from superset.exceptions import SupersetErrorsException

    from shillelagh_amplitude.superset.logs import is_user_error

    def raised(message: str, error_type: SupersetErrorType = SupersetErrorType.GENERIC_DB_ENGINE_ERROR):
        return SupersetErrorsException([SupersetError(message, error_type, ErrorLevel.ERROR)])

    assert is_user_error(raised("no such column: lenght_s"))
    assert is_user_error(raised('near "SELEC": syntax error'))
    assert is_user_error(raised("Username: ...", SupersetErrorType.CONNECTION_MISSING_PARAMETERS_ERROR))  # the form
    assert not is_user_error(raised("KeyError: 'hour'"))
    assert not is_user_error(OSError("disk full"))


def test_a_fault_raised_while_handling_a_typo_keeps_its_traceback() -> None:
    import apsw

    from shillelagh_amplitude.superset.logs import is_user_error

    try:
        try:
            raise apsw.SQLError("SQLError: no such column: lenght_s")
        except apsw.SQLError:
            raise KeyError("hour")  # noqa: B904 - a bug in an error handler, as it would happen
    except KeyError as exc:
        assert not is_user_error(exc)


def test_amplitude_failing_is_a_fault_and_a_refused_range_the_users_error(tmp_path) -> None:
    """Through SQL: Amplitude unreachable is logged with its traceback; a range over 365 days is one line."""
    from sqlalchemy import create_engine, exc, text

    from shillelagh_amplitude.superset.logs import is_user_error

    port = free_port()  # nothing listens there
    engine = create_engine("amplitude://", connect_args={"adapter_kwargs": {"amplitude": {
        "api_key": "key", "secret_key": "secret", "base_url": f"http://127.0.0.1:{port}", "cache_dir": str(tmp_path)}}})
    raised = {}
    for name, where in (("fault", "session_start >= '2026-03-01' AND session_start < '2026-03-02'"),
                        ("refusal", "session_start >= '2024-01-01' AND session_start < '2026-03-02'")):
        with pytest.raises(exc.DBAPIError) as error, engine.connect() as connection:
            connection.execute(text(f"SELECT count(*) FROM amplitude_sessions WHERE {where}"))
        raised[name] = error.value
    assert isinstance(raised["fault"], exc.OperationalError) and "connection was refused" in str(raised["fault"])
    assert not is_user_error(raised["fault"])
    assert isinstance(raised["refusal"], exc.ProgrammingError) and "over 365 days" in str(raised["refusal"])
    assert is_user_error(raised["refusal"])


@pytest.mark.parametrize("variable", ["AMPLITUDE_DOWNLOAD_BUDGET_S", "AMPLITUDE_SYNC_INTERVAL_S"])
@pytest.mark.parametrize("value", ["-5", "soon", "inf"])
def test_a_bad_number_of_seconds_stops_the_start_naming_the_variable(monkeypatch, tmp_path, variable, value) -> None:
    with pytest.raises(ValueError, match=f"^{variable} must be a positive number of seconds.*not '{value}'$"):
        load_config(monkeypatch, tmp_path, **{variable: value})
    assert load_config(monkeypatch, tmp_path, **{variable: "30"}) is not None


@pytest.mark.parametrize(("value", "on"), [("true", True), (" On ", True), ("1", True), ("false", False),
                                           ("no", False), ("", False)])
def test_the_operator_turns_template_processing_on(monkeypatch, tmp_path, value: str, on: bool) -> None:
    """For the lake dashboards built with --template-processing (their "Sessions that contain event" filter)."""
    config = load_config(monkeypatch, tmp_path, SUPERSET_ENABLE_TEMPLATE_PROCESSING=value)
    assert config.FEATURE_FLAGS["ENABLE_TEMPLATE_PROCESSING"] is on


@pytest.mark.parametrize("value", ["maybe", "2", "enabled"])
def test_a_bad_switch_stops_the_start_naming_the_variable(monkeypatch, tmp_path, value: str) -> None:
    with pytest.raises(ValueError, match=f"^SUPERSET_ENABLE_TEMPLATE_PROCESSING must be true or false, not '{value}'$"):
        load_config(monkeypatch, tmp_path, SUPERSET_ENABLE_TEMPLATE_PROCESSING=value)
