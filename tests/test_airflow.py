"""Airflow runs for real (`airflow dags test`, and the scheduler + UI in test_airflow_scheduler.py):
re-running a failed day repairs it without duplicates, and the engine comes from the Airflow
connection. The reference is the three days run one by one; every other way of running them must give
the same tables (audit columns aside)."""

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable

from spark_jobs.contracts import CONTRACTS
from spark_jobs.generate import generate
from spark_jobs.orchestration import AUDIT_TABLES
from spark_jobs.tables import table_path

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("airflow")]
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START = dt.date(2026, 11, 1)
BATCHES = [START + dt.timedelta(days=i) for i in range(3)]
# When a row was loaded differs between runs by design (the run's start); nothing else may.
VOLATILE = {"_ingested_at", "ingested_at"}


def airflow_env(base: Path, landing: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(base / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "CDP_LANDING": str(landing),
        "CDP_LAKEHOUSE": str(base / "lh"),
        "CDP_EXPORTS": str(base / "exports"),
        **extra,
    }
    env.pop("SPARK_CONNECT_MODE_ENABLED", None)
    return env


def airflow(env: dict, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def run_day(env: dict, batch: dt.date) -> tuple[str, str]:
    """`airflow dags test` of the run whose data interval starts at `batch`; (final state, log)."""
    out = airflow(env, "dags", "test", "cdp_daily", (batch + dt.timedelta(days=1)).isoformat())
    log = out.stdout + out.stderr
    states = [s for s in ("success", "failed") if f"state={s}" in log]
    assert states, log[-4000:]
    return states[-1], log


def snapshot(lakehouse: Path) -> dict[str, list[str]]:
    """Every table (audit tables aside) as its sorted rows, volatile columns dropped."""
    snap = {}
    for name in CONTRACTS:
        path = table_path(str(lakehouse), name)
        if name in AUDIT_TABLES or not DeltaTable.is_deltatable(path):
            continue
        frame = DeltaTable(path).to_pandas()
        frame = frame.drop(columns=[c for c in frame.columns if c in VOLATILE])
        snap[name] = sorted(repr(r) for r in frame[sorted(frame.columns)].to_dict("records"))
    return snap


def assert_same_tables(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert len(got[name]) == len(want[name]), f"{name}: {len(got[name])} rows, want {len(want[name])}"
        assert got[name] == want[name], f"{name} differs: {sorted(set(got[name]) ^ set(want[name]))[:3]}"


def assert_no_duplicate_keys(lakehouse: Path) -> None:
    for name, c in CONTRACTS.items():
        path = table_path(str(lakehouse), name)
        if c.keys and DeltaTable.is_deltatable(path):
            frame = DeltaTable(path).to_pandas(columns=[*c.keys, *c.partition_by])
            assert not frame.duplicated().any(), f"{name}: duplicate {c.keys}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Three days generated and run one by one through `airflow dags test`; the tables after each day."""
    base = tmp_path_factory.mktemp("reference")
    landing = base / "landing"
    generate(landing, people=300, days=len(BATCHES), seed=7, start=START)
    env = airflow_env(base, landing)
    migrated = airflow(env, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    after = {}
    for batch in BATCHES:
        state, log = run_day(env, batch)
        assert state == "success", log[-4000:]
        after[batch] = snapshot(base / "lh")
    return landing, after


def test_rerunning_a_failed_day_repairs_it_without_duplicates(reference, tmp_path):
    landing_ok, after = reference
    landing = tmp_path / "landing"
    shutil.copytree(landing_ok, landing)
    env = airflow_env(tmp_path, landing)
    assert airflow(env, "db", "migrate").returncode == 0
    assert run_day(env, BATCHES[0])[0] == "success"

    # Day 2's order file arrives with a negative amount: the silver_orders gate stops the day at standardise.
    orders = next((landing / "orders" / BATCHES[1].isoformat()).glob("*.csv"))
    good = orders.read_text()
    header, first, *rest = good.splitlines(keepends=True)
    amount = header.strip().split(",").index("amount")
    fields = first.rstrip("\n").split(",")
    fields[amount] = "-" + fields[amount]
    orders.write_text("".join([header, ",".join(fields) + "\n", *rest]))
    state, log = run_day(env, BATCHES[1])
    assert state == "failed"
    assert "QualityGateError" in log and "silver_orders" in log
    failed = snapshot(tmp_path / "lh")
    assert failed["bronze_orders"] != after[BATCHES[1]]["bronze_orders"]  # the bad file was loaded to bronze
    assert failed["gold_id_map"] == after[BATCHES[0]]["gold_id_map"]  # nothing after standardise ran

    # The corrected file is delivered again and the day re-run: the tables are as if nothing had failed.
    orders.write_text(good)
    assert run_day(env, BATCHES[1])[0] == "success"
    assert_same_tables(snapshot(tmp_path / "lh"), after[BATCHES[1]])
    # And re-running a day that succeeded changes nothing.
    assert run_day(env, BATCHES[1])[0] == "success"
    assert_same_tables(snapshot(tmp_path / "lh"), after[BATCHES[1]])
    assert_no_duplicate_keys(tmp_path / "lh")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_engine_comes_from_the_airflow_connection(reference, tmp_path):
    """With the connection cdp_spark set, the tasks run on that Spark Connect server (here a Sail server
    started on its own, as a cluster would be) and give the same tables as the embedded engine."""
    landing, after = reference
    port = _free_port()
    server = subprocess.Popen([str(BIN / "sail"), "spark", "server", "--ip", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()[-2000:]
            time.sleep(0.3)
        env = airflow_env(tmp_path, landing, AIRFLOW_CONN_CDP_SPARK=f"spark-connect://127.0.0.1:{port}")
        assert airflow(env, "db", "migrate").returncode == 0
        state, log = run_day(env, BATCHES[0])
        assert state == "success", log[-4000:]
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    summary = json.loads((tmp_path / "lh" / "_runs" / "latest.json").read_text())
    assert (summary["engine"], summary["engine_remote"]) == ("connect", f"sc://127.0.0.1:{port}")
    assert f"Spark Connect sc://127.0.0.1:{port} from Airflow connection 'cdp_spark'" in log
    assert_same_tables(snapshot(tmp_path / "lh"), after[BATCHES[0]])
