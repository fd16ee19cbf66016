"""Standardise transforms on every engine, and the stage on Sail + Delta."""

import datetime as dt
from decimal import Decimal

import pytest
from pyspark.sql import functions as F

from spark_jobs import standardise
from spark_jobs.config import StandardiseConfig
from spark_jobs.contracts import contract
from spark_jobs.privacy.consent import CRM_CONSENT_FIELDS
from tests.conftest import BATCH, INGESTED_AT

CFG = StandardiseConfig()
T1 = dt.datetime(2026, 10, 31, 17, 30)  # 01:30 on 1 Nov in Shanghai
T2 = dt.datetime(2026, 11, 1, 10, 0)
# The consent fields a CRM record / WeChat event carries when no consent was asked (tests/test_privacy_consent.py):
# one per consent channel, then consent_time and consent_source; WeChat's wechat_consent.
CRM_NO_CONSENT = (None,) * (len(CRM_CONSENT_FIELDS) + 2)
WX_NO_CONSENT = (None,)


def _bronze(spark, channel, rows):
    """bronze_<channel> rows from tuples of the channel's fields; source and lineage filled in."""
    c = contract(f"bronze_{channel}")
    n = len(c.columns) - 7
    full = [(*r, None, channel, f"{channel}/{BATCH}/p", i + 1, BATCH, INGESTED_AT, "h") for i, r in enumerate(rows)]
    assert all(len(r) == n for r in rows)
    return spark.createDataFrame(full, c.schema())


def _empty(spark, channel):
    return spark.createDataFrame([], contract(f"bronze_{channel}").schema())


def test_build_events_merges_channels_canonicalises_and_dedups(spark):
    app = _bronze(spark, "app_events", [
        ("e1", "ab-12", "L1", None, None, "ios", "app_start", T1, "{}"),
        ("e1", "ab-12", "L1", None, None, "ios", "app_start", T1, "{}"),  # same event delivered twice
        ("e2", " ", None, None, None, "web", "page_view", T2, None),
    ])
    wx = _bronze(spark, "wechat", [("w1", "wx_mp_shop", "o-1", "u-1", "139-1234-5678", "phone_auth", T2, None, *WX_NO_CONSENT)])
    rows = {r.event_id: r for r in standardise.build_events(app, wx, CFG, BATCH).collect()}
    assert sorted(rows) == ["e1", "e2", "w1"]
    assert (rows["e1"].device_id, rows["e1"].login_id, rows["e1"].channel) == ("AB-12", "L1", "app")
    assert rows["e1"].event_date == dt.date(2026, 11, 1)  # local (Asia/Shanghai) day, not UTC
    assert rows["e2"].device_id is None
    assert (rows["w1"].phone, rows["w1"].openid, rows["w1"].unionid, rows["w1"].channel) == ("+8613912345678", "o-1", "u-1", "wechat")


def test_build_orders_maps_pos_and_normalises_phones(spark):
    orders = _bronze(spark, "orders", [("O1", "M1", "+86 13912345678", "s:1", Decimal("9.90"), T2, "shoes")])
    pos = _bronze(spark, "pos", [("T1", "S01", "0086 13912345678", Decimal("5.00"), T2), ("T2", "S01", None, Decimal("1.00"), T2)])
    rows = {r.order_id: r for r in standardise.build_orders(orders, pos, CFG, BATCH).collect()}
    assert (rows["O1"].channel, rows["O1"].phone, rows["O1"].member_id) == ("ecommerce", "+8613912345678", "M1")
    assert (rows["T1"].channel, rows["T1"].store_id, rows["T1"].phone) == ("pos", "S01", "+8613912345678")
    assert rows["T2"].phone is None and rows["T2"].amount == Decimal("1.00")


def test_build_contacts_keeps_latest_member_version_and_leads(spark):
    crm = _bronze(spark, "crm", [
        ("M1", "张三", "13912345678", " Zhang@Example.com ", None, None, "m", dt.date(1990, 1, 2), "上海", "Gold", T1, T1, *CRM_NO_CONSENT),
        ("M1", "张三", "13912345670", "zhang@example.com", "U7", "u-7", "M", dt.date(1990, 1, 2), "上海", "gold", T1, T2, *CRM_NO_CONSENT),
    ])
    leads = _bronze(spark, "ad_leads", [("L9", "13700000001", "double11", "douyin", "S01", T2)])
    rows = {r.contact_id: r for r in standardise.build_contacts(crm, leads, CFG, BATCH).collect()}
    assert sorted(rows) == ["L9", "M1"]
    m = rows["M1"]
    assert (m.phone, m.email, m.gender, m.tier, m.updated_at) == ("+8613912345670", "zhang@example.com", "M", "gold", T2)
    assert (m.login_id, m.unionid) == ("U7", "u-7")
    assert (rows["L9"].source, rows["L9"].phone, rows["L9"].campaign) == ("ad_leads", "+8613700000001", "double11")


