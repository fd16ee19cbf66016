"""Declares the contract (columns, types, nullability, partitioning, keys) of every CDP table; no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pyspark.sql import types as T

from spark_jobs.privacy.consent import CONSENT_SOURCES, CONSENT_STATUSES, CRM_CONSENT_FIELDS


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # string | long | int | double | boolean | date | timestamp | decimal(p,s)
    nullable: bool = True
    doc: str = ""

    def spark_type(self) -> T.DataType:
        return spark_type(self.type)


@dataclass(frozen=True)
class TableContract:
    """One table's declared shape. Tables are created from it with every column nullable in storage
    (Sail drops columns on later schema-merging appends to tables created non-nullable); the declared
    nullability is enforced on the data by every write instead."""

    name: str
    columns: tuple[Column, ...]
    partition_by: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    doc: str = ""
    layer: str = field(init=False)

    def __post_init__(self) -> None:
        layer = self.name.split("_", 1)[0]
        if layer not in LAYERS:
            raise ValueError(f"table {self.name!r} must start with one of {LAYERS}")
        object.__setattr__(self, "layer", layer)
        names = [c.name for c in self.columns]
        for col in (*self.partition_by, *self.keys):
            if col not in names:
                raise ValueError(f"{self.name}: partition/key column {col!r} is not a column")

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def schema(self) -> T.StructType:
        """The storage schema: declared types, all nullable."""
        return T.StructType([T.StructField(c.name, c.spark_type(), True) for c in self.columns])

    def required(self) -> list[str]:
        return [c.name for c in self.columns if not c.nullable]

    def arrow_schema(self):
        """The storage schema as pyarrow (for writes through delta-rs): timestamps are UTC instants."""
        import pyarrow as pa

        simple = {"string": pa.string(), "long": pa.int64(), "int": pa.int32(), "double": pa.float64(),
                  "boolean": pa.bool_(), "date": pa.date32(), "timestamp": pa.timestamp("us", tz="UTC")}

        def arrow(t: str):
            m = _DECIMAL.fullmatch(t)
            return pa.decimal128(int(m.group(1)), int(m.group(2))) if m else simple[t]

        return pa.schema([pa.field(c.name, arrow(c.type), True) for c in self.columns])


LAYERS = ("bronze", "silver", "gold", "ops")

_SIMPLE = {
    "string": T.StringType(),
    "long": T.LongType(),
    "int": T.IntegerType(),
    "double": T.DoubleType(),
    "boolean": T.BooleanType(),
    "date": T.DateType(),
    "timestamp": T.TimestampType(),
}
_DECIMAL = re.compile(r"decimal\((\d+),\s*(\d+)\)")


def spark_type(name: str) -> T.DataType:
    if name in _SIMPLE:
        return _SIMPLE[name]
    m = _DECIMAL.fullmatch(name)
    if m:
        return T.DecimalType(int(m.group(1)), int(m.group(2)))
    raise ValueError(f"unknown column type {name!r}")


def _c(name: str, type_: str = "string", nullable: bool = True, doc: str = "") -> Column:
    return Column(name, type_, nullable, doc)


# --- bronze: typed rows of each channel, plus lineage ------------------------------------------
LINEAGE = (
    _c("_source_file", nullable=False, doc="path of the landing file, relative to landing/"),
    _c("_line", "long", nullable=False, doc="1-based physical line where the record starts in the file"),
    _c("_batch_date", "date", nullable=False, doc="the batch (landing folder) date"),
    _c("_ingested_at", "timestamp", nullable=False, doc="when the ingest run started"),
    _c("_row_hash", nullable=False, doc="sha256 of the raw record text"),
)

# Raw fields of each channel, in file order (docs/channels.md). Types are what bronze stores; a
# present value that does not parse as its type sends the row to quarantine (never a silent NULL).
CHANNEL_FIELDS: dict[str, tuple[Column, ...]] = {
    "app_events": (
        _c("event_id", nullable=False), _c("device_id"), _c("login_id"),
        _c("phone", doc="the account's phone, on login and register events (SMS verification)"),
        _c("unionid", doc="the WeChat unionid, on login and register events through WeChat sign-in"),
        _c("platform"),
        _c("event_name", nullable=False), _c("event_time", "timestamp", nullable=False),
        _c("props", doc="event properties as a JSON object string"),
    ),
    "wechat": (
        _c("event_id", nullable=False), _c("appid", nullable=False), _c("openid", nullable=False),
        _c("unionid"), _c("phone"), _c("event_name", nullable=False),
        _c("event_time", "timestamp", nullable=False), _c("props", doc="JSON object string"),
        _c("wechat_consent", doc="mp_subscribe: the answer to the subscribe-message prompt, opt_in | opt_out"),
    ),
    "crm": (
        _c("member_id", nullable=False), _c("name"), _c("phone"), _c("email"),
        _c("login_id", doc="the app account bound to the membership"),
        _c("unionid", doc="the WeChat unionid bound to the membership"), _c("gender"),
        _c("birthday", "date"), _c("city"), _c("tier"), _c("registered_at", "timestamp"),
        _c("updated_at", "timestamp", nullable=False),
        *(_c(f, doc=f"marketing consent for {ch}: opt_in | opt_out (empty: never asked)") for ch, f in CRM_CONSENT_FIELDS.items()),
        _c("consent_time", "timestamp", doc="when the consent statement was given (empty: the record's updated_at)"),
        _c("consent_source", doc=f"where it was given: one of {CONSENT_SOURCES}"),
    ),
    "orders": (
        _c("order_id", nullable=False), _c("member_id"), _c("phone"), _c("items"),
        _c("amount", "decimal(12,2)", nullable=False), _c("paid_time", "timestamp", nullable=False),
        _c("category"),
    ),
    "pos": (
        _c("txn_id", nullable=False), _c("store_id", nullable=False), _c("member_phone"),
        _c("amount", "decimal(12,2)", nullable=False), _c("txn_time", "timestamp", nullable=False),
    ),
    "ad_leads": (
        _c("lead_id", nullable=False), _c("phone"), _c("campaign"), _c("ad_platform"),
        _c("booking_store"), _c("created_at", "timestamp", nullable=False),
    ),
}
# Event names each event channel may send (quality suites check them; the generator draws from them).
EVENT_NAMES: dict[str, tuple[str, ...]] = {
    "app_events": ("app_start", "page_view", "search", "view_item", "add_cart", "pay_order", "login",
                   "register", "share"),
    "wechat": ("mp_open", "mp_view_item", "mp_add_cart", "mp_pay", "oa_follow", "oa_click", "phone_auth", "mp_subscribe"),
}
CHANNEL_FORMAT = {
    "app_events": "jsonl", "wechat": "jsonl", "crm": "csv", "orders": "csv", "pos": "csv",
    "ad_leads": "csv",
}
# The record key of each model: the fields that name one record across every batch. A source may
# declare its own (conf/sources.yaml `key`); a record whose key an earlier batch loaded is a duplicate.
RECORD_KEYS: dict[str, tuple[str, ...]] = {
    "app_events": ("event_id",), "wechat": ("event_id",), "crm": ("member_id", "updated_at"),
    "orders": ("order_id",), "pos": ("txn_id",), "ad_leads": ("lead_id",),
}
TIERS = ("normal", "silver", "gold", "platinum")


@dataclass(frozen=True)
class RecordRule:
    """A value rule one record must keep to be loaded, named as the Great Expectations expectation
    that checks it on the table. Ingest quarantines a record that breaks it, with `name` as the reason
    (a row-level failure never stops the day); the table's suite then checks it as critical."""

    column: str
    in_set: tuple[str, ...] | None = None  # allowed values
    ignore_case: bool = False  # compare in_set upper- and lower-case alike
    min_value: float | None = None

    @property
    def expectation(self) -> str:
        return "expect_column_values_to_be_in_set" if self.in_set is not None else "expect_column_values_to_be_between"

    @property
    def name(self) -> str:
        return f"{self.expectation}: {self.column}"


