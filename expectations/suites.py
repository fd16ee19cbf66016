"""Great Expectations suites for every CDP table, kept as code. Each table's suite is built for one
batch (timestamps within the batch window, volume against the trailing median of earlier batches) from
its contract (required columns, keys) plus the table's own rules. Levels: `critical` stops the write,
`warning` is recorded and the run goes on, `info` only records a figure (the row count).

Rules that need more than one column or another table (referential checks, identity health) add
`_dq_*` columns to the frame validated (the published frame is never changed)."""

from __future__ import annotations

import datetime as dt
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no network here; and no phoning home in production

import great_expectations as gx  # noqa: E402
from great_expectations import expectations as gxe  # noqa: E402
from pyspark.sql import DataFrame, Window  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from spark_jobs.config import (  # noqa: E402
    ATTRIBUTE_SOURCES,
    CHANNELS,
    ID_TYPES,
    IdentityConfig,
    ProfilesConfig,
    QualityConfig,
)
from spark_jobs.contracts import (  # noqa: E402
    ALERT_SEVERITIES,
    EVENT_NAMES,
    FILE_STATUSES,
    PROFILE_ATTRIBUTES,
    RECORD_KEYS,
    RECORD_RULES,
    SEGMENT_STATUSES,
    TIERS,
    bronze_name,
    contract,
)
from spark_jobs.identity.rules import per_type_limit  # noqa: E402
from spark_jobs.privacy.consent import CONSENT_CHANNELS, CONSENT_SOURCES, CONSENT_STATUSES  # noqa: E402

CRITICAL, WARNING, INFO = "critical", "warning", "info"
E164 = r"^\+[1-9][0-9]{6,14}$"
EMAIL_LOWER = r"^[^A-Z\s@]+@[^A-Z\s@]+\.[^A-Z\s@]+$"
# Event time column of each table whose rows happen on the batch day.
EVENT_TIME = {
    bronze_name("app_events"): "event_time", bronze_name("wechat"): "event_time", bronze_name("crm"): "updated_at",
    bronze_name("orders"): "paid_time", bronze_name("pos"): "txn_time", bronze_name("ad_leads"): "created_at",
    "silver_events": "event_time", "silver_orders": "paid_time",
}


@dataclass(frozen=True)
class SuiteContext:
    """What a suite needs to know about the batch it checks."""

    batch_date: dt.date
    quality: QualityConfig = QualityConfig()
    identity: IdentityConfig = IdentityConfig()
    timezone: str = "Asia/Shanghai"
    row_history: tuple[int, ...] = ()  # row counts of earlier batches of the same table, oldest first
    known_members: DataFrame | None = None  # member_id of every CRM member up to the batch (silver_orders)
    tag_types: dict[str, str] = field(default_factory=dict)  # conf/tags.yaml: tag -> value type
    segments: tuple[str, ...] = ()  # conf/segments.yaml: segment names
    sources: tuple[str, ...] = CHANNELS  # conf/sources.yaml: source names
    source_window: str = "daily"  # the source's declared batch window (bronze): daily | history
    record_key: tuple[str, ...] = ()  # the fields naming one record across batches (record_key())
    earlier_keys: DataFrame | None = None  # the record key of every row of earlier batches of the table
    recent_events_limit: int = ProfilesConfig.model_fields["recent_events_limit"].default  # gold_recent_events

    def window(self) -> tuple[dt.datetime, dt.datetime]:
        """The batch's local day as naive UTC datetimes (Spark sessions here run in UTC)."""
        start = dt.datetime.combine(self.batch_date, dt.time(), ZoneInfo(self.timezone)).astimezone(dt.UTC)
        return start.replace(tzinfo=None), (start + dt.timedelta(days=1)).replace(tzinfo=None)


