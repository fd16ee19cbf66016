"""Makes every SparkSession of the CDP (Sail in-process, Spark Connect, or JVM Spark); reads and writes no data."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pyspark.sql import SparkSession

from spark_jobs.config import EngineConfig
from spark_jobs.storage import hadoop_s3_conf

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """The Spark engine could not be started or reached; the message says what to check."""


JARS_FILE = Path(__file__).resolve().parent.parent / "conf" / "jars.txt"


def jars_dir() -> Path:
    """Where scripts/fetch-jars.sh put the pinned JARs: $CDP_JARS, else the project's .jars/."""
    return Path(os.environ.get("CDP_JARS") or JARS_FILE.parent.parent / ".jars")


def pinned_jars(jar_set: str | None = None) -> list[tuple[str, str, str]]:
    """conf/jars.txt's (coordinate, sha1, set) rows, optionally of one set."""
    rows = []
    for line in JARS_FILE.read_text().splitlines():
        parts = line.split("#", 1)[0].split()
        if parts:
            coord, sha1, *rest = parts
            row = (coord, sha1, rest[0] if rest else "")
            if jar_set is None or row[2] == jar_set:
                rows.append(row)
    return rows


def local_jars(jar_set: str) -> list[str]:
    """The local files of a pinned JAR set; never downloads. Missing files are an EngineError that says
    how to fetch them."""
    paths = []
    for coord, _sha1, _set in pinned_jars(jar_set):
        _group, artifact, version = coord.split(":")
        path = jars_dir() / f"{artifact}-{version}.jar"
        if not path.is_file():
            raise EngineError(
                f"{path} is missing: the pinned JVM JARs ({coord}, conf/jars.txt) are fetched by "
                "`make jars` (scripts/fetch-jars.sh), never at Spark start"
            )
        paths.append(str(path))
    return paths


def delta_jars() -> list[str]:
    """delta-spark and delta-storage, as local files."""
    return local_jars("delta")


def _sail_env(cfg: EngineConfig) -> dict[str, str]:
    # Sail reads its settings from SAIL_<KEY> environment variables ('.' -> '__').
    env = {"SAIL_SPARK__SESSION_TIMEOUT_SECS": str(cfg.sail.session_timeout_secs), "RUST_LOG": "warn,sail_common::actor=error"}
    if cfg.sail.parallelism:
        env["SAIL_EXECUTION__DEFAULT_PARALLELISM"] = str(cfg.sail.parallelism)
    return env


def _remote_session(url: str) -> SparkSession:
    """A new Spark Connect session. Made through the Connect builder directly, because the generic
    builder refuses while a JVM session lives in the same process (the engine-matrix tests)."""
    from pyspark.sql.connect.session import SparkSession as RemoteSparkSession

    os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"  # pyspark dispatches column functions on this
    return RemoteSparkSession.builder.remote(url).create()


@contextlib.contextmanager
def _local_sail(cfg: EngineConfig, object_store: bool = False) -> Iterator[SparkSession]:
    from pysail.spark import SparkConnectServer

    for key, value in _sail_env(cfg).items():
        os.environ.setdefault(key, value)
    server = SparkConnectServer(ip="127.0.0.1", port=0)
    try:
        server.start(background=True)
    except Exception as e:  # pragma: no cover - depends on the machine
        raise EngineError(f"could not start the embedded Sail engine: {e}") from e
    host, port = server.listening_address
    spark = None
    try:
        spark = _remote_session(f"sc://{host}:{port}")
        yield spark
    finally:
        # Order matters: stopping the server before the session hangs the process ~120 s at exit.
        if spark is not None:
            spark.stop()
        server.stop()


@contextlib.contextmanager
def _connect(cfg: EngineConfig, object_store: bool = False) -> Iterator[SparkSession]:
    try:
        spark = _remote_session(cfg.remote)
    except Exception as e:
        raise EngineError(f"could not reach Spark Connect at {cfg.remote}: {e}") from e
    try:
        yield spark
    finally:
        spark.stop()


@contextlib.contextmanager
def _classic(cfg: EngineConfig, object_store: bool = False) -> Iterator[SparkSession]:
    # pyspark routes every DataFrame function to Spark Connect while this is set (a Connect session
    # made earlier in the process sets it); a JVM session needs it unset.
    os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
    # Python workers must run the interpreter that has the project's packages (pandas, phonenumbers).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(cfg.classic_master)
        .appName("cdp")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", cfg.classic_driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(os.cpu_count() or 2))
        # delta-spark rebuilds a table's snapshot state with 50 tasks by default, for each table read;
        # on a few cores that is most of the time of a small day.
        .config("spark.databricks.delta.snapshotPartitions", str(os.cpu_count() or 2))
        # A replaceWhere overwrite re-reads what it wrote to check every row is inside the partition:
        # check_contract (tables.py) already fails such a write before any commit. Measured on local[2],
        # 100 rows (median of 5): 14.0 s a partition write with the check, 5.8 s without.
        .config("spark.databricks.delta.replaceWhere.constraintCheck.enabled", "false")
    )
    jars = [*delta_jars(), *cfg.classic_jars] if cfg.classic_delta else list(cfg.classic_jars)
    if object_store:
        jars += local_jars("s3")
        for key, value in hadoop_s3_conf().items():
            builder = builder.config(key, value)
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    for key, value in cfg.classic_conf.items():
        builder = builder.config(key, value)
    if cfg.classic_delta:
        builder = builder.config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension").config(
            "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
        )
    for attempt in range(3):
        try:
            spark = builder.getOrCreate()
            break
        except Exception as e:
            # Seen once in ~20 CI runs: the JVM launcher, forked while a Spark Connect client's gRPC
            # threads run in this process, exits before reporting its port. A second launch works.
            if "JAVA_GATEWAY_EXITED" in str(e) and attempt < 2:
                log.warning("JVM Spark gateway exited at start (attempt %d); starting it again", attempt + 1)
                time.sleep(1.0)
                continue
            raise EngineError(
                f"could not start JVM Spark ({cfg.classic_master}): {e}. Java 17 must be on PATH; "
                "with classic_delta the pinned delta-spark JARs must be in .jars/ (make jars)."
            ) from e
    try:
        yield spark
    finally:
        spark.stop()


_ENGINES = {"local": _local_sail, "connect": _connect, "classic": _classic}


@contextlib.contextmanager
def spark_session(cfg: EngineConfig, object_store: bool = False) -> Iterator[SparkSession]:
    """A SparkSession on the configured engine, stopped (and Sail shut down) on exit. `object_store`:
    the lakehouse or landing zone is on S3 (spark_jobs/storage.py); a JVM session then loads the
    pinned S3A JARs and settings. Sail reads the AWS variables itself; a Connect server is configured
    where it starts (scripts/spark-stack.sh --s3)."""
    log.info("starting Spark engine %s", cfg.kind)
    with _ENGINES[cfg.kind](cfg, object_store) as spark:
        if cfg.kind != "classic":
            spark.conf.set("spark.sql.session.timeZone", "UTC")
        yield spark
