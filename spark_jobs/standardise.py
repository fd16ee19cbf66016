"""Standardise: reads bronze_<channel> for a batch; writes silver_events, silver_orders, silver_contacts,
silver_identifiers and silver_id_links (canonical identifiers and the links One-ID resolves)."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from spark_jobs.config import CHANNELS, StandardiseConfig
from spark_jobs.contracts import bronze_name
from spark_jobs.normalise import device_id_col, email_col, with_canonical_phones
from spark_jobs.privacy.consent import CRM_CONSENT_FIELDS
from spark_jobs.tables import Lakehouse

# Bronze strings are already trimmed, with blanks as NULL (ingest). Separators inside identifier tokens: control characters never found in identifier values.
_SEP_TYPE, _SEP_ID = "\u0001", "\u0002"


def _pick_per_key(df: DataFrame, keys: list[str], order: list[Column]) -> DataFrame:
    """One row per key: the first by `order`. (A sorted window: measured on Sail 0.7.2 as several
    times faster than a min/max aggregate over a struct.)"""
    w = Window.partitionBy(*keys).orderBy(*order)
    return df.withColumn("__rn", F.row_number().over(w)).where("__rn = 1").drop("__rn")


def _first_per_key(df: DataFrame, keys: list[str]) -> DataFrame:
    """Keep one row per key: the first delivered (by source file and line)."""
    return _pick_per_key(df, keys, [F.col("_source_file"), F.col("_line")])


def _local_date(ts: Column, tz: str) -> Column:
    return F.to_date(F.from_utc_timestamp(ts, tz))


def _source(bronze: DataFrame, default: str) -> Column:
    """The bronze record's source (conf/sources.yaml); frames made without one are the built-in channel's."""
    return (F.col("_source") if "_source" in bronze.columns else F.lit(default)).alias("_source")


def _optional(df: DataFrame, name: str, type_: str = "string") -> Column:
    """A column frames from before it existed lack (older bronze tables, hand-made test frames): NULL there."""
    return (F.col(name) if name in df.columns else F.lit(None).cast(type_)).alias(name)


def _consent_status(df: DataFrame, name: str) -> Column:
    """A consent status in lower case (ingest admitted opt_in / opt_out in any case)."""
    return F.lower(_optional(df, name)).alias(name)


def build_events(app: DataFrame, wechat: DataFrame, cfg: StandardiseConfig, batch_date: dt.date) -> DataFrame:
    """silver_events from bronze app/web and WeChat events: one model, canonical identifiers."""
    null = F.lit(None).cast("string")
    app_rows = _first_per_key(app, ["event_id"]).select(
        "event_id", F.lit("app").alias("channel"), "event_name", "event_time",
        device_id_col(F.col("device_id")).alias("device_id"), "login_id",
        null.alias("openid"), "unionid", null.alias("appid"), F.col("phone").alias("phone_raw"),
        "platform", "props", null.alias("wechat_consent"), _source(app, "app_events"),
    )
    wx_rows = _first_per_key(wechat, ["event_id"]).select(
        "event_id", F.lit("wechat").alias("channel"), "event_name", "event_time",
        null.alias("device_id"), null.alias("login_id"), "openid",
        "unionid", "appid", F.col("phone").alias("phone_raw"),
        F.lit("wechat").alias("platform"), "props", _consent_status(wechat, "wechat_consent"), _source(wechat, "wechat"),
    )
    events = with_canonical_phones(app_rows.unionByName(wx_rows), {"phone_raw": "phone"}, cfg.phone_region)
    return events.select(
        "event_id", "channel", "event_name", "event_time",
        _local_date(F.col("event_time"), cfg.timezone).alias("event_date"),
        "device_id", "login_id", "openid", "unionid", "appid", "phone", "platform", "props", "wechat_consent", "_source",
        F.lit(batch_date).alias("_batch_date"),
    )


def build_orders(orders: DataFrame, pos: DataFrame, cfg: StandardiseConfig, batch_date: dt.date) -> DataFrame:
    """silver_orders from e-commerce orders and offline POS transactions."""
    null = F.lit(None).cast("string")
    online = _first_per_key(orders, ["order_id"]).select(
        "order_id", F.lit("ecommerce").alias("channel"), "member_id",
        F.col("phone").alias("phone_raw"), null.alias("store_id"), "items", "category", "amount", "paid_time",
        _source(orders, "orders"),
    )
    offline = _first_per_key(pos, ["txn_id"]).select(
        F.col("txn_id").alias("order_id"), F.lit("pos").alias("channel"), null.alias("member_id"),
        F.col("member_phone").alias("phone_raw"), "store_id", null.alias("items"), null.alias("category"),
        "amount", F.col("txn_time").alias("paid_time"), _source(pos, "pos"),
    )
    both = with_canonical_phones(online.unionByName(offline), {"phone_raw": "phone"}, cfg.phone_region)
    return both.select(
        "order_id", "channel", "member_id", "phone", "store_id", "items", "category", "amount", "paid_time",
        "_source", F.lit(batch_date).alias("_batch_date"),
    )


def build_contacts(crm: DataFrame, leads: DataFrame, cfg: StandardiseConfig, batch_date: dt.date) -> DataFrame:
    """silver_contacts: the latest CRM version of each member per local day of its update, and each ad
    lead, canonical phone/email. (Per day, not per batch: a history load holding many days keeps the
    versions that daily loads would, so the profiles built from them are the same.)"""
    null = F.lit(None).cast("string")
    day = _local_date(F.col("updated_at"), cfg.timezone).alias("__day")
    members = (
        _pick_per_key(crm.withColumn("__day", day), ["member_id", "__day"],
                      [F.col(c).desc() for c in ("updated_at", "_source_file", "_line")])
        .select(
            F.col("member_id").alias("contact_id"), F.lit("crm").alias("source"), "member_id", "name",
            F.col("phone").alias("phone_raw"), email_col(F.col("email")).alias("email"), "login_id", "unionid",
            F.upper("gender").alias("gender"), "birthday", "city",
            F.lower("tier").alias("tier"), null.alias("campaign"), null.alias("ad_platform"),
            "registered_at", "updated_at", *[_consent_status(crm, f) for f in CRM_CONSENT_FIELDS.values()],
            _optional(crm, "consent_time", "timestamp"), F.lower(_optional(crm, "consent_source")).alias("consent_source"),
            _source(crm, "crm"),
        )
    )
    lead_rows = _first_per_key(leads, ["lead_id"]).select(
        F.col("lead_id").alias("contact_id"), F.lit("ad_leads").alias("source"), null.alias("member_id"),
        null.alias("name"), F.col("phone").alias("phone_raw"), null.alias("email"), null.alias("login_id"),
        null.alias("unionid"), null.alias("gender"),
        F.lit(None).cast("date").alias("birthday"), null.alias("city"), null.alias("tier"), "campaign",
        "ad_platform", F.lit(None).cast("timestamp").alias("registered_at"), F.col("created_at").alias("updated_at"),
        *[null.alias(f) for f in CRM_CONSENT_FIELDS.values()], F.lit(None).cast("timestamp").alias("consent_time"),
        null.alias("consent_source"), _source(leads, "ad_leads"),
    )
    both = with_canonical_phones(members.unionByName(lead_rows), {"phone_raw": "phone"}, cfg.phone_region)
    return both.select(
        "contact_id", "source", "member_id", "name", "phone", "email", "login_id", "unionid", "gender", "birthday", "city", "tier",
        "campaign", "ad_platform", "registered_at", "updated_at", *CRM_CONSENT_FIELDS.values(), "consent_time", "consent_source",
        "_source", F.lit(batch_date).alias("_batch_date"),
    )


# The identifier columns each silver record kind carries (the column names are the id types), when
# no source declarations are given: what conf/sources.yaml's built-in channels declare.
SOURCE_ID_COLUMNS: dict[str, tuple[str, ...]] = {
    "app_events": ("device_id", "login_id", "phone", "unionid"),
    "wechat": ("openid", "unionid", "phone"),
    "orders": ("member_id", "phone"),
    "pos": ("member_id", "phone"),
    "crm": ("member_id", "phone", "email", "login_id", "unionid"),
    "ad_leads": ("member_id", "phone", "email", "login_id", "unionid"),
}
# Which silver identifier set a model's records join (orders and POS share silver_orders, CRM members
# and leads silver_contacts), and the silver column of a model field where the names differ.
_ID_SET_OF_MODEL = {"app_events": "app_events", "wechat": "wechat", "orders": "orders", "pos": "orders",
                    "crm": "crm", "ad_leads": "crm"}
_SILVER_COLUMN = {("pos", "member_phone"): "phone"}


def declared_id_columns(sources) -> dict[str, tuple[str, ...]]:
    """The identifier columns of each silver record kind, from the identity semantics the sources
    declare (conf/sources.yaml `identifiers`): One-ID links exactly the fields some source of the model
    declares, with their id types. Orders and POS share one set, as do CRM members and leads."""
    sets: dict[str, dict[str, None]] = {k: {} for k in ("app_events", "wechat", "orders", "crm")}
    for src in sources.sources.values():
        for field, decl in src.identifier_fields().items():
            column = _SILVER_COLUMN.get((src.model, field), field)
            if column != decl.type:
                raise ValueError(f"source {src.name}: field {field} is declared a {decl.type} identifier, but its "
                                 f"silver column is {column!r}; identifiers are stored under their type's name")
            sets[_ID_SET_OF_MODEL[src.model]].setdefault(column, None)
    out = {k: tuple(v) for k, v in sets.items()}
    return {**out, "pos": out["orders"], "ad_leads": out["crm"]}


# Evidence strength, weakest first. verified: the person proved the identifier (SMS code, WeChat
# authorisation, a CRM binding); binding: the system bound it to an account (a signed-in device);
# contact: someone typed it (a receiver phone, a lead form). A link is as strong as its weaker end.
STRENGTHS = ("contact", "binding", "verified")
# The evidence of an identifier column when no source declares it: the built-in channels' declarations
# (conf/sources.yaml), by the silver identifier set's source; anything else is verified.
DEFAULT_STRENGTHS: dict[tuple[str, str], str] = {
    ("app_events", "device_id"): "contact", ("orders", "phone"): "contact", ("pos", "phone"): "contact",
    ("crm", "email"): "contact", ("ad_leads", "phone"): "contact", ("ad_leads", "email"): "contact",
}


def declared_strengths(sources) -> dict[tuple[str, str], str]:
    """(source name, silver id column) -> the strength the source declares for that identifier field."""
    out: dict[tuple[str, str], str] = {}
    for src in sources.sources.values():
        for field, decl in src.identifier_fields().items():
            out[(src.name, _SILVER_COLUMN.get((src.model, field), field))] = decl.strength
    return out


def strength_col(bronze_source: Column, set_source: Column, id_type: Column,
                 declared: dict[tuple[str, str], str] | None = None) -> Column:
    """The evidence of an identifier of `id_type` on a record of `bronze_source`: the source's
    declaration, else the built-in channel's (by the set's source), else verified. One flat CASE."""
    col = None
    for (src, t), strength in [*(declared or {}).items()]:
        hit = (bronze_source == src) & (id_type == t)
        col = F.when(hit, F.lit(strength)) if col is None else col.when(hit, F.lit(strength))
    for (src, t), strength in DEFAULT_STRENGTHS.items():
        hit = (set_source == src) & (id_type == t)
        col = F.when(hit, F.lit(strength)) if col is None else col.when(hit, F.lit(strength))
    return col.otherwise(F.lit("verified"))


def strength_rank(strength: Column) -> Column:
    """0 (contact), 1 (binding), 2 (verified): for the weaker of two ends, or the strongest seen."""
    return F.when(strength == "contact", 0).when(strength == "binding", 1).otherwise(2)


def id_tokens(id_columns: tuple[str, ...]) -> Column:
    """A record's identifier set: its sorted `type\x01value` tokens."""
    tokens = [F.when(F.col(c).isNotNull(), F.concat(F.lit(c + _SEP_TYPE), F.col(c))) for c in id_columns]
    return F.array_sort(F.array_compact(F.array(*tokens)))


