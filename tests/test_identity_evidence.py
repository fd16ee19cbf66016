"""Evidence strength, time-aware ownership and the learned tie-break, on small hand-made graphs of the
real-population patterns (a re-issued phone, a partner's phone on an order, two memberships)."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from spark_jobs.config import IdentityConfig
from spark_jobs.identity.evidence import ownership_boundaries, strong_sightings
from spark_jobs.identity.rules import CONTACT_RULE
from spark_jobs.identity.stage import resolve

D = [dt.datetime(2026, 11, 1, 9) + dt.timedelta(days=k) for k in range(6)]
LINK_SCHEMA = ("src_type string, src_value string, dst_type string, dst_value string, records long, "
               "first_seen timestamp, last_seen timestamp, strength string")
A_PHONE, B_PHONE, NEW_PHONE = "+8613912345678", "+8613987654321", "+8613711112222"


def _graph(spark, links):
    """silver-like identifiers and links from (src, dst, first, last, strength) rows."""
    rows = [(a[0], a[1], b[0], b[1], 1, f, t, s) for a, b, f, t, s in links]
    frame = spark.createDataFrame(rows, LINK_SCHEMA)
    ends = [(a[0], a[1], f, t, s) for a, b, f, t, s in links] + [(b[0], b[1], f, t, s) for a, b, f, t, s in links]
    ids = spark.createDataFrame(ends, "id_type string, id_value string, first_seen timestamp, last_seen timestamp, strength string")
    return ids, frame


def _members(res):
    return res.members.toPandas()


def _person(members: pd.DataFrame, id_type: str, value: str, when: dt.datetime | None = None):
    rows = members[(members.id_type == id_type) & (members.id_value == value)]
    if when is not None:
        rows = rows[(rows.valid_from.isna() | (rows.valid_from <= when)) & (rows.valid_to.isna() | (rows.valid_to > when))]
    assert len(rows) == 1, rows
    return rows.component.iloc[0]


RECYCLED = [
    # A: member MA with phone X until the change of phone on D[2], then NEW_PHONE; A's app account too.
    (("member_id", "MA"), ("phone", A_PHONE), D[0], D[0], "verified"),
    (("login_id", "LA"), ("phone", A_PHONE), D[0], D[1], "verified"),
    (("member_id", "MA"), ("login_id", "LA"), D[0], D[0], "verified"),
    (("member_id", "MA"), ("phone", NEW_PHONE), D[2], D[2], "verified"),
    (("member_id", "MA"), ("phone", A_PHONE), D[1], D[1], "contact"),  # an old order, before the change
    # B registers with the re-issued number on D[3], and signs in to the app with it.
    (("member_id", "MB"), ("phone", A_PHONE), D[3], D[5], "verified"),
    (("login_id", "LB"), ("phone", A_PHONE), D[4], D[5], "verified"),
]


def test_ownership_boundaries_find_the_new_owner_of_a_reissued_phone(spark):
    _, links = _graph(spark, RECYCLED)
    got = ownership_boundaries(strong_sightings(links, IdentityConfig())).collect()
    assert [(r.id_type, r.id_value, r.boundary) for r in got] == [("phone", A_PHONE, D[3])]


def test_ownership_boundaries_ignore_a_number_someone_kept_across_two_memberships(spark):
    kept = [
        (("member_id", "M1"), ("phone", A_PHONE), D[0], D[0], "verified"),
        (("member_id", "M2"), ("phone", A_PHONE), D[3], D[3], "verified"),
        (("login_id", "L"), ("phone", A_PHONE), D[0], D[5], "verified"),  # one app account throughout
    ]
    _, links = _graph(spark, kept)
    assert ownership_boundaries(strong_sightings(links, IdentityConfig())).count() == 0


def test_resolve_gives_a_reissued_phone_to_each_owner_for_their_period(lakehouse):
    ids, links = _graph(lakehouse.spark, RECYCLED)
    res = resolve(lakehouse, IdentityConfig(), ids, links, "t/recycled")
    m = _members(res)
    a, b = _person(m, "member_id", "MA"), _person(m, "member_id", "MB")
    assert a != b
    assert _person(m, "phone", A_PHONE, D[1]) == a and _person(m, "phone", A_PHONE, D[4]) == b
    assert _person(m, "phone", NEW_PHONE) == a and _person(m, "login_id", "LB") == b
    windows = m[m.id_value == A_PHONE].sort_values("valid_from", na_position="first")
    assert windows.valid_from.isna().tolist()[0] and windows.valid_to.tolist()[0] == D[3]
    assert windows.valid_from.tolist()[1] == D[3] and pd.isna(windows.valid_to.tolist()[1])
    lakehouse.unstage("t")


def test_resolve_without_ownership_periods_merges_the_strangers_or_cuts_them(lakehouse):
    ids, links = _graph(lakehouse.spark, RECYCLED)
    res = resolve(lakehouse, IdentityConfig(time_aware_ownership=False), ids, links, "t/recycled-off")
    m = _members(res)
    # One phone row only: the limit gives it to one of them, so the other loses their number.
    assert len(m[m.id_value == A_PHONE]) == 1
    assert _person(m, "phone", A_PHONE) in {_person(m, "member_id", "MA"), _person(m, "member_id", "MB")}
    lakehouse.unstage("t")


PARTNER = [
    (("member_id", "MA"), ("phone", A_PHONE), D[0], D[0], "verified"),
    (("member_id", "MB"), ("phone", B_PHONE), D[0], D[0], "verified"),
    (("member_id", "MA"), ("phone", B_PHONE), D[1], D[3], "contact"),  # A typed B's phone as receiver
    (("member_id", "MA"), ("email", "shared@qq.com"), D[1], D[1], "contact"),
]


def test_resolve_does_not_let_a_contact_phone_join_two_verified_people(lakehouse):
    ids, links = _graph(lakehouse.spark, PARTNER)
    res = resolve(lakehouse, IdentityConfig(), ids, links, "t/partner")
    m = _members(res)
    assert _person(m, "member_id", "MA") != _person(m, "member_id", "MB") == _person(m, "phone", B_PHONE)
    assert _person(m, "email", "shared@qq.com") == _person(m, "member_id", "MA")  # contact links still attach
    cut = {(r.id_value, r.other_value, r.rule) for r in res.dropped.collect()}
    assert ("MA", B_PHONE, CONTACT_RULE) in cut or (B_PHONE, "MA", CONTACT_RULE) in cut
    lakehouse.unstage("t")


def test_resolve_contact_joins_verified_when_configured(lakehouse):
    ids, links = _graph(lakehouse.spark, PARTNER)
    cfg = IdentityConfig(contact_joins_verified=True, limits={})
    m = _members(resolve(lakehouse, cfg, ids, links, "t/partner-on"))
    assert _person(m, "member_id", "MA") == _person(m, "member_id", "MB")
    lakehouse.unstage("t")


def _crm(spark, extra: list[tuple]) -> "DataFrame":  # noqa: F821
    """300 random CRM members (for the matcher's training) plus `extra` rows."""
    rng = np.random.default_rng(3)
    surnames, given = list("王李张刘陈杨黄赵吴周"), list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平")
    cities = ["上海", "北京", "广州", "深圳", "杭州", "成都"]
    rows = []
    for i in range(300):
        name = surnames[rng.integers(10)] + "".join(given[j] for j in rng.integers(0, len(given), rng.integers(1, 3)))
        bday = dt.date(1960, 1, 1) + dt.timedelta(days=int(rng.integers(0, 15000)))
        rows.append((f"R{i:04d}", name, bday, "MF"[rng.integers(2)], cities[rng.integers(6)], None, D[0]))
    # A few true duplicates among them, so EM sees matches.
    for i in range(0, 40, 2):
        n, b, g, c = rows[i][1], rows[i][2], rows[i][3], rows[i][4]
        rows.append((f"R{i:04d}b", n, b, g, c, None, D[0]))
    rows += extra
    return spark.createDataFrame(rows, "member_id string, name string, birthday date, gender string, city string, "
                                       "email string, updated_at timestamp")


def test_resolve_tiebreak_joins_two_memberships_of_one_person_and_audits_it(lakehouse):
    two = [
        (("member_id", "M1"), ("phone", A_PHONE), D[0], D[2], "verified"),
        (("member_id", "M2"), ("phone", A_PHONE), D[1], D[3], "verified"),
        # Two strangers sharing a verified phone at the same time (a family): left to the limit.
        (("member_id", "F1"), ("phone", B_PHONE), D[0], D[2], "verified"),
        (("member_id", "F2"), ("phone", B_PHONE), D[1], D[3], "verified"),
    ]
    contacts = _crm(lakehouse.spark, [
        ("M1", "张伟", dt.date(1988, 3, 4), "M", "上海", None, D[0]),
        ("M2", "Zhang Wei", dt.date(1988, 3, 4), "M", "上海", None, D[1]),
        ("F1", "李娜", dt.date(1961, 5, 6), "F", "北京", None, D[0]),
        ("F2", "李小明", dt.date(1990, 8, 9), "M", "北京", None, D[1]),
    ])
    ids, links = _graph(lakehouse.spark, two)
    res = resolve(lakehouse, IdentityConfig(), ids, links, "t/tiebreak", contacts)
    m = _members(res)
    assert _person(m, "member_id", "M1") == _person(m, "member_id", "M2") == _person(m, "phone", A_PHONE)
    assert _person(m, "member_id", "F1") != _person(m, "member_id", "F2")
    decisions = {(r.id_value, r.other_value): r for r in res.decisions.collect()}
    assert decisions[("M1", "M2")].decision == "merge" and decisions[("M1", "M2")].match_weight > 0
    assert decisions[("F1", "F2")].decision == "keep_apart" and decisions[("F1", "F2")].match_weight < 0
    assert '"name"' in decisions[("M1", "M2")].comparisons
    off = resolve(lakehouse, IdentityConfig(matching={"enabled": False}), ids, links, "t/tiebreak-off", contacts)
    m = _members(off)
    assert _person(m, "member_id", "M1") != _person(m, "member_id", "M2") and off.decisions is None
    lakehouse.unstage("t")


def test_resolve_strength_of_old_tables_counts_as_verified(lakehouse):
    ids, links = _graph(lakehouse.spark, PARTNER)
    cfg = IdentityConfig(limits={}, time_aware_ownership=False)
    res = resolve(lakehouse, cfg, ids.drop("strength"), links.drop("strength"), "t/old")
    m = _members(res)
    assert _person(m, "member_id", "MA") == _person(m, "member_id", "MB")  # every link verified: one person
    assert res.members.where(F.col("valid_to").isNotNull()).count() == 0
    lakehouse.unstage("t")


def test_resolve_contact_sightings_never_split_a_value_in_time(lakehouse):
    ids, links = _graph(lakehouse.spark, PARTNER)
    m = _members(resolve(lakehouse, IdentityConfig(), ids, links, "t/contact-time"))
    assert len(m[m.id_value == B_PHONE]) == 1 and m.valid_to.isna().all()
    lakehouse.unstage("t")


@pytest.mark.e2e
@pytest.mark.slow
def test_identity_on_a_retail_population_meets_its_targets(tmp_path):
    """The real-population patterns (`cdp generate --population retail`: re-issued phones, partners'
    phones on orders, duplicate memberships, store phones, junk devices) through ingest, standardise
    and identity: precision >= 0.999, recall >= 0.99 of the evidence ceiling, >= 90% of duplicate
    memberships joined, no re-issued number merging its owners, no person larger than a household."""
    from spark_jobs import ingest, standardise
    from spark_jobs.config import CdpConfig, EngineConfig, PathsConfig
    from spark_jobs.generate import generate
    from spark_jobs.identity import stage as identity
    from spark_jobs.identity.eval import (
        evaluate,
        evidence_ceiling,
        pattern_figures,
        read_households,
        read_truth,
    )
    from spark_jobs.tables import Lakehouse, read_pandas
    from tests.conftest import _session

    start, days = dt.date(2026, 11, 1), 3
    landing = tmp_path / "landing"
    generate(landing, people=3000, days=days, seed=5, start=start, format="real", population="retail")
    cfg = CdpConfig(engine=EngineConfig(kind="local"), paths=PathsConfig(landing=str(landing), lakehouse=str(tmp_path / "lh")))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARK_CONNECT_MODE_ENABLED", "1")
        spark = _session("sail")
        lh = Lakehouse(spark, cfg.paths.lakehouse_uri())
        for k in range(days):
            day = start + dt.timedelta(days=k)
            for s in cfg.ingest_sources():
                ingest.run(spark, lh, landing, cfg.sources.get(s), day, dt.datetime(2026, 12, 1), sources=cfg.sources)
            standardise.run(lh, cfg.standardise, day, standardise.declared_id_columns(cfg.sources),
                            standardise.declared_strengths(cfg.sources))
            identity.run(lh, cfg.identity, day)
    last = {"as_of": start + dt.timedelta(days=days - 1)}
    mapping = read_pandas(lh.root, "gold_id_map", ["id_type", "id_value", "person_id", "valid_to"], last)
    assert mapping["valid_to"].notna().sum() > 0  # some number changed hands, and has a closed window
    mapping = mapping[mapping["valid_to"].isna()].drop(columns="valid_to")
    truth, households = read_truth(landing), read_households(landing)
    acc = evaluate(mapping, truth, households)
    ceiling = evaluate(evidence_ceiling(read_pandas(lh.root, "silver_id_links"), truth), truth)
    patterns = pattern_figures(mapping, truth, landing)
    assert acc.pairwise_precision >= 0.999, acc
    assert acc.pairwise_recall >= 0.99 * ceiling.pairwise_recall, (acc, ceiling)
    assert patterns["duplicate_memberships"] > 20 and patterns["duplicate_memberships_joined_share"] >= 0.9, patterns
    assert patterns["reissued_values"] > 5 and patterns["reissued_false_merges"] == 0, patterns
    assert acc.largest_component <= acc.largest_true_household and acc.junk_linked == 0
    decisions = read_pandas(lh.root, "gold_id_decisions", None, last)
    assert set(decisions["decision"]) == {"merge", "keep_apart"}


def test_one_per_pair_keeps_one_decision_per_unordered_pair(sail):
    from spark_jobs.identity.tiebreak import DECISION_COLUMNS, one_per_pair

    row = ("member_id", "M1", "member_id", "M2", 9.0, 0.99, "merge", "{}", "why")
    rows = [row, row, ("member_id", "M2", "member_id", "M1", *row[4:]), ("member_id", "M1", "member_id", "M3", *row[4:])]
    got = one_per_pair(sail.createDataFrame(rows, list(DECISION_COLUMNS))).collect()
    assert sorted((r.id_value, r.other_value) for r in got) == [("M1", "M2"), ("M1", "M3")]
