"""Analysis marts as pure transforms over attributed activity (spark_jobs.activity), person tags and
snapshots: gold_metrics_daily, gold_funnels, gold_retention and gold_transitions rows; reads and writes nothing."""

from __future__ import annotations

import datetime as dt
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from spark_jobs.analytics.config import (
    ORDER,
    SOURCE_COLUMNS,
    TOTAL,
    FunnelSpec,
    RatioMetric,
    RetentionSpec,
)

UNKNOWN = "unknown"  # a dimension value that is NULL
ABSENT = "(absent)"  # a transition state: not a person on that date
EXACT_SUM = "decimal(38,6)"  # what a sum metric adds its values as (cast back to double once summed)
NONE = "none"  # a transition state: a person without the tag value / in none of the segments


def source_rows(events: DataFrame, orders: DataFrame, source: str) -> DataFrame:
    """The rows a metric of `source` counts: person_id, date and the source's columns."""
    if source == "events":
        return events.select("person_id", "date", *SOURCE_COLUMNS["events"])
    if source == "orders":
        return orders.select("person_id", "date", *SOURCE_COLUMNS["orders"])
    ev = events.select("person_id", "date", F.col("event_name").alias("action"), "channel", "platform")
    od = orders.select("person_id", "date", F.lit(ORDER).alias("action"), "channel", F.lit(None).cast("string").alias("platform"))
    return ev.unionByName(od)


def _dimension_pairs(dimensions) -> Column:
    """One (dimension, dimension_value) struct per dimension, plus the total: exploded, each row counts
    once in the total and once under its value of every dimension."""
    pairs = [F.struct(F.lit(TOTAL).alias("dimension"), F.lit(TOTAL).alias("dimension_value"))]
    pairs += [F.struct(F.lit(d).alias("dimension"), F.coalesce(F.col(d).cast("string"), F.lit(UNKNOWN)).alias("dimension_value"))
              for d in dimensions]
    return F.explode(F.array(*pairs)).alias("__dim")


def with_person_tags(rows: DataFrame, person_tags: DataFrame | None, names) -> DataFrame:
    """Adds the named tag columns (the person's value on the as-of date; NULL without one)."""
    names = [n for n in names if n not in rows.columns]
    if not names:
        return rows
    return rows.join(person_tags.select("person_id", *names), "person_id", "left")


def build_metrics(events: DataFrame, orders: DataFrame, person_tags: DataFrame | None, first_dates: DataFrame,
                  metrics, as_of: dt.date) -> DataFrame:
    """gold_metrics_daily for `as_of`: every metric on the rows dated `as_of`, overall and per dimension value.
    `person_tags`: person_id and tag columns; `first_dates`: person_id, first_date (the person's first day)."""
    frames, by_name = [], {}
    for m in metrics:
        if isinstance(m, RatioMetric):
            continue
        rows = source_rows(events, orders, m.source).where(F.col("date") == F.lit(as_of))
        for col, values in m.where.items():
            rows = rows.where(F.col(col).isin(*values))
        if getattr(m, "new_only", False):
            rows = rows.join(first_dates.where(F.col("first_date") == F.lit(as_of)).select("person_id"), "person_id", "left_semi")
        rows = with_person_tags(rows, person_tags, m.dimensions)
        if m.kind == "people":
            value = F.countDistinct("person_id")
        else:
            # A sum adds exact decimals: the activity's amounts are doubles of decimal(12,2) money, and a double sum
            # depends on the engine's order of addition (5185.84 on Sail, 5185.839999999999 on JVM Spark).
            value = F.count(F.lit(1)) if m.kind == "count" else F.sum(F.col(m.column).cast(EXACT_SUM))
        out = (rows.select("person_id", *([m.column] if m.kind == "sum" else []), _dimension_pairs(m.dimensions))
               .groupBy(F.col("__dim.dimension").alias("dimension"), F.col("__dim.dimension_value").alias("dimension_value"))
               .agg(value.cast("double").alias("value")))
        by_name[m.name] = out
        frames.append(out.select(F.lit(as_of).alias("as_of"), F.lit(m.name).alias("metric"), F.lit(m.kind).alias("kind"),
                                 "dimension", "dimension_value", "value",
                                 F.lit(None).cast("double").alias("numerator"), F.lit(None).cast("double").alias("denominator")))
    for m in metrics:
        if not isinstance(m, RatioMetric):
            continue
        keep = F.col("dimension").isin(TOTAL, *m.dimensions)
        den = by_name[m.denominator].where(keep).select("dimension", "dimension_value", F.col("value").alias("denominator"))
        num = by_name[m.numerator].where(keep).select("dimension", "dimension_value", F.col("value").alias("numerator"))
        both = den.join(num, ["dimension", "dimension_value"], "left").withColumn("numerator", F.coalesce("numerator", F.lit(0.0)))
        value = F.when(F.col("denominator") > 0, F.col("numerator") / F.col("denominator"))
        frames.append(both.select(F.lit(as_of).alias("as_of"), F.lit(m.name).alias("metric"), F.lit("ratio").alias("kind"),
                                  "dimension", "dimension_value", value.alias("value"), "numerator", "denominator"))
    if not frames:
        return None
    return reduce(DataFrame.unionByName, frames)


