"""A local Spark Thrift Server for the lake tests: pyspark's own jars, Debian's Java 17, local mode, small memory.

Started from a pytest fixture (``make test`` installs Java); everything it writes (metastore, warehouse, log)
stays in the given folder. Superset reaches it as ``hive://hive@127.0.0.1:<port>/<database>`` (PyHive).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import free_port
from .scripts import load_script

JAVA = Path("/usr/bin/java")
STARTED = "HiveThriftServer2 started"
START_TIMEOUT_S = 240
#: Spark's driver heap (local mode: the executor's too). The data is a few MB, but a dashboard sends a dozen queries
#: at once; 640m could leave the server collecting garbage for minutes on a loaded machine.
DRIVER_MEMORY = "1g"
#: Where each server's log is kept after the test (its folder is a temporary one pytest removes later).
LOGS = Path(__file__).resolve().parents[1] / "test-output" / "spark"


@dataclass
class ThriftServer:
    port: int
    log: Path

    def uri(self, database: str) -> str:
        return f"hive://hive@127.0.0.1:{self.port}/{database}"

    def cursor(self, database: str = "default"):
        """A PyHive cursor on the server."""
        from pyhive import hive

        return hive.connect(host="127.0.0.1", port=self.port, username="hive", database=database).cursor()

    def run(self, *statements: str, database: str = "default") -> list[tuple]:
        """Run statements in order; the rows of the last one (if it returns any)."""
        cursor = self.cursor(database)
        rows: list[tuple] = []
        for statement in statements:
            cursor.execute(statement)
            rows = cursor.fetchall() if cursor.description else []
        cursor.close()
        return rows


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def command(folder: Path, port: int) -> list[str]:
    """spark-submit of the Thrift Server in local mode, UTC, its metastore and warehouse in ``folder``."""
    return [
        str(spark_home() / "bin" / "spark-submit"),
        "--class", "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2",
        "--master", "local[2]",
        "--driver-memory", DRIVER_MEMORY,
        "--conf", f"spark.sql.warehouse.dir={folder / 'warehouse'}",
        "--conf", "spark.sql.session.timeZone=UTC",
        "--conf", "spark.ui.enabled=false",
        "--conf", "spark.sql.shuffle.partitions=2",
        "--driver-java-options", f"-Dderby.system.home={folder}",
        "--hiveconf", f"hive.server2.thrift.port={port}",
        "--hiveconf", "hive.server2.thrift.bind.host=127.0.0.1",
    ]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def thrift_server(folder: Path) -> Iterator[ThriftServer]:
    """Start the server (about 20 s), yield it, stop it (its own process group only)."""
    if not JAVA.exists() or not shutil.which("java"):
        pytest.fail("Spark needs Debian's Java 17: `sudo apt-get install openjdk-17-jre-headless` (make test does)")
    folder.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), folder / "thrift-server.log"
    env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOG_DIR": str(folder), "SPARK_LOCAL_IP": "127.0.0.1"}
    with log.open("w") as out:
        process = subprocess.Popen(command(folder, port), cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (STARTED in log.read_text(errors="replace") and listening(port)):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
                pytest.fail(f"the Spark Thrift Server did not start (exit {process.poll()}):\n{tail}")
            time.sleep(0.5)
        yield ThriftServer(port, log)
    finally:
        LOGS.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, LOGS / f"thrift-server-{folder.name}.log")
        load_script("scripts/celery_stack.py").stop(process)
