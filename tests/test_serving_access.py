"""API keys, scopes and PII masking of serving/access.py, and identifier parsing of serving/api.py (no store)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.access import AccessLog, KeyFileError, KeyRing, add_key, hash_key, mask, masked_profile
from serving.api import IdentifierError, parse_identifier
from serving.sql.catalog import SQL_MASKS, masked_sql


def test_mask_keeps_only_what_identifies_nothing():
    assert mask("phone", "13912345678") == "139****5678"
    assert mask("phone", "+8613912345678") == "+86139****5678"
    assert mask("email", "Zou.Chao@163.com") == "Z***@163.com"
    assert mask("name", "乌林岩") == "乌**" and mask("name", "岩") == "岩*"
    assert mask("birthday", "1986-10-31") == "1986-**-**"
    assert mask("phone", None) is None


def test_masked_profile_masks_pii_attributes_and_identifiers_only():
    doc = {"person_id": "p1", "profile": {"phone": {"value": "+8613912345678", "source": "crm"},
                                          "city": {"value": "厦门", "source": "crm"},
                                          "email": {"value": None, "source": None}},
           "identifiers": [{"type": "phone", "value": "+8613912345678"}, {"type": "member_id", "value": "M1"}]}
    out = masked_profile(doc)
    assert out["profile"]["phone"] == {"value": "+86139****5678", "source": "crm"}
    assert out["profile"]["city"] == doc["profile"]["city"] and out["profile"]["email"]["value"] is None
    assert out["identifiers"] == [{"type": "phone", "value": "+86139****5678"}, {"type": "member_id", "value": "M1"}]
    assert doc["profile"]["phone"]["value"] == "+8613912345678"  # the stored document is untouched


def test_add_key_stores_only_the_hash_and_check_finds_scopes(tmp_path):
    path = tmp_path / "keys.json"
    key = add_key(path, "coupon", ["audiences:read"])
    stored = json.loads(path.read_text())["keys"]
    assert key not in path.read_text() and stored[0]["sha256"] == hash_key(key)
    ring = KeyRing(path)
    assert ring.check(key).scopes == {"audiences:read"} and ring.check(key).name == "coupon"
    assert ring.check(key + "x") is None and ring.check(None) is None
    replaced = add_key(path, "coupon", ["profiles:read"])  # the same name: the old key stops working
    assert ring.check(key) is None and ring.check(replaced).scopes == {"profiles:read"}


def test_add_key_refuses_unknown_scopes(tmp_path):
    with pytest.raises(KeyFileError, match="scopes are profiles:read"):
        add_key(tmp_path / "keys.json", "x", ["pii:write"])


def test_key_file_with_unknown_scope_is_an_error_naming_it(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [{"name": "a", "sha256": "00", "scopes": ["root"]}]}))
    with pytest.raises(KeyFileError, match="'root'"):
        KeyRing(path).check("anything")


def test_access_log_writes_one_line_per_person(tmp_path):
    log = AccessLog(tmp_path / "access.log")
    log.write("crm", ["p1", "p2"], "POST /v1/profiles/batch")
    lines = [json.loads(x) for x in (tmp_path / "access.log").read_text().splitlines()]
    assert [(x["key"], x["person_id"]) for x in lines] == [("crm", "p1"), ("crm", "p2")] and lines[0]["at"]


@pytest.mark.parametrize("raw", ["13912345678", "139 1234 5678", "139-1234-5678", "+86 139 1234 5678", "86-13912345678",
                                 "008613912345678", "(+86) 139.1234.5678"])
def test_parse_identifier_normalises_phones_as_the_pipeline(raw):
    assert parse_identifier(f"phone:{raw}", "CN") == ("phone", "+8613912345678")


def test_parse_identifier_normalises_every_type():
    assert parse_identifier("email: A@B.CN ", "CN") == ("email", "a@b.cn")
    assert parse_identifier("device_id:ab-c1", "CN") == ("device_id", "AB-C1")
    assert parse_identifier("unionid:o6_bmjrPTlm6", "CN") == ("unionid", "o6_bmjrPTlm6")
    assert parse_identifier("person_id:p_1", "CN") == ("person_id", "p_1")


@pytest.mark.parametrize("text,why", [("13912345678", "<type>:<value>"), ("passport:E1", "unknown identifier type"),
                                      ("phone:12ab", "not a valid phone"), ("email:nope", "not a valid email"),
                                      ("member_id:  ", "not a valid member_id")])
def test_parse_identifier_says_why_it_refuses(text, why):
    with pytest.raises(IdentifierError, match=why):
        parse_identifier(text, "CN")


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(sorted(SQL_MASKS)), value=st.text(max_size=24))
def test_the_sql_endpoints_masks_give_the_apis_text(kind, value):
    """serving/sql/catalog.py's DuckDB mask expressions equal serving.access.mask on any text."""
    import duckdb

    with duckdb.connect() as con:
        got = con.execute(f"SELECT {SQL_MASKS[kind].format(v='v')} FROM (SELECT ?::VARCHAR AS v)", [value]).fetchone()[0]
    assert got == mask(kind, value)


def test_masked_sql_masks_by_class_and_by_the_identifiers_type():
    sql = masked_sql("gold_id_map", ["as_of", "id_type", "id_value", "person_id"])
    assert """"as_of", "id_type", CASE "id_type" WHEN 'phone'""" in sql and '"person_id" FROM "_cdp_gold_id_map"' in sql
    assert "'***'" in masked_sql("ops_dq_results", ["unexpected_examples"])
    assert masked_sql("gold_segment_members", ["segment", "person_id"]) == 'SELECT "segment", "person_id" FROM "_cdp_gold_segment_members"'
