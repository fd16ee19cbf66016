"""Airflow runs for real (`airflow dags test`, and the scheduler + UI in test_airflow_scheduler.py):
re-running a failed day repairs it without duplicates, and the engine comes from the Airflow
connection. The reference is the three days run one by one; every other way of running them must give
the same tables (audit columns aside)."""

import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from deltalake import DeltaTable, write_deltalake

from spark_jobs.contracts import CONTRACTS
from spark_jobs.generate import generate
from spark_jobs.orchestration import AUDIT_TABLES
from spark_jobs.tables import table_path
from tests.airflow_standalone import free_port
from tests.pii_scan import files_under, hits, world_identifiers

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


def run_day(env: dict, batch: dt.date, timeout: int = 600) -> tuple[str, str]:
    """`airflow dags test` of the run whose data interval starts at `batch`; (final state, log)."""
    out = airflow(env, "dags", "test", "cdp_daily", (batch + dt.timedelta(days=1)).isoformat(), timeout=timeout)
    log = out.stdout + out.stderr
    return final_state(log), log


def final_state(log: str) -> str:
    """The run's final state from `airflow dags test` output ("DagRun Finished: ..., state=failed, ...")."""
    states = re.findall(r"DagRun Finished: .*?, state=(\w+)", log)
    assert states, log[-4000:]
    return states[-1]


def snapshot(lakehouse: Path) -> dict[str, list[str]]:
    """Every table (audit tables aside) as its sorted rows, volatile columns dropped."""
    snap = {}
    for name in CONTRACTS:
        path = table_path(str(lakehouse), name)
        # ops_runs is bookkeeping of the runs themselves (ids, times, versions): it differs by design.
        if name in AUDIT_TABLES or name == "ops_runs" or not DeltaTable.is_deltatable(path):
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
    return SimpleNamespace(base=base, landing=landing, after=after)


def test_rerunning_a_failed_day_repairs_it_without_duplicates(reference, tmp_path):
    landing_ok, after = reference.landing, reference.after
    landing = tmp_path / "landing"
    shutil.copytree(landing_ok, landing)
    env = airflow_env(tmp_path, landing)
    assert airflow(env, "db", "migrate").returncode == 0
    assert run_day(env, BATCHES[0])[0] == "success"

    # Day 2's order file arrives with the orders of a month before (a delivery in the wrong folder): a
    # table-level finding, so the bronze_orders gate stops the orders ingest task. (One bad value would
    # only quarantine its record.)
    orders = next((landing / "orders" / BATCHES[1].isoformat()).glob("*.csv"))
    good = orders.read_text()
    orders.write_text(good.replace(BATCHES[1].isoformat(), (BATCHES[1] - dt.timedelta(days=30)).isoformat()))
    state, log = run_day(env, BATCHES[1])
    assert state == "failed"
    assert "QualityGateError" in log and "bronze_orders was not published" in log
    assert not world_identifiers(str(tmp_path / "lh")).search(log.encode())  # the failure's log quotes no identifier
    failed = snapshot(tmp_path / "lh")
    assert failed["bronze_orders"] == after[BATCHES[0]]["bronze_orders"]  # the bad file was not published
    assert failed["gold_id_map"] == after[BATCHES[0]]["gold_id_map"]  # nothing after ingest ran

    # The corrected file is delivered again and the day re-run: the tables are as if nothing had failed.
    orders.write_text(good)
    assert run_day(env, BATCHES[1])[0] == "success"
    assert_same_tables(snapshot(tmp_path / "lh"), after[BATCHES[1]])
    # And re-running a day that succeeded changes nothing.
    assert run_day(env, BATCHES[1])[0] == "success"
    assert_same_tables(snapshot(tmp_path / "lh"), after[BATCHES[1]])
    assert_no_duplicate_keys(tmp_path / "lh")
    runs = DeltaTable(table_path(str(tmp_path / "lh"), "ops_runs")).to_pandas().sort_values("finished_at")
    assert runs["status"].tolist() == ["complete", "failed", "complete", "complete"]
    assert not (tmp_path / "lh" / "_runs" / "claim.json").exists()


