"""Batch scoring: loads each target's `champion` model from the MLflow registry, computes the features
of the as-of date (ml/features.py, the training code path), scores every person on the Spark engine with
mlflow.pyfunc.spark_udf, and writes gold_scores (person, model, version, score, decile, as_of)."""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import functions as F

from ml.features import build_features, feature_types
from spark_jobs.config import CdpConfig
from spark_jobs.tables import Lakehouse
from spark_jobs.tags import quantile_score

log = logging.getLogger(__name__)


def champions(cfg: CdpConfig) -> dict[str, tuple[str, int]]:
    """target -> (model name, champion version), for the targets that have a champion."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    found = {}
    for target, name in cfg.ml.models.items():
        try:
            found[target] = (name, int(client.get_model_version_by_alias(name, "champion").version))
        except MlflowException:
            log.warning("no champion for %s yet: not scored (run the cdp_train DAG or `cdp ml train`)", name)
    return found


def run(lh: Lakehouse, cfg: CdpConfig, as_of: dt.date) -> dict:
    """Score every person as of `as_of` with each champion; one gold_scores partition per model."""
    import mlflow.pyfunc

    from ml.tracking import configure

    configure(cfg.ml)
    models = champions(cfg)
    if not models:
        return {"scores": {}, "skipped": sorted(cfg.ml.models.values()), "tables": {}}
    key = f"score/{as_of.isoformat()}"
    types = feature_types(cfg)
    try:
        feats = build_features(lh, cfg, as_of, key)
        feats = lh.stage(f"{key}/features", feats.select(
            "person_id", *[F.col(c).cast("double" if t != "string" else "string").alias(c) for c, t in types.items()]))
        out, rows = {}, 0
        for name, version in models.values():
            udf = mlflow.pyfunc.spark_udf(lh.spark, f"models:/{name}/{version}", result_type="double", env_manager="local")
            scored = lh.stage(f"{key}/{name}", feats.select("person_id", udf(*[F.col(c) for c in types]).alias("score")))
            frame = scored.select(
                "person_id", F.lit(name).alias("model"), F.lit(str(version)).alias("version"), "score",
                quantile_score(F.col("score"), 10).alias("decile"), F.lit(as_of).alias("as_of"),
            )
            lh.write_partition("gold_scores", frame, {"as_of": as_of, "model": name})
            stats = lh.read("gold_scores", {"as_of": as_of, "model": name}).agg(
                F.count(F.lit(1)).alias("people"), F.avg("score").alias("mean_score")).first()
            out[name] = {"version": version, "people": stats["people"], "mean_score": round(stats["mean_score"] or 0, 4)}
            rows += stats["people"]
    finally:
        lh.unstage(key)
    return {"scores": out, "skipped": sorted(set(cfg.ml.models.values()) - set(out)), "tables": {"gold_scores": rows}}
