"""
### cdp_train: weekly training of the churn and purchase-propensity models

1. `features`: point-in-time training rows for `ml.cutoffs` cutoffs, `ml.cutoff_step_days` apart, the
   newest `ml.horizon_days` before the newest One-ID snapshot of the data interval (features from data up to each cutoff,
   labels from the `horizon_days` after it) into `gold_features`; no training cutoff's labels overlap the
   holdout's (an embargo of max(step, horizon) days, `ml/features.cutoff_layout`).
2. `train[target]`: LightGBM and a logistic-regression baseline per target (churn, purchase), trained on
   the older cutoffs and evaluated on the newest; everything goes to MLflow; the better model becomes a
   new version of `cdp_churn` / `cdp_propensity` with alias `challenger`.
3. `promote[target]`: the challenger becomes `champion` only if it beats the champion's ROC-AUC on the
   same holdout, and the best BTYD baseline's (BG/NBD, Pareto/NBD); `cdp_daily`'s `score` task then uses it.

**Params** (validated by their schema): `targets` to train, `promote` (false: register challengers only).
The engine is chosen as in `cdp_daily` (Airflow connection `cdp_spark`, else conf). Assets: `features`
reads the gold tables and publishes `gold_features`; `promote` publishes the registered models.

The MLflow store is `$MLFLOW_TRACKING_URI`, else conf `ml.tracking_uri`, else a SQLite file inside the
project. Wiring only: the logic lives in `ml/`, imported inside the tasks.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

from spark_jobs.orchestration import MODELS, PUBLISHES, SPARK_CONN_ID, model_uri, table_assets

TARGETS = ["churn", "purchase"]  # kept in step with conf ml.models (a test checks)
FEATURE_INPUTS = ("silver_events", "silver_orders", "silver_contacts", "gold_id_map", "gold_profiles")

default_args = {
    "owner": "cdp-data-platform",
    "retries": 1,
    "retry_delay": dt.timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=20),
}


@dag(
    dag_id="cdp_train",
    schedule=CronDataIntervalTimetable("0 3 * * 1", timezone="UTC"),
    start_date=dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    params={
        "targets": Param(TARGETS, type="array", items={"type": "string", "enum": TARGETS}, minItems=1, uniqueItems=True,
                         title="Targets to train"),
        "promote": Param(True, type="boolean", title="Promote",
                         description="Make a better challenger the champion (false: register it only)."),
    },
    tags=["cdp", "ml", "weekly"],
    doc_md=__doc__,
)
def cdp_train():
    @task(inlets=table_assets(FEATURE_INPUTS), outlets=table_assets(PUBLISHES["features"]))
    def features(data_interval_end=None) -> None:
        """Build gold_features for the cutoffs ending horizon_days before the newest snapshot in the interval."""
        from airflow.sdk.exceptions import AirflowFailException

        from ml import features as feats
        from spark_jobs import runs
        from spark_jobs.config import load_config
        from spark_jobs.orchestration import engine_config
        from spark_jobs.session import spark_session
        from spark_jobs.tables import Lakehouse, latest_partition

        cfg = engine_config(load_config(), SPARK_CONN_ID)
        newest = latest_partition(cfg.paths.lakehouse_uri(), "gold_id_map", "as_of", before=data_interval_end.date())
        if newest is None:
            raise AirflowFailException(f"no One-ID snapshot before {data_interval_end.date()}: run cdp_daily first")
        # The newest cutoff whose labels are complete: horizon_days before the newest snapshot in the interval.
        last = dt.date.fromisoformat(str(newest)) - dt.timedelta(days=cfg.ml.horizon_days)
        # The tables as of the last complete cdp_daily run (ops_runs), never a half-published day.
        pinned = runs.pinned_versions(cfg, writes=PUBLISHES["features"])
        with spark_session(cfg.engine, cfg.paths.on_object_store()) as spark:
            lh = Lakehouse(spark, cfg.paths.lakehouse_uri(), pinned=pinned)
            print(feats.run(lh, cfg, feats.default_cutoffs(lh, cfg, last)))

    @task(inlets=table_assets(PUBLISHES["features"]))
    def train(target: str, params=None) -> None:
        """Fit, log and register one target's models; the new version becomes the challenger."""
        from airflow.sdk.exceptions import AirflowSkipException

        from ml import train as training
        from spark_jobs.config import load_config

        if target not in params["targets"]:
            raise AirflowSkipException(f"{target} is not in this run's params.targets")
        result = training.run(load_config(), [target], promote_after=False)[target]
        print({k: v for k, v in result.items() if k != "kinds"})

    @task(trigger_rule="none_failed", outlets=[Asset(name=m, uri=model_uri(m), group="cdp_models") for m in MODELS])
    def promote(target: str, params=None) -> None:
        """Make the challenger the champion if it beats the champion on the same holdout."""
        from airflow.sdk.exceptions import AirflowSkipException

        from ml import train as training
        from ml.tracking import configure
        from spark_jobs.config import load_config

        if target not in params["targets"] or not params["promote"]:
            raise AirflowSkipException(f"{target}: not promoted in this run (params)")
        cfg = load_config()
        configure(cfg.ml)
        frame, _ = training.read_training_set(cfg.paths.lakehouse_uri())
        print(training.promote(cfg, frame, target))

    features() >> train.expand(target=TARGETS) >> promote.expand(target=TARGETS)


cdp_train()