def link_id(ids: Column) -> Column:
    """The id of an identifier set (silver_identifiers.link_id): a hash of its tokens."""
    return F.sha2(F.concat_ws(_SEP_ID, ids), 256)


def _id_set(source: Column, ref: Column, ts: Column, id_columns: tuple[str, ...]) -> list[Column]:
    """Columns of one record's identifier set: source, its bronze source, record_ref, ts and sorted
    `type\x01value` tokens."""
    return [
        source.alias("source"), F.coalesce(F.col("_source"), source).alias("_source"),
        F.concat(source, F.lit(":"), ref).alias("record_ref"), ts.alias("ts"),
        id_tokens(id_columns).alias("ids"),
    ]


def build_identifier_sets(events: DataFrame, orders: DataFrame, contacts: DataFrame,
                          id_columns: dict[str, tuple[str, ...]] | None = None) -> DataFrame:
    """One row per distinct set of canonical identifiers seen together on records of one source (and
    bronze source, whose declarations give each identifier's strength): source, _source, link_id, ids
    (sorted `type\x01value` tokens), records, first/last seen, one record_ref.
    `id_columns`: the identifier columns per record kind (declared_id_columns of the sources)."""
    ids = id_columns or SOURCE_ID_COLUMNS
    # Frames made without a bronze source (tests, older tables) count as the built-in channel's.
    events, orders, contacts = (df if "_source" in df.columns else df.withColumn("_source", F.lit(None).cast("string"))
                                for df in (events, orders, contacts))
    app = events.where(F.col("channel") == "app").select(
        *_id_set(F.lit("app_events"), F.col("event_id"), F.col("event_time"), ids["app_events"])
    )
    wx = events.where(F.col("channel") == "wechat").select(
        *_id_set(F.lit("wechat"), F.col("event_id"), F.col("event_time"), ids["wechat"])
    )
    order_source = F.when(F.col("channel") == "pos", F.lit("pos")).otherwise(F.lit("orders"))
    ords = orders.select(*_id_set(order_source, F.col("order_id"), F.col("paid_time"), ids["orders"]))
    cons = contacts.select(*_id_set(F.col("source"), F.col("contact_id"), F.col("updated_at"), ids["crm"]))
    records = app.unionByName(wx).unionByName(ords).unionByName(cons).where(F.size("ids") > 0)
    return (
        records.withColumn("link_id", link_id(F.col("ids")))
        .groupBy("source", "_source", "link_id")
        .agg(
            F.first("ids").alias("ids"), F.count(F.lit(1)).alias("records"), F.min("record_ref").alias("record_ref"),
            F.min("ts").alias("first_seen"), F.max("ts").alias("last_seen"),
        )
    )


