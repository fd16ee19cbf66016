"""What the Airflow DAGs need from the CDP, kept out of the DAG files (they are wiring only):

- `PUBLISHES`: the tables each task publishes, so the DAGs can declare them as asset outlets / inlets.
  Plain names only: DAG files import this module while Airflow parses them, so nothing heavy
  (pyspark, great_expectations, mlflow) may be imported at the top of this module.
- `engine_config`: the engine a task runs on: the Airflow connection `cdp_spark` (type `spark_connect`)
  when it exists, else the engine of conf/cdp.yaml (the embedded Sail default).
- `run_task`: runs one pipeline stage; a failure that a retry cannot mend fails the task at once.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from spark_jobs.config import CdpConfig

log = logging.getLogger(__name__)

SPARK_CONN_ID = "cdp_spark"  # the Airflow connection a deployment sets to run on a Spark Connect server
SPARK_CONN_TYPE = "spark_connect"  # apache-airflow-providers-apache-spark's Spark Connect connection type
CHANNELS = ("app_events", "wechat", "crm", "orders", "pos", "ad_leads")  # the record models == config.CHANNELS (a test checks)


def declared_sources(path=None) -> list[str]:
    """The source names of conf/sources.yaml, read with PyYAML only (DAG files call this while Airflow
    parses them; the full check of the file is spark_jobs.sources.config's, at run time)."""
    from pathlib import Path

    import yaml

    path = Path(path) if path else Path(__file__).resolve().parent.parent / "conf" / "sources.yaml"
    return sorted((yaml.safe_load(path.read_text()) or {}).get("sources") or {})

# Tables each task of cdp_daily publishes (every gated write also appends its validation results to
# ops_dq_results, an audit table no task owns). A test checks this against the Delta versions each
# stage actually creates.
PUBLISHES: dict[str, tuple[str, ...]] = {
    "ingest": (*(f"bronze_{c}" for c in CHANNELS), "bronze_quarantine", "ops_ingest_files"),
    "standardise": ("silver_events", "silver_orders", "silver_contacts", "silver_identifiers", "silver_id_links"),
    "identity": ("gold_id_map", "gold_id_dropped", "gold_id_decisions", "gold_id_changes"),
    "profiles": ("gold_profiles", "gold_consent", "gold_recent_events"),
    "score": ("gold_scores",),
    "tags": ("gold_tags", "gold_profile_tags"),
    "segments": ("gold_segment_members",),
    "analytics": ("gold_metrics_daily", "gold_funnels", "gold_retention", "gold_transitions", "ops_alerts"),
    "summary": ("ops_runs",),  # the run's manifest, written last
    "features": ("gold_features",),  # cdp_train
    "erase": ("ops_suppressions",),  # cdp_privacy (an erasure also deletes from the others; it publishes this)
}
AUDIT_TABLES = ("ops_dq_results",)
MODELS = ("cdp_churn", "cdp_propensity")  # == conf ml.models values (a test checks)


def asset_uri(table: str) -> str:
    """A deployment-independent URI for a lakehouse table (its layer is its name's prefix)."""
    return f"delta://cdp/{table.split('_', 1)[0]}/{table}"


def model_uri(name: str) -> str:
    return f"mlflow://cdp/models/{name}"


def table_assets(names) -> list:
    """Airflow assets for lakehouse tables (task inlets / outlets)."""
    from airflow.sdk import Asset

    return [Asset(name=t, uri=asset_uri(t), group="cdp") for t in names]


class EngineConnectionError(ValueError):
    """The Airflow connection for the engine exists but cannot be used; the message says why."""


def spark_connect_url(conn_id: str) -> str | None:
    """The Spark Connect URL of Airflow connection `conn_id`, or None when no such connection exists."""
    from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    if conn.conn_type != SPARK_CONN_TYPE:
        raise EngineConnectionError(
            f"Airflow connection {conn_id!r} has type {conn.conn_type!r}; the engine needs type {SPARK_CONN_TYPE!r} "
            f"(e.g. AIRFLOW_CONN_{conn_id.upper()}='spark-connect://host:15002')")
    if not conn.host:
        raise EngineConnectionError(f"Airflow connection {conn_id!r} has no host")
    url = SparkConnectHook(conn_id).get_connection_url()
    return url.removesuffix("/")


def engine_config(cfg: CdpConfig, conn_id: str = SPARK_CONN_ID) -> CdpConfig:
    """`cfg` with its engine taken from Airflow connection `conn_id` when that exists (kind `connect`),
    else `cfg` unchanged (conf/cdp.yaml's engine; the embedded Sail engine by default)."""
    url = spark_connect_url(conn_id)
    if url is None:
        log.info("engine: %s from conf (no Airflow connection %r)", cfg.engine.kind, conn_id)
        return cfg
    log.info("engine: Spark Connect %s from Airflow connection %r", url.split(";")[0], conn_id)
    engine = cfg.engine.model_copy(update={"kind": "connect", "remote": url})
    return cfg.model_copy(update={"engine": engine})


def run_task(stage: str, batch: dt.date, run_id: str, conn_id: str = SPARK_CONN_ID, **kwargs) -> dict:
    """Run one stage for the batch date on the task's engine. A failed quality gate or a bad
    configuration fails the task without retries (the data or the file must be fixed first); anything
    else (the engine or a store unreachable) is left to the task's retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from expectations.gate import QualityGateError
    from spark_jobs.config import ConfigError, load_config
    from spark_jobs.ingest import LandingError
    from spark_jobs.pipeline import run_stage
    from spark_jobs.runs import RunConflictError

    try:
        cfg = engine_config(kwargs.pop("cfg", None) or load_config(), conn_id)
        return run_stage(stage, batch, run_id, cfg=cfg, **kwargs)
    except (QualityGateError, ConfigError, EngineConnectionError, LandingError, RunConflictError) as e:
        raise AirflowFailException(f"{type(e).__name__}: {e}") from e


def run_sources(requested: list[str] | None, batch: dt.date | None = None, run_id: str | None = None,
                allow_out_of_order: bool = False) -> list[str]:
    """The sources a run of cdp_daily ingests (one mapped ingest task each), after claiming the
    lakehouse for the run (released by its summary task) and checking the day's order; fails the task
    when the config is invalid, another run holds the lakehouse, the day is out of order, or nothing
    is left to ingest."""
    from airflow.sdk.exceptions import AirflowFailException

    from spark_jobs import runs
    from spark_jobs.config import ConfigError, load_config

    try:
        cfg = load_config()
    except ConfigError as e:
        raise AirflowFailException(f"ConfigError: {e}") from e
    names = list(requested) if requested else list(cfg.ingest_sources())
    unknown = sorted(set(names) - set(cfg.sources.sources))
    if unknown:
        raise AirflowFailException(f"sources {unknown} are not declared in {cfg.paths.sources}")
    if not names:
        raise AirflowFailException(f"no source to ingest: no landing folder of a source of {cfg.paths.sources} "
                                   f"under {cfg.paths.landing_path()}, and ingest.sources is not set")
    if run_id is not None:
        try:
            runs.acquire(cfg, run_id, batch)  # no pid: the claim outlives this task, until the summary task
            try:
                runs.check_order(cfg, batch, allow_out_of_order, names)
            except runs.RunOrderError:
                runs.release(cfg, run_id)
                raise
        except (runs.RunConflictError, runs.RunOrderError) as e:
            raise AirflowFailException(f"{type(e).__name__}: {e}") from e
    return names


def finish_run(run_id: str, batch: dt.date, started_at: dt.datetime, ti, dag_id: str,
               allow_out_of_order: bool = False) -> None:
    """For cdp_daily's summary task: record the run in ops_runs (complete when every other task
    succeeded, else failed) and release the lakehouse claim."""
    import json

    from spark_jobs import runs
    from spark_jobs.config import load_config

    cfg = load_config()
    try:
        states = ti.get_task_states(dag_id=dag_id, run_ids=[run_id])
        per_task = states.get(run_id, states)
        # Tasks after this one (publish) have not run yet: they do not decide whether the data is complete.
        after = ti.task.get_flat_relative_ids(upstream=False)
        failed = sorted(t for t, s in per_task.items()
                        if t != ti.task_id and t not in after and str(s) not in ("success", "skipped"))
        changed = [f for p in cfg.paths.runs(run_id).glob("ingest-*.json") for f in json.loads(p.read_text()).get("changed_files", [])]
        later = sorted(d for d in runs.run_days(cfg) if d > batch) if (allow_out_of_order or changed) else []
        if failed:
            runs.record_run(cfg, run_id, batch, started_at, "failed", note=f"tasks not successful: {failed}")
        else:
            runs.record_run(cfg, run_id, batch, started_at, "complete", stale=later,
                            note=f"accepted {len(changed)} changed landing file(s)" if changed else None)
    finally:
        runs.clear_staging(cfg, run_id)
        runs.release(cfg, run_id)


def fail_if_upstream_failed(ti, dag_id: str, run_id: str, what: str) -> None:
    """For a run's last task (trigger rule all_done, so it always runs and reports): fail it when another
    task of the run failed. Without this the run would be marked success, because Airflow judges a run
    by its leaf tasks."""
    from airflow.sdk.exceptions import AirflowFailException

    states = ti.get_task_states(dag_id=dag_id, run_ids=[run_id])
    per_task = states.get(run_id, states)
    failed = sorted(t for t, s in per_task.items() if t != ti.task_id and str(s) in ("failed", "upstream_failed"))
    if failed:
        raise AirflowFailException(f"{what} written, but these tasks of the run did not succeed: {failed}")

