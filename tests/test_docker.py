"""Static checks of docker/: no Docker engine needed, but the files must agree with what the tests run."""

from __future__ import annotations

import re
import shlex
import tomllib

import pytest
import yaml

from .scripts import REPO, load_script

DOCKER = REPO / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (DOCKER / "Dockerfile").read_text()


def superset_extra() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["superset"]


def test_image_is_the_official_one_of_the_pinned_version(dockerfile: str) -> None:
    (pin,) = [r for r in superset_extra() if r.startswith("apache-superset")]
    version = pin.split("==")[1]
    assert re.search(rf"^FROM apache/superset:{re.escape(version)}$", dockerfile, re.MULTILINE)


def test_image_installs_connector_fixes_config_and_bundle(dockerfile: str) -> None:
    install = next(line for line in dockerfile.splitlines() if "uv pip install" in line)
    for requirement in superset_extra():
        if not requirement.startswith("apache-superset"):
            assert requirement in install or f'"{requirement}"' in install, requirement
    assert "/opt/amplitude" in install and "psycopg2-binary" in install
    assert "COPY superset_config/superset_config.py /app/pythonpath/superset_config.py" in dockerfile
    assert "amplitude-dashboard --output /app/amplitude/session_length_dashboard.zip" in dockerfile
    # the package's link to dashboards/ resolves when the connector is installed
    assert dockerfile.index("COPY dashboards /opt/amplitude/dashboards") < dockerfile.index("uv pip install")
    assert "SELECT median(1)" in dockerfile  # percentiles available in the image's SQLite
    assert dockerfile.rstrip().endswith("USER superset")


def test_compose_services_share_the_hour_store(compose: dict) -> None:
    services = compose["services"]
    assert {name for name, service in services.items() if "profiles" not in service} == {
        "postgres", "redis", "superset-init", "superset", "superset-worker", "superset-worker-beat"}
    for name in ("superset-init", "superset", "superset-worker", "superset-worker-beat"):
        service = services[name]
        assert service["volumes"] == ["amplitude-store:/var/lib/amplitude", "amplitude-lake:/var/lib/amplitude-lake"]
        env = service["environment"]
        assert env["AMPLITUDE_CACHE_DIR"] == "${AMPLITUDE_CACHE_DIR:-/var/lib/amplitude}"
        assert env["SUPERSET_DATABASE_URI"].startswith("postgresql+psycopg2://superset:${POSTGRES_PASSWORD")
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["SUPERSET_SECRET_KEY"].startswith("${SUPERSET_SECRET_KEY:?")
        assert service["env_file"] == ".env"
    for name in ("superset", "superset-worker", "superset-worker-beat"):
        assert services[name]["depends_on"]["superset-init"] == {"condition": "service_completed_successfully"}
    assert set(compose["volumes"]) == {"postgres-data", "redis-data", "amplitude-store", "amplitude-lake",
                                       "object-store-data", "spark-metastore"}
    assert services["superset"]["ports"] == ["127.0.0.1:8088:8088"]


