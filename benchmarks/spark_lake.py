"""Spark SQL local[2] over the lake, set up the same way by every benchmark: a Hive catalog in a temporary folder,
the session time zone UTC (as the Thrift Server the Spark bundle needs), the tables of ``amplitude-lake ddl
--engine spark`` in the database ``amplitude``, used by default."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from query_benchmark import peak_rss_mb

from shillelagh_amplitude.lake.ddl import ddl

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SPARK_DRIVER_MEMORY = "2g"


def spark_over_lake(lake: str | Path, home: str, app: str) -> SparkSession:
    """A local[2] session (driver memory :data:`SPARK_DRIVER_MEMORY`, its catalog and warehouse under ``home``)
    with the lake's tables created and ``amplitude`` in use."""
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").appName(app)
             .config("spark.driver.memory", SPARK_DRIVER_MEMORY)
             .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={home}")
             .config("spark.sql.warehouse.dir", f"{home}/warehouse")
             .config("spark.sql.session.timeZone", "UTC").config("spark.ui.enabled", "false")
             .enableHiveSupport().getOrCreate())
    for statement in ddl(lake, "spark"):
        spark.sql(statement)
    spark.sql("USE amplitude")
    return spark


def jvm_peak_rss_mb(spark: SparkSession) -> float:
    """The peak RSS of the session's JVM (in local mode the driver, its executors' tasks included)."""
    return peak_rss_mb(spark.sparkContext._gateway.proc.pid)
