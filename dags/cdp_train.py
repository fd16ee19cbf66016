"""
### cdp_train: weekly training of the churn and purchase-propensity models

1. `features`: point-in-time training rows for `ml.cutoffs` cutoffs, `ml.cutoff_step_days` apart, the
   newest `ml.horizon_days` before the data interval's end (features from data up to each cutoff,
   labels from the `horizon_days` after it) into `gold_features`.
2. `train[target]`: LightGBM and a logistic-regression baseline per target (churn, purchase), trained on
   the older cutoffs and evaluated on the newest; everything goes to MLflow; the better model becomes a
   new version of `cdp_churn` / `cdp_propensity` with alias `challenger`.
3. `promote[target]`: the challenger becomes `champion` only if it beats the champion's ROC-AUC on the
   same holdout; `cdp_daily`'s `score` task then uses it.

The MLflow store is `$MLFLOW_TRACKING_URI`, else conf `ml.tracking_uri`, else a SQLite file inside the
project. Wiring only: the logic lives in `ml/`, imported inside the tasks.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

TARGETS = ["churn", "purchase"]  # kept in step with conf ml.models (a test checks)

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
    tags=["cdp", "ml", "weekly"],
    doc_md=__doc__,
)
def cdp_train():
    @task
    def features(data_interval_end=None) -> None:
        """Build gold_features for the cutoffs ending horizon_days before the interval's end."""
        from ml import features as feats
        from spark_jobs.config import load_config
        from spark_jobs.session import spark_session
        from spark_jobs.tables import Lakehouse

        cfg = load_config()
        with spark_session(cfg.engine) as spark:
            lh = Lakehouse(spark, cfg.paths.lakehouse_uri())
            last = data_interval_end.date() - dt.timedelta(days=1 + cfg.ml.horizon_days)
            print(feats.run(lh, cfg, feats.default_cutoffs(lh, cfg, last)))

    @task
    def train(target: str) -> int:
        """Fit, log and register one target's models; returns the new version (the challenger)."""
        from ml import train as training
        from spark_jobs.config import load_config

        result = training.run(load_config(), [target], promote_after=False)[target]
        print({k: v for k, v in result.items() if k != "kinds"})
        return result["version"]

    @task
    def promote(target: str) -> None:
        """Make the challenger the champion if it beats the champion on the same holdout."""
        from ml import train as training
        from ml.tracking import configure
        from spark_jobs.config import load_config

        cfg = load_config()
        configure(cfg.ml)
        frame, _ = training.read_training_set(cfg.paths.lakehouse_uri())
        print(training.promote(cfg, frame, target))

    trained = train.expand(target=TARGETS)
    features() >> trained >> promote.expand(target=TARGETS)


cdp_train()