def test_no_secret_is_written_in_the_docker_files() -> None:
    example = dict(
        line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert {key for key, value in example.items() if value} == {"AMPLITUDE_REGION"}
    assert ".env" in (DOCKER / ".gitignore").read_text().splitlines()


def test_commands_mirror_the_tested_ones(compose: dict) -> None:
    """init.sh runs the Superset commands scripts/demo.py runs; the web service serves like the demo."""
    demo = load_script("scripts/demo.py")
    init = (DOCKER / "init.sh").read_text()
    for command in demo.SUPERSET_INIT:
        assert f"superset {' '.join(command)}\n" in init
    assert "superset fab create-admin --username" in init
    assert "superset import-dashboards -p /app/amplitude/session_length_dashboard.zip -u" in init
    web = compose["services"]["superset"]["command"]
    assert web[0] == "gunicorn" and web[-1] == demo.GUNICORN_APP
    assert shlex.join(demo.GUNICORN_OPTIONS) in shlex.join(web)
    assert compose["services"]["superset-init"]["command"] == ["/app/amplitude/init.sh"]


def test_worker_and_beat_run_what_the_background_sync_test_runs(compose: dict) -> None:
    """One worker and exactly one beat, started as the background-sync test and the load test start them
    (scripts/celery_stack.py); async SQL Lab turned on by init.sh with the command that test runs; the web budget
    and sync interval configurable."""
    stack = load_script("scripts/celery_stack.py")
    WORKER, BEAT = stack.WORKER, stack.BEAT  # noqa: N806 - the shared constants' names
    services = compose["services"]
    assert tuple(services["superset-worker"]["command"][: len(WORKER)]) == WORKER
    assert tuple(services["superset-worker-beat"]["command"][:3]) == BEAT
    assert [s for s in services.values() if "beat" in s.get("command", [])] == [services["superset-worker-beat"]]
    assert "python -m shillelagh_amplitude.superset.tasks enable-async" in (DOCKER / "init.sh").read_text()
    env = services["superset"]["environment"]
    assert env["AMPLITUDE_DOWNLOAD_BUDGET_S"] == "${AMPLITUDE_DOWNLOAD_BUDGET_S:-20}"
    assert env["AMPLITUDE_SYNC_INTERVAL_S"] == "${AMPLITUDE_SYNC_INTERVAL_S:-900}"


def test_object_storage_profile_creates_the_bucket_the_example_points_at(compose: dict) -> None:
    services = compose["services"]
    store, init = services["object-store"], services["object-store-init"]
    assert store["profiles"] == init["profiles"] == ["object-storage"]
    assert store["environment"]["MINIO_ROOT_USER"].startswith("${AWS_ACCESS_KEY_ID:?")
    assert init["depends_on"] == {"object-store": {"condition": "service_healthy"}}
    assert init["command"] == ["mb", "--ignore-existing", "store/${AMPLITUDE_BUCKET:-amplitude-hours}"]
    example = (DOCKER / ".env.example").read_text()
    uri = re.search(r"AMPLITUDE_CACHE_DIR=(s3://amplitude-hours/\S+)", example).group(1)
    assert "endpoint_override=object-store:9000" in uri and "scheme=http" in uri
    assert "@" not in uri  # credentials come from the environment, never the URI


def test_lake_spark_profile_serves_the_lake_volume_as_the_tests_serve_theirs(compose: dict, dockerfile: str) -> None:
    """The Thrift Server reads the lake's volume (read-only) at the path the sync publishes to, started like the
    tests' server; its tables are the lake's DDL for that path, run once; the sync refreshes them (the server
    the example names, that service's port and the DDL's database) and the image's Spark bundle points at it."""
    from shillelagh_amplitude.lake.ddl import script
    from shillelagh_amplitude.lake.refresh import SparkTarget

    from .spark_server import command

    services = compose["services"]
    thrift, tables = services["spark-thrift"], services["spark-lake-tables"]
    assert thrift["profiles"] == tables["profiles"] == ["lake-spark"]
    assert [name for name, service in services.items() if "lake-spark" in service.get("profiles", [])] == [
        "spark-thrift", "spark-lake-tables"]  # no periodic refresh: the sync refreshes
    assert "amplitude-lake:/var/lib/amplitude-lake:ro" in thrift["volumes"]
    for name in ("superset-worker", "superset-worker-beat"):
        env = services[name]["environment"]
        assert env["AMPLITUDE_LAKE"] == "${AMPLITUDE_LAKE:-}"
        assert env["AMPLITUDE_LAKE_SPARK"] == "${AMPLITUDE_LAKE_SPARK:-}"
    example = (DOCKER / ".env.example").read_text()
    assert "# AMPLITUDE_LAKE=/var/lib/amplitude-lake\n" in example
    spark = SparkTarget.parse(re.search(r"^# AMPLITUDE_LAKE_SPARK=(\S+)$", example, re.MULTILINE).group(1))
    assert (spark.host, spark.port, spark.schema) == ("spark-thrift", 10000, "amplitude")
    tested = command(DOCKER, 10000)
    for option in ("--class", "--master"):
        assert thrift["command"][thrift["command"].index(option) + 1] == tested[tested.index(option) + 1]
    for setting in ("spark.sql.session.timeZone=UTC", "hive.server2.thrift.port=10000"):
        assert setting in thrift["command"] and setting in tested
    assert tables["depends_on"] == {"spark-thrift": {"condition": "service_healthy"}}
    assert tables["restart"] == "on-failure"  # once, retried until the lake's folders exist
    assert "./spark-lake.sql:/opt/amplitude/spark-lake.sql:ro" in tables["volumes"]
    assert "jdbc:hive2://spark-thrift:10000/ -n hive -f /opt/amplitude/spark-lake.sql" in " ".join(tables["command"])
    statements = "".join(line + "\n" for line in (DOCKER / "spark-lake.sql").read_text().splitlines()
                         if not line.startswith("--"))
    assert statements == script("/var/lib/amplitude-lake", "spark", spark.schema)
    assert "--engine spark --sqlalchemy-uri hive://hive@spark-thrift:10000/amplitude" in dockerfile

