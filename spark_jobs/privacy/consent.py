"""Marketing consent: the channels, statuses and purposes; builds gold_consent (the latest statement per
person and channel) from attributed CRM contacts and WeChat events, and keeps marketing audiences to the
people who opted in; no I/O (spark_jobs.profiles and spark_jobs.segments read and write)."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

# Channels a person can consent to be marketed through, and the statuses of a statement.
CONSENT_CHANNELS = ("sms", "wechat", "email", "ads")
CONSENT_STATUSES = ("opt_in", "opt_out")
# Where a CRM consent statement was given (the CRM's own field; a WeChat statement is given in the app).
CONSENT_SOURCES = ("store", "app", "mini_program", "web", "call_center")
# The CRM fields carrying one status per channel (bronze_crm, silver_contacts).
CRM_CONSENT_FIELDS = {ch: f"{ch}_consent" for ch in CONSENT_CHANNELS}
# A segment's purpose (conf/segments.yaml) and the consent channel it needs (None: no marketing, no consent).
PURPOSES: dict[str, str | None] = {
    "analysis": None, "marketing_sms": "sms", "marketing_wechat": "wechat", "marketing_email": "email",
    "marketing_ads": "ads",
}


class ConsentError(ValueError):
    """A consent request cannot be answered (unknown purpose or channel)."""


def purpose_channel(purpose: str) -> str | None:
    """The consent channel a purpose needs; ConsentError naming the purposes for an unknown one."""
    if purpose not in PURPOSES:
        raise ConsentError(f"unknown purpose {purpose!r}: one of {', '.join(PURPOSES)}")
    return PURPOSES[purpose]


def build_statements(contacts: DataFrame, events: DataFrame) -> DataFrame:
    """Every consent statement of attributed records: person_id, channel, status, consent_time, source
    (crm | wechat), consent_source, record_ref. `contacts`: silver_contacts rows with person_id (a CRM
    status without a consent_time is dated by the record's updated_at); `events`: silver_events rows with
    person_id (an mp_subscribe event's wechat_consent, dated by the event, given in the mini-program)."""
    crm = contacts.where(F.col("source") == "crm").select(
        "person_id", F.coalesce("consent_time", "updated_at").alias("consent_time"),
        F.lower("consent_source").alias("consent_source"),
        F.concat(F.lit("crm:"), F.col("contact_id")).alias("record_ref"),
        F.explode(F.array(*[
            F.struct(F.lit(ch).alias("channel"), F.lower(F.col(f)).alias("status"))
            for ch, f in CRM_CONSENT_FIELDS.items()
        ])).alias("s"),
    ).select("person_id", "s.channel", "s.status", "consent_time", F.lit("crm").alias("source"), "consent_source",
             "record_ref")
    wx = events.where(F.col("wechat_consent").isNotNull()).select(
        "person_id", F.lit("wechat").alias("channel"), F.lower("wechat_consent").alias("status"),
        F.col("ts").alias("consent_time"), F.lit("wechat").alias("source"),
        F.lit("mini_program").alias("consent_source"), F.concat(F.lit("wechat:"), F.col("event_id")).alias("record_ref"),
    )
    return crm.unionByName(wx).where(F.col("status").isNotNull() & F.col("person_id").isNotNull())


def build_consent(statements: DataFrame, as_of: dt.date) -> DataFrame:
    """gold_consent: per person and channel, the latest statement up to `as_of`. On a tie in time an
    opt-out wins (never market on a doubt), then the source and record in order, so re-runs agree."""
    w = Window.partitionBy("person_id", "channel").orderBy(
        F.col("consent_time").desc(), F.when(F.col("status") == "opt_out", 0).otherwise(1), "source", "record_ref")
    latest = statements.withColumn("__rn", F.row_number().over(w)).where("__rn = 1")
    return latest.select("person_id", "channel", "status", "consent_time", "source", "consent_source", "record_ref",
                         F.lit(as_of).alias("as_of"))


def with_consent(members: DataFrame, consent: DataFrame, channel: str) -> DataFrame:
    """`members` (with person_id) plus `consented`: true only for a person whose latest statement for
    `channel` is opt_in. No statement is no consent (PIPL art. 14, GDPR art. 7: consent is given, never
    presumed)."""
    ok = (consent.where((F.col("channel") == channel) & (F.col("status") == "opt_in"))
          .select("person_id", F.lit(True).alias("consented")))
    return members.join(ok, "person_id", "left").withColumn("consented", F.coalesce("consented", F.lit(False)))