@dataclass
class Suite:
    """A table's expectations for one batch and how to derive the `_dq_*` columns they read."""

    name: str
    expectations: list = field(default_factory=list)
    prepare: Callable[[DataFrame], DataFrame] = lambda df: df
    key: object | None = None  # the expectation of the contract's key (a KeyProof may stand in for it)

    def add(self, expectation, level: str, check: str | None = None) -> None:
        expectation.severity = level
        if check:
            expectation.meta = {**(expectation.meta or {}), "check": check}
        self.expectations.append(expectation)

    def derive(self, step: Callable[[DataFrame], DataFrame]) -> None:
        before = self.prepare
        self.prepare = lambda df: step(before(df))


def label(config) -> str:
    """How a result (its ExpectationConfiguration) is named in ops_dq_results: the check name, or the
    expectation type and its column(s)."""
    meta = config.meta or {}
    if meta.get("check"):
        return meta["check"]
    cols = config.kwargs.get("column") or ",".join(config.kwargs.get("column_list") or [])
    return f"{config.type}({cols})" if cols else config.type


def _in_set(s: Suite, column: str, values, level: str, mostly: float = 1.0) -> None:
    s.add(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(values), mostly=mostly), level)


def _flag(s: Suite, name: str, condition, level: str, check: str, mostly: float = 1.0) -> None:
    """A derived boolean column `_dq_<name>` that must be true (NULL counts as missing, not bad)."""
    s.derive(lambda df: df.withColumn(f"_dq_{name}", condition))
    s.add(gxe.ExpectColumnValuesToBeInSet(column=f"_dq_{name}", value_set=[True], mostly=mostly), level, check)


def _common(s: Suite, table: str, ctx: SuiteContext) -> None:
    c = contract(table)
    for col in c.required():
        s.add(gxe.ExpectColumnValuesToNotBeNull(column=col), CRITICAL)
    if c.keys:
        s.key = (gxe.ExpectColumnValuesToBeUnique(column=c.keys[0]) if len(c.keys) == 1
                 else gxe.ExpectCompoundColumnsToBeUnique(column_list=list(c.keys)))
        s.add(s.key, CRITICAL)
    s.add(gxe.ExpectTableRowCountToBeBetween(min_value=0), INFO, "row_count")
    q = ctx.quality
    history = ctx.row_history[-q.volume_history:]
    if len(history) >= q.volume_min_history:
        median = statistics.median(history)
        if median >= q.volume_min_rows:
            s.add(gxe.ExpectTableRowCountToBeBetween(
                min_value=int(median * (1 - q.volume_tolerance)), max_value=int(median * (1 + q.volume_tolerance)) + 1,
                meta={"trailing_median": median, "batches": len(history)},
            ), WARNING, "volume")
    ts = EVENT_TIME.get(table)
    if ts:
        start, end = ctx.window()
        s.add(gxe.ExpectColumnValuesToBeBetween(
            column=ts, min_value=start - dt.timedelta(hours=q.late_hours), max_value=end + dt.timedelta(hours=1),
            mostly=0.99,
        ), WARNING, f"in_batch_window({ts})")
        if ctx.source_window == "daily" and table.startswith("bronze_"):
            # A daily delivery whose times are mostly off its day was read in the wrong zone or format,
            # or landed in the wrong folder: stop rather than load it as this day's data.
            s.add(gxe.ExpectColumnValuesToBeBetween(
                column=ts, min_value=start - dt.timedelta(hours=q.late_hours), max_value=end + dt.timedelta(hours=1),
                mostly=0.5,
            ), CRITICAL, f"mostly_in_batch_window({ts})")
        s.add(gxe.ExpectColumnMaxToBeBetween(column=ts, min_value=start), WARNING, f"freshness({ts})")


def record_key(table: str, source=None) -> tuple[str, ...]:
    """The key a table's rows must keep unique over ALL its batches: a bronze model table's record key
    (its source's, or the model's), a silver record table's contract key; () for other tables."""
    if table in ("silver_events", "silver_orders", "silver_contacts"):
        return contract(table).keys
    model = table.removeprefix("bronze_")
    if table.startswith("bronze_") and model in RECORD_KEYS:
        return source.record_key() if source is not None and source.model == model else RECORD_KEYS[model]
    return ()


