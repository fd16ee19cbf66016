"""Audience files per destination: rows hashed as each platform documents (against hashlib by hand), and
destination declarations checked at config load."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from spark_jobs.privacy.audiences import build_audience
from spark_jobs.tag_config import Destination, SegmentsConfig

MEMBERS = [("p1", "+8613912345678", " Li.Lei@Example.COM "), ("p2", "+14155550100", None), ("p3", None, None),
           ("p4", "+8613912345678", None)]  # p4 shares p1's phone: one line for the platform


def _members(spark):
    return spark.createDataFrame(MEMBERS, "person_id string, phone string, email string")


def _h(alg: str, s: str) -> str:
    return hashlib.new(alg, s.encode()).hexdigest()


def test_tencent_ads_gets_the_md5_of_the_11_digit_mobile_only(sail):
    rows = build_audience(_members(sail), "tencent_ads", ("phone",), "md5").collect()
    assert [r.asDict() for r in rows] == [{"phone_md5": _h("md5", "13912345678")}]  # no US number, no person_id


def test_meta_and_google_get_sha256_of_their_own_phone_forms_and_the_lower_cased_email(sail):
    meta = {tuple(r) for r in build_audience(_members(sail), "meta", ("phone", "email"), "sha256").collect()}
    assert meta == {(_h("sha256", "8613912345678"), _h("sha256", "li.lei@example.com")),
                    (_h("sha256", "14155550100"), None), (_h("sha256", "8613912345678"), None)}
    google = {r["phone_sha256"] for r in build_audience(_members(sail), "google", ("phone",), "sha256").collect()}
    assert google == {_h("sha256", "+8613912345678"), _h("sha256", "+14155550100")}


def test_plaintext_keeps_person_id_and_values(sail):
    rows = sorted(tuple(r) for r in build_audience(_members(sail), "plaintext", ("phone",), "none").collect())
    assert rows == [("p1", "+8613912345678"), ("p2", "+14155550100"), ("p4", "+8613912345678")]


@pytest.mark.parametrize("decl, message", [
    ({"platform": "meta", "hash": "md5"}, "takes hash sha256"),
    ({"platform": "tencent_ads", "identifiers": ["email"]}, "matches on"),
    ({"platform": "plaintext"}, "plaintext: true"),
    ({"platform": "google", "plaintext": True}, "only for `platform: plaintext`"),
])
def test_destination_refuses_what_its_platform_does_not_take(decl, message):
    with pytest.raises(ValidationError, match=message):
        Destination(**decl)
    assert Destination(platform="tencent_ads").algorithm == "md5"  # HASH_MOBILE_PHONE by default


def test_segments_config_refuses_unknown_destinations_and_ads_without_marketing_purpose():
    dest = {"tencent_ads": {"platform": "tencent_ads"}}
    seg = {"name": "s", "rule": "x", "export": {"destinations": ["tencent_ads"], "formats": []}}
    with pytest.raises(ValidationError, match="purpose: marketing_ads"):
        SegmentsConfig(destinations=dest, segments=[seg])
    with pytest.raises(ValidationError, match="unknown destination 'tencent_ads'"):
        SegmentsConfig(segments=[{**seg, "purpose": "marketing_ads"}])
    ok = SegmentsConfig(destinations=dest, segments=[{**seg, "purpose": "marketing_ads"}])
    assert ok.segments[0].purpose == "marketing_ads"