def _split_token(token: Column, prefix: str) -> list[Column]:
    parts = F.split(token, _SEP_TYPE, 2)
    return [parts.getItem(0).alias(f"{prefix}type"), parts.getItem(1).alias(f"{prefix}value")]


def _seen() -> tuple[Column, ...]:
    return F.sum("records").alias("records"), F.min("first_seen").alias("first_seen"), F.max("last_seen").alias("last_seen")


def build_identifiers(sets: DataFrame, batch_date: dt.date,
                      strengths: dict[tuple[str, str], str] | None = None) -> DataFrame:
    """silver_identifiers: one row per identifier per identifier set and strength (`strengths`: the
    sources' declarations, declared_strengths)."""
    one = sets.select("*", F.explode("ids").alias("__tok"))
    one = one.select(
        *[c.alias(n) for c, n in zip(_split_token(F.col("__tok"), "id_"), ("id_type", "id_value"), strict=True)],
        "source", "_source", "link_id", "record_ref", "records", "first_seen", "last_seen",
    ).withColumn("strength", strength_col(F.col("_source"), F.col("source"), F.col("id_type"), strengths))
    return one.groupBy("id_type", "id_value", "source", "link_id", "strength").agg(
        F.min("record_ref").alias("record_ref"), *_seen(),
    ).select("id_type", "id_value", "source", "link_id", "record_ref", "records", "first_seen", "last_seen", "strength",
             F.lit(batch_date).alias("_batch_date"))