def _unique_over_the_table(s: Suite, ctx: SuiteContext) -> None:
    """The record key is unique within the batch and no earlier batch holds it (a redelivery loaded
    twice would break it)."""
    key = list(ctx.record_key)
    if not key:
        return
    if tuple(key) == contract(s.name).keys:
        pass  # the contract's key: _common checks it within the batch
    elif len(key) == 1:
        s.add(gxe.ExpectColumnValuesToBeUnique(column=key[0]), CRITICAL, f"record_key_unique_in_batch({key[0]})")
    else:
        s.add(gxe.ExpectCompoundColumnsToBeUnique(column_list=key), CRITICAL, f"record_key_unique_in_batch({','.join(key)})")
    if ctx.earlier_keys is not None:
        seen = ctx.earlier_keys.distinct().withColumn("_dq_seen_before", F.lit(True))
        s.derive(lambda df: df.join(seen, key, "left"))
        _flag(s, "new_key", F.col("_dq_seen_before").isNull(), CRITICAL, f"record_key_unique_over_all_batches({','.join(key)})")


def _bronze(s: Suite, channel: str) -> None:
    # Row-level rules: ingest quarantines each record that breaks one (named as the expectation), so
    # one bad value never stops the day; here they are critical, as a guard that ingest did.
    for rule in RECORD_RULES[channel]:
        if rule.in_set is not None:
            values = sorted({v for x in rule.in_set for v in ((x, x.upper(), x.lower(), x.capitalize()) if rule.ignore_case else (x,))})
            s.add(gxe.ExpectColumnValuesToBeInSet(column=rule.column, value_set=values), CRITICAL)
        else:
            s.add(gxe.ExpectColumnValuesToBeBetween(column=rule.column, min_value=rule.min_value), CRITICAL)


def _canonical(id_type, id_value):
    """True when an identifier is in the canonical form of its type."""
    return (
        F.when(id_type == "phone", id_value.rlike(E164))
        .when(id_type == "email", id_value.rlike(EMAIL_LOWER))
        .when(id_type == "device_id", id_value == F.upper(id_value))
        .otherwise(F.lit(True))
    )


def _silver(s: Suite, table: str, ctx: SuiteContext) -> None:
    if table == "silver_events":
        _in_set(s, "channel", ("app", "wechat"), CRITICAL)
        _in_set(s, "event_name", sorted({n for names in EVENT_NAMES.values() for n in names}), CRITICAL)
        s.add(gxe.ExpectColumnValuesToMatchRegex(column="phone", regex=E164), CRITICAL)
        s.add(gxe.ExpectColumnValuesToBeBetween(
            column="event_date", min_value=ctx.batch_date - dt.timedelta(days=1), max_value=ctx.batch_date + dt.timedelta(days=1),
            mostly=0.99), WARNING)
    elif table == "silver_orders":
        _in_set(s, "channel", ("ecommerce", "pos"), CRITICAL)
        s.add(gxe.ExpectColumnValuesToBeBetween(column="amount", min_value=0), CRITICAL)
        s.add(gxe.ExpectColumnValuesToMatchRegex(column="phone", regex=E164), CRITICAL)
        if ctx.known_members is not None:
            known = ctx.known_members.select("member_id").distinct().withColumn("_dq_known", F.lit(True))
            s.derive(lambda df: df.join(known, "member_id", "left"))
            _flag(s, "member_ref", F.col("member_id").isNull() | F.col("_dq_known").isNotNull(), WARNING,
                  "orders_reference_known_members", mostly=0.99)
    elif table == "silver_contacts":
        _in_set(s, "source", ("crm", "ad_leads"), CRITICAL)
        s.add(gxe.ExpectColumnValuesToMatchRegex(column="phone", regex=E164), CRITICAL)
        s.add(gxe.ExpectColumnValuesToMatchRegex(column="email", regex=EMAIL_LOWER), CRITICAL)
        _in_set(s, "gender", ("M", "F"), CRITICAL)
        _in_set(s, "tier", TIERS, CRITICAL)
    elif table == "silver_identifiers":
        _in_set(s, "id_type", ID_TYPES, CRITICAL)
        _flag(s, "canonical", _canonical(F.col("id_type"), F.col("id_value")), CRITICAL, "identifiers_canonical")
        s.add(gxe.ExpectColumnValuesToBeBetween(column="records", min_value=1), CRITICAL)
    elif table == "silver_id_links":
        _in_set(s, "src_type", ID_TYPES, CRITICAL)
        _in_set(s, "dst_type", ID_TYPES, CRITICAL)
        ordered = (F.col("src_type") < F.col("dst_type")) | (
            (F.col("src_type") == F.col("dst_type")) & (F.col("src_value") < F.col("dst_value")))
        _flag(s, "ordered", ordered, CRITICAL, "links_ordered_src_before_dst")