# Rules per model: what the silver tables require of every row, checked where the record still is one.
RECORD_RULES: dict[str, tuple[RecordRule, ...]] = {
    "app_events": (RecordRule("event_name", in_set=EVENT_NAMES["app_events"]),),
    "wechat": (RecordRule("event_name", in_set=EVENT_NAMES["wechat"]),
               RecordRule("wechat_consent", in_set=CONSENT_STATUSES, ignore_case=True)),
    "orders": (RecordRule("amount", min_value=0),),
    "pos": (RecordRule("amount", min_value=0),),
    "crm": (RecordRule("gender", in_set=("M", "F"), ignore_case=True), RecordRule("tier", in_set=TIERS, ignore_case=True),
            # An unreadable consent is quarantined: read as "no answer" it would silently change a person's choice.
            *(RecordRule(f, in_set=CONSENT_STATUSES, ignore_case=True) for f in CRM_CONSENT_FIELDS.values()),
            RecordRule("consent_source", in_set=CONSENT_SOURCES, ignore_case=True)),
    "ad_leads": (),
}


FILE_STATUSES = ("loaded", "duplicate", "skipped", "refused", "deleted")


@dataclass(frozen=True)
class KeyProof:
    """A writer's proof that the frame it writes is unique on its table's contract key, by construction:
    the frame is `premise` (a smaller frame) with each row expanded into rows that differ in the rest of
    the key, e.g. gold_tags is the wide tag frame, one row per person, exploded into one row per
    distinctly named tag. The gate then checks the premise (`premise` unique and non-null on
    `premise_key`, one pass over the small frame) instead of the key over the large one, and records
    the key check as proved; when the premise does not hold it checks the key itself."""

    reason: str
    premise: object  # a DataFrame (kept untyped: contracts do not import pyspark.sql.DataFrame)
    premise_key: tuple[str, ...]