def test_identifier_sets_identifiers_and_links(spark):
    app = _bronze(spark, "app_events", [
        ("e1", "d1", "L1", None, None, "ios", "login", T1, None), ("e2", "D1", "L1", None, None, "ios", "page_view", T2, None),
        ("e3", "d2", None, None, None, "ios", "page_view", T2, None),
    ])
    orders = _bronze(spark, "orders", [("O1", "M1", "13912345678", None, Decimal("1.00"), T2, None)])
    events = standardise.build_events(app, _empty(spark, "wechat"), CFG, BATCH)
    ords = standardise.build_orders(orders, _empty(spark, "pos"), CFG, BATCH)
    contacts = standardise.build_contacts(_empty(spark, "crm"), _empty(spark, "ad_leads"), CFG, BATCH)
    sets = standardise.build_identifier_sets(events, ords, contacts)

    ids = {(r.id_type, r.id_value, r.source): r for r in standardise.build_identifiers(sets, BATCH).collect()}
    assert set(ids) == {("device_id", "D1", "app_events"), ("login_id", "L1", "app_events"), ("device_id", "D2", "app_events"),
                        ("member_id", "M1", "orders"), ("phone", "+8613912345678", "orders")}
    d1 = ids[("device_id", "D1", "app_events")]
    assert (d1.records, d1.first_seen, d1.last_seen) == (2, T1, T2)  # e1 and e2 carry the same set
    assert d1.link_id == ids[("login_id", "L1", "app_events")].link_id

    links = {(r.src_type, r.src_value, r.dst_type, r.dst_value, r.source, r.records) for r in standardise.build_id_links(sets, BATCH).collect()}
    assert links == {("device_id", "D1", "login_id", "L1", "app_events", 2), ("member_id", "M1", "phone", "+8613912345678", "orders", 1)}


def test_app_logins_and_crm_bindings_link_accounts_to_people(spark):
    # An SMS or WeChat sign-in names the account's phone or unionid; the CRM names a member's bound accounts.
    app = _bronze(spark, "app_events", [("e1", "d1", "L1", "139 1234 5678", "u-1", "ios", "login", T1, None)])
    crm = _bronze(spark, "crm", [("M1", "n", None, None, "L1", "u-1", None, None, None, None, None, T2, *CRM_NO_CONSENT)])
    events = standardise.build_events(app, _empty(spark, "wechat"), CFG, BATCH)
    contacts = standardise.build_contacts(crm, _empty(spark, "ad_leads"), CFG, BATCH)
    ords = standardise.build_orders(_empty(spark, "orders"), _empty(spark, "pos"), CFG, BATCH)
    sets = standardise.build_identifier_sets(events, ords, contacts)
    links = {(r.src_value, r.dst_value, r.source) for r in standardise.build_id_links(sets, BATCH).collect()}
    assert links == {
        ("D1", "L1", "app_events"), ("D1", "+8613912345678", "app_events"), ("D1", "u-1", "app_events"),
        ("L1", "+8613912345678", "app_events"), ("L1", "u-1", "app_events"), ("+8613912345678", "u-1", "app_events"),
        ("L1", "M1", "crm"), ("M1", "u-1", "crm"), ("L1", "u-1", "crm"),
    }


def test_run_publishes_every_silver_table_from_bronze(lakehouse, sail):
    part = {"_batch_date": BATCH}
    lakehouse.write_partition("bronze_app_events", _bronze(sail, "app_events", [("e1", "d1", "L1", None, None, "ios", "login", T1, None)]), part)
    lakehouse.write_partition("bronze_crm", _bronze(sail, "crm", [("M1", "n", "13912345678", "a@b.cn", None, None, "F", None, None, None, None, T2, *CRM_NO_CONSENT)]), part)
    counts = standardise.run(lakehouse, CFG, BATCH)
    assert counts == {"silver_events": 1, "silver_orders": 0, "silver_contacts": 1, "silver_identifiers": 5, "silver_id_links": 4}
    again = standardise.run(lakehouse, CFG, BATCH)
    assert again == counts
    phones = lakehouse.read("silver_identifiers").where(F.col("id_type") == "phone").collect()
    assert [r.id_value for r in phones] == ["+8613912345678"]


def test_declared_id_columns_follow_the_sources_identity_semantics():
    from spark_jobs.config import load_config
    from spark_jobs.sources.config import SourcesConfig

    sources = load_config(env={}).sources
    declared = standardise.declared_id_columns(sources)
    assert {k: set(v) for k, v in declared.items()} == {k: set(v) for k, v in standardise.SOURCE_ID_COLUMNS.items()}
    # A source that declares no device_id identifier: One-ID does not link device ids of that model.
    only = SourcesConfig.model_validate({"sources": {"app_events": {"format": "jsonl", "identifiers": {
        "login_id": {"type": "login_id", "strength": "verified"}}}}})
    assert standardise.declared_id_columns(only)["app_events"] == ("login_id",)
    wrong = SourcesConfig.model_validate({"sources": {"orders": {"format": "csv", "identifiers": {
        "phone": {"type": "email", "strength": "contact"}}}}})
    with pytest.raises(ValueError, match="declared a email identifier"):
        standardise.declared_id_columns(wrong)