def build_id_links(sets: DataFrame, batch_date: dt.date,
                   strengths: dict[tuple[str, str], str] | None = None) -> DataFrame:
    """silver_id_links: every pair of identifiers in a set (src < dst by type and value), with the
    weaker end's strength."""
    pairs = (
        sets.where(F.size("ids") > 1)
        .select("*", F.posexplode("ids").alias("__i", "__a"))
        .select("*", F.posexplode("ids").alias("__j", "__b"))
        .where(F.col("__i") < F.col("__j"))
        .select("link_id", *_split_token(F.col("__a"), "src_"), *_split_token(F.col("__b"), "dst_"), "source", "_source",
                "records", "first_seen", "last_seen")
    )
    ends = [strength_rank(strength_col(F.col("_source"), F.col("source"), F.col(f"{e}_type"), strengths)) for e in ("src", "dst")]
    weaker = F.least(*ends)
    pairs = pairs.withColumn("strength", F.when(weaker == 0, "contact").when(weaker == 1, "binding").otherwise("verified"))
    return pairs.groupBy("link_id", "src_type", "src_value", "dst_type", "dst_value", "source", "strength").agg(*_seen()).select(
        "link_id", "src_type", "src_value", "dst_type", "dst_value", "source", "records", "first_seen", "last_seen",
        "strength", F.lit(batch_date).alias("_batch_date"))


