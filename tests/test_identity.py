"""One-ID rules on small hand-made graphs, on every engine."""

import datetime as dt

from pyspark.sql import functions as F

from spark_jobs.config import BlocklistConfig, IdentityConfig, load_config
from spark_jobs.identity.rules import (
    blocked_identifiers,
    enforce_limits,
    hub_identifiers,
    removed_values,
    usable_links,
)
from spark_jobs.identity.stage import resolve

LINKS_SCHEMA = "src_type string, src_value string, dst_type string, dst_value string"


def _ids(spark, rows):
    return spark.createDataFrame(rows, "id_type string, id_value string")


def test_blocked_identifiers_default_rules_catch_the_usual_junk(spark):
    cfg = load_config(env={}).identity
    rows = [
        ("phone", "+8613800000000"), ("phone", "+8613333333333"), ("phone", "+8613912345678"),
        ("email", "test@test.com"), ("email", "demo@shop.cn"), ("email", "ann@example.com"), ("email", "ann@shop.cn"),
        ("device_id", "00000000-0000-0000-0000-000000000000"), ("device_id", "0000-0000"), ("device_id", "AB12-CD34"),
        ("login_id", "unknown"), ("unionid", "NULL"), ("login_id", "L-1"),
    ]
    got = {(r.id_type, r.id_value): r.rule for r in blocked_identifiers(_ids(spark, rows), cfg.blocklist).collect()}
    assert set(got) == {
        ("phone", "+8613800000000"), ("phone", "+8613333333333"), ("email", "test@test.com"), ("email", "demo@shop.cn"),
        ("email", "ann@example.com"), ("device_id", "00000000-0000-0000-0000-000000000000"), ("device_id", "0000-0000"),
        ("login_id", "unknown"), ("unionid", "NULL"),
    }
    assert got[("phone", "+8613333333333")] == "blocklist_repeated_digits:phone"
    assert got[("login_id", "unknown")] == "blocklist_exact:*"


def test_blocked_identifiers_exact_rules_are_per_type(spark):
    bl = BlocklistConfig(exact={"member_id": ("M0",)})
    got = blocked_identifiers(_ids(spark, [("member_id", "M0"), ("login_id", "M0")]), bl).collect()
    assert [(r.id_type, r.id_value, r.rule) for r in got] == [("member_id", "M0", "blocklist_exact:member_id")]


def test_hub_identifiers_cut_a_value_shared_by_many_strong_identifiers(spark):
    clerk = "+8613700000001"
    links = [("member_id", f"M{i}", "phone", clerk) for i in range(5)] + [
        ("member_id", "M9", "phone", "+8613912345678"),
        ("device_id", "FAMILY", "login_id", "L1"), ("device_id", "FAMILY", "login_id", "L2"),
    ]
    df = spark.createDataFrame(links, LINKS_SCHEMA)
    plain = IdentityConfig(hub_max_strong=3, hub_max_strong_by_type={})
    hubs = {(r.id_type, r.id_value): r.strong_links for r in hub_identifiers(df, plain).collect()}
    assert hubs == {("phone", clerk): 5}
    hubs2 = {(r.id_type, r.id_value): r.rule for r in hub_identifiers(df, IdentityConfig(hub_max_strong=3)).collect()}
    assert hubs2 == {("phone", clerk): "hub:>3_strong", ("device_id", "FAMILY"): "hub:>1_strong"}  # default: device_id 1


def test_usable_links_drop_every_link_touching_a_removed_value(spark):
    links = spark.createDataFrame([
        ("member_id", "M1", "phone", "+8613800000000"), ("member_id", "M1", "email", "a@b.cn"),
        ("device_id", "D0", "login_id", "L1"), ("device_id", "D1", "login_id", "L1"),
    ], LINKS_SCHEMA)
    removed = removed_values(
        spark.createDataFrame([("phone", "+8613800000000", "blocklist_exact:phone")], "id_type string, id_value string, rule string"),
        spark.createDataFrame([("device_id", "D0", "hub:>3_strong")], "id_type string, id_value string, rule string"),
    )
    kept = {(r.src_value, r.dst_value) for r in usable_links(links, removed).collect()}
    assert kept == {("M1", "a@b.cn"), ("D1", "L1")}


def _assign(spark, current, previous):
    from spark_jobs.identity.stage import assign_person_ids

    cur = spark.createDataFrame(current, "id_type string, id_value string, component long")
    prev = spark.createDataFrame(previous, "id_type string, id_value string, person_id string")
    id_map, changes = assign_person_ids(cur, prev, "2026-11-02")
    return ({(r.id_type, r.id_value): r.person_id for r in id_map.collect()},
            sorted((r.change, r.person_id, r.other_person_id, r.identifiers) for r in changes.collect()))


def test_assign_person_ids_unchanged_people_keep_their_ids(spark):
    prev = [("phone", "a", "pA"), ("email", "a", "pA"), ("phone", "b", "pB")]
    cur = [("phone", "a", 1), ("email", "a", 1), ("phone", "b", 2), ("login_id", "b", 2)]
    ids, changes = _assign(spark, cur, prev)
    assert ids == {("phone", "a"): "pA", ("email", "a"): "pA", ("phone", "b"): "pB", ("login_id", "b"): "pB"}
    assert changes == []