def bronze_name(channel: str) -> str:
    return f"bronze_{channel}"


# Bronze tables hold one record model each, fed by one or more sources (conf/sources.yaml).
SOURCE_COLUMNS = (
    _c("_extra", doc="columns or keys of the record that the source does not map, as a JSON object"),
    _c("_source", nullable=False, doc="the source (conf/sources.yaml) the record came from"),
)

_TABLES: list[TableContract] = [
    TableContract(
        bronze_name(ch), (*fields, *SOURCE_COLUMNS, *LINEAGE), partition_by=("_batch_date", "_source"),
        keys=("_source_file", "_line"), doc=f"typed records of the {ch} model, from every source that feeds it",
    )
    for ch, fields in CHANNEL_FIELDS.items()
]

_TABLES += [
    TableContract(
        "bronze_quarantine",
        (
            _c("channel", nullable=False, doc="the source (conf/sources.yaml) of the file"), _c("_source_file", nullable=False),
            _c("_line", "long", nullable=False), _c("raw", doc="the raw line as read"),
            _c("reason", nullable=False, doc="why the line was not loaded"),
            _c("_batch_date", "date", nullable=False), _c("_ingested_at", "timestamp", nullable=False),
            _c("_row_hash", nullable=False),
        ),
        partition_by=("_batch_date", "channel"), keys=("_source_file", "_line"),
        doc="lines that failed parsing or the contract, with the reason",
    ),
    TableContract(
        "ops_ingest_files",
        (
            _c("batch_date", "date", nullable=False),
            _c("channel", nullable=False, doc="the source (conf/sources.yaml) of the file"),
            _c("file", nullable=False, doc="path relative to landing/"),
            _c("checksum", doc="sha256 of the file's bytes (none for an entry that was not read: refused, deleted)"),
            _c("bytes", "long", nullable=False),
            _c("lines", "long", nullable=False, doc="physical data lines (the header's excluded)"),
            _c("records", "long", nullable=False, doc="data records (a quoted field may span lines)"),
            _c("loaded", "long", nullable=False), _c("quarantined", "long", nullable=False),
            _c("duplicates", "long", nullable=False,
               doc="records an earlier batch (or an earlier file of this one) loaded already: same key, same content"),
            _c("suppressed", "long", nullable=False,
               doc="records of an erased person (ops_suppressions): counted, kept in neither bronze nor quarantine"),
            _c("status", nullable=False, doc=f"one of {FILE_STATUSES}"),
            _c("duplicate_of", doc="the file with the same checksum that was loaded instead"),
            _c("previous_checksum", doc="a changed or deleted file: the checksum an earlier run of the batch ingested"),
            _c("note", doc="why a file was skipped, refused, changed or deleted"),
            _c("ingested_at", "timestamp", nullable=False),
        ),
        partition_by=("batch_date", "channel"), keys=("file",),
        doc="per-file accounting: records = loaded + quarantined + duplicates + suppressed, covering every line; duplicate, "
            "skipped, refused and deleted files load nothing",
    ),
    TableContract(
        "ops_runs",
        (
            _c("run_id", nullable=False), _c("batch_date", "date", nullable=False),
            _c("first_day", "date", nullable=False, doc="the first landing day loaded (a history load: --from)"),
            _c("status", nullable=False, doc="complete | failed"),
            _c("started_at", "timestamp", nullable=False), _c("finished_at", "timestamp", nullable=False),
            _c("tables", nullable=False, doc="JSON object: the Delta version of every table when the run completed"),
            _c("stale_days", nullable=False, doc="JSON list: later batch dates this run made stale (they need a re-run)"),
            _c("note", doc="why the run failed, or what it was allowed to do (out of order, changed files)"),
        ),
        partition_by=("batch_date",), keys=("run_id",),
        doc="one row per run, written last: readers that need the tables consistent read the versions of the "
            "newest complete run",
    ),
    TableContract(
        "silver_events",
        (
            _c("event_id", nullable=False), _c("channel", nullable=False), _c("event_name", nullable=False),
            _c("event_time", "timestamp", nullable=False), _c("event_date", "date", nullable=False),
            _c("device_id"), _c("login_id"), _c("openid"), _c("unionid"), _c("appid"), _c("phone"),
            _c("platform"), _c("props"), _c("wechat_consent", doc="mp_subscribe: opt_in | opt_out"),
            _c("_source", doc="the source (conf/sources.yaml) of the bronze record (NULL: the built-in channel's)"),
            _c("_batch_date", "date", nullable=False),
        ),
        partition_by=("_batch_date",), keys=("channel", "event_id"),
        doc="app/web and WeChat events in one model, identifiers canonical",
    ),
    TableContract(
        "silver_orders",
        (
            _c("order_id", nullable=False), _c("channel", nullable=False), _c("member_id"), _c("phone"),
            _c("store_id"), _c("items"), _c("category"), _c("amount", "decimal(12,2)", nullable=False),
            _c("paid_time", "timestamp", nullable=False), _c("_source", doc="the source (conf/sources.yaml) of the bronze record (NULL: the built-in channel's)"),
            _c("_batch_date", "date", nullable=False),
        ),
        partition_by=("_batch_date",), keys=("channel", "order_id"),
        doc="e-commerce orders and offline POS transactions",
    ),
    TableContract(
        "silver_contacts",
        (
            _c("contact_id", nullable=False), _c("source", nullable=False), _c("member_id"), _c("name"),
            _c("phone"), _c("email"), _c("login_id"), _c("unionid"), _c("gender"), _c("birthday", "date"),
            _c("city"), _c("tier"), _c("campaign"), _c("ad_platform"), _c("registered_at", "timestamp"),
            _c("updated_at", "timestamp", nullable=False),
            *(_c(f, doc="opt_in | opt_out, lower case") for f in CRM_CONSENT_FIELDS.values()),
            _c("consent_time", "timestamp"), _c("consent_source"),
            _c("_source", doc="the source (conf/sources.yaml) of the bronze record (NULL: the built-in channel's)"),
            _c("_batch_date", "date", nullable=False),
        ),
        partition_by=("_batch_date",), keys=("source", "contact_id", "updated_at"),
        doc="CRM members (latest version per member and local day of update) and ad-platform leads",
    ),
    TableContract(
        "silver_identifiers",
        (
            _c("id_type", nullable=False), _c("id_value", nullable=False), _c("source", nullable=False),
            _c("link_id", nullable=False, doc="hash of the set of identifiers seen together on a record"),
            _c("record_ref", nullable=False, doc="one record that carried this set: <channel>:<id>"),
            _c("records", "long", nullable=False), _c("first_seen", "timestamp", nullable=False),
            _c("last_seen", "timestamp", nullable=False), _c("strength", nullable=False, doc="the evidence: verified | binding | contact (the source field's declaration)"),
            _c("_batch_date", "date", nullable=False),
        ),
        partition_by=("_batch_date",), keys=("id_type", "id_value", "source", "link_id", "strength"),
        doc="one row per observed canonical identifier and identifier set",
    ),
    TableContract(
        "silver_id_links",
        (
            _c("link_id", nullable=False), _c("src_type", nullable=False), _c("src_value", nullable=False),
            _c("dst_type", nullable=False), _c("dst_value", nullable=False), _c("source", nullable=False),
            _c("records", "long", nullable=False), _c("first_seen", "timestamp", nullable=False),
            _c("last_seen", "timestamp", nullable=False), _c("strength", nullable=False, doc="the weaker end's evidence: verified | binding | contact"),
            _c("_batch_date", "date", nullable=False),
        ),
        partition_by=("_batch_date",), keys=("source", "link_id", "src_type", "src_value", "dst_type", "dst_value", "strength"),
        doc="pairs of identifiers seen on the same record: the edges One-ID resolves",
    ),
]

