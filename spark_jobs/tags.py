"""Tags: reads gold_profiles, the attributed activity of the as-of date (spark_jobs.activity) and
gold_scores; computes every tag of conf/tags.yaml as of the date; writes gold_tags (long, one partition
per as-of date) and gold_profile_tags (wide, one column per tag, the newest as-of date)."""

from __future__ import annotations

import datetime as dt
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from sqlglot import exp

from spark_jobs import rules
from spark_jobs.activity import read_activity
from spark_jobs.config import CdpConfig
from spark_jobs.contracts import KeyProof, profile_tags_contract
from spark_jobs.tables import Lakehouse, latest_partition
from spark_jobs.tag_config import (
    SOURCE_COLUMNS,
    AttributeTag,
    LifecycleTag,
    PredictedTag,
    RfmTag,
    RuleTag,
    StatTag,
    TagsConfig,
)

_ZERO_WHEN_NONE = {"count", "count_distinct", "active_days", "sum"}


def in_window(as_of: dt.date, days: int | None) -> Column:
    """Rows dated within the last `days` days up to the as-of date, inclusive (the frames hold no
    later dates); None: all history."""
    if days is None:
        return F.lit(True)
    return F.col("date") >= F.lit(as_of - dt.timedelta(days=days - 1))


def _condition(tag: StatTag, as_of: dt.date) -> Column:
    cond = in_window(as_of, tag.window_days)
    for col, values in tag.where.items():
        cond = cond & F.col(col).isin(*values)
    if tag.column is not None:
        cond = cond & F.col(tag.column).isNotNull()
    return cond


def _stat_agg(tag: StatTag, as_of: dt.date) -> Column | None:
    """The aggregate of a statistical tag (None for `mode`, which needs its own grouping)."""
    cond, d = _condition(tag, as_of), F.lit(as_of)
    value = F.col(tag.column) if tag.column else None
    agg = {
        "count": lambda: F.count(F.when(cond, F.lit(1))),
        "sum": lambda: F.sum(F.when(cond, value)),
        "avg": lambda: F.avg(F.when(cond, value)),
        "min": lambda: F.min(F.when(cond, value)),
        "max": lambda: F.max(F.when(cond, value)),
        "days_since_last": lambda: F.datediff(d, F.max(F.when(cond, F.col("date")))),
        "days_since_first": lambda: F.datediff(d, F.min(F.when(cond, F.col("date")))),
        # first/last: the value at the earliest/latest time; ties go to the smaller/larger value. Over
        # "<time>|<value>" text, not struct(time, value): Sail 0.7.2's struct min/max is far slower.
        "first": lambda: _after_time(F.min(F.when(cond, _time_keyed(value)))),
        "last": lambda: _after_time(F.max(F.when(cond, _time_keyed(value)))),
    }.get(tag.agg)
    if agg is None:
        return None
    out = agg()
    if tag.agg in ("first", "last"):
        out = out.cast(SOURCE_COLUMNS[tag.source][tag.column])
    return out.alias(tag.name)


_TIME_TEXT = "yyyy-MM-dd HH:mm:ss.SSSSSS"  # sorts as the time does


def _time_keyed(value: Column) -> Column:
    return F.concat(F.date_format(F.col("ts"), _TIME_TEXT), F.lit("|"), value.cast("string"))


def _after_time(keyed: Column) -> Column:
    return F.substring(keyed, len(_TIME_TEXT) + 2, 1_000_000)


def build_distinct(source: DataFrame, tag: StatTag, as_of: dt.date) -> DataFrame:
    """person_id, <tag>: distinct values (count_distinct) or dates (active_days). Distinct rows first, then
    a plain count: Sail 0.7.2 plans count(DISTINCT) inside a many-aggregate group-by with an expand that
    took over 16 GB at 1M people."""
    value = F.col(tag.column) if tag.agg == "count_distinct" else F.col("date")
    return (source.where(_condition(tag, as_of)).select("person_id", value.alias("v")).distinct()
            .groupBy("person_id").agg(F.count(F.lit(1)).alias(tag.name)))


