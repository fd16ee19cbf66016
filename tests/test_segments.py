"""Segments on Sail with real Delta tables: membership history across three batches (enter, stay, leave,
re-enter), re-runs, behaviour rules on window edges, exports holding exactly the members, and
`cdp segment preview` writing nothing."""

from __future__ import annotations

import datetime as dt
import glob
import json
import os

import pandas as pd
import pytest
from pyspark.sql import functions as F

from spark_jobs import segments
from spark_jobs.config import load_config
from spark_jobs.segments import SegmentError, preview
from spark_jobs.standardise import build_identifier_sets, build_identifiers
from spark_jobs.tables import read_pandas
from spark_jobs.tag_config import load_segments, load_tags
from tests.conftest import contract_frame

pytestmark = pytest.mark.e2e

D1, D2, D3 = dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)
VIPS = {D1: {"a", "b"}, D2: {"b", "c"}, D3: {"a", "c"}}
PEOPLE = ("a", "b", "c", "d")
TAGS = "tags:\n  - {name: spend, kind: stat, source: orders, agg: sum, column: amount}\n" \
       "  - {name: vip, kind: rule, expr: 'spend > 100'}\n"
SEGMENTS = """segments:
  - name: vips
    rule: "vip"
    export: {formats: [csv, parquet], identifiers: [phone, unionid, device_id]}
  - {name: carts, rule: "event_count('add_cart', 3) >= 2 and order_count(3) = 0"}
"""


def _pid(p: str) -> str:
    return f"p_{p * 20}"


def _world(lh, tmp_path):
    spark = lh.spark
    # add_cart events (device DEV-<p>): on D3 with a 3-day window, b has 2 inside; c has one inside and one
    # on the day before the window (D3 - 3); d has 2 inside but also an order.
    carts = {"b": [D3, D3 - dt.timedelta(days=2)], "c": [D3, D3 - dt.timedelta(days=3)], "d": [D3, D2]}
    events = [{"event_id": f"{p}{k}", "channel": "app", "event_name": "add_cart", "event_time": dt.datetime.combine(d, dt.time(4)),
               "event_date": d, "device_id": f"DEV-{p}", "_batch_date": d}
              for p, days in carts.items() for k, d in enumerate(days)]
    orders = [{"order_id": "o1", "channel": "pos", "phone": "+8613900000004", "amount": 10, "paid_time": dt.datetime(2026, 11, 2, 4),
               "_batch_date": D2}]
    from decimal import Decimal

    orders[0]["amount"] = Decimal("10.00")
    ev = contract_frame(spark, "silver_events", events)
    od = contract_frame(spark, "silver_orders", orders)
    for day in sorted({e["_batch_date"] for e in events} | {D2}):
        part = {"_batch_date": day}
        lh.write_partition("silver_events", ev.where(F.col("_batch_date") == F.lit(day)), part)
        lh.write_partition("silver_orders", od.where(F.col("_batch_date") == F.lit(day)), part)
        sets = build_identifier_sets(lh.read("silver_events", part), lh.read("silver_orders", part),
                                     contract_frame(spark, "silver_contacts", []))
        lh.write_partition("silver_identifiers", build_identifiers(sets, day), part)
    for day in (D1, D2, D3):
        t = dt.datetime.combine(D1, dt.time(4))
        ids = [{"id_type": "device_id", "id_value": f"DEV-{p}", "person_id": _pid(p)} for p in PEOPLE]
        ids += [{"id_type": "unionid", "id_value": f"U-{p}-{k}", "person_id": _pid(p), "last_seen": t + dt.timedelta(hours=k)}
                for p in PEOPLE for k in (1, 2)]  # the newest (U-<p>-2) is exported
        ids += [{"id_type": "phone", "id_value": "+8613900000004", "person_id": _pid("d")}]
        ids = [{"first_seen": t, "last_seen": t, **r, "as_of": day} for r in ids]
        lh.write_partition("gold_id_map", contract_frame(spark, "gold_id_map", ids), {"as_of": day})
        prof = [{"person_id": _pid(p), "phone": f"+86139{i:08d}", "first_seen": t, "last_seen": t, "tenure_days": 1,
                 "channels": "app_events", "identifiers": 3, "as_of": day} for i, p in enumerate(PEOPLE)]
        lh.write_partition("gold_profiles", contract_frame(spark, "gold_profiles", prof), {"as_of": day})
        tag_rows = [{"person_id": _pid(p), "tag": "vip", "value": str(p in VIPS[day]).lower(), "value_type": "boolean",
                     "as_of": day} for p in PEOPLE]
        lh.write_partition("gold_tags", contract_frame(spark, "gold_tags", tag_rows), {"as_of": day})
    (tmp_path / "tags.yaml").write_text(TAGS)
    (tmp_path / "segments.yaml").write_text(SEGMENTS)
    tags = load_tags(tmp_path / "tags.yaml")
    base = load_config(env={})
    return base.model_copy(update={
        "tags": tags, "segments": load_segments(tmp_path / "segments.yaml", tags),
        "paths": base.paths.model_copy(update={"exports": str(tmp_path / "exports")}),
    })


