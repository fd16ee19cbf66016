"""Shared fixtures: one Sail session per test worker, one JVM Spark session for the engine matrix."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os

import pytest

from spark_jobs.config import EngineConfig
from spark_jobs.session import spark_session

pytest_plugins = ["tests.pipeline_world"]  # the shared pipeline lakehouse (`world` of test_pipeline and serving)
logging.getLogger("py4j").setLevel(logging.WARNING)  # its __del__ logs after pytest closed the streams
_SESSIONS: dict[str, object] = {}
_STACK = contextlib.ExitStack()


def _session(kind: str):
    if kind not in _SESSIONS:
        # CDP_TEST_SPARK_JARS: extra JARs for the JVM session (the GraphFrames JAR runs its comparison test).
        jars = tuple(p for p in os.environ.get("CDP_TEST_SPARK_JARS", "").split(",") if p)
        cfg = EngineConfig(kind="local") if kind == "sail" else EngineConfig(
            kind="classic", classic_master="local[2]", classic_delta=True, classic_jars=jars
        )
        _SESSIONS[kind] = _STACK.enter_context(spark_session(cfg))
    return _SESSIONS[kind]


def pytest_configure(config):
    """Tests never touch the project's own MLflow store: one throw-away store per test process (its
    Airflow subprocesses inherit it)."""
    import tempfile

    base = tempfile.mkdtemp(prefix="cdp-mlflow-")
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{base}/mlflow.db")
    os.environ.setdefault("CDP_MLFLOW_ARTIFACTS", f"{base}/artifacts")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(config, items):
    """A module whose tests share a module-scoped fixture (a generated world, a pipeline run) runs on one
    xdist worker: spread over two, each worker would build the minutes-long fixture again."""
    from tests.pipeline_world import GROUP

    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        used = defs.get("world", ())[-1:]  # the definition the test gets (a module's own `world` overrides)
        if any(d.func.__module__ == "tests.pipeline_world" for d in used):
            # the session-wide pipeline lakehouse: every module reading it on one worker, built once there
            for other in items:
                if other.module is item.module and not other.get_closest_marker("xdist_group"):
                    other.add_marker(pytest.mark.xdist_group(GROUP))
            continue
        if any(d.scope == "module" for fds in defs.values() for d in fds):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__.rsplit(".", 1)[-1]))


def pytest_sessionfinish(session, exitstatus):
    _STACK.close()


def _use(kind: str, monkeypatch):
    session = _session(kind)
    # pyspark picks Spark Connect or classic column functions by this variable, process-wide.
    if kind == "sail":
        monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")
    else:
        monkeypatch.delenv("SPARK_CONNECT_MODE_ENABLED", raising=False)
    return session


@pytest.fixture
def sail(monkeypatch):
    """Sail, the embedded default engine (Delta-capable)."""
    return _use("sail", monkeypatch)


@pytest.fixture(params=["sail", pytest.param("jvm", marks=pytest.mark.engine_matrix)])
def spark(request, monkeypatch):
    """The same test on Sail and on JVM Spark (classic, with delta-spark): transforms must be engine-portable."""
    return _use(request.param, monkeypatch)


@pytest.fixture
def lakehouse(sail, tmp_path):
    from spark_jobs.tables import Lakehouse

    return Lakehouse(sail, str(tmp_path / "lakehouse"))


BATCH = dt.date(2026, 11, 1)
INGESTED_AT = dt.datetime(2026, 11, 2, 1, 0, 0)


def contract_frame(spark, table: str, rows: list[dict], contract=None):
    """A DataFrame of `table`'s contract schema from dicts (missing columns are NULL)."""
    from spark_jobs.contracts import contract as lookup

    c = contract or lookup(table)
    return spark.createDataFrame([tuple(r.get(n) for n in c.column_names) for r in rows], c.schema())