def build_mode(source: DataFrame, tag: StatTag, as_of: dt.date) -> DataFrame:
    """person_id, <tag>: the most frequent value; ties go to the most recent, then the smallest value."""
    counts = source.where(_condition(tag, as_of)).groupBy("person_id", F.col(tag.column).alias("v")).agg(
        F.count(F.lit(1)).alias("n"), F.max("ts").alias("last_ts")
    )
    w = Window.partitionBy("person_id").orderBy(F.col("n").desc(), F.col("last_ts").desc(), F.col("v"))
    return counts.withColumn("__rn", F.row_number().over(w)).where("__rn = 1").select("person_id", F.col("v").alias(tag.name))


def build_stats(sources: dict[str, DataFrame], tags: list[StatTag], as_of: dt.date) -> list[DataFrame]:
    """Frames keyed by person_id holding the statistical tags: one aggregation per source, one per mode tag."""
    frames = []
    for name, source in sources.items():
        aggs = [a for t in tags if t.source == name and (a := _stat_agg(t, as_of)) is not None]
        if aggs:
            frames.append(source.groupBy("person_id").agg(*aggs))
    frames += [build_mode(sources[t.source], t, as_of) for t in tags if t.agg == "mode"]
    frames += [build_distinct(sources[t.source], t, as_of) for t in tags if t.agg in ("count_distinct", "active_days")]
    return frames


def quantile_score(order: Column, buckets: int) -> Column:
    """Score 1..buckets from the cumulative share of rows at or below this value in `order` (ties share
    the higher score), in whole numbers: ceil(buckets * k / n). RFM quintiles, score deciles."""
    n = F.count(F.lit(1)).over(Window.partitionBy())
    k = F.round(F.cume_dist().over(Window.orderBy(order)) * n).cast("long")
    return ((F.lit(buckets) * k + n - 1) / n).cast("long")  # n > 0 on every row here


def build_rfm(orders: DataFrame, tag: RfmTag, as_of: dt.date) -> DataFrame:
    """person_id, <name>_recency/_frequency/_monetary (1..5, 5 best) for buyers in the window."""
    buyers = orders.where(in_window(as_of, tag.window_days)).groupBy("person_id").agg(
        F.datediff(F.lit(as_of), F.max("date")).alias("__days"), F.count(F.lit(1)).alias("__orders"),
        F.sum("amount").alias("__amount"),
    )
    return buyers.select(
        "person_id",
        quantile_score(F.col("__days").desc(), 5).alias(f"{tag.name}_recency"),
        quantile_score(F.col("__orders").asc(), 5).alias(f"{tag.name}_frequency"),
        quantile_score(F.col("__amount").asc(), 5).alias(f"{tag.name}_monetary"),
    )


def rfm_segment(tag: RfmTag) -> Column:
    """The named RFM segment from the scores: the first rule that holds."""
    scores = {p: f"`{tag.name}_{p}`" for p in ("recency", "frequency", "monetary")}
    out = F.when(F.col(f"{tag.name}_recency").isNull(), F.lit(tag.no_orders_label))
    for seg in tag.segments:
        sql = rules.parse(seg.when).tree.transform(
            lambda node: exp.column(f"{tag.name}_{node.name}", quoted=True)
            if isinstance(node, exp.Column) and node.name in scores else node
        ).sql(dialect="spark")
        out = out.when(F.expr(sql), F.lit(seg.name))
    return out.otherwise(F.lit(tag.default))