@pytest.fixture
def world(lakehouse, tmp_path):
    return lakehouse, _world(lakehouse, tmp_path)


def _members(lh, day) -> pd.DataFrame:
    df = read_pandas(lh.root, "gold_segment_members", partition={"as_of": day})
    return df[df["segment"] == "vips"].assign(p=lambda d: d["person_id"].str[2]).set_index("p").sort_index()


def test_membership_history_enter_stay_leave_and_reenter(world):
    lh, cfg = world
    figures = [segments.run(lh, cfg, day) for day in (D1, D2, D3)]
    m1, m2, m3 = (_members(lh, d) for d in (D1, D2, D3))
    assert dict(m1["status"]) == {"a": "entered", "b": "entered"}
    assert dict(m2["status"]) == {"a": "left", "b": "stayed", "c": "entered"}
    assert dict(m2["entered_on"]) == {"a": D1, "b": D1, "c": D2} and m2.at["a", "left_on"] == D2
    assert dict(m3["status"]) == {"a": "entered", "b": "left", "c": "stayed"}
    assert dict(m3["entered_on"]) == {"a": D3, "b": D1, "c": D2}  # a's second spell starts on D3
    assert m3["left_on"].isna().sum() == 2 and m3.at["b", "left_on"] == D3
    assert figures[2]["segments"]["vips"] == {"entered": 1, "stayed": 1, "left": 1, "members": 2}
    # "who entered today" is one query
    entered = read_pandas(lh.root, "gold_segment_members", partition={"as_of": D3}).query("status == 'entered'")
    assert set(entered["person_id"]) >= {_pid("a")}


def test_rerunning_a_day_gives_the_same_membership(world):
    lh, cfg = world
    for day in (D1, D2, D3):
        segments.run(lh, cfg, day)
    before = read_pandas(lh.root, "gold_segment_members").sort_values(["as_of", "segment", "person_id"]).reset_index(drop=True)
    segments.run(lh, cfg, D2)
    segments.run(lh, cfg, D3)
    after = read_pandas(lh.root, "gold_segment_members").sort_values(["as_of", "segment", "person_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)


def test_behaviour_rule_counts_inside_the_window_only(world):
    lh, cfg = world
    segments.run(lh, cfg, D2)
    segments.run(lh, cfg, D3)
    members = read_pandas(lh.root, "gold_segment_members", partition={"as_of": D3})
    carts = members[(members["segment"] == "carts") & (members["status"] != "left")]
    assert set(carts["person_id"]) == {_pid("b")}  # c: one add_cart is outside; d ordered


def test_exports_hold_exactly_the_members_with_their_identifiers(world):
    lh, cfg = world
    for day in (D1, D2, D3):
        segments.run(lh, cfg, day)
    folder = f"{cfg.paths.exports_uri()}/vips/{D3.isoformat()}"
    csv = pd.concat(pd.read_csv(p, dtype=str) for p in sorted(glob.glob(f"{folder}/csv/*.csv")))
    parquet = pd.read_parquet(f"{folder}/parquet")
    for df in (csv, parquet):
        assert sorted(df["person_id"]) == [_pid("a"), _pid("c")]
        assert list(df.columns) == ["person_id", "phone", "unionid", "device_id", "entered_on"]
        rows = df.set_index("person_id")
        assert rows.at[_pid("c"), "unionid"] == "U-c-2" and rows.at[_pid("c"), "device_id"] == "DEV-c"
        assert rows.at[_pid("a"), "phone"] == "+8613900000000"
    assert json.loads(open(f"{folder}/_manifest.json").read())["members"] == 2
    assert not os.path.exists(f"{cfg.paths.exports_uri()}/carts")  # no export declared


def test_preview_counts_and_samples_without_writing(world):
    lh, cfg = world
    segments.run(lh, cfg, D3)
    versions = {t: lh.version(t) for t in ("gold_segment_members", "gold_tags")}
    got = preview(lh, cfg, "vip and event_count('add_cart', 3) >= 1", D3, sample=5)
    assert (got["count"], got["people"]) == (1, 4)  # a and c are vips; only c added to cart
    assert got["sample"] == [{"person_id": _pid("c"), "vip": True}]
    newest = preview(lh, cfg, "not vip")  # the newest tags by default
    assert newest["as_of"] == D3.isoformat() and newest["count"] == 2
    assert {t: lh.version(t) for t in versions} == versions
    with pytest.raises(SegmentError, match="unknown tag 'vipp'"):
        preview(lh, cfg, "vipp")


def test_a_stage_names_the_earlier_stage_that_has_not_run(world):
    from spark_jobs import profiles, tags
    from spark_jobs.tables import TableNotFoundError

    lh, cfg = world
    d4 = D3 + dt.timedelta(days=1)
    with pytest.raises(TableNotFoundError, match="gold_id_map has no partition `as_of` = '2026-11-04': run the identity stage"):
        profiles.run(lh, cfg, d4)
    with pytest.raises(TableNotFoundError, match="run the profiles stage for 2026-11-04 first"):
        tags.run(lh, cfg, d4)
    with pytest.raises(TableNotFoundError, match="run the profiles stage for 2026-11-04 first"):
        segments.run(lh, cfg, d4)
