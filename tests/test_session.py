"""Engine sessions: the embedded Sail engine and a Spark Connect endpoint (a Sail server on loopback)."""

import socket

import pytest

from spark_jobs.config import EngineConfig
from spark_jobs.session import spark_session


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def test_spark_session_local_runs_queries_and_shuts_sail_down(monkeypatch):
    monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")
    with spark_session(EngineConfig(kind="local")) as spark:
        assert spark.range(10).selectExpr("sum(id) AS s").collect()[0].s == 45
        assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
        url = spark.client._builder.url
        host, port = url.hostname, url.port
        assert host == "127.0.0.1" and _port_open(host, port)
    assert not _port_open(host, port)


def test_spark_session_connect_uses_the_configured_endpoint(monkeypatch):
    from pysail.spark import SparkConnectServer

    monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")
    server = SparkConnectServer(ip="127.0.0.1", port=0)
    server.start(background=True)
    host, port = server.listening_address
    try:
        with spark_session(EngineConfig(kind="connect", remote=f"sc://{host}:{port}")) as spark:
            assert spark.range(3).count() == 3
    finally:
        server.stop()


def test_engine_config_rejects_non_spark_connect_urls():
    with pytest.raises(ValueError, match="sc://"):
        EngineConfig(kind="connect", remote="http://localhost:15002")