def test_assign_person_ids_merge_keeps_the_larger_id_and_is_logged(spark):
    prev = [("phone", "a", "pA"), ("email", "a", "pA"), ("phone", "b", "pB")]
    cur = [("phone", "a", 1), ("email", "a", 1), ("phone", "b", 1)]
    ids, changes = _assign(spark, cur, prev)
    assert set(ids.values()) == {"pA"}
    assert changes == [("merge", "pA", "pB", 1)]


def test_assign_person_ids_split_largest_part_keeps_the_id_and_new_people_get_opaque_ids(spark):
    prev = [("phone", "a", "pA"), ("email", "a", "pA"), ("device_id", "a", "pA")]
    cur = [("phone", "a", 1), ("email", "a", 1), ("device_id", "a", 2), ("member_id", "z", 3)]
    ids, changes = _assign(spark, cur, prev)
    assert ids[("phone", "a")] == ids[("email", "a")] == "pA"
    other, fresh = ids[("device_id", "a")], ids[("member_id", "z")]
    assert other.startswith("p_") and fresh.startswith("p_") and len({other, fresh, "pA"}) == 3
    assert changes == sorted([("split", other, "pA", 1), ("new", fresh, None, 1)])
    again, _ = _assign(spark, cur, prev)
    assert again == ids  # deterministic: a re-run of the batch gives the same ids


T0 = dt.datetime(2026, 11, 1, 9, 0)
EDGE_SCHEMA = "src long, dst long, src_type string, dst_type string, records long, first_seen timestamp"


def _graph(spark, types: dict[int, str], edges: list[tuple[int, int, int]]):
    """members (one component: the smallest node) and typed edges (src, dst, records)."""
    members = spark.createDataFrame([(n, t, min(types)) for n, t in types.items()], "node long, id_type string, component long")
    rows = [(a, b, types[a], types[b], r, T0 + dt.timedelta(hours=i)) for i, (a, b, r) in enumerate(edges)]
    return members, spark.createDataFrame(rows, EDGE_SCHEMA)


def _parts(result) -> set[frozenset[int]]:
    parts, _ = result
    by_part: dict[int, set[int]] = {}
    for r in parts.collect():
        by_part.setdefault(r.component, set()).add(r.node)
    return {frozenset(v) for v in by_part.values()}


def test_limits_cut_the_weakest_link_of_a_person_with_two_member_ids(spark):
    # M1 (1) and M2 (2) share phone 3: the M2 link has less evidence (1 record against 5), so it is cut.
    members, edges = _graph(spark, {1: "member_id", 2: "member_id", 3: "phone", 4: "email"},
                            [(1, 3, 5), (2, 3, 1), (1, 4, 2)])
    result = enforce_limits(members, edges, IdentityConfig())
    assert _parts(result) == {frozenset({1, 3, 4}), frozenset({2})}
    assert [(r.src, r.dst, r.rule) for r in result[1].collect()] == [(2, 3, "limit:member_id>1")]


def test_limits_cut_by_priority_before_evidence(spark):
    # Login 1 has phone 2 (login-phone: strong) and, through device 3, phone 4 (device links: weakest
    # type, however many records). With at most one phone, the device-phone link goes.
    members, edges = _graph(spark, {1: "login_id", 2: "phone", 3: "device_id", 4: "phone"},
                            [(1, 2, 1), (1, 3, 9), (3, 4, 9)])
    result = enforce_limits(members, edges, IdentityConfig(limits={"phone": 1}))
    assert _parts(result) == {frozenset({1, 2, 3}), frozenset({4})}
    assert [(r.src, r.dst, r.rule) for r in result[1].collect()] == [(3, 4, "limit:phone>1")]


def test_limits_leave_components_within_limits_alone(spark):
    members, edges = _graph(spark, {1: "member_id", 2: "phone", 3: "phone"}, [(1, 2, 1), (1, 3, 1)])
    assert enforce_limits(members, edges, IdentityConfig()) is None
    assert enforce_limits(members, edges, IdentityConfig(limits={})) is None