def run(lh: Lakehouse, cfg: StandardiseConfig, batch_date: dt.date, id_columns: dict[str, tuple[str, ...]] | None = None,
        strengths: dict[tuple[str, str], str] | None = None) -> dict:
    """Standardise one batch date; returns rows written per silver table. `id_columns` and `strengths`:
    the sources' identity declarations (declared_id_columns, declared_strengths)."""
    part = {"_batch_date": batch_date}
    # A channel never ingested reads as empty: standardise still publishes every silver table.
    b = {ch: lh.read_or_empty(bronze_name(ch), part) for ch in CHANNELS}
    lh.write_partition("silver_events", build_events(b["app_events"], b["wechat"], cfg, batch_date), part)
    # Contacts before orders: the orders' quality suite checks their members against the CRM.
    lh.write_partition("silver_contacts", build_contacts(b["crm"], b["ad_leads"], cfg, batch_date), part)
    lh.write_partition("silver_orders", build_orders(b["orders"], b["pos"], cfg, batch_date), part)
    stage_key = f"standardise/{batch_date.isoformat()}"
    sets = lh.stage(stage_key, build_identifier_sets(
        lh.read("silver_events", part), lh.read("silver_orders", part), lh.read("silver_contacts", part), id_columns
    ))
    lh.write_partition("silver_identifiers", build_identifiers(sets, batch_date, strengths), part)
    lh.write_partition("silver_id_links", build_id_links(sets, batch_date, strengths), part)
    lh.unstage(stage_key)
    return {name: lh.read(name, part).count() for name in
            ("silver_events", "silver_orders", "silver_contacts", "silver_identifiers", "silver_id_links")}