def build_lifecycle(activity: DataFrame, profiles: DataFrame, tag: LifecycleTag, as_of: dt.date,
                    timezone: str) -> DataFrame:
    """person_id, <name>: new | returning | active | at_risk | churned (first that holds)."""
    recent_start = as_of - dt.timedelta(days=tag.active_days - 1)
    gap_start = recent_start - dt.timedelta(days=tag.returning_gap_days)
    per_person = activity.groupBy("person_id").agg(
        F.max("date").alias("__last"),
        F.count(F.when(F.col("date") >= F.lit(recent_start), 1)).alias("__recent"),
        F.count(F.when((F.col("date") >= F.lit(gap_start)) & (F.col("date") < F.lit(recent_start)), 1)).alias("__gap"),
        F.count(F.when(F.col("date") < F.lit(gap_start), 1)).alias("__before"),
    )
    first_day = F.to_date(F.from_utc_timestamp("first_seen", timezone))
    p = profiles.select("person_id", first_day.alias("__first")).join(per_person, "person_id", "left")
    since_last = F.datediff(F.lit(as_of), F.col("__last"))
    stage = (
        F.when(F.datediff(F.lit(as_of), F.col("__first")) < tag.new_days, F.lit("new"))
        .when((F.col("__recent") > 0) & (F.col("__gap") == 0) & (F.col("__before") > 0), F.lit("returning"))
        .when(F.col("__recent") > 0, F.lit("active"))
        .when(since_last < tag.churned_days, F.lit("at_risk"))
        .otherwise(F.lit("churned"))
    )
    return p.select("person_id", stage.alias(tag.name))


def _band_labels(bins: tuple[float, ...]) -> list[str]:
    whole = all(float(b).is_integer() for b in bins)
    fmt = (lambda b: str(int(b))) if whole else str
    labels = [f"<{fmt(bins[0])}"]
    for lo, hi in zip(bins, bins[1:], strict=False):
        labels.append(f"{fmt(lo)}-{fmt(hi - 1) if whole else fmt(hi)}")
    return labels + [f"{fmt(bins[-1])}+"]


def attribute_value(tag: AttributeTag) -> Column:
    col = F.col(tag.column)
    if tag.bins is not None:
        labels = _band_labels(tag.bins)
        out = F.when(col.isNull(), F.lit(None).cast("string"))
        for edge, label in zip(tag.bins, labels, strict=False):
            out = out.when(col < F.lit(edge), F.lit(label))
        return out.otherwise(F.lit(labels[-1]))
    if tag.map is not None:
        out = F.when(col.isNull(), F.lit(None).cast("string"))
        for k, v in tag.map.items():
            out = out.when(col == F.lit(k), F.lit(v))
        return out.otherwise(F.lit(tag.default))
    return col


def build_predicted(scores: DataFrame, tags: list[PredictedTag], as_of: dt.date) -> DataFrame | None:
    """person_id and one column per predicted tag: the model's newest score on or before the as-of date."""
    if not tags:
        return None
    scores = scores.where(F.col("as_of") <= F.lit(as_of))
    w = Window.partitionBy("person_id", "model").orderBy(F.col("as_of").desc(), F.col("version").desc())
    newest = scores.withColumn("__rn", F.row_number().over(w)).where("__rn = 1")
    return newest.groupBy("person_id").agg(*[
        F.max(F.when(F.col("model") == t.model, F.col(t.value))).alias(t.name) for t in tags
    ])


def build_profile_tags(profiles: DataFrame, activity, scores: DataFrame, cfg: TagsConfig, as_of: dt.date,
                       timezone: str) -> DataFrame:
    """The wide tag frame: person_id, as_of and one column per tag (every person of the profiles)."""
    of = {kind: [t for t in cfg.tags if isinstance(t, kind)] for kind in
          (AttributeTag, StatTag, RfmTag, LifecycleTag, PredictedTag, RuleTag)}
    wide = profiles.select("person_id", *[attribute_value(t).alias(t.name) for t in of[AttributeTag]])
    sources = {"events": activity.events, "orders": activity.orders, "activity": activity.activity()}
    frames = build_stats(sources, of[StatTag], as_of)
    frames += [build_rfm(activity.orders, t, as_of) for t in of[RfmTag]]
    frames += [build_lifecycle(activity.activity(), profiles, t, as_of, timezone) for t in of[LifecycleTag]]
    predicted = build_predicted(scores, of[PredictedTag], as_of)
    frames += [predicted] if predicted is not None else []
    wide = reduce(lambda acc, f: acc.join(f, "person_id", "left"), frames, wide)
    zero = {t.name: (0.0 if t.agg == "sum" else 0) for t in of[StatTag] if t.agg in _ZERO_WHEN_NONE}
    wide = wide.fillna(zero) if zero else wide
    for t in of[RfmTag]:
        wide = wide.withColumn(f"{t.name}_segment", rfm_segment(t))
    by_name = {t.name: t for t in of[RuleTag]}
    for name in cfg.rule_order:
        wide = wide.withColumn(name, F.expr(by_name[name].rule().sql()))
    return wide.select("person_id", F.lit(as_of).alias("as_of"),
                       *[F.col(n).cast(t).alias(n) for n, t in cfg.types.items()])


