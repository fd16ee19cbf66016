"""Declares the personal-data (PII) class of every column of every table contract; reads and writes nothing.

A class says what a column may hold about a person, so that access rules, masking, tokenising and erasure
can be decided per class rather than per column. Every column of spark_jobs.contracts has one: by its
name (`BY_NAME`, for the names many tables share), or by table and name (`BY_TABLE`, which wins). A column
in neither raises UnclassifiedColumnError naming it (tests/test_privacy_classes.py checks every contract),
so a new column cannot ship without someone deciding what it holds.
"""

from __future__ import annotations

from spark_jobs.contracts import CONTRACTS, TableContract

# class -> what it means. Direct identifiers (phone, email, device_id, wechat_id, account_id) single a
# person out; name, birthday, address and demographic describe them; person_id is the CDP's own pseudonym.
CLASSES: dict[str, str] = {
    "none": "no personal data (record ids, times, amounts, codes, lineage)",
    "phone": "a phone number, raw or E.164",
    "email": "an e-mail address",
    "name": "a person's name",
    "birthday": "a date of birth",
    "address": "where a person lives or is: city, street, store they booked",
    "device_id": "a device or advertising id (IDFA, OAID, ANDROID_ID, a web cookie id)",
    "wechat_id": "a WeChat openid or unionid",
    "account_id": "an account of the person in another system: CRM member id, app login, ad lead id",
    "person_id": "the CDP's One-ID person id: a pseudonym, personal data wherever it sits beside other facts",
    "identifier": "identifier values of several types (an id_type column says which), or an unkeyed hash of them: "
                  "as sensitive as the most sensitive type (a phone)",
    "demographic": "a personal attribute that does not identify alone: gender, age",
    "consent": "a person's marketing consent (status, time, where it was given)",
    "free_text": "free text or JSON that may contain any of the above (raw lines, event properties, examples)",
}
PII_CLASSES = tuple(c for c in CLASSES if c != "none")

# Names shared by many tables, with the one class they have everywhere.
BY_NAME: dict[str, str] = {
    # lineage, bookkeeping and record ids
    **dict.fromkeys((
        "_source_file", "_line", "_batch_date", "_ingested_at", "_row_hash", "_source", "as_of", "batch_date",
        "channel", "source", "event_id", "order_id", "txn_id", "event_name", "event_time", "event_date", "paid_time",
        "txn_time", "created_at", "registered_at", "updated_at", "first_seen", "last_seen", "valid_from", "valid_to",
        "records", "strength", "id_type", "other_type", "src_type", "dst_type", "platform", "appid", "amount",
        "category", "items", "store_id", "campaign", "ad_platform", "tier", "status", "run_id", "note", "reason",
        "identifiers", "channels", "tenure_days", "segment", "entered_on", "left_on", "tag", "value_type", "model",
        "version", "score", "decile", "cutoff", "horizon_days", "label_churn", "label_purchase", "change", "rule",
        "decision", "match_weight", "match_probability", "comparisons",
    ), "none"),
    **{f"{a}_source": "none" for a in ("name", "gender", "birthday", "city", "tier", "phone", "email")},
    "phone": "phone", "member_phone": "phone", "email": "email", "name": "name", "birthday": "birthday",
    "city": "address", "booking_store": "address", "gender": "demographic", "age": "demographic",
    "device_id": "device_id", "openid": "wechat_id", "unionid": "wechat_id",
    "member_id": "account_id", "login_id": "account_id", "lead_id": "account_id", "contact_id": "account_id",
    "person_id": "person_id", "other_person_id": "person_id",
    "id_value": "identifier", "other_value": "identifier", "src_value": "identifier", "dst_value": "identifier",
    "link_id": "identifier", "record_ref": "account_id",
    "props": "free_text", "raw": "free_text", "_extra": "free_text",
    # marketing consent (spark_jobs.privacy.consent)
    **dict.fromkeys(("sms_consent", "wechat_consent", "email_consent", "ads_consent", "consent_time",
                     "consent_source", "consent"), "consent"),
}

