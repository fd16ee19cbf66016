"""DAG files: import cleanly, stay light at parse time, carry the metadata operators rely on."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spark_jobs.config import CHANNELS

DAGS = Path(__file__).resolve().parent.parent / "dags"


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
    assert {t.task_id for t in dag.tasks} == {"ingest", "standardise", "identity", "profiles", "score", "tags", "segments",
                                              "summary"}
    assert dag.get_task("segments").upstream_task_ids == {"tags"} and dag.get_task("tags").upstream_task_ids == {"score"}


def test_cdp_daily_channels_match_the_config_channels():
    import dags.cdp_daily as module

    assert tuple(module.CHANNELS) == CHANNELS


def test_dag_files_parse_without_heavy_imports():
    """Parsing must not import pyspark, great_expectations or mlflow (Airflow parses DAG files often)."""
    code = (
        "import sys\n"
        "for m in ('pyspark', 'great_expectations', 'mlflow', 'pysail', 'deltalake'): sys.modules[m] = None\n"
        "import importlib.util, pathlib\n"
        f"for p in sorted(pathlib.Path({str(DAGS)!r}).glob('*.py')):\n"
        "    spec = importlib.util.spec_from_file_location(p.stem, p)\n"
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_dag_files_pass_ruff_air_rules():
    ruff = Path(sys.executable).parent / "ruff"
    out = subprocess.run([str(ruff), "check", "--select", "AIR", str(DAGS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
