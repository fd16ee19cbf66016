"""
### cdp_privacy: carry out the queued erasure requests (right to be forgotten)

1. `erase_queued`: every request `cdp erase --queue <id_type> <value>` (or `--person`) left under
   `<lakehouse>/_privacy/requests/`, oldest first. Each one finds the person through One-ID, deletes their
   rows from every table (redacts ops tables), drops them from the exports, redacts run records, Data
   Docs and logs, republishes the online store, records their suppressions (keyed tokens; ingest then
   counts a re-delivered record as suppressed and loads nothing), and, if the request asked for it,
   purges old Delta versions at once. A request that fails stays queued with its error beside it.

Runs hourly and waits up to 30 minutes for a running `cdp_daily` to release the lakehouse; erasure
needs the token key (`CDP_TOKEN_KEY` or `CDP_TOKEN_KEY_FILE`) in the worker's environment. The report of
each request (tables and row counts, no identifier) is `<lakehouse>/_runs/<request>/erasure.json`.
Wiring only: the logic lives in `spark_jobs/privacy/erase.py`, imported inside the task.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from spark_jobs.orchestration import PUBLISHES, table_assets

default_args = {
    "owner": "cdp-data-platform",
    "retries": 2,
    "retry_delay": dt.timedelta(minutes=5),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=30),
}


@dag(
    dag_id="cdp_privacy",
    schedule=CronDataIntervalTimetable("17 * * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["cdp", "privacy"],
    doc_md=__doc__,
)
def cdp_privacy():
    @task(outlets=table_assets(PUBLISHES["erase"]))
    def erase_queued() -> dict:
        """Carry out every queued erasure request; returns counts only (no identifier in XCom)."""
        from spark_jobs.config import load_config
        from spark_jobs.privacy.erase import process_queue

        reports = process_queue(load_config(), wait=1800)
        return {"requests": len(reports),
                "rows_deleted": sum(t.get("rows_deleted", 0) for r in reports for t in r["tables"])}

    erase_queued()


cdp_privacy()