def test_cdp_maintenance_compacts_and_vacuums_without_changing_a_row(reference, tmp_path):
    after = reference.after
    lakehouse = tmp_path / "lh"
    shutil.copytree(reference.base / "lh", lakehouse)
    env = {**airflow_env(reference.base, tmp_path / "landing"), "CDP_LAKEHOUSE": str(lakehouse)}
    # At this size every partition is one file; split gold_tags' newest partition into four, as a big
    # write with many tasks leaves it (same rows), so that compaction has something to do.
    tags = table_path(str(lakehouse), "gold_tags")
    newest = DeltaTable(tags).to_pyarrow_table(filters=[("as_of", "=", BATCHES[-1])])
    quarter = -(-newest.num_rows // 4)
    write_deltalake(tags, newest.slice(0, quarter), mode="overwrite", predicate=f"as_of = '{BATCHES[-1]}'")
    for i in range(1, 4):
        write_deltalake(tags, newest.slice(i * quarter, quarter), mode="append")
    assert_same_tables(snapshot(lakehouse), after[BATCHES[-1]])
    versions = {n: DeltaTable(table_path(str(lakehouse), n)).version() for n in after[BATCHES[-1]]}

    sundays = iter(["2026-11-08", "2026-11-15", "2026-11-22"])  # one run each: a re-run keeps its first conf

    def maintain(conf: dict) -> tuple[str, str]:
        out = airflow(env, "dags", "test", "cdp_maintenance", next(sundays), "-c", json.dumps(conf))
        log = out.stdout + out.stderr
        return final_state(log), log

    state, log = maintain({"dry_run": True})
    assert state == "success", log[-4000:]
    assert {n: DeltaTable(table_path(str(lakehouse), n)).version() for n in versions} == versions  # dry run
    state, log = maintain({"retention_hours": 1})  # below maintenance.min_retention_hours: refused, nothing done
    assert state == "failed" and "MaintenanceError" in log and "below the minimum" in log
    assert {n: DeltaTable(table_path(str(lakehouse), n)).version() for n in versions} == versions

    state, log = maintain({})
    assert state == "success", log[-4000:]
    report = json.loads((lakehouse / "_runs" / "latest-maintenance.json").read_text())
    assert set(report["tables"]) == set(versions) | set(AUDIT_TABLES) | {"ops_runs"}  # ops_runs: not in snapshots
    assert report["totals"]["partitions_compacted"] > 0
    assert report["totals"]["files_after"] < report["totals"]["files_before"]
    assert report["retention_hours"] == 168 and report["totals"]["files_vacuumed"] == 0  # all files are new
    assert_same_tables(snapshot(lakehouse), after[BATCHES[-1]])
    compact = report["tables"]["gold_tags"]["compact"]
    assert (compact["partitions_compacted"], compact["files_before"], compact["files_after"]) == (1, 3 + 3, 3)
    assert DeltaTable(tags).version() > versions["gold_tags"]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_engine_comes_from_the_airflow_connection(reference, tmp_path):
    """With the connection cdp_spark set, the tasks run on that Spark Connect server (here a Sail server
    started on its own, as a cluster would be) and give the same tables as the embedded engine."""
    landing, after = reference.landing, reference.after
    port = free_port()
    server = subprocess.Popen([str(BIN / "sail"), "spark", "server", "--ip", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _listening(port):
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


def _executors(ui_port: int) -> list[dict]:
    import urllib.request

    def get(path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/api/v1/{path}", timeout=10) as r:
            return json.loads(r.read())

    app = get("applications")[0]["id"]
    return get(f"applications/{app}/allexecutors")


@pytest.mark.heavy  # about 15 minutes of JVM-cluster work on 2 cores: make test-all, not make test
def test_cdp_daily_runs_on_a_jvm_cluster_through_the_airflow_connection(reference, tmp_path):
    """The production path: a JVM Spark Connect server with delta-spark on a standalone master and two
    workers (scripts/spark-stack.sh), reached by the real cdp_daily through AIRFLOW_CONN_CDP_SPARK. The
    day's tables equal the embedded engine's, and the Spark UI's REST API shows tasks on both workers."""
    ports = {k: free_port() for k in ("CDP_CONNECT_PORT", "CDP_SPARK_UI_PORT", "CDP_MASTER_PORT", "CDP_MASTER_UI_PORT")}
    stack = {**os.environ, **{k: str(v) for k, v in ports.items()}}
    stack.pop("SPARK_CONNECT_MODE_ENABLED", None)
    script = [str(ROOT / "scripts" / "spark-stack.sh")]
    where = ["--dir", str(tmp_path / "stack")]
    started = subprocess.run([*script, "start", "--cluster", "--workers", "2", *where], env=stack,
                             capture_output=True, text=True, timeout=300)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        url = f"spark-connect://127.0.0.1:{ports['CDP_CONNECT_PORT']}"
        env = airflow_env(tmp_path, reference.landing, AIRFLOW_CONN_CDP_SPARK=url)
        assert airflow(env, "db", "migrate").returncode == 0
        # JVM Spark spends about 11 minutes on this small day (its per-query cost, README: Engines).
        state, log = run_day(env, BATCHES[0], timeout=2400)
        assert state == "success", log[-4000:]
        executors = [e for e in _executors(ports["CDP_SPARK_UI_PORT"]) if e["id"] != "driver"]
    finally:
        subprocess.run([*script, "stop", *where], env=stack, capture_output=True, timeout=120)
    summary = json.loads((tmp_path / "lh" / "_runs" / "latest.json").read_text())
    assert (summary["engine"], summary["engine_remote"]) == ("connect", f"sc://127.0.0.1:{ports['CDP_CONNECT_PORT']}")
    assert_same_tables(snapshot(tmp_path / "lh"), reference.after[BATCHES[0]])
    worked = {e["hostPort"] for e in executors if e["totalTasks"] > 0}
    assert len(worked) == 2, executors  # one executor per worker, both ran tasks


ARTIFACTS = Path(__file__).resolve().parent / "_artifacts"


def test_the_scheduler_runs_a_trigger_and_a_backfill_like_one_by_one_and_the_grid_shows_success(reference, tmp_path):
    """The real scheduler (`airflow standalone`): the first day triggered through the REST API v2 with a JWT,
    the next two as a backfill through the API; the tables equal the one-by-one runs; the UI's grid, read in
    headless Chromium, shows every task of every run as success; SIGINT stops every Airflow process."""
    from tests.airflow_standalone import Standalone, read_grid

    af = Standalone(airflow_env(tmp_path, reference.landing))
    assert airflow(af.env, "db", "migrate").returncode == 0
    try:
        af.start()
        dag = wait_for_dag(af, "cdp_daily")
        assert af.api("GET", "/importErrors").json()["total_entries"] == 0
        assert dag["is_paused"] is True  # new DAGs start paused (a deployment unpauses them on purpose)
        assert af.api("PATCH", "/dags/cdp_daily", {"is_paused": False}).json()["is_paused"] is False
        assert requests_without_token(af).status_code == 401

        day = lambda d: f"{d.isoformat()}T00:00:00Z"  # noqa: E731
        bad = af.api("POST", "/dags/cdp_daily/dagRuns", {"logical_date": day(BATCHES[0]), "conf": {"sources": ["fax"]}})
        assert bad.status_code == 400 and "fax" in bad.text, bad.text  # params are checked by their schema
        first = af.api("POST", "/dags/cdp_daily/dagRuns", {
            "dag_run_id": "api_first_day", "logical_date": day(BATCHES[0]), "conf": {},
            "data_interval_start": day(BATCHES[0]), "data_interval_end": day(BATCHES[1])})
        assert first.status_code == 200, first.text
        assert first.json()["data_interval_start"].startswith(BATCHES[0].isoformat())
        assert af.wait_runs("cdp_daily", ["api_first_day"], 900)["api_first_day"]["state"] == "success", af.tail()

        for _ in range(10):
            backfill = af.api("POST", "/backfills", {
                "dag_id": "cdp_daily", "from_date": day(BATCHES[1]), "to_date": day(BATCHES[2]),
                "reprocess_behavior": "failed", "max_active_runs": 1})
            # On SQLite, Airflow answers 503 "Database is locked" while the scheduler holds a write lock
            # (seen once, right after the first run finished); the request is safe to repeat.
            if not (backfill.status_code == 503 and "Database is locked" in backfill.text):
                break
            time.sleep(2)
        assert backfill.status_code == 200, backfill.text
        runs = wait_for_backfill_runs(af, 2)
        assert sorted(r["data_interval_start"][:10] for r in runs) == [b.isoformat() for b in BATCHES[1:]]
        run_ids = ["api_first_day", *(r["dag_run_id"] for r in sorted(runs, key=lambda r: r["logical_date"]))]
        finished = af.wait_runs("cdp_daily", run_ids, 1800)
        assert all(r["state"] == "success" for r in finished.values()), (finished, af.tail())
        for run_id in run_ids:
            states = af.task_states("cdp_daily", run_id)
            assert len(states) == 1 + 6 + 9 and set(states.values()) == {"success"}, (run_id, states)  # sources, 6 ingests, 7 stages, summary, publish

        assert_same_tables(snapshot(tmp_path / "lh"), reference.after[BATCHES[-1]])

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "airflow_grid.png"
        grid = read_grid(af.base, af.token, "cdp_daily", run_ids, shot)
        tasks = {"sources", "ingest", "standardise", "identity", "profiles", "score", "tags", "segments", "analytics", "summary", "publish"}
        for run_id in run_ids:
            assert grid["cells"][run_id] == dict.fromkeys(tasks, "success"), grid["cells"][run_id]
            assert set(grid["tooltips"][run_id]) == tasks
            assert all("State: Success" in text.replace("\n", " ") for text in grid["tooltips"][run_id].values())
            assert "6 Success" in grid["tooltips"][run_id]["ingest"]  # the mapped task: one per source with files
            table = grid["table"][run_id]
            assert len(table) == 16 and {state for *_, state in table} == {"Success"}, table
        assert shot.stat().st_size > 20_000
    finally:
        left = af.stop()
    assert left == [] and af.proc.returncode is not None, left
    # The task logs hold no personal identifier (issue 19): the stages log counts, tokens and masks.
    logs = tmp_path / "airflow" / "logs"
    assert files_under([logs]) >= 3 * 16
    assert hits([logs], world_identifiers(str(tmp_path / "lh"))) == []


def wait_for_dag(af, dag_id: str) -> dict:
    from tests.airflow_standalone import wait_for

    return wait_for(lambda: (r := af.api("GET", f"/dags/{dag_id}")).status_code == 200 and r.json(), 180, f"{dag_id} parsed")


def wait_for_backfill_runs(af, count: int) -> list[dict]:
    from tests.airflow_standalone import wait_for

    def created():
        runs = af.api("GET", "/dags/cdp_daily/dagRuns", run_type="backfill").json()["dag_runs"]
        return runs if len(runs) == count else None

    return wait_for(created, 120, "the backfill's runs")


def requests_without_token(af):
    import requests

    return requests.get(f"{af.base}/api/v2/dags/cdp_daily", timeout=10)
