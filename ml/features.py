"""Point-in-time features and labels for the churn and propensity models: reads gold_profiles, the
attributed activity (spark_jobs.activity) and gold_id_map; computes the feature tags with the tag
engine as of each cutoff; writes gold_features. The same builder feeds scoring (ml/score.py)."""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ml.splits import LeakError, check_layout
from spark_jobs import tags as tag_engine
from spark_jobs.activity import read_activity
from spark_jobs.config import CdpConfig, MlConfig
from spark_jobs.contracts import features_contract
from spark_jobs.tables import Lakehouse, latest_partition
from spark_jobs.tag_config import TagsConfig, check_tags

log = logging.getLogger(__name__)


class FeatureError(ValueError):
    """A training set cannot be built for the requested cutoffs (data missing or too short)."""


def feature_types(cfg: CdpConfig) -> dict[str, str]:
    """Feature column -> type: the numeric features, then the categorical ones (strings)."""
    return {**{n: cfg.tags.types[n] for n in cfg.ml.features}, **{n: "string" for n in cfg.ml.categorical}}


def without_predicted(tags: TagsConfig) -> TagsConfig:
    """The tag set minus model scores and every rule that reads them: features never see a model's output."""
    dropped = {o for t in tags.tags if t.kind == "predicted" for o in t.outputs()}
    kept = list(tags.tags)
    changed = True
    while changed:
        changed = False
        for t in list(kept):
            if t.kind == "rule" and t.rule().names() & dropped:
                kept.remove(t)
                dropped.add(t.name)
                changed = True
    return check_tags(TagsConfig(tags=tuple(t for t in kept if t.kind != "predicted")))


def build_features(lh: Lakehouse, cfg: CdpConfig, as_of: dt.date, stage_key: str) -> DataFrame:
    """person_id and every feature as of `as_of` (every person of that day's profiles). Intermediates are
    staged under `stage_key`; the caller unstages it."""
    profiles = lh.read_partition("gold_profiles", {"as_of": as_of}, f"run the profiles stage for {as_of} first")
    activity = read_activity(lh, as_of, cfg.standardise.timezone, stage_key, cfg.identity.priority)
    activity.events = lh.stage(f"{stage_key}/events", activity.events)
    activity.orders = lh.stage(f"{stage_key}/orders", activity.orders)
    tags = without_predicted(cfg.tags)
    no_scores = lh.spark.createDataFrame([], "person_id string, model string, version string, score double, "
                                             "decile long, as_of date")
    wide = tag_engine.build_profile_tags(profiles, activity, no_scores, tags, as_of, cfg.standardise.timezone)
    types = feature_types(cfg)
    return wide.select("person_id", *[F.col(n).cast(t).alias(n) for n, t in types.items()])


def build_labels(lh: Lakehouse, cfg: CdpConfig, cutoff: dt.date, stage_key: str) -> DataFrame:
    """person_id, activity and orders in (cutoff, cutoff + horizon], attributed with the One-ID snapshot
    of the horizon's last day."""
    end = cutoff + dt.timedelta(days=cfg.ml.horizon_days)
    future = read_activity(lh, end, cfg.standardise.timezone, stage_key, cfg.identity.priority).activity()
    return future.where(F.col("date") > F.lit(cutoff)).groupBy("person_id").agg(
        F.count(F.lit(1)).alias("__acts"), F.count(F.when(F.col("action") == "order", 1)).alias("__orders"))


def with_labels(features: DataFrame, labels: DataFrame, cfg: CdpConfig, cutoff: dt.date) -> DataFrame:
    """gold_features rows of one cutoff: churn is defined for people active in the `active_days` before
    the cutoff (NULL otherwise); purchase for everyone."""
    active = F.col("days_since_last_active") < cfg.ml.active_days
    joined = features.join(labels, "person_id", "left")
    types = feature_types(cfg)
    return joined.select(
        "person_id", F.lit(cutoff).alias("cutoff"), F.lit(cfg.ml.horizon_days).cast("long").alias("horizon_days"),
        *types,
        F.when(active, (F.coalesce(F.col("__acts"), F.lit(0)) == 0).cast("long")).alias("label_churn"),
        (F.coalesce(F.col("__orders"), F.lit(0)) > 0).cast("long").alias("label_purchase"),
    )