_TABLES += [
    TableContract(
        "gold_id_map",
        (
            _c("id_type", nullable=False), _c("id_value", nullable=False), _c("person_id", nullable=False),
            _c("first_seen", "timestamp", nullable=False), _c("last_seen", "timestamp", nullable=False),
            _c("valid_from", "timestamp", doc="from when the identifier is this person's (NULL: since first seen)"),
            _c("valid_to", "timestamp", doc="until when (NULL: still); a re-issued phone has one row per owner"),
            _c("as_of", "date", nullable=False, doc="the batch date this mapping is as of"),
        ),
        partition_by=("as_of",), keys=("id_type", "id_value", "person_id"),
        doc="One-ID: every usable identifier and its person id (per ownership period), one snapshot per batch date",
    ),
    TableContract(
        "gold_id_decisions",
        (
            _c("id_type", nullable=False), _c("id_value", nullable=False), _c("other_type", nullable=False),
            _c("other_value", nullable=False), _c("match_weight", "double", nullable=False, doc="log2 Bayes factor"),
            _c("match_probability", "double", nullable=False), _c("decision", nullable=False, doc="merge | keep_apart"),
            _c("comparisons", nullable=False, doc="JSON: the level of each comparison (name, birthday, ...)"),
            _c("reason", nullable=False, doc="why the pair was a candidate"), _c("as_of", "date", nullable=False),
        ),
        partition_by=("as_of",), keys=("id_type", "id_value", "other_type", "other_value"),
        doc="the learned tie-break's audit: every candidate pair of memberships, its match weight and decision",
    ),
    TableContract(
        "gold_id_dropped",
        (
            _c("id_type", nullable=False), _c("id_value", nullable=False),
            _c("other_type", doc="for a dropped link: its other end"), _c("other_value"),
            _c("rule", nullable=False), _c("detail"), _c("as_of", "date", nullable=False),
        ),
        partition_by=("as_of",), keys=("id_type", "id_value", "other_type", "other_value"),
        doc="audit of every identifier value and link the One-ID rules removed, with the rule",
    ),
    TableContract(
        "gold_id_changes",
        (
            _c("as_of", "date", nullable=False), _c("change", nullable=False, doc="new | merge | split"),
            _c("person_id", nullable=False, doc="the person id after the change"),
            _c("other_person_id", doc="merge: the id absorbed; split: the id split from"),
            _c("identifiers", "long", nullable=False),
        ),
        partition_by=("as_of",), keys=("change", "person_id", "other_person_id"),
        doc="merges, splits and new people per batch: person ids are never silently renumbered",
    ),
]

