"""DAG files: import cleanly, stay light at parse time, carry the metadata operators rely on."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spark_jobs.config import CHANNELS, load_config
from spark_jobs.contracts import CONTRACTS
from spark_jobs.orchestration import AUDIT_TABLES, PUBLISHES, asset_uri

DAGS = Path(__file__).resolve().parent.parent / "dags"
DAG_IDS = {"cdp_daily", "cdp_train", "cdp_maintenance", "cdp_privacy"}


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow")))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_dagbag_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"cdp_daily", "cdp_train"} <= set(dagbag.dag_ids)


def test_cdp_train_features_then_train_then_promote_per_target(dagbag):
    from dags.cdp_train import TARGETS
    from spark_jobs.config import load_config

    dag = dagbag.dags["cdp_train"]
    assert dag.tags and dag.doc_md and dag.max_active_runs == 1 and dag.catchup is False
    assert all(t.owner == "cdp-data-platform" and t.retries >= 1 for t in dag.tasks)
    assert dag.get_task("train").upstream_task_ids == {"features"}
    assert dag.get_task("promote").upstream_task_ids == {"train"}
    assert TARGETS == list(load_config(env={}).ml.models)


def test_cdp_daily_has_owner_retries_tags_docs_and_one_active_run(dagbag):
    dag = dagbag.dags["cdp_daily"]
    assert dag.tags and dag.doc_md and dag.max_active_runs == 1 and dag.catchup is False
    for t in dag.tasks:
        assert t.owner == "cdp-data-platform" and t.retries >= 1, t.task_id
    assert {t.task_id for t in dag.tasks} == {"sources", "ingest", "standardise", "identity", "profiles", "score", "tags",
                                              "segments", "analytics", "summary", "publish"}
    assert dag.get_task("publish").upstream_task_ids == {"summary"}  # the online store gets complete runs only
    assert dag.get_task("ingest").upstream_task_ids == {"sources"}  # mapped over the run's sources
    assert dag.get_task("segments").upstream_task_ids == {"tags"} and dag.get_task("tags").upstream_task_ids == {"score"}
    assert dag.get_task("analytics").upstream_task_ids == {"segments"} and dag.get_task("summary").upstream_task_ids == {"analytics"}


def test_cdp_daily_channels_match_the_config_channels():
    from spark_jobs import orchestration

    assert orchestration.CHANNELS == CHANNELS
    assert orchestration.MODELS == tuple(load_config(env={}).ml.models.values())


HEAVY = ("pyspark", "great_expectations", "mlflow", "pysail", "deltalake", "lightgbm", "sklearn")


def test_dagbag_imports_with_the_heavy_packages_unimportable(tmp_path):
    """Parsing must not import pyspark, great_expectations or mlflow (Airflow parses DAG files often):
    with them made unimportable, the DagBag still loads every DAG without an import error."""
    code = (
        "import json, sys\n"
        f"for m in {HEAVY!r}: sys.modules[m] = None\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS)!r})\n"
        f"heavy = [m for m in {HEAVY!r} if sys.modules.get(m) is not None]\n"
        "print(json.dumps({'errors': {k: str(v)[-300:] for k, v in bag.import_errors.items()}, 'dags': sorted(bag.dag_ids), 'heavy': heavy}))\n"
    )
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"errors": {}, "dags": sorted(DAG_IDS), "heavy": []}


def test_blocking_a_heavy_import_is_noticed(tmp_path):
    """The check above can fail: a DAG file importing pyspark at the top is an import error."""
    bad = tmp_path / "dags"
    bad.mkdir()
    (bad / "bad_dag.py").write_text("import pyspark  # noqa\nfrom airflow.sdk import dag\n\n@dag(dag_id='bad')\ndef bad():\n    pass\n\nbad()\n")
    code = (
        "import sys\nsys.modules['pyspark'] = None\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"print(len(DagBag(dag_folder={str(bad)!r}).import_errors))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                         env={**os.environ, "AIRFLOW_HOME": str(tmp_path)})
    assert out.stdout.strip().splitlines()[-1] == "1", out.stderr[-2000:]


def test_every_dag_has_tags_owner_retries_docs_and_one_active_run(dagbag):
    assert set(dagbag.dag_ids) == DAG_IDS
    for dag in dagbag.dags.values():
        assert dag.tags and "cdp" in dag.tags and dag.doc_md and len(dag.doc_md) > 200, dag.dag_id
        assert dag.max_active_runs == 1 and dag.catchup is False, dag.dag_id
        for t in dag.tasks:
            assert t.owner == "cdp-data-platform" and t.retries >= 1, (dag.dag_id, t.task_id)
            assert t.retry_exponential_backoff and t.max_retry_delay, (dag.dag_id, t.task_id)
            assert t.doc_md or t.doc or (t.python_callable.__doc__ if hasattr(t, "python_callable") else None), t.task_id


def test_cdp_daily_waits_for_the_day_before(dagbag):
    """Identity, segment history and duplicate-file detection build on the previous batch."""
    assert all(t.depends_on_past for t in dagbag.dags["cdp_daily"].tasks)


def _validated(params, conf: dict) -> dict:
    """What a run triggered with `conf` gets: the DAG's params updated, then checked by their schema."""
    merged = copy.deepcopy(params)
    merged.update(conf)
    return merged.validate()