def test_resolve_audits_every_rule_and_splits_an_over_limit_person(lakehouse):
    spark = lakehouse.spark
    when = T0
    ids = [("member_id", "M1"), ("member_id", "M2"), ("phone", "+8613912345678"), ("phone", "+8613800000000"),
           ("login_id", "L1"), ("login_id", "L2"), ("device_id", "FAMILY"), ("device_id", "D3"), ("login_id", "L3"),
           ("login_id", "unknown")]
    identifiers = spark.createDataFrame([(t, v, when, when) for t, v in ids],
                                        "id_type string, id_value string, first_seen timestamp, last_seen timestamp")
    links = spark.createDataFrame([
        ("member_id", "M1", "phone", "+8613912345678", 4), ("member_id", "M2", "phone", "+8613912345678", 1),
        ("member_id", "M1", "phone", "+8613800000000", 1), ("device_id", "FAMILY", "login_id", "L1", 3),
        ("device_id", "FAMILY", "login_id", "L2", 3),
        ("device_id", "D3", "login_id", "L3", 2), ("device_id", "D3", "login_id", "unknown", 1),
    ], "src_type string, src_value string, dst_type string, dst_value string, records long").withColumn(
        "first_seen", F.lit(when))
    res = resolve(lakehouse, IdentityConfig(), identifiers, links, "t/resolve")
    person = {(r.id_type, r.id_value): r.component for r in res.members.collect()}
    assert person[("member_id", "M1")] == person[("phone", "+8613912345678")] != person[("member_id", "M2")]
    assert person[("login_id", "L1")] != person[("login_id", "L2")]
    assert ("device_id", "FAMILY") not in person and ("phone", "+8613800000000") not in person  # removed values map to no one
    # A blocked value is no strong identifier: D3 (L3 and the junk login "unknown") is not a hub.
    assert person[("device_id", "D3")] == person[("login_id", "L3")] and ("login_id", "unknown") not in person
    rules = {(r.id_type, r.id_value, r.other_value, r.rule) for r in res.dropped.collect()}
    assert ("member_id", "M2", "+8613912345678", "limit:member_id>1") in rules
    assert ("phone", "+8613800000000", None, "blocklist_exact:phone") in rules
    assert ("device_id", "FAMILY", None, "hub:>1_strong") in rules
    assert ("device_id", "FAMILY", "L1", "link_dropped:hub:>1_strong") in rules
    assert res.limit_cuts == 1
    lakehouse.unstage("t")


def _canonical(id_type: str, raw: str) -> str | None:
    from spark_jobs.normalise import canonical_device_id, canonical_email, canonical_phone

    canon = {"phone": canonical_phone, "email": canonical_email, "device_id": canonical_device_id}
    return canon[id_type](raw) if id_type in canon else raw.strip()


def test_blocked_identifiers_default_rules_catch_well_known_junk_from_raw_forms(spark):
    raw = [
        ("phone", "138 0013 8000"), ("phone", "+86 138-0013-8000"), ("phone", "008613800138000"),
        ("phone", "188 8888 8888"),
        ("device_id", "9774d56d682e549c"), ("device_id", " lmy47d "),
        ("device_id", "00000000-0000-0000-0000-000000000000"), ("device_id", "0000000000000000"),
        ("device_id", "000000000000000"),  # IDFA / OAID / ANDROID_ID / IMEI all zero
        ("email", " 1@1.COM"), ("email", "A@a.com"), ("email", "NA@na.com"), ("email", "none@none.com"),
        ("email", "noemail@gmail.com"), ("email", "No-Email@qq.com"), ("email", "ann@example.org"),
        ("email", "ann@shop.test"), ("email", "ann@mail.invalid"),
        ("login_id", "anonymous"), ("login_id", "NaN"), ("member_id", "-1"), ("member_id", "0000"),
        ("unionid", "nil"), ("openid", "{}"),
    ]
    rows = [(t, _canonical(t, v)) for t, v in raw]
    assert all(v for _, v in rows), rows  # every raw form is a valid identifier: the blocklist, not parsing, drops it
    got = {(r.id_type, r.id_value): r.rule for r in blocked_identifiers(_ids(spark, rows), load_config(env={}).identity.blocklist).collect()}
    assert set(got) == set(rows)
    assert got[("phone", "+8613800138000")] == "blocklist_exact:phone"
    assert got[("phone", "+8618888888888")] == "blocklist_repeated_digits:phone"
    assert got[("device_id", "9774D56D682E549C")] == "blocklist_exact:device_id"
    assert got[("device_id", "0000000000000000")] == r"blocklist_regex:*:^[0\-]+$"
    assert got[("email", "1@1.com")] == "blocklist_exact:email"


def test_blocked_identifiers_default_rules_spare_near_miss_real_values(spark):
    raw = [
        ("phone", "138 0013 8001"), ("phone", "13888888888"),  # a real (sold) lucky number, not all one digit
        ("phone", "13912345678"),
        ("device_id", "9774d56d682e549d"), ("device_id", "LMY47D0"), ("device_id", "00000000-0000-0000-0000-000000000001"),
        ("email", "na@163.com"), ("email", "a@a.com.cn"), ("email", "noemailer@gmail.com"), ("email", "test.er@shop.cn"),
        ("email", "ann@testing.com"), ("email", "ann@example.com.cn"),
        ("login_id", "anonymous1"), ("login_id", "nana"), ("member_id", "-10"), ("member_id", "100000"),
    ]
    rows = [(t, _canonical(t, v)) for t, v in raw]
    assert all(v for _, v in rows), rows
    got = blocked_identifiers(_ids(spark, rows), load_config(env={}).identity.blocklist).collect()
    assert [(r.id_type, r.id_value, r.rule) for r in got] == []