def _gold(s: Suite, table: str, ctx: SuiteContext) -> None:
    q = ctx.quality
    if table == "gold_id_map":
        s.add(gxe.ExpectColumnValuesToMatchRegex(column="person_id", regex=r"^p_[0-9a-f]{20}$"), CRITICAL)
        _flag(s, "canonical", _canonical(F.col("id_type"), F.col("id_value")), CRITICAL, "identifiers_canonical")
        person = Window.partitionBy("person_id")
        typed = Window.partitionBy("person_id", "id_type")
        limit = per_type_limit(F.col("id_type"), ctx.identity.limits)
        s.derive(lambda df: df.withColumn("_dq_person_size", F.count(F.lit(1)).over(person))
                 .withColumn("_dq_over_limit", F.when(F.count(F.lit(1)).over(typed) > limit, 1.0).otherwise(0.0))
                 .withColumn("_dq_singleton", F.when(F.col("_dq_person_size") == 1, 1.0).otherwise(0.0)))
        s.add(gxe.ExpectColumnMaxToBeBetween(column="_dq_person_size", max_value=q.max_person_identifiers), CRITICAL,
              "largest_person")
        s.add(gxe.ExpectColumnMeanToBeBetween(column="_dq_over_limit", max_value=q.max_over_limit_share), WARNING,
              "share_over_type_limits")
        s.add(gxe.ExpectColumnMeanToBeBetween(column="_dq_singleton", max_value=q.max_singleton_share), WARNING,
              "share_of_singletons")
    elif table == "gold_id_dropped":
        s.add(gxe.ExpectColumnValuesToMatchRegex(column="rule", regex=r"^(blocklist_|hub:|limit:|link_dropped:|contact_only:)"), CRITICAL)
    elif table == "gold_id_decisions":
        _in_set(s, "decision", ("merge", "keep_apart"), CRITICAL)
        s.add(gxe.ExpectColumnValuesToBeBetween(column="match_probability", min_value=0, max_value=1), CRITICAL)
    elif table == "gold_id_changes":
        _in_set(s, "change", ("new", "merge", "split"), CRITICAL)
        s.add(gxe.ExpectColumnValuesToBeBetween(column="identifiers", min_value=1), CRITICAL)