# --- gold marts: profiles, tags, segments, scores -------------------------------------------------
# Profile attributes chosen by survivorship rules (conf/cdp.yaml `profiles`); each records its source.
PROFILE_ATTRIBUTES: dict[str, str] = {
    "name": "string", "gender": "string", "birthday": "date", "city": "string", "tier": "string",
    "phone": "string", "email": "string",
}
# Derived profile columns (attribute tags may read them too).
PROFILE_DERIVED: dict[str, str] = {
    "age": "long", "first_seen": "timestamp", "last_seen": "timestamp", "tenure_days": "long",
    "channels": "string", "identifiers": "long",
}
SEGMENT_STATUSES = ("entered", "stayed", "left")

_TABLES += [
    TableContract(
        "gold_profiles",
        (
            _c("person_id", nullable=False),
            *(col for attr, type_ in PROFILE_ATTRIBUTES.items()
              for col in (_c(attr, type_), _c(f"{attr}_source", doc=f"the source whose {attr} won survivorship"))),
            _c("age", "long", doc="whole years on the as-of date"),
            _c("first_seen", "timestamp", nullable=False), _c("last_seen", "timestamp", nullable=False),
            _c("tenure_days", "long", nullable=False, doc="days from first seen to the as-of date"),
            _c("channels", nullable=False, doc="sources the person was seen in, sorted, comma-separated"),
            _c("identifiers", "long", nullable=False), _c("as_of", "date", nullable=False),
        ),
        partition_by=("as_of",), keys=("person_id",),
        doc="the golden record: one row per person per as-of date, each attribute with the source that won",
    ),
    TableContract(
        "gold_consent",
        (
            _c("person_id", nullable=False), _c("channel", nullable=False, doc="sms | wechat | email | ads"),
            _c("status", nullable=False, doc="opt_in | opt_out: the latest statement up to the as-of date"),
            _c("consent_time", "timestamp", nullable=False), _c("source", nullable=False, doc="crm | wechat: the record kind"),
            _c("consent_source", doc=f"where it was given: {CONSENT_SOURCES}"),
            _c("record_ref", nullable=False, doc="the record that made the statement: crm:<member_id> | wechat:<event_id>"),
            _c("as_of", "date", nullable=False),
        ),
        partition_by=("as_of",), keys=("person_id", "channel"),
        doc="marketing consent per person and channel as of a date (spark_jobs/privacy/consent.py); no row is no consent",
    ),
    TableContract(
        "gold_recent_events",
        (
            _c("person_id", nullable=False),
            _c("events", nullable=False, doc='JSON array, newest first: {"time" (UTC, ISO 8601), "action" (event name '
               'or order), "channel", "id" (event_id or order_id), "amount" (orders: decimal text, two places)}; ties by id'),
            _c("events_count", "long", nullable=False, doc="entries in `events` (at most profiles.recent_events_limit)"),
            _c("newest_at", "timestamp", nullable=False), _c("as_of", "date", nullable=False),
        ),
        partition_by=("as_of",), keys=("person_id",),
        doc="each person's newest events and orders of the last profiles.recent_events_days days, for the "
            "online API's /v1/profiles/{identifier}/events; people with none have no row",
    ),
    TableContract(
        "gold_tags",
        (
            _c("person_id", nullable=False), _c("tag", nullable=False), _c("value", nullable=False, doc="as text"),
            _c("value_type", nullable=False, doc="long | double | string | boolean | date"),
            _c("as_of", "date", nullable=False),
        ),
        partition_by=("as_of",), keys=("person_id", "tag"),
        doc="every tag of every person as of a date (long; NULL values are left out), from conf/tags.yaml",
    ),
    TableContract(
        "gold_profile_tags",
        (_c("person_id", nullable=False), _c("as_of", "date", nullable=False)),
        keys=("person_id",),
        doc="one row per person and one column per tag, for BI tools: the newest as-of date computed "
            "(its columns follow conf/tags.yaml; see profile_tags_contract)",
    ),
    TableContract(
        "gold_segment_members",
        (
            _c("as_of", "date", nullable=False), _c("segment", nullable=False), _c("person_id", nullable=False),
            _c("status", nullable=False, doc="entered | stayed (a member on the as-of date) | left (on it)"),
            _c("entered_on", "date", nullable=False, doc="first day of this membership spell"),
            _c("left_on", "date", doc="status left: the as-of date"),
        ),
        partition_by=("as_of",), keys=("segment", "person_id"),
        doc="segment membership per as-of date with spells: who entered or left is one query",
    ),
    TableContract(
        "gold_features",
        (
            _c("person_id", nullable=False), _c("cutoff", "date", nullable=False, doc="features use data up to it"),
            _c("horizon_days", "long", nullable=False),
            _c("label_churn", "long", doc="1: active at the cutoff, nothing in (cutoff, cutoff + horizon]; NULL: not active"),
            _c("label_purchase", "long", nullable=False, doc="1: an order in (cutoff, cutoff + horizon]"),
        ),
        partition_by=("cutoff",), keys=("cutoff", "person_id"),
        doc="point-in-time training rows (ml/features.py): one per person and cutoff, feature columns from "
            "conf `ml` (see features_contract); rewritten by each training run",
    ),
    TableContract(
        "gold_scores",
        (
            _c("person_id", nullable=False), _c("model", nullable=False), _c("version", nullable=False),
            _c("score", "double", nullable=False), _c("decile", "long", nullable=False, doc="10 = highest scores"),
            _c("as_of", "date", nullable=False),
        ),
        partition_by=("as_of", "model"), keys=("model", "person_id"),
        doc="model scores per person (written by ml/score.py; predicted tags read them)",
    ),
]