# --- funnels ---------------------------------------------------------------------------------------------
def _window_end(days: int) -> Column:
    return F.expr(f"__t0 + INTERVAL {days} DAYS")


def build_funnel(events: DataFrame, person_tags: DataFrame | None, spec: FunnelSpec, as_of: dt.date) -> DataFrame:
    """gold_funnels rows of one funnel as of `as_of`: one cohort per entry day from as_of - window_days to
    as_of. Each step-1 event is an attempt; a later step counts when it happens at or after the previous
    step's (strict) or the entry's (any) time and at most window_days after the entry. A person counts
    once per cohort day and dimension value, at the deepest step any of their attempts reached."""
    first = as_of - dt.timedelta(days=spec.window_days)
    ev = events.where((F.col("date") >= F.lit(first)) & F.col("event_name").isin(*spec.steps))
    entry_cols = [d for d in spec.dimensions if d in ("channel", "platform", "appid")]
    attempts = (ev.where(F.col("event_name") == spec.steps[0])
                .select("person_id", F.col("ts").alias("__t0"), F.col("date").alias("cohort_date"), *entry_cols)
                .distinct().withColumn("__end", _window_end(spec.window_days)))
    keys = ["person_id", "__t0", "cohort_date", *entry_cols]
    later = spec.steps[1:]
    if spec.order == "strict":
        reached = attempts.withColumn("__prev", F.col("__t0")).withColumn("__depth", F.lit(1))
        for name in later:
            step = ev.where(F.col("event_name") == name).select(F.col("person_id").alias("__p"), F.col("ts").alias("__t"))
            cond = (F.col("person_id") == F.col("__p")) & (F.col("__t") >= F.col("__prev")) & (F.col("__t") <= F.col("__end"))
            nxt = (reached.join(step, cond, "left").groupBy(*keys, "__end", "__depth")
                   .agg(F.min("__t").alias("__prev")))
            reached = nxt.withColumn("__depth", F.col("__depth") + F.when(F.col("__prev").isNotNull(), 1).otherwise(0))
    else:
        step = ev.where(F.col("event_name").isin(*later)).select(
            F.col("person_id").alias("__p"), F.col("ts").alias("__t"), F.col("event_name").alias("__name"))
        cond = (F.col("person_id") == F.col("__p")) & (F.col("__t") >= F.col("__t0")) & (F.col("__t") <= F.col("__end"))
        flags = (attempts.join(step, cond, "left").groupBy(*keys)
                 .agg(*[F.max(F.when(F.col("__name") == n, 1).otherwise(0)).alias(f"__s{i}") for i, n in enumerate(later)]))
        depth, run = F.lit(1), F.lit(1)
        for i in range(len(later)):  # consecutive steps present, in declared order of counting
            run = run * F.col(f"__s{i}")
            depth = depth + run
        reached = flags.withColumn("__depth", depth)
    reached = with_person_tags(reached, person_tags, spec.dimensions)
    per_person = (reached.select("person_id", "cohort_date", "__depth", _dimension_pairs(spec.dimensions))
                  .groupBy("cohort_date", "__dim.dimension", "__dim.dimension_value", "person_id")
                  .agg(F.max("__depth").alias("__depth")))
    n = len(spec.steps)
    counts = per_person.groupBy("cohort_date", "dimension", "dimension_value").agg(
        *[F.count(F.when(F.col("__depth") >= k, 1)).alias(f"__n{k}") for k in range(1, n + 1)])
    rows = F.explode(F.array(*[
        F.struct(F.lit(k).cast("long").alias("step"), F.lit(name).alias("step_name"), F.col(f"__n{k}").cast("long").alias("people"),
                 F.col(f"__n{max(k - 1, 1)}").cast("double").alias("__before"))
        for k, name in enumerate(spec.steps, start=1)
    ])).alias("s")
    out = counts.select("cohort_date", "dimension", "dimension_value", "__n1", rows)
    return out.select(
        F.lit(as_of).alias("as_of"), F.lit(spec.name).alias("funnel"), "cohort_date",
        (F.date_add(F.col("cohort_date"), spec.window_days) <= F.lit(as_of)).alias("complete"),
        "dimension", "dimension_value", "s.step", "s.step_name", "s.people",
        F.when(F.col("__n1") > 0, F.col("s.people") / F.col("__n1")).alias("conversion"),
        F.when(F.col("s.__before") > 0, F.col("s.people") / F.col("s.__before")).alias("step_conversion"),
    )


# --- retention -------------------------------------------------------------------------------------------
def period_start(date: Column, spec: RetentionSpec) -> Column:
    """The first day of the period holding `date` (weeks start on Monday)."""
    if spec.period == "day":
        return date
    return F.date_sub(date, ((F.dayofweek(date) + 5) % 7).cast("int"))


def _period_start_of(day: dt.date, spec: RetentionSpec) -> dt.date:
    return day if spec.period == "day" else day - dt.timedelta(days=day.weekday())