def cutoff_layout(last: dt.date, ml: MlConfig) -> list[dt.date]:
    """`ml.cutoffs` cutoffs ending at `last`, oldest first, with no training label window overlapping a
    holdout's: the newest `ml.holdouts` (the rolling origins) are max(step, horizon) apart, and the
    training cutoffs `ml.cutoff_step_days` apart end that gap before the oldest holdout (an embargo)."""
    gap = max(ml.cutoff_step_days, ml.horizon_days)
    holdouts = min(ml.holdouts, ml.cutoffs - 1)
    origins = [last - dt.timedelta(days=gap * k) for k in range(holdouts)]
    first_train = origins[-1] - dt.timedelta(days=gap)
    train = [first_train - dt.timedelta(days=ml.cutoff_step_days * k) for k in range(ml.cutoffs - holdouts)]
    return sorted(train + origins)


def snapshot_days(cutoffs: list[dt.date], horizon_days: int) -> list[dt.date]:
    """The days a One-ID snapshot and profiles must exist for: every cutoff and every horizon's end."""
    return sorted({*cutoffs, *(c + dt.timedelta(days=horizon_days) for c in cutoffs)})


def training_snapshot_days(newest: dt.date, ml: MlConfig) -> list[dt.date]:
    """The snapshot days a training run on the newest snapshot `newest` reads (`default_cutoffs`'s
    layout): what a history load must end its batches on (`cdp load-history --for-training`)."""
    return snapshot_days(cutoff_layout(newest - dt.timedelta(days=ml.horizon_days), ml), ml.horizon_days)


def default_cutoffs(lh: Lakehouse, cfg: CdpConfig, last: dt.date | None = None) -> list[dt.date]:
    """The cutoff layout (`cutoff_layout`) whose newest cutoff is `horizon_days` before the newest
    One-ID snapshot (or `last`), oldest first."""
    if last is None:
        newest = latest_partition(lh.root, "gold_id_map", "as_of", version=lh.pinned.get("gold_id_map"))
        if newest is None:
            raise FeatureError("no One-ID snapshot yet: run cdp_daily first")
        last = dt.date.fromisoformat(str(newest)) - dt.timedelta(days=cfg.ml.horizon_days)
    return cutoff_layout(last, cfg.ml)


def run(lh: Lakehouse, cfg: CdpConfig, cutoffs: list[dt.date]) -> dict:
    """Build the training set for `cutoffs` and replace gold_features with it; returns figures."""
    for c in cutoffs:
        end = c + dt.timedelta(days=cfg.ml.horizon_days)
        for day, why in ((c, "features"), (end, "labels")):
            if not lh.has_partition("gold_id_map", {"as_of": day}):
                raise FeatureError(f"cutoff {c}: no One-ID snapshot for {day} ({why}); run cdp_daily for it "
                                   f"or choose other cutoffs (cdp ml features --last-cutoff)")
    try:
        check_layout(cutoffs, cfg.ml.horizon_days)
    except LeakError as e:
        log.warning("%s; training will purge them", e)
    parts = []
    key = f"features/{cutoffs[-1].isoformat()}"
    try:
        for c in cutoffs:
            log.info("features as of %s, labels to %s", c, c + dt.timedelta(days=cfg.ml.horizon_days))
            rows = with_labels(build_features(lh, cfg, c, f"{key}/{c}"), build_labels(lh, cfg, c, f"{key}/labels-{c}"),
                               cfg, c)
            parts.append(lh.stage(f"{key}/rows-{c}", rows))
        frame = parts[0]
        for p in parts[1:]:
            frame = frame.unionByName(p)
        lh.write_table("gold_features", frame, features_contract(feature_types(cfg)))
    finally:
        lh.unstage(key)
    stats = {r["cutoff"].isoformat(): r.asDict() for r in lh.read("gold_features").groupBy("cutoff").agg(
        F.count(F.lit(1)).alias("rows"), F.count("label_churn").alias("churn_rows"),
        F.avg("label_churn").alias("churn_rate"), F.avg("label_purchase").alias("purchase_rate")).collect()}
    for v in stats.values():
        v.pop("cutoff")
    return {"cutoffs": stats, "version": lh.version("gold_features")}