# Per table: columns whose name is the table's own, or whose class differs from BY_NAME's.
BY_TABLE: dict[str, dict[str, str]] = {
    "ops_ingest_files": dict.fromkeys((
        "file", "checksum", "bytes", "lines", "loaded", "quarantined", "duplicates", "suppressed", "duplicate_of",
        "previous_checksum", "ingested_at"), "none"),
    "ops_runs": dict.fromkeys(("first_day", "started_at", "finished_at", "tables", "stale_days"), "none"),
    "ops_dq_results": {
        **dict.fromkeys(("table_name", "scope", "suite", "expectation", "level", "success", "unexpected_count",
                         "checked_at", "check_key"), "none"),
        # A failed check's observed value and examples are the bad values themselves: phones, e-mails, ...
        "observed_value": "free_text", "unexpected_examples": "free_text",
    },
    "gold_id_dropped": {"detail": "free_text"},
    "gold_tags": {"value": "free_text"},  # an attribute tag copies a profile column (city, age band, ...)
    "gold_consent": {"status": "consent"},
    # action, channel, record id, amount and time of each event: what a person did, never who they are
    # (event properties, which may hold anything, are not copied)
    "gold_recent_events": dict.fromkeys(("events", "events_count", "newest_at"), "none"),
    # Columns made from config ("*": any column not named above). A tag can copy a profile attribute (an
    # attribute tag over city or age band), so tag columns may hold anything; features are aggregates.
    "gold_profile_tags": {"*": "free_text"},
    "gold_features": {"*": "none"},
    # Analytics marts and alerts: aggregates over people, never one person's values (spark_jobs/analytics).
    **{t: dict.fromkeys(cols, "none") for t, cols in {
        "gold_metrics_daily": ("metric", "kind", "dimension", "dimension_value", "value", "numerator", "denominator"),
        "gold_funnels": ("funnel", "cohort_date", "complete", "dimension", "dimension_value", "step", "step_name", "people",
                         "conversion", "step_conversion"),
        "gold_retention": ("retention", "period", "cohort", "cohort_people", "period_n", "returned", "rate", "complete"),
        "gold_transitions": ("transition", "from_date", "from_state", "to_state", "people", "share"),
        "ops_alerts": ("metric", "dimension", "dimension_value", "observed", "expected", "lower", "upper", "level",
                       "severity", "direction", "drill_down", "method", "history_days"),
    }.items()},
    # A keyed token (HMAC under the project key) identifies nobody without the key; kept for suppression.
    "ops_suppressions": dict.fromkeys(("token", "request_id", "erased_at"), "none"),
}


class UnclassifiedColumnError(KeyError):
    """A contract column has no PII class: add it to BY_NAME or BY_TABLE in spark_jobs/privacy/classes.py."""

    def __str__(self) -> str:
        table, column = self.args
        return (f"column {table}.{column} has no PII class: add it to BY_TABLE[{table!r}] (or BY_NAME, if every "
                f"column of that name holds the same) in spark_jobs/privacy/classes.py; classes: {', '.join(CLASSES)}")


def column_class(table: str, column: str) -> str:
    """The PII class of `table`.`column`; UnclassifiedColumnError when none is declared."""
    own = BY_TABLE.get(table, {})
    cls = own.get(column) or BY_NAME.get(column) or own.get("*")
    if cls is None:
        raise UnclassifiedColumnError(table, column)
    if cls not in CLASSES:
        raise ValueError(f"{table}.{column}: unknown PII class {cls!r}; classes: {', '.join(CLASSES)}")
    return cls


def table_classes(contract: TableContract) -> dict[str, str]:
    """Column -> PII class of one contract, in column order."""
    return {c.name: column_class(contract.name, c.name) for c in contract.columns}


def unclassified(contracts: dict[str, TableContract] = CONTRACTS) -> list[str]:
    """Every `table.column` of `contracts` without a PII class (empty: all declared)."""
    out = []
    for t in contracts.values():
        for c in t.columns:
            try:
                column_class(t.name, c.name)
            except UnclassifiedColumnError:
                out.append(f"{t.name}.{c.name}")
    return out


def pii_columns(contract: TableContract) -> dict[str, str]:
    """Column -> class of the columns of `contract` that hold personal data (class other than none)."""
    return {n: c for n, c in table_classes(contract).items() if c != "none"}
