"""
### cdp_daily: the CDP's daily batch

For the run's batch date (the **data interval start**, never `now()`):

1. `sources` → `ingest[source]`: `sources` claims the lakehouse for the run (one writer at a time: a
   second run fails at once) and checks the day's order, then lists the sources of `conf/sources.yaml`
   that have landing folders (or `params.sources`); each source's landing/&lt;source&gt;/&lt;date&gt;/ files into
   `bronze_<model>` (the record model it feeds); records that do not read exactly, or break a record
   rule, to `bronze_quarantine` with a reason; per-file accounting in `ops_ingest_files` (duplicate
   files and records already loaded load nothing; skipped and refused entries are listed).
2. `standardise`: bronze into `silver_events`, `silver_orders`, `silver_contacts`,
   `silver_identifiers`, `silver_id_links`.
3. `identity`: One-ID over all identifiers seen so far: blocklists, hub rules and per-person limits
   (audited in `gold_id_dropped`), connected components, stable person ids (`gold_id_map` snapshot
   per batch, merges and splits in `gold_id_changes`).
4. `profiles`: the golden record per person (`gold_profiles`), each attribute by its survivorship rule.
5. `score`: each `champion` model of the MLflow registry (`cdp_churn`, `cdp_propensity`) scores every
   person (`gold_scores`); skipped until the `cdp_train` DAG has promoted one.
6. `tags`: every tag of `conf/tags.yaml` as of the batch date (`gold_tags` long, `gold_profile_tags` wide).
7. `segments`: the audiences of `conf/segments.yaml` (`gold_segment_members`: entered / stayed / left)
   and their export files under `exports/<segment>/<date>/`.
8. `analytics`: the analyses of `conf/analytics.yaml` as of the batch date: metrics by dimension
   (`gold_metrics_daily`), funnels (`gold_funnels`), retention cohorts (`gold_retention`), lifecycle and
   segment transitions from the previous date (`gold_transitions`), and anomaly alerts: each metric series
   forecast from its history, a point outside the interval a row of `ops_alerts` with its drill-down;
   the alerts are POSTed as JSON to the Airflow connection `cdp_alerts_webhook` (type http/https) when it exists.
9. `summary` (runs even when a stage failed, and then fails too so that the run is marked failed):
   records the run in `ops_runs` (complete, with the Delta version of every table, only when every task
   succeeded: the snapshot consistent readers pin) and releases the lakehouse; rows per table, rows
   quarantined, identity, profile, tag, segment and quality figures, seconds per stage, days needing a
   re-run, into `lakehouse/_runs/latest.json`; rebuilds the Great Expectations Data Docs; writes the run
   report `lakehouse/_runs/<run>/report.html` (self-contained: charts of the tables, quality, metrics with
   forecast bands and alerts, funnels, retention, transitions).
10. `publish` (only after a complete run): the newest profiles, tags, scores, audience members and
   identifier map (at the versions ops_runs recorded) into the online store that `cdp serve` reads (`serving/`), in one atomic swap.

Quality gates: every table write is validated by its Great Expectations suite before it is published.
A critical failure fails the task without retries (the data would not change; the log names the
table, the expectation and bad values) and leaves the table as it was; warnings are recorded in
`ops_dq_results`.

**Engine**: the Airflow connection `cdp_spark` (type *Spark Connect*, e.g.
`AIRFLOW_CONN_CDP_SPARK='spark-connect://spark-connect:15002'`) when it exists, else conf/cdp.yaml's
engine (the embedded Sail engine by default). The `spark_conn_id` param picks another connection.

**Params** (trigger form, validated by their schema): `sources` to ingest (null: all with landing
folders), `allow_out_of_order` (run a day before days already run; they are recorded as needing a
re-run), `accept_changed_files` (take landing files that changed since a run ingested them),
`spark_conn_id`.

**Re-runs and backfills**: every task replaces exactly its batch's partitions, so re-running a day (or
clearing a failed one) repairs it without duplicates. Identity, segments and duplicate-file detection
build on the previous batch, so every task waits for its own run of the day before
(`depends_on_past`): a backfill over a range gives the same tables as running the days one by one.
Each task publishes its tables as assets (`delta://cdp/<layer>/<table>`).
Wiring only: the logic lives in `spark_jobs`, imported inside the tasks.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from spark_jobs.analytics.notify import AlertWebhookNotifier
from spark_jobs.orchestration import PUBLISHES, SPARK_CONN_ID, declared_sources, table_assets

default_args = {
    "owner": "cdp-data-platform",
    "depends_on_past": True,  # each batch builds on the previous one (ids, segment history, duplicates)
    "retries": 2,
    "retry_delay": dt.timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=10),
}


def tables(stage: str) -> list:
    return table_assets(PUBLISHES[stage])


@dag(
    dag_id="cdp_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    params={
        "sources": Param(
            None, type=["null", "array"], items={"type": "string", "enum": declared_sources()}, minItems=1,
            uniqueItems=True, title="Sources to ingest",
            description="Sources of conf/sources.yaml to ingest (e.g. re-load one source's day); null: conf's "
                        "ingest.sources (by default every declared source with a landing folder).",
        ),
        "allow_out_of_order": Param(
            False, type="boolean", title="Allow out of order",
            description="Run this day although later days were run (a backfill of one past day): the later days are "
                        "recorded in ops_runs as needing a re-run.",
        ),
        "accept_changed_files": Param(
            False, type="boolean", title="Accept changed landing files",
            description="Take the new content of landing files that changed or disappeared since an earlier run of "
                        "this day ingested them (recorded in ops_ingest_files); later days then need a re-run.",
        ),
        "spark_conn_id": Param(
            SPARK_CONN_ID, type="string", pattern=r"^[A-Za-z0-9_.-]+$", title="Spark Connect connection",
            description="Airflow connection of type Spark Connect to run on; when it does not exist, conf/cdp.yaml's "
                        "engine (embedded Sail by default).",
        ),
    },
    tags=["cdp", "daily"],
    doc_md=__doc__,
)
def cdp_daily():
    @task
    def sources(data_interval_start=None, run_id=None, params=None) -> list[str]:
        """Claim the lakehouse for this run (one writer at a time; the summary task releases it), check
        the day's order, and list the sources this run ingests: params.sources, else conf's
        ingest.sources (by default every declared source that has a landing folder)."""
        from spark_jobs.orchestration import run_sources

        return run_sources(params["sources"], data_interval_start.date(), run_id, params["allow_out_of_order"])

    @task(max_active_tis_per_dagrun=2, outlets=tables("ingest"))
    def ingest(channel: str, data_interval_start=None, run_id=None, dag_run=None, params=None) -> None:
        """Load one source's files of the batch date into bronze."""
        from spark_jobs.orchestration import run_task

        run_task("ingest", data_interval_start.date(), run_id, params["spark_conn_id"], channel=channel,
                 started_at=dag_run.start_date, accept_changed_files=params["accept_changed_files"])

    @task(trigger_rule="none_failed")
    def stage(name: str, data_interval_start=None, run_id=None, dag_run=None, params=None) -> None:
        """Run one stage of spark_jobs.pipeline for the batch date (the data interval start)."""
        from spark_jobs.orchestration import run_task

        run_task(name, data_interval_start.date(), run_id, params["spark_conn_id"], started_at=dag_run.start_date)

    def step(name: str, doc: str):
        return stage.override(task_id=name, doc_md=doc, outlets=tables(name))(name)

    @task(trigger_rule="all_done", outlets=tables("summary"))
    def summary(data_interval_start=None, run_id=None, dag_run=None, ti=None, params=None) -> None:
        """Record the run in ops_runs (complete only when every task succeeded: the manifest consistent
        readers use), release the lakehouse, merge the stages' figures into lakehouse/_runs/latest.json
        and print them; runs even when a stage failed, and then fails too, so that the run is marked failed."""
        from spark_jobs.orchestration import fail_if_upstream_failed, finish_run
        from spark_jobs.pipeline import render_summary, summarise

        finish_run(run_id, data_interval_start.date(), dag_run.start_date, ti, "cdp_daily", params["allow_out_of_order"])
        print(render_summary(summarise(run_id)))
        fail_if_upstream_failed(ti, "cdp_daily", run_id, "the run summary")

    @task
    def publish() -> None:
        """Publish the newest gold marts at the versions of the last complete run (ops_runs, just recorded by
        the summary) to the online store `cdp serve` reads: one atomic swap, so API readers never see a mix
        of two days (a backfilled past day republishes the newest one). Runs only when the run completed."""
        from serving.publish import publish_config
        from spark_jobs.config import load_config

        print(publish_config(load_config()))

    (
        ingest.expand(channel=sources())
        >> step("standardise", "Bronze to silver: one event model, orders, contacts, canonical identifiers and links.")
        >> step("identity", "One-ID: stable person ids (gold_id_map, gold_id_dropped, gold_id_decisions, gold_id_changes).")
        >> step("profiles", "The golden record per person (gold_profiles) from the One-ID snapshot of the batch date.")
        >> step("score", "Champion models score every person (gold_scores); predicted tags read them.")
        >> step("tags", "Every tag of conf/tags.yaml as of the batch date (gold_tags, gold_profile_tags).")
        >> step("segments", "Segment membership (gold_segment_members) and exports for conf/segments.yaml.")
        >> stage.override(task_id="analytics", outlets=tables("analytics"), on_success_callback=AlertWebhookNotifier(),
                          doc_md="Metrics, funnels, retention and transitions of conf/analytics.yaml (gold_metrics_daily, "
                                 "gold_funnels, gold_retention, gold_transitions) and anomaly alerts (ops_alerts), POSTed to "
                                 "the Airflow connection `cdp_alerts_webhook` when it exists.")("analytics")
        >> summary()
        >> publish()
    )


cdp_daily()