def retention_window(spec: RetentionSpec, as_of: dt.date) -> dt.date:
    """The first day any cohort of the retention as of `as_of` starts on (activity before it is not read)."""
    return _period_start_of(as_of, spec) - dt.timedelta(days=spec.period_days * spec.periods)


def build_retention(activity: DataFrame, first_dates: DataFrame, spec: RetentionSpec, as_of: dt.date) -> DataFrame:
    """gold_retention rows of one analysis as of `as_of`: the cohorts of the current and the `periods` previous
    periods (by first_date), and for each period N up to the current one how many of their people did a
    return action in it. `activity`: person_id, action, date (source_rows(..., "activity"))."""
    current, first = _period_start_of(as_of, spec), retention_window(spec, as_of)
    days = spec.period_days
    cohorts = (first_dates.select("person_id", period_start(F.col("first_date"), spec).alias("cohort"))
               .where((F.col("cohort") >= F.lit(first)) & (F.col("cohort") <= F.lit(current))))
    acts = activity.where((F.col("date") >= F.lit(first)) & (F.col("date") <= F.lit(as_of)))
    if spec.return_actions:
        acts = acts.where(F.col("action").isin(*spec.return_actions))
    acts = acts.select("person_id", period_start(F.col("date"), spec).alias("__p")).distinct()
    returned = (acts.join(cohorts, "person_id")
                .withColumn("period_n", F.floor(F.datediff("__p", "cohort") / days).cast("long"))
                .where(F.col("period_n") >= 0)
                .groupBy("cohort", "period_n").agg(F.countDistinct("person_id").alias("returned")))
    sizes = cohorts.groupBy("cohort").agg(F.count(F.lit(1)).alias("cohort_people"))
    last_n = F.floor(F.datediff(F.lit(current), F.col("cohort")) / days).cast("int")
    grid = sizes.select("cohort", "cohort_people", F.explode(F.sequence(F.lit(0).cast("long"), last_n.cast("long"))).alias("period_n"))
    out = grid.join(returned, ["cohort", "period_n"], "left").withColumn("returned", F.coalesce("returned", F.lit(0)).cast("long"))
    period_end = F.date_add(F.col("cohort"), ((F.col("period_n") + 1) * days - 1).cast("int"))
    return out.select(
        F.lit(as_of).alias("as_of"), F.lit(spec.name).alias("retention"), F.lit(spec.period).alias("period"), "cohort",
        F.col("cohort_people").cast("long").alias("cohort_people"), "period_n", "returned",
        (F.col("returned") / F.col("cohort_people")).alias("rate"), (period_end <= F.lit(as_of)).alias("complete"),
    )


# --- transitions -----------------------------------------------------------------------------------------
def segment_states(members: DataFrame, segments: tuple[str, ...]) -> DataFrame:
    """person_id, state: the first of `segments` (in their order) the person is a member of."""
    rank = F.lit(None).cast("int")
    for i, s in enumerate(segments):
        rank = F.when(F.col("segment") == s, F.lit(i)) if i == 0 else rank.when(F.col("segment") == s, F.lit(i))
    first = (members.where(F.col("status").isin("entered", "stayed") & F.col("segment").isin(*segments))
             .groupBy("person_id").agg(F.min(rank).alias("__r")))
    state = F.lit(None).cast("string")
    for i, s in enumerate(segments):
        state = F.when(F.col("__r") == i, F.lit(s)) if i == 0 else state.when(F.col("__r") == i, F.lit(s))
    return first.select("person_id", state.alias("state"))


def build_transitions(before: DataFrame, after: DataFrame, people_before: DataFrame, people_after: DataFrame,
                      name: str, from_date: dt.date, as_of: dt.date) -> DataFrame:
    """gold_transitions rows: people per (state on from_date, state on as_of). `before`/`after`: person_id,
    state; `people_*`: person_id of everyone on each date (a person without a state is `none`, one who
    is not a person on a date is `(absent)` there)."""
    def states(people: DataFrame, st: DataFrame, col: str) -> DataFrame:
        everyone = people.select("person_id").unionByName(st.select("person_id")).distinct()
        return (everyone.join(st.select("person_id", "state"), "person_id", "left")
                .select("person_id", F.coalesce("state", F.lit(NONE)).alias(col)))

    both = states(people_before, before, "from_state").join(states(people_after, after, "to_state"), "person_id", "full")
    counts = (both.select(F.coalesce("from_state", F.lit(ABSENT)).alias("from_state"),
                          F.coalesce("to_state", F.lit(ABSENT)).alias("to_state"))
              .groupBy("from_state", "to_state").agg(F.count(F.lit(1)).alias("people")))
    total = F.sum("people").over(Window.partitionBy("from_state"))
    return counts.select(F.lit(as_of).alias("as_of"), F.lit(name).alias("transition"), F.lit(from_date).alias("from_date"),
                         "from_state", "to_state", F.col("people").cast("long").alias("people"),
                         (F.col("people") / total).alias("share"))