def _marts(s: Suite, table: str, ctx: SuiteContext) -> None:
    """Profiles, tags, segments and scores."""
    if table == "gold_profiles":
        s.add(gxe.ExpectColumnValuesToMatchRegex(column="phone", regex=E164), CRITICAL)
        s.add(gxe.ExpectColumnValuesToMatchRegex(column="email", regex=EMAIL_LOWER), CRITICAL)
        _in_set(s, "gender", ("M", "F"), CRITICAL)
        _in_set(s, "tier", TIERS, CRITICAL)
        for attr in PROFILE_ATTRIBUTES:
            _in_set(s, f"{attr}_source", ATTRIBUTE_SOURCES[attr], CRITICAL)
            _flag(s, f"{attr}_sourced", F.col(attr).isNull() == F.col(f"{attr}_source").isNull(), CRITICAL,
                  f"{attr}_has_its_source")
        s.add(gxe.ExpectColumnValuesToBeBetween(column="age", min_value=0, max_value=120, mostly=0.999), WARNING)
        s.add(gxe.ExpectColumnValuesToBeBetween(column="tenure_days", min_value=0), CRITICAL)
        s.add(gxe.ExpectColumnValuesToBeBetween(column="identifiers", min_value=1), CRITICAL)
        _flag(s, "seen_order", F.col("first_seen") <= F.col("last_seen"), CRITICAL, "first_seen_before_last_seen")
    elif table == "gold_consent":
        _in_set(s, "channel", CONSENT_CHANNELS, CRITICAL)
        _in_set(s, "status", CONSENT_STATUSES, CRITICAL)
        _in_set(s, "source", ("crm", "wechat"), CRITICAL)
        _in_set(s, "consent_source", CONSENT_SOURCES, CRITICAL)
    elif table == "gold_recent_events":
        s.add(gxe.ExpectColumnValuesToBeBetween(column="events_count", min_value=1, max_value=ctx.recent_events_limit), CRITICAL)
        _flag(s, "json_array", F.col("events").startswith("[{") & F.col("events").endswith("}]"), CRITICAL, "events_is_a_json_array")
    elif table == "gold_tags":
        types = ctx.tag_types
        _in_set(s, "tag", sorted(types), CRITICAL)
        # The declared type by a broadcast join on the tag: a 43-branch CASE per row took 5x as long on
        # Sail (8.6M rows: 2.1 s against 0.4 s; a map literal lookup, 60 s).
        declared = list(types.items())
        s.derive(lambda df: df.join(F.broadcast(df.sparkSession.createDataFrame(declared, "tag string, _dq_declared string")),
                                    "tag", "left"))
        _flag(s, "typed", F.col("value_type") == F.col("_dq_declared"), CRITICAL, "value_type_is_the_declared_type")
    elif table == "gold_profile_tags":
        for name, typ in ctx.tag_types.items():
            if name.endswith(("_recency", "_frequency", "_monetary")) and typ == "long":
                s.add(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=1, max_value=5), CRITICAL)
        s.add(gxe.ExpectColumnDistinctValuesToBeInSet(column="as_of", value_set=[ctx.batch_date]), CRITICAL)
    elif table == "gold_segment_members":
        _in_set(s, "segment", ctx.segments, CRITICAL)
        _in_set(s, "status", SEGMENT_STATUSES, CRITICAL)
        _flag(s, "spell", F.col("entered_on") <= F.col("as_of"), CRITICAL, "entered_on_not_after_as_of")
        _flag(s, "left", (F.col("status") == "left") == F.col("left_on").isNotNull(), CRITICAL, "left_on_iff_left")
    elif table == "gold_scores":
        s.add(gxe.ExpectColumnValuesToBeBetween(column="score", min_value=0, max_value=1), CRITICAL)
        s.add(gxe.ExpectColumnValuesToBeBetween(column="decile", min_value=1, max_value=10), CRITICAL)


def _ops(s: Suite, table: str, ctx: SuiteContext) -> None:
    if table == "ops_ingest_files":
        _in_set(s, "channel", ctx.sources, CRITICAL)
        s.add(gxe.ExpectColumnValuesToMatchRegex(column="checksum", regex=r"^[0-9a-f]{64}$"), CRITICAL)
        _in_set(s, "status", FILE_STATUSES, CRITICAL)
        balanced = F.col("records") == F.col("loaded") + F.col("quarantined") + F.col("duplicates") + F.col("suppressed")
        _flag(s, "balanced", balanced, CRITICAL, "records_equal_loaded_plus_quarantined_plus_duplicates_plus_suppressed")
        _flag(s, "read_or_not", (F.col("status") == "loaded") | (F.col("records") == 0), CRITICAL,
              "only_loaded_files_have_records")
        _flag(s, "checksummed", F.col("checksum").isNotNull() | F.col("status").isin("refused", "deleted", "skipped"),
              CRITICAL, "read_files_have_a_checksum")
        _flag(s, "covered", F.col("records") <= F.col("lines"), CRITICAL, "records_not_more_than_lines")
    elif table == "bronze_quarantine":
        _in_set(s, "channel", ctx.sources, CRITICAL)


