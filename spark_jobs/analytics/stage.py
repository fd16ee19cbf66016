"""The analytics stage: reads the attributed activity (spark_jobs.activity), gold_profiles, gold_tags and
gold_segment_members of the as-of date (and of the previous one for transitions) and the history of
gold_metrics_daily; writes gold_metrics_daily, gold_funnels, gold_retention, gold_transitions and ops_alerts,
each one as_of partition (re-runs replace it)."""

from __future__ import annotations

import datetime as dt
import logging
from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs.activity import local_date, read_activity
from spark_jobs.analytics import alerts as alerting
from spark_jobs.analytics import marts
from spark_jobs.analytics.config import TOTAL, AnalyticsConfig
from spark_jobs.config import CdpConfig
from spark_jobs.contracts import contract
from spark_jobs.tables import Lakehouse, latest_partition
from spark_jobs.tags import read_tag_columns

log = logging.getLogger(__name__)
TABLES = ("gold_metrics_daily", "gold_funnels", "gold_retention", "gold_transitions", "ops_alerts")


def _empty(lh: Lakehouse, table: str) -> DataFrame:
    return lh.spark.createDataFrame([], contract(table).schema())


def _union(lh: Lakehouse, table: str, frames: list[DataFrame]) -> DataFrame:
    return reduce(DataFrame.unionByName, frames) if frames else _empty(lh, table)


def first_dates(profiles: DataFrame, timezone: str) -> DataFrame:
    """person_id, first_date: the local day of the golden record's first_seen (a record or a registration)."""
    return profiles.select("person_id", F.to_date(F.from_utc_timestamp("first_seen", timezone)).alias("first_date"))


def _transition_states(lh: Lakehouse, spec, day: dt.date) -> DataFrame:
    if spec.kind == "tag":
        return (lh.read("gold_tags", {"as_of": day}).where(F.col("tag") == spec.tag)
                .select("person_id", F.col("value").alias("state")))
    return marts.segment_states(lh.read("gold_segment_members", {"as_of": day}), spec.segments)


def _people(lh: Lakehouse, day: dt.date) -> DataFrame:
    if lh.has_partition("gold_profiles", {"as_of": day}):
        return lh.read("gold_profiles", {"as_of": day}).select("person_id")
    return lh.spark.createDataFrame([], "person_id string")


def build_all_transitions(lh: Lakehouse, acfg: AnalyticsConfig, as_of: dt.date) -> tuple[DataFrame, dict]:
    """Every declared transition from the newest earlier snapshot of its source table to `as_of`."""
    frames, figures = [], {}
    for t in acfg.transitions:
        table = "gold_tags" if t.kind == "tag" else "gold_segment_members"
        before = latest_partition(lh.root, table, "as_of", before=as_of)
        if before is None or not lh.has_partition(table, {"as_of": as_of}):
            figures[t.name] = "no earlier snapshot yet"
            continue
        day = dt.date.fromisoformat(str(before))
        frames.append(marts.build_transitions(_transition_states(lh, t, day), _transition_states(lh, t, as_of),
                                              _people(lh, day), _people(lh, as_of), t.name, day, as_of))
        figures[t.name] = f"from {day}"
    return _union(lh, "gold_transitions", frames), figures


def late_dates(lh: Lakehouse, as_of: dt.date, timezone: str, days: int) -> list[dt.date]:
    """The days of the `days` before `as_of` whose metrics the batch of `as_of` changes: the local dates of
    its events and orders that are earlier than `as_of` (records that arrived late), and that already have
    a gold_metrics_daily partition (a day not computed yet is computed by its own run)."""
    if days == 0:
        return []
    first, batch = as_of - dt.timedelta(days=days), F.col("_batch_date") == F.lit(as_of)
    events = lh.read_or_empty("silver_events").where(batch).select(F.col("event_date").alias("date"))
    orders = lh.read_or_empty("silver_orders").where(batch).select(local_date(F.col("paid_time"), timezone).alias("date"))
    dated = events.unionByName(orders).where((F.col("date") >= F.lit(first)) & (F.col("date") < F.lit(as_of)))
    return [d for d in sorted(r["date"] for r in dated.distinct().collect())
            if lh.has_partition("gold_metrics_daily", {"as_of": d})]


def restate_metrics(lh: Lakehouse, cfg: CdpConfig, days: list[dt.date], events: DataFrame, orders: DataFrame,
                    firsts: DataFrame, tag_names: set[str]) -> list[str]:
    """Recompute gold_metrics_daily of each of `days` from the activity as attributed today (late records
    included, people as One-ID resolves them today; first days from today's profiles) and each day's own
    tags (a person's dimension value that day). Returns the days restated, as ISO dates. Alerts already
    raised on those days stay as they were; today's forecast reads the restated history."""
    acfg: AnalyticsConfig = cfg.analytics
    done = []
    for day in days:
        person_tags = None
        if tag_names:
            if not lh.has_partition("gold_tags", {"as_of": day}):
                log.warning("metrics of %s not restated: gold_tags has no partition for that day", day)
                continue
            person_tags = read_tag_columns(lh.read("gold_tags", {"as_of": day}), cfg.tags.types, tag_names)
        metrics = marts.build_metrics(events, orders, person_tags, firsts, acfg.metrics, day)
        lh.write_partition("gold_metrics_daily", metrics if metrics is not None else _empty(lh, "gold_metrics_daily"),
                           {"as_of": day})
        done.append(day.isoformat())
    return done


