"""A real multi-process JVM Spark stack on this machine (scripts/spark-stack.sh): a standalone master,
two workers and a Spark Connect server with delta-spark on that cluster. The CDP's own code runs on it
through engine `connect`: Delta writes and reads (delta-rs agrees), the identity graph's components
with Python workers on the executors, and the Spark UI's REST API shows the tasks ran on both workers.
Marked e2e and slow (about a minute); its ports are free ones, so it runs beside other tests."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
from deltalake import DeltaTable

from spark_jobs.config import EngineConfig
from spark_jobs.session import spark_session

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("spark_stack")]
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "spark-stack.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("spark-stack")
    ports = {"CDP_CONNECT_PORT": _free_port(), "CDP_SPARK_UI_PORT": _free_port(),
             "CDP_MASTER_PORT": _free_port(), "CDP_MASTER_UI_PORT": _free_port()}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}}
    env.pop("SPARK_CONNECT_MODE_ENABLED", None)
    args = ["--dir", str(base / "stack")]
    started = subprocess.run(["bash", str(SCRIPT), "start", "--cluster", "--workers", "2", *args],
                             env=env, capture_output=True, text=True, timeout=300)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield base, ports
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", *args], env=env, capture_output=True, timeout=120)


def test_the_cdp_runs_on_a_two_worker_cluster_through_a_jvm_connect_server_with_delta(cluster, monkeypatch):
    from spark_jobs.identity.graph import connected_components
    from spark_jobs.tables import Lakehouse
    from tests.conftest import contract_frame
    from tests.test_identity_graph import _reference, _shape

    base, ports = cluster
    master = _get(f"http://127.0.0.1:{ports['CDP_MASTER_UI_PORT']}/json/")
    assert len([w for w in master["workers"] if w["state"] == "ALIVE"]) == 2, master["workers"]

    monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")
    root = str(base / "lakehouse")
    with spark_session(EngineConfig(kind="connect", remote=f"sc://127.0.0.1:{ports['CDP_CONNECT_PORT']}")) as spark:
        lh = Lakehouse(spark, root)
        day = dt.date(2026, 11, 1)
        rows = [{"person_id": f"p{i:04d}", "tag": "t", "value": str(i), "value_type": "long", "as_of": day}
                for i in range(2000)]
        lh.write_partition("gold_tags", contract_frame(spark, "gold_tags", rows).repartition(4), {"as_of": day})
        assert lh.read("gold_tags").count() == 2000

        rng = random.Random(5)
        n = 500
        edges = _shape("random", n, rng) + _shape("forest", n, rng)
        nodes = spark.createDataFrame([(i,) for i in range(n)], "node long")
        e = spark.createDataFrame(edges, "src long, dst long").repartition(4)
        # Several partitions and the local union-find pre-pass: mapInArrow on the workers' Python.
        result = connected_components(nodes, e, lh, "cc-cluster", local_edges=60)
        assert {r.node: r.component for r in result.assignment.collect()} == _reference(n, edges)

    table = DeltaTable(f"{root}/gold/gold_tags")
    assert table.to_pyarrow_table().num_rows == 2000
    assert "Delta-Lake" in (table.history()[0].get("engineInfo") or "")

    ui = f"http://127.0.0.1:{ports['CDP_SPARK_UI_PORT']}/api/v1/applications"
    app = _get(ui)[0]["id"]
    executors = [x for x in _get(f"{ui}/{app}/executors") if x["id"] != "driver"]
    assert len(executors) == 2 and all(x["totalTasks"] > 0 for x in executors), executors
    assert {x["hostPort"].split(":")[0] for x in executors} == {"127.0.0.1"}