def _analysis(s: Suite, table: str, ctx: SuiteContext) -> None:
    """The analysis marts and ops_alerts (spark_jobs/analytics/)."""
    between = lambda col, lo, hi=None, level=CRITICAL: s.add(  # noqa: E731
        gxe.ExpectColumnValuesToBeBetween(column=col, min_value=lo, max_value=hi), level)
    if table == "gold_metrics_daily":
        _in_set(s, "kind", ("people", "count", "sum", "ratio"), CRITICAL)
        between("value", 0)
        _flag(s, "ratio", (F.col("kind") != "ratio") | F.col("denominator").isNotNull(), CRITICAL, "ratios_have_a_denominator")
    elif table == "gold_funnels":
        between("step", 1)
        between("people", 0)
        between("conversion", 0, 1)
        between("step_conversion", 0, 1)
        _flag(s, "cohort", F.col("cohort_date") <= F.col("as_of"), CRITICAL, "cohort_date_not_after_as_of")
    elif table == "gold_retention":
        _in_set(s, "period", ("day", "week"), CRITICAL)
        between("period_n", 0)
        between("rate", 0, 1)
        _flag(s, "returned", F.col("returned") <= F.col("cohort_people"), CRITICAL, "returned_not_more_than_the_cohort")
    elif table == "gold_transitions":
        between("people", 1)
        between("share", 0, 1)
        _flag(s, "from", F.col("from_date") < F.col("as_of"), CRITICAL, "from_date_before_as_of")
    elif table == "ops_alerts":
        _in_set(s, "severity", ALERT_SEVERITIES, CRITICAL)
        _in_set(s, "direction", ("drop", "spike"), CRITICAL)
        _flag(s, "outside", (F.col("observed") < F.col("lower")) | (F.col("observed") > F.col("upper")), CRITICAL,
              "observed_outside_the_interval")
        _flag(s, "interval", F.col("lower") <= F.col("upper"), CRITICAL, "lower_not_above_upper")


ANALYSIS_TABLES = ("gold_metrics_daily", "gold_funnels", "gold_retention", "gold_transitions", "ops_alerts")
GATED = tuple(t for t in (
    *(bronze_name(ch) for ch in CHANNELS), "bronze_quarantine", "ops_ingest_files", "silver_events", "silver_orders",
    "silver_contacts", "silver_identifiers", "silver_id_links", "gold_id_map", "gold_id_dropped", "gold_id_decisions",
    "gold_id_changes", "gold_profiles", "gold_consent", "gold_recent_events", "gold_tags", "gold_profile_tags",
    "gold_segment_members", "gold_scores", *ANALYSIS_TABLES,
))


def suite_for(table: str, ctx: SuiteContext) -> Suite:
    """The suite of `table` for the batch in `ctx` (every gated table has one)."""
    if table not in GATED:
        raise KeyError(f"no quality suite for {table!r}; suites exist for {list(GATED)}")
    s = Suite(name=table)
    _common(s, table, ctx)
    _unique_over_the_table(s, ctx)
    if table.startswith("bronze_") and table != "bronze_quarantine":
        _bronze(s, table.removeprefix("bronze_"))
    elif table.startswith("silver_"):
        _silver(s, table, ctx)
    elif table in ("gold_id_map", "gold_id_dropped", "gold_id_decisions", "gold_id_changes"):
        _gold(s, table, ctx)
    elif table.startswith("gold_"):
        _marts(s, table, ctx)
    _ops(s, table, ctx)
    _analysis(s, table, ctx)
    return s


def gx_suite(s: Suite) -> gx.ExpectationSuite:
    """The GX ExpectationSuite object of a Suite."""
    return gx.ExpectationSuite(name=s.name, expectations=list(s.expectations))