def build_tags(wide: DataFrame, types: dict[str, str]) -> DataFrame:
    """gold_tags: the wide frame as (person_id, tag, value, value_type, as_of), NULL values left out."""
    pairs = F.array(*[
        F.struct(F.lit(n).alias("tag"), F.col(n).cast("string").alias("value"), F.lit(t).alias("value_type"))
        for n, t in types.items()
    ])
    return (wide.select("person_id", "as_of", F.explode(pairs).alias("kv"))
            .select("person_id", "kv.tag", "kv.value", "kv.value_type", "as_of")
            .where(F.col("value").isNotNull()))


def tags_key_proof(wide: DataFrame) -> KeyProof:
    """gold_tags' (person_id, tag) is unique when the wide frame is unique on person_id: build_tags gives
    each wide row one row per tag, and the tag names are the distinct keys of conf/tags.yaml."""
    return KeyProof("one row per tag (distinct names of conf/tags.yaml) of each row of the wide tag frame",
                    wide, ("person_id",))


def read_tag_columns(long: DataFrame, types: dict[str, str], names: set[str]) -> DataFrame:
    """person_id and the named tags as typed columns, pivoted back from gold_tags rows."""
    wanted = sorted(names)
    rows = long.where(F.col("tag").isin(*wanted)) if wanted else long.limit(0)
    return rows.groupBy("person_id").agg(*[
        F.max(F.when(F.col("tag") == n, F.col("value"))).cast(types[n]).alias(n) for n in wanted
    ])


def run(lh: Lakehouse, cfg: CdpConfig, as_of: dt.date) -> dict:
    """Compute every tag as of `as_of`; write gold_tags' partition and, when `as_of` is the newest date
    computed, gold_profile_tags. Returns figures for the run summary."""
    tags_cfg: TagsConfig = cfg.tags
    profiles = lh.read_partition("gold_profiles", {"as_of": as_of}, f"run the profiles stage for {as_of} first")
    key = f"tags/{as_of.isoformat()}"
    try:
        activity = read_activity(lh, as_of, cfg.standardise.timezone, key, cfg.identity.priority)
        # Each is read by several aggregations; Sail has no cache, so they are materialised once.
        activity.events = lh.stage(f"{key}/events", activity.events)
        activity.orders = lh.stage(f"{key}/orders", activity.orders)
        wide = lh.stage(f"{key}/wide", build_profile_tags(
            profiles, activity, lh.read_or_empty("gold_scores"), tags_cfg, as_of, cfg.standardise.timezone
        ))
        lh.write_partition("gold_tags", build_tags(wide, tags_cfg.types), {"as_of": as_of}, tags_key_proof(wide))
        newest = latest_partition(lh.root, "gold_tags", "as_of")
        wrote_wide = newest is None or dt.date.fromisoformat(str(newest)) <= as_of
        if wrote_wide:
            lh.write_table("gold_profile_tags", wide, profile_tags_contract(tags_cfg.types))
        people = wide.count()
        long_rows = lh.read("gold_tags", {"as_of": as_of}).count()
    finally:
        lh.unstage(key)
    return {"people": people, "tags": len(tags_cfg.types), "tag_rows": long_rows,
            "profile_tags_updated": wrote_wide,
            "tables": {"gold_tags": long_rows, **({"gold_profile_tags": people} if wrote_wide else {})}}