_TABLES += [
    TableContract(
        "ops_suppressions",
        (
            _c("id_type", nullable=False), _c("token", nullable=False, doc="HMAC-SHA-256 of the canonical value under the project key"),
            _c("request_id", nullable=False, doc="the erasure that recorded it"), _c("erased_at", "timestamp", nullable=False),
        ),
        keys=("id_type", "token"),
        doc="identifiers of erased people, as keyed tokens: ingest counts their records as suppressed and loads none",
    ),
    TableContract(
        "ops_dq_results",
        (
            _c("run_id", nullable=False), _c("batch_date", "date", nullable=False),
            _c("table_name", nullable=False), _c("scope", nullable=False, doc="the partition validated, e.g. `_batch_date` = DATE'2026-11-01'"),
            _c("suite", nullable=False), _c("expectation", nullable=False, doc="expectation type and its column(s)"),
            _c("level", nullable=False, doc="critical | warning | info"), _c("success", "boolean", nullable=False),
            _c("observed_value", doc="as text"), _c("unexpected_count", "long"),
            _c("unexpected_examples", doc="JSON list of up to 10 bad values"),
            _c("checked_at", "timestamp", nullable=False),
            _c("check_key", nullable=False, doc="hash of run_id and scope: one partition per validation"),
        ),
        partition_by=("batch_date", "table_name", "check_key"), keys=("check_key", "expectation"),
        doc="every Great Expectations result of every gated write, failures included, for BI and the run summary",
    ),
]