def metric_history(lh: Lakehouse, as_of: dt.date, days: int):
    """gold_metrics_daily rows of the last `days` days up to `as_of`, as pandas (small by construction)."""
    start = as_of - dt.timedelta(days=days)
    df = lh.read("gold_metrics_daily").where((F.col("as_of") >= F.lit(start)) & (F.col("as_of") <= F.lit(as_of)))
    return df.select("as_of", "metric", "kind", "dimension", "dimension_value", "value").toPandas()


def alert_rows(lh: Lakehouse, alerts: list[dict], run_id: str) -> DataFrame:
    c = contract("ops_alerts")
    return lh.spark.createDataFrame([tuple({**a, "run_id": run_id}[n] for n in c.column_names) for a in alerts], c.schema())


def run(lh: Lakehouse, cfg: CdpConfig, as_of: dt.date, run_id: str = "adhoc") -> dict:
    """Compute every analysis of conf/analytics.yaml as of `as_of`, write the marts' partitions and the
    day's alerts; return figures for the run summary (incl. the forecast bands of each metric's total)."""
    acfg: AnalyticsConfig = cfg.analytics
    tz = cfg.standardise.timezone
    part = {"as_of": as_of}
    profiles = lh.read_partition("gold_profiles", part, f"run the profiles stage for {as_of} first")
    tag_names = acfg.tags_read()
    person_tags = None
    if tag_names:
        rows = lh.read_partition("gold_tags", part, f"run the tags stage for {as_of} first")
        person_tags = read_tag_columns(rows, cfg.tags.types, tag_names)
    key = f"analytics/{as_of.isoformat()}"
    # Each analysis reads back no further than it needs: the day (metrics), the funnel windows, the cohorts.
    oldest = min([as_of, *(as_of - dt.timedelta(days=f.window_days) for f in acfg.funnels),
                  *(marts.retention_window(r, as_of) for r in acfg.retention)])
    late = late_dates(lh, as_of, tz, acfg.restate_days)
    oldest = min([oldest, *late])
    written: dict[str, int] = {}
    try:
        activity = read_activity(lh, as_of, tz, key, cfg.identity.priority)
        events = lh.stage(f"{key}/events", activity.events.where(F.col("date") >= F.lit(oldest)))
        orders = lh.stage(f"{key}/orders", activity.orders.where(F.col("date") >= F.lit(oldest)))
        if person_tags is not None:
            person_tags = lh.stage(f"{key}/tags", person_tags)
        firsts = lh.stage(f"{key}/first_dates", first_dates(profiles, tz))

        metrics = marts.build_metrics(events, orders, person_tags, firsts, acfg.metrics, as_of)
        lh.write_partition("gold_metrics_daily", metrics if metrics is not None else _empty(lh, "gold_metrics_daily"), part)
        restated = restate_metrics(lh, cfg, late, events, orders, firsts, tag_names)
        funnels = [marts.build_funnel(events, person_tags, f, as_of) for f in acfg.funnels]
        lh.write_partition("gold_funnels", _union(lh, "gold_funnels", funnels), part)
        acts = marts.source_rows(events, orders, "activity")
        retention = [marts.build_retention(acts, firsts, r, as_of) for r in acfg.retention]
        lh.write_partition("gold_retention", _union(lh, "gold_retention", retention), part)
        transitions, transition_figures = build_all_transitions(lh, acfg, as_of)
        lh.write_partition("gold_transitions", transitions, part)

        history = metric_history(lh, as_of, acfg.alerts.history_days)
        totals = {(m.name, TOTAL, TOTAL) for m in acfg.metrics}
        alerts, forecasts, bands = alerting.detect(history, as_of, acfg.alerts, fitted=totals, ratios={
            m.name: (m.numerator, m.denominator) for m in acfg.metrics if m.kind == "ratio"})
        lh.write_partition("ops_alerts", alert_rows(lh, alerts, run_id), part)
        for table in TABLES:
            written[table] = lh.read(table, part).count()
    finally:
        lh.unstage(key)
    today = history[history["as_of"] == as_of]
    trends = {}
    for name, _, _ in sorted(totals):
        f = forecasts[(forecasts["metric"] == name) & (forecasts["dimension"] == TOTAL)]
        value = today[(today["metric"] == name) & (today["dimension"] == TOTAL)]["value"]
        trends[name] = {
            "value": None if value.empty or value.isna().all() else round(float(value.iloc[0]), 4),
            "status": f["status"].iloc[0] if len(f) else alerting.NO_FORECAST,
            "expected": None if f.empty or f["expected"].isna().all() else round(float(f["expected"].iloc[0]), 4),
            "lower": None if f.empty or f["lower"].isna().all() else round(float(f["lower"].iloc[0]), 4),
            "upper": None if f.empty or f["upper"].isna().all() else round(float(f["upper"].iloc[0]), 4),
            "band": bands.get((name, TOTAL, TOTAL)),
        }
    statuses = forecasts["status"].value_counts().to_dict() if len(forecasts) else {}
    return {
        "tables": written,
        "analytics": {
            "metrics": trends,
            "series": int(len(forecasts)), "forecast": int(statuses.get("forecast", 0)),
            "no_forecast_yet": int(statuses.get(alerting.NO_FORECAST, 0)),
            "alerts": [{k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in a.items()} for a in alerts],
            "transitions": transition_figures,
            "restated": restated,
            "method": alerting.METHOD,
        },
    }