@pytest.mark.parametrize("conf", [
    {"sources": ["fax"]}, {"sources": []}, {"sources": ["crm", "crm"]}, {"spark_conn_id": "bad id!"},
])
def test_cdp_daily_params_are_validated_by_their_schema(dagbag, conf):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = dagbag.dags["cdp_daily"].params
    assert ParamsDict(params).validate()["sources"] is None  # the default (conf's sources) is valid
    assert _validated(params, {"sources": ["crm", "sensors_app"]})["sources"] == ["crm", "sensors_app"]
    with pytest.raises(ParamValidationError):
        _validated(params, conf)


def test_cdp_train_params_are_validated(dagbag):
    from airflow.sdk.exceptions import ParamValidationError

    params = dagbag.dags["cdp_train"].params
    assert _validated(params, {"targets": ["churn"], "promote": False}) == {"targets": ["churn"], "promote": False}
    for bad in ({"targets": ["ltv"]}, {"promote": "yes"}):
        with pytest.raises(ParamValidationError):
            _validated(params, bad)


def test_cdp_maintenance_params_and_tables(dagbag):
    from airflow.sdk.exceptions import ParamValidationError

    from dags.cdp_maintenance import TABLES

    assert set(TABLES) == set(CONTRACTS)
    params = dagbag.dags["cdp_maintenance"].params
    assert _validated(params, {}) == {"tables": [], "retention_hours": None, "dry_run": False}
    assert _validated(params, {"tables": ["gold_tags"], "retention_hours": 240})["retention_hours"] == 240
    for bad in ({"tables": ["gold_nope"]}, {"retention_hours": -1}, {"retention_hours": "a week"}, {"dry_run": "no"}):
        with pytest.raises(ParamValidationError):
            _validated(params, bad)
    dag = dagbag.dags["cdp_maintenance"]
    assert dag.get_task("maintain").upstream_task_ids == {"plan"}
    assert {a.name for a in dag.get_task("maintain").inlets} == set(CONTRACTS)
    assert not any(t.outlets for t in dag.tasks)  # compaction changes no data: nothing downstream should fire


def test_every_table_is_an_asset_published_by_exactly_one_task(dagbag):
    published: dict[str, list[str]] = {}
    for dag in dagbag.dags.values():
        for t in dag.tasks:
            for asset in t.outlets:
                published.setdefault(asset.name, []).append(f"{dag.dag_id}.{t.task_id}")
                if asset.name in CONTRACTS:
                    assert asset.uri == asset_uri(asset.name)
    tables = {n: v for n, v in published.items() if n in CONTRACTS}
    assert set(tables) == set(CONTRACTS) - set(AUDIT_TABLES)
    assert all(len(v) == 1 for v in tables.values()), tables
    daily = dagbag.dags["cdp_daily"]
    for stage, names in PUBLISHES.items():
        if stage not in ("features", "erase"):
            assert {a.name for a in daily.get_task(stage).outlets} == set(names), stage
    assert [a.name for a in dagbag.dags["cdp_privacy"].get_task("erase_queued").outlets] == ["ops_suppressions"]
    assert [a.name for a in dagbag.dags["cdp_train"].get_task("features").outlets] == ["gold_features"]


def test_engine_comes_from_the_spark_connect_connection(monkeypatch):
    from spark_jobs.orchestration import EngineConnectionError, engine_config

    cfg = load_config(env={})
    assert engine_config(cfg, "cdp_spark_missing") is cfg  # no connection: conf's engine (embedded Sail)
    monkeypatch.setenv("AIRFLOW_CONN_CDP_SPARK_TEST", "spark-connect://spark.example:15002?use_ssl=true")
    remote = engine_config(cfg, "cdp_spark_test").engine
    assert (remote.kind, remote.remote) == ("connect", "sc://spark.example:15002/;use_ssl=true")
    monkeypatch.setenv("AIRFLOW_CONN_CDP_SPARK_TEST", "postgres://user:secret@db:5432/cdp")
    with pytest.raises(EngineConnectionError, match="type 'postgres'.*spark_connect"):
        engine_config(cfg, "cdp_spark_test")


def test_dag_files_pass_ruff_air_rules():
    ruff = Path(sys.executable).parent / "ruff"
    out = subprocess.run([str(ruff), "check", "--select", "AIR", str(DAGS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cdp_privacy_erases_the_queue_and_waits_for_a_running_pipeline(dagbag):
    import inspect

    dag = dagbag.dags["cdp_privacy"]
    assert [t.task_id for t in dag.tasks] == ["erase_queued"]
    assert dag.max_active_runs == 1
    source = inspect.getsource(__import__("dags.cdp_privacy", fromlist=["x"]))
    assert "process_queue(load_config(), wait=" in source


def test_the_demos_training_date_covers_the_last_history_day(dagbag):
    """`python -m spark_jobs.dates … --train` (make demo): a manual cdp_train run on that logical date has
    a data interval (cdp_train's own timetable) ending after the history's last day, and at most a week
    after, so the newest snapshot its features read is that day's, whatever the weekday."""
    import datetime as dt

    import pendulum

    from spark_jobs.dates import training_logical_date

    timetable = dagbag.dags["cdp_train"].timetable
    for last in (dt.date(2026, 12, 6) + dt.timedelta(days=k) for k in range(7)):
        run_after = pendulum.instance(training_logical_date(last))
        end = timetable.infer_manual_data_interval(run_after=run_after).end.date()
        assert last < end <= last + dt.timedelta(days=7), (last, end)