# --- analytics marts (spark_jobs/analytics/, conf/analytics.yaml) and alerts --------------------------
ALERT_SEVERITIES = ("warning", "critical")
_DIMENSION = (
    _c("dimension", nullable=False, doc="what the row is grouped by (a source column or a tag); total: not grouped"),
    _c("dimension_value", nullable=False, doc="the group's value (unknown: none); total on the total row"),
)

_TABLES += [
    TableContract(
        "gold_metrics_daily",
        (
            _c("as_of", "date", nullable=False, doc="the local day measured (the batch date)"),
            _c("metric", nullable=False), _c("kind", nullable=False, doc="people | count | sum | ratio"),
            *_DIMENSION,
            _c("value", "double", doc="the metric's value (a ratio with a zero denominator: NULL)"),
            _c("numerator", "double", doc="ratio: the numerator metric's value"),
            _c("denominator", "double", doc="ratio: the denominator metric's value"),
        ),
        partition_by=("as_of",), keys=("metric", "dimension", "dimension_value"),
        doc="each declared metric of the batch date, overall and per dimension value",
    ),
    TableContract(
        "gold_funnels",
        (
            _c("as_of", "date", nullable=False), _c("funnel", nullable=False),
            _c("cohort_date", "date", nullable=False, doc="the local day of the entries (the first step)"),
            _c("complete", "boolean", nullable=False, doc="the cohort's conversion window has closed by the as-of date"),
            *_DIMENSION,
            _c("step", "long", nullable=False, doc="1-based position in the funnel"), _c("step_name", nullable=False),
            _c("people", "long", nullable=False, doc="people who reached this step within the window"),
            _c("conversion", "double", doc="people / people of step 1"),
            _c("step_conversion", "double", doc="people / people of the previous step"),
        ),
        partition_by=("as_of",), keys=("funnel", "cohort_date", "dimension", "dimension_value", "step"),
        doc="funnel conversion per person by entry day, recomputed each day until the cohort is complete",
    ),
    TableContract(
        "gold_retention",
        (
            _c("as_of", "date", nullable=False), _c("retention", nullable=False),
            _c("period", nullable=False, doc="day | week"),
            _c("cohort", "date", nullable=False, doc="first day of the cohort period (weeks start on Monday)"),
            _c("cohort_people", "long", nullable=False, doc="people first seen in the cohort period"),
            _c("period_n", "long", nullable=False, doc="periods after the cohort's (0: the cohort period)"),
            _c("returned", "long", nullable=False, doc="cohort people with a return action in period N"),
            _c("rate", "double", nullable=False, doc="returned / cohort_people"),
            _c("complete", "boolean", nullable=False, doc="period N had ended by the as-of date"),
        ),
        partition_by=("as_of",), keys=("retention", "cohort", "period_n"),
        doc="cohort retention as of a date: the cohorts of the last `periods` periods",
    ),
    TableContract(
        "gold_transitions",
        (
            _c("as_of", "date", nullable=False), _c("transition", nullable=False),
            _c("from_date", "date", nullable=False, doc="the previous as-of date compared with"),
            _c("from_state", nullable=False, doc="the state then ((absent): not a person then)"),
            _c("to_state", nullable=False, doc="the state on the as-of date ((absent): no longer a person)"),
            _c("people", "long", nullable=False), _c("share", "double", nullable=False, doc="people / people of from_state"),
        ),
        partition_by=("as_of",), keys=("transition", "from_state", "to_state"),
        doc="how many people moved between states (lifecycle stage, segment) from the previous as-of date",
    ),
    TableContract(
        "ops_alerts",
        (
            _c("as_of", "date", nullable=False), _c("metric", nullable=False), *_DIMENSION,
            _c("observed", "double", nullable=False), _c("expected", "double", nullable=False, doc="the forecast"),
            _c("lower", "double", nullable=False), _c("upper", "double", nullable=False, doc="the forecast interval"),
            _c("level", "double", nullable=False, doc="the interval's level (%)"),
            _c("severity", nullable=False, doc=f"one of {ALERT_SEVERITIES}"), _c("direction", nullable=False, doc="drop | spike"),
            _c("drill_down", nullable=False, doc="JSON list: the dimension values explaining most of the deviation"),
            _c("method", nullable=False, doc="the forecasting model"), _c("history_days", "long", nullable=False),
            _c("run_id", nullable=False),
        ),
        partition_by=("as_of",), keys=("metric", "dimension", "dimension_value"),
        doc="metric observations outside their forecast interval, with the drill-down",
    ),
]

