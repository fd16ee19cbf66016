"""
### cdp_maintenance: weekly Delta table upkeep (compaction, vacuum, log checkpoints)

Sail has no OPTIMIZE or VACUUM, so this runs through `deltalake` (delta-rs) on the same tables, with no
Spark session:

1. `plan`: the tables to maintain: every CDP table that exists, or the `tables` param.
2. `maintain[table]`: bin-packing compaction of each partition's small files (a commit with
   `dataChange=false`: readers see the same rows), then vacuum of the files no version inside the
   retention window uses, then a log checkpoint and old-log cleanup.
3. `report` (runs even when a table failed, and then fails too): the figures per table into
   `lakehouse/_runs/<run_id>/maintenance.json` and `lakehouse/_runs/latest-maintenance.json`.

**Params** (validated by their schema): `tables` (empty: all), `retention_hours` (empty: conf
`maintenance.retention_hours`, 168 h = 7 days; time travel reaches back this far; below
`maintenance.min_retention_hours` is refused), `dry_run` (list what would be compacted and deleted).

Runs Sunday 06:00 UTC, away from `cdp_daily` (00:00): a daily write that commits while a table is being
compacted makes that table's compaction fail with a commit conflict. Nothing half-done is left, and the
retry (with backoff) redoes it; every step is idempotent.
Wiring only: the logic lives in `spark_jobs.maintenance`, imported inside the tasks.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from spark_jobs.orchestration import AUDIT_TABLES, PUBLISHES, table_assets

TABLES = sorted({*(t for names in PUBLISHES.values() for t in names), *AUDIT_TABLES})

default_args = {
    "owner": "cdp-data-platform",
    "retries": 3,
    "retry_delay": dt.timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=30),
}


@dag(
    dag_id="cdp_maintenance",
    schedule=CronDataIntervalTimetable("0 6 * * 0", timezone="UTC"),
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    params={
        "tables": Param([], type="array", items={"type": "string", "enum": TABLES}, uniqueItems=True,
                        title="Tables", description="Empty: every table that exists."),
        "retention_hours": Param(None, type=["null", "integer"], minimum=0, maximum=24 * 365, title="Vacuum retention (hours)",
                                 description="Empty: conf maintenance.retention_hours. Below maintenance.min_retention_hours "
                                             "is refused."),
        "dry_run": Param(False, type="boolean", title="Dry run", description="Report only; change nothing."),
    },
    tags=["cdp", "maintenance", "weekly"],
    doc_md=__doc__,
)
def cdp_maintenance():
    @task
    def plan(params=None) -> list[str]:
        """The names of the tables to maintain (names only in XCom)."""
        from airflow.sdk.exceptions import AirflowFailException

        from spark_jobs import maintenance
        from spark_jobs.config import load_config

        existing = maintenance.tables(load_config().paths.lakehouse_uri())
        missing = [t for t in params["tables"] if t not in existing]
        if missing:
            raise AirflowFailException(f"table(s) {missing} do not exist yet: run the stages that write them first")
        return list(params["tables"]) or existing

    @task(max_active_tis_per_dagrun=2, inlets=table_assets(TABLES))
    def maintain(table: str, run_id=None, params=None) -> dict:
        """Compact, vacuum and checkpoint one table; returns its totals (a few numbers)."""
        import json

        from airflow.sdk.exceptions import AirflowFailException

        from spark_jobs import maintenance
        from spark_jobs.config import load_config
        cfg = load_config()
        try:
            result = maintenance.run(cfg, [table], params["retention_hours"], dry_run=params["dry_run"])
        except maintenance.MaintenanceError as e:  # a refused retention: a retry would not change it
            raise AirflowFailException(f"MaintenanceError: {e}") from e
        out = cfg.paths.runs(run_id) / f"maintenance-{table}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str))
        print(json.dumps(result["totals"]))
        return result["totals"]

    @task(trigger_rule="all_done")
    def report(run_id=None, ti=None) -> None:
        """Merge the tables' figures into _runs/<run_id>/maintenance.json and latest-maintenance.json."""
        from airflow.sdk.exceptions import AirflowFailException

        from spark_jobs.config import load_config
        from spark_jobs.maintenance import MaintenanceError, render_report, summarise_runs
        from spark_jobs.orchestration import fail_if_upstream_failed

        try:
            print(render_report(summarise_runs(load_config().paths.runs(run_id))))
        except MaintenanceError as e:  # no table recorded figures: their tasks' logs say why; a retry cannot help
            raise AirflowFailException(str(e)) from e
        fail_if_upstream_failed(ti, "cdp_maintenance", run_id, "the maintenance report")

    maintain.expand(table=plan()) >> report()


cdp_maintenance()
