"""lake/refresh.py on its own: what ``--spark`` and ``AMPLITUDE_LAKE_SPARK`` accept, and a hung server bounded.

The refresh against a real Thrift Server is tested where the syncs run it (``test_lake_sync.py``)."""

from __future__ import annotations

import socket
import sys
import time
import tomllib

import pytest

from shillelagh_amplitude.lake.refresh import SparkRefreshError, SparkTarget, refresh_spark

from .scripts import REPO


def test_the_target_is_read_from_pyhives_uri():
    assert SparkTarget.parse("hive://hive@spark-thrift:10000/amplitude") == SparkTarget(
        "spark-thrift", 10000, "amplitude", "hive")
    assert SparkTarget.parse("hive://spark") == SparkTarget("spark", 10000, "amplitude")
    assert SparkTarget.parse("hive://u:p@h:10001/s?auth=ldap") == SparkTarget("h", 10001, "s", "u", "p", "LDAP")
    assert SparkTarget.parse("hive://h:10001/s").display == "h:10001"


@pytest.mark.parametrize("uri", ["postgresql://u:pw-7f@h:5432/x", "hive://u:pw-7f@h:port/x",
                                 "hive://u:pw-7f@h/x?auth=KERBEROS", "hive://u:pw-7f@h/x?ssl_cert=x", "pw-7f"])
def test_a_wrong_uri_is_refused_without_its_password(uri):
    with pytest.raises(ValueError) as refused:
        SparkTarget.parse(uri)
    assert "pw-7f" not in str(refused.value)
    with pytest.raises(SparkRefreshError) as failed:
        refresh_spark(uri)
    assert "pw-7f" not in str(failed.value) and str(failed.value).startswith("Spark not refreshed: ")


def test_a_hung_server_does_not_tie_up_the_sync():
    """A server that accepts connections and never answers: the refresh gives up after its timeout."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen()  # the kernel completes the connection; nothing ever reads or answers
        port = hung.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(SparkRefreshError) as failed:
            refresh_spark(f"hive://hive:secret-pw@127.0.0.1:{port}/amplitude?auth=LDAP", timeout_s=1)
    assert time.monotonic() - started < 10
    message = str(failed.value)
    assert message.startswith(f"Spark Thrift Server 127.0.0.1:{port} not refreshed (") and "\n" not in message
    assert "secret-pw" not in message


def test_without_pyhive_the_refresh_says_what_to_install(monkeypatch):
    """The non-Superset install has no PyHive unless the spark extra, which pins what the superset extra does."""
    monkeypatch.setitem(sys.modules, "pyhive", None)  # import pyhive fails
    with pytest.raises(SparkRefreshError) as failed:
        refresh_spark("hive://hive@127.0.0.1:10000/amplitude")
    assert str(failed.value) == ("Spark Thrift Server 127.0.0.1:10000 not refreshed: PyHive is not installed "
                                 "(pip install 'shillelagh-amplitude[spark]')")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras["spark"]) <= set(extras["superset"])


def test_a_refusal_is_one_line_naming_the_server(spark_server):
    """No such schema, or the lake's tables never created in it: Spark's own reason, in one line."""
    spark_server.run("CREATE DATABASE IF NOT EXISTS no_tables")
    for schema, reason in (("never_created", "([SCHEMA_NOT_FOUND] The schema `spark_catalog`.`never_created` cannot"),
                           ("no_tables", "(MSCK REPAIR TABLE no_tables.amplitude_events SYNC PARTITIONS: "
                                         "[TABLE_OR_VIEW_NOT_FOUND] The table or view `no_tables`.`amplitude_events`")):
        with pytest.raises(SparkRefreshError) as failed:
            refresh_spark(spark_server.uri(schema))
        message = str(failed.value)
        assert message.startswith(f"Spark Thrift Server 127.0.0.1:{spark_server.port} not refreshed (")
        assert reason in message, message
        assert "\n" not in message and message.endswith("; the next sync refreshes it again")