CONTRACTS: dict[str, TableContract] = {t.name: t for t in _TABLES}


class UnknownTableError(KeyError):
    """No contract declares this table."""

    def __str__(self) -> str:
        return f"unknown table {self.args[0]!r}; declared tables: {sorted(CONTRACTS)}"


def profile_tags_contract(tag_types: dict[str, str]) -> TableContract:
    """gold_profile_tags with one column per tag (name -> value type), in conf order."""
    base = CONTRACTS["gold_profile_tags"]
    clash = sorted(set(tag_types) & set(base.column_names))
    if clash:
        raise ValueError(f"tag names {clash} clash with gold_profile_tags columns")
    return TableContract(base.name, (*base.columns, *(_c(n, t) for n, t in tag_types.items())),
                         keys=base.keys, doc=base.doc)


def features_contract(feature_types: dict[str, str]) -> TableContract:
    """gold_features with its feature columns (name -> type) after the key columns."""
    base = CONTRACTS["gold_features"]
    cols = (*base.columns[:3], *(_c(n, t) for n, t in feature_types.items()), *base.columns[3:])
    return TableContract(base.name, cols, partition_by=base.partition_by, keys=base.keys, doc=base.doc)


def contract(name: str) -> TableContract:
    try:
        return CONTRACTS[name]
    except KeyError:
        raise UnknownTableError(name) from None
