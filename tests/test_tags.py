"""The tag engine against an independent pandas computation on small seeded data: every tag kind, window
edges (events exactly on a window's first day and the day before it), people with no activity, late and
future rows (point-in-time), predicted tags from gold_scores; on Sail with real Delta tables."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from spark_jobs import profiles, tags
from spark_jobs.activity import build_set_persons, with_person_id
from spark_jobs.config import load_config
from spark_jobs.standardise import build_identifier_sets, build_identifiers
from spark_jobs.tables import read_pandas
from spark_jobs.tag_config import load_tags
from tests.conftest import contract_frame

pytestmark = pytest.mark.e2e

AS_OF = dt.date(2026, 11, 30)
PEOPLE = 40
EVENTS = ("app_start", "view_item", "add_cart", "pay_order", "search")
CATEGORIES = ("beauty", "shoes", "food")

TAGS_YAML = """
tags:
  - {name: gender, kind: attribute, column: gender}
  - {name: age_band, kind: attribute, column: age, bins: [18, 30, 45]}
  - {name: city_tier, kind: attribute, column: city, map: {北京: tier1, 上海: tier1}, default: other}
  - {name: ev_7d, kind: stat, source: events, agg: count, window_days: 7}
  - {name: cart_30d, kind: stat, source: events, agg: count, window_days: 30, where: {event_name: [add_cart]}}
  - {name: ev_all, kind: stat, source: events, agg: count}
  - {name: names_30d, kind: stat, source: events, agg: count_distinct, column: event_name, window_days: 30}
  - {name: active_30d, kind: stat, source: activity, agg: active_days, window_days: 30}
  - {name: orders_90d, kind: stat, source: orders, agg: count, window_days: 90}
  - {name: spend_30d, kind: stat, source: orders, agg: sum, column: amount, window_days: 30}
  - {name: aov_90d, kind: stat, source: orders, agg: avg, column: amount, window_days: 90}
  - {name: min_order_90d, kind: stat, source: orders, agg: min, column: amount, window_days: 90}
  - {name: max_order, kind: stat, source: orders, agg: max, column: amount}
  - {name: first_category, kind: stat, source: orders, agg: first, column: category}
  - {name: last_event, kind: stat, source: events, agg: last, column: event_name, window_days: 90}
  - {name: fav_category_90d, kind: stat, source: orders, agg: mode, column: category, window_days: 90}
  - {name: fav_channel, kind: stat, source: activity, agg: mode, column: channel}
  - {name: since_active, kind: stat, source: activity, agg: days_since_last}
  - {name: since_first_order, kind: stat, source: orders, agg: days_since_first}
  - name: rfm
    kind: rfm
    window_days: 120
    segments:
      - {name: champions, when: "recency >= 4 and frequency >= 4 and monetary >= 4"}
      - {name: at_risk, when: "recency <= 2 and frequency >= 3"}
      - {name: hibernating, when: "recency <= 2"}
  - {name: stage, kind: lifecycle, new_days: 20, active_days: 14, churned_days: 60, returning_gap_days: 30}
  - {name: big_fan, kind: rule, expr: "rfm_monetary >= 4 and since_active <= 10"}
  - name: spend_band
    kind: rule
    cases:
      - {when: "spend_30d >= 300", then: high}
      - {when: "spend_30d > 0", then: low}
    else: none
  - {name: fan_score, kind: rule, expr: "if(big_fan, 2, 0) + coalesce(orders_90d, 0)"}
  - {name: churn, kind: predicted, model: m_churn, value: score}
  - {name: churn_decile, kind: predicted, model: m_churn, value: decile}
"""


def _day(d: dt.date) -> dt.datetime:
    return dt.datetime.combine(d, dt.time(4, 0))  # 12:00 in Asia/Shanghai: the same local date


@pytest.fixture(scope="module")
def data():
    """Seeded people, events and orders, with the person each row belongs to (the ground truth)."""
    rng = np.random.default_rng(7)
    people = []
    for i in range(PEOPLE):
        people.append({
            "i": i, "person_id": f"p_{i:020d}", "device": f"DEV-{i:04d}" if i % 5 != 1 else None,
            "member": f"M{i:05d}" if i % 5 != 2 else None, "phone": f"+86139{i:08d}",
            "gender": ["F", "M"][i % 2] if i % 7 else None, "birthday": dt.date(1980 + i % 30, 1 + i % 12, 1 + i % 27),
            "city": ["北京", "上海", "成都", "西安"][i % 4],
        })
    events, orders = [], []
    for p in people:
        if p["i"] % 10 == 9:  # no activity at all: a CRM contact only
            continue
        if p["device"]:
            offsets = list(rng.integers(-3, 150, size=int(rng.integers(1, 25))))
            offsets += [6, 7, 29, 30, 89, 90]  # the first day of the 7/30/90-day windows and the day before
            for k, off in enumerate(offsets):
                date = AS_OF - dt.timedelta(days=int(off))
                batch = date + dt.timedelta(days=int(k % 4 == 0))  # some arrive a day late
                events.append({"person_id": p["person_id"], "event_id": f"e{p['i']}-{k}", "channel": "app",
                               "event_name": EVENTS[int(rng.integers(0, len(EVENTS)))], "event_time": _day(date) +
                               dt.timedelta(minutes=int(rng.integers(0, 500))), "event_date": date,
                               "device_id": p["device"], "_batch_date": batch})
        if p["member"] and p["i"] % 3 != 0:
            for k in range(int(rng.integers(1, 9))):
                off = int(rng.integers(-2, 140)) if k else 30
                date = AS_OF - dt.timedelta(days=off)
                pos = k % 4 == 3
                orders.append({"person_id": p["person_id"], "order_id": f"o{p['i']}-{k}", "channel": "pos" if pos else "ecommerce",
                               "member_id": None if pos else p["member"], "phone": p["phone"] if pos else None,
                               "category": None if pos else CATEGORIES[int(rng.integers(0, 3))],
                               "amount": float(rng.integers(1, 400)) + 0.5, "paid_time": _day(date) + dt.timedelta(minutes=k),
                               "_batch_date": date})
    return pd.DataFrame(people), pd.DataFrame(events), pd.DataFrame(orders)


def _plain(v):
    """pandas' NaN and Timestamp as None and datetime, for createDataFrame."""
    if isinstance(v, float) and math.isnan(v):
        return None
    return v.to_pydatetime() if isinstance(v, pd.Timestamp) else v


def _write_world(lh, data, as_of=AS_OF):
    from decimal import Decimal

    people, events, orders = data
    spark = lh.spark
    ev_rows = [{k: v for k, v in r.items() if k != "person_id"} for r in events.to_dict("records")]
    od_rows = [{**{k: v for k, v in r.items() if k != "person_id"}, "amount": Decimal(str(r["amount"]))}
               for r in orders.to_dict("records")]
    contacts = [{"contact_id": p["member"], "source": "crm", "member_id": p["member"], "name": f"n{p['i']}",
                 "phone": p["phone"], "gender": p["gender"], "birthday": p["birthday"], "city": p["city"],
                 "tier": "gold", "updated_at": _day(AS_OF - dt.timedelta(days=200)),
                 "registered_at": _day(AS_OF - dt.timedelta(days=10 if p["i"] % 4 == 0 else 400)),
                 "_batch_date": AS_OF - dt.timedelta(days=200)} for p in people.to_dict("records") if p["member"]]
    for name, rows in (("silver_events", ev_rows), ("silver_orders", od_rows), ("silver_contacts", contacts)):
        df = contract_frame(spark, name, [{k: _plain(v) for k, v in r.items()} for r in rows])
        for (batch,) in df.select("_batch_date").distinct().collect():
            lh.write_partition(name, df.where(F.col("_batch_date") == F.lit(batch)), {"_batch_date": batch})
    for batch in sorted({r["_batch_date"] for r in ev_rows + od_rows + contacts}):
        part = {"_batch_date": batch}
        sets = build_identifier_sets(lh.read_or_empty("silver_events", part), lh.read_or_empty("silver_orders", part),
                                     lh.read_or_empty("silver_contacts", part))
        lh.write_partition("silver_identifiers", build_identifiers(sets, batch), part)
    owner = {}
    for p in people.to_dict("records"):
        for t, v in (("device_id", p["device"]), ("member_id", p["member"]), ("phone", p["phone"])):
            if v:
                owner[(t, v)] = p["person_id"]
    ids = lh.read("silver_identifiers").where(F.col("_batch_date") <= F.lit(as_of)).groupBy("id_type", "id_value").agg(
        F.min("first_seen").alias("first_seen"), F.max("last_seen").alias("last_seen")).collect()
    id_map = [{"id_type": r.id_type, "id_value": r.id_value, "person_id": owner[(r.id_type, r.id_value)],
               "first_seen": r.first_seen, "last_seen": r.last_seen, "as_of": as_of} for r in ids]
    lh.write_partition("gold_id_map", contract_frame(spark, "gold_id_map", id_map), {"as_of": as_of})


@pytest.fixture(scope="module")
def computed(tmp_path_factory, data):
    """profiles + tags run once on the seeded world (module-scoped: one Sail session per worker)."""
    from spark_jobs.tables import Lakehouse
    from tests.conftest import _session

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARK_CONNECT_MODE_ENABLED", "1")  # as the `sail` fixture does, for this module-wide set-up
        return _compute(_session("sail"), tmp_path_factory.mktemp("tags"), data, Lakehouse)


def _compute(spark, base, data, Lakehouse):
    (base / "tags.yaml").write_text(TAGS_YAML)
    lh = Lakehouse(spark, str(base / "lh"))
    _write_world(lh, data)
    scores = [{"person_id": f"p_{i:020d}", "model": "m_churn", "version": v, "score": s, "decile": d, "as_of": day}
              for i in range(0, PEOPLE, 3)
              for v, s, d, day in (("1", 0.1, 2, AS_OF - dt.timedelta(days=3)), ("2", 0.9, 9, AS_OF + dt.timedelta(days=1)))]
    for day in {r["as_of"] for r in scores}:
        lh.write_partition("gold_scores", contract_frame(spark, "gold_scores", [r for r in scores if r["as_of"] == day]),
                           {"as_of": day})
    cfg = load_config(env={}).model_copy(update={"tags": load_tags(base / "tags.yaml")})
    profiles.run(lh, cfg, AS_OF)
    figures = tags.run(lh, cfg, AS_OF)
    wide = read_pandas(lh.root, "gold_profile_tags").set_index("person_id").sort_index()
    return lh, cfg, figures, wide


def _window(df: pd.DataFrame, days: int | None, col="date") -> pd.DataFrame:
    return df if days is None else df[df[col] >= AS_OF - dt.timedelta(days=days - 1)]


def _expected(data, cfg_tags, profiles_pd: pd.DataFrame) -> pd.DataFrame:
    """Every tag recomputed in pandas from the ground truth, by the documented definitions."""
    people, events, orders = data
    events = events.assign(date=events["event_date"])
    events = events[(events["date"] <= AS_OF) & (events["_batch_date"] <= AS_OF)]
    orders = orders.assign(date=orders["paid_time"].dt.date)
    orders = orders[(orders["date"] <= AS_OF) & (orders["_batch_date"] <= AS_OF)]
    activity = pd.concat([
        events.assign(action=events["event_name"], ts=events["event_time"])[["person_id", "action", "channel", "ts", "date"]],
        orders.assign(action="order", ts=orders["paid_time"])[["person_id", "action", "channel", "ts", "date"]],
    ])
    src = {"events": events.assign(ts=events["event_time"]), "orders": orders.assign(ts=orders["paid_time"]),
           "activity": activity}
    out = pd.DataFrame(index=profiles_pd.index)
    by = {t.name: t for t in cfg_tags.tags}
    prof = profiles_pd
    out["gender"] = prof["gender"]
    out["age_band"] = prof["age"].map(lambda a: None if pd.isna(a) else "<18" if a < 18 else "18-29" if a < 30
                                      else "30-44" if a < 45 else "45+")
    out["city_tier"] = prof["city"].map(lambda c: None if c is None else "tier1" if c in ("北京", "上海") else "other")
    for name, t in by.items():
        if t.kind != "stat":
            continue
        df = _window(src[t.source], t.window_days)
        for col, values in t.where.items():
            df = df[df[col].isin(values)]
        if t.column:
            df = df[df[t.column].notna()]
        g = df.groupby("person_id")
        if t.agg == "count":
            s = g.size()
        elif t.agg == "sum":
            s = g["amount"].sum()
        elif t.agg in ("avg", "min", "max"):
            s = getattr(g[t.column], {"avg": "mean"}.get(t.agg, t.agg))()
        elif t.agg == "count_distinct":
            s = g[t.column].nunique()
        elif t.agg == "active_days":
            s = g["date"].nunique()
        elif t.agg == "days_since_last":
            s = g["date"].max().map(lambda d: (AS_OF - d).days)
        elif t.agg == "days_since_first":
            s = g["date"].min().map(lambda d: (AS_OF - d).days)
        elif t.agg in ("first", "last"):
            s = df.sort_values(["ts", t.column]).groupby("person_id")[t.column].agg(t.agg)
        else:  # mode: most rows, then the latest, then the smallest value
            c = df.groupby(["person_id", t.column]).agg(n=("ts", "size"), last=("ts", "max")).reset_index()
            c = c.sort_values(["person_id", "n", "last", t.column], ascending=[True, False, False, True])
            s = c.groupby("person_id")[t.column].first()
        out[name] = s.reindex(out.index)
        if t.agg in ("count", "count_distinct", "active_days", "sum"):
            out[name] = out[name].fillna(0)
    rfm = by["rfm"]
    buyers = _window(orders, rfm.window_days).groupby("person_id").agg(
        days=("date", lambda d: (AS_OF - d.max()).days), n=("order_id", "size"), amount=("amount", "sum"))
    total = len(buyers)

    def score(values: pd.Series, better_low: bool) -> pd.Series:
        k = values.map(lambda x: int((values >= x).sum()) if better_low else int((values <= x).sum()))
        return k.map(lambda k: math.ceil(5 * k / total))

    r, f, m = score(buyers["days"], True), score(buyers["n"], False), score(buyers["amount"], False)
    out["rfm_recency"], out["rfm_frequency"], out["rfm_monetary"] = (s.reindex(out.index) for s in (r, f, m))

    def segment(row) -> str:
        if pd.isna(row["rfm_recency"]):
            return "no_orders"
        env = {"recency": row["rfm_recency"], "frequency": row["rfm_frequency"], "monetary": row["rfm_monetary"]}
        return next((s.name for s in rfm.segments if eval(s.when, {}, env)), "others")  # the rules are Python too

    out["rfm_segment"] = out.apply(segment, axis=1)
    lc = by["stage"]
    recent_start = AS_OF - dt.timedelta(days=lc.active_days - 1)
    gap_start = recent_start - dt.timedelta(days=lc.returning_gap_days)

    def stage(pid) -> str:
        dates = activity.loc[activity["person_id"] == pid, "date"]
        ts = pd.Timestamp(prof.loc[pid, "first_seen"])
        first = (ts if ts.tzinfo else ts.tz_localize("UTC")).tz_convert("Asia/Shanghai").date()
        if (AS_OF - first).days < lc.new_days:
            return "new"
        recent = (dates >= recent_start).sum()
        if recent and not ((dates >= gap_start) & (dates < recent_start)).any() and (dates < gap_start).any():
            return "returning"
        if recent:
            return "active"
        if len(dates) and (AS_OF - dates.max()).days < lc.churned_days:
            return "at_risk"
        return "churned"

    out["stage"] = [stage(p) for p in out.index]

    def sql_and(a, b):  # SQL's three-valued AND: NULL AND FALSE is FALSE, NULL AND TRUE is NULL
        if a is False or b is False:
            return False
        return None if a is None or b is None else True

    out["big_fan"] = [sql_and(None if pd.isna(m) else bool(m >= 4), None if pd.isna(d) else bool(d <= 10))
                      for m, d in zip(out["rfm_monetary"], out["since_active"], strict=True)]
    out["spend_band"] = np.where(out["spend_30d"] >= 300, "high", np.where(out["spend_30d"] > 0, "low", "none"))
    out["fan_score"] = out["big_fan"].map(lambda b: 2 if b is True else 0) + out["orders_90d"].fillna(0)
    scored = {f"p_{i:020d}" for i in range(0, PEOPLE, 3)}
    out["churn"] = [0.1 if p in scored else None for p in out.index]  # the score dated after AS_OF is ignored
    out["churn_decile"] = [2 if p in scored else None for p in out.index]
    return out


def _same(a, b) -> bool:
    if (a is None or (isinstance(a, float) and math.isnan(a))) and (b is None or (isinstance(b, float) and math.isnan(b))):
        return True
    if isinstance(a, float | int | np.floating | np.integer) and isinstance(b, float | int | np.floating | np.integer):
        return abs(float(a) - float(b)) < 1e-9
    return a == b


def test_every_tag_matches_an_independent_pandas_computation(computed, data):
    lh, cfg, figures, wide = computed
    prof = read_pandas(lh.root, "gold_profiles").set_index("person_id").sort_index()
    expected = _expected(data, cfg.tags, prof)
    assert list(wide.index) == list(expected.index)  # every person, with or without activity
    assert set(wide.columns) == {"as_of", *cfg.tags.types}
    mismatches = {}
    for name in cfg.tags.types:
        bad = [(p, wide.at[p, name], expected.at[p, name]) for p in wide.index
               if not _same(wide.at[p, name], expected.at[p, name])]
        if bad:
            mismatches[name] = bad[:3]
    assert mismatches == {}
    # the data exercises what it should: window edges, idle people, several RFM segments and stages
    assert wide["ev_7d"].sum() > 0 and (wide["ev_all"] == 0).sum() >= 4
    assert wide["rfm_segment"].nunique() >= 3 and wide["stage"].nunique() >= 3
    assert figures["people"] == PEOPLE and figures["tags"] == len(cfg.tags.types)


def test_window_edges_count_the_first_day_and_not_the_day_before(computed, data):
    """Each person with a device has events exactly 6 and 7 days back: a 7-day window counts the first."""
    _, _, _, wide = computed
    _, events, _ = data
    p = events.loc[events["device_id"].notna(), "person_id"].iloc[0]
    mine = events[(events["person_id"] == p) & (events["_batch_date"] <= AS_OF) & (events["event_date"] <= AS_OF)]
    inside = mine[mine["event_date"] >= AS_OF - dt.timedelta(days=6)]
    assert (mine["event_date"] == AS_OF - dt.timedelta(days=7)).any()  # just outside, present in the data
    assert wide.at[p, "ev_7d"] == len(inside)


def test_people_without_activity_get_zero_counts_and_no_averages(computed, data):
    _, _, _, wide = computed
    people, _, _ = data
    idle = [p["person_id"] for p in people.to_dict("records") if p["i"] % 10 == 9]
    row = wide.loc[idle]
    assert (row[["ev_7d", "ev_all", "orders_90d", "active_30d"]] == 0).all().all()
    assert (row["spend_30d"] == 0.0).all()
    assert row[["aov_90d", "since_active", "fav_channel", "rfm_recency"]].isna().all().all()
    assert set(row["rfm_segment"]) == {"no_orders"}


def test_gold_tags_long_holds_every_non_null_value_typed(computed):
    lh, cfg, figures, wide = computed
    long = read_pandas(lh.root, "gold_tags")
    assert len(long) == figures["tag_rows"] == int(wide[list(cfg.tags.types)].notna().sum().sum())
    assert dict(long.groupby("tag")["value_type"].first()) == {k: v for k, v in cfg.tags.types.items()
                                                               if wide[k].notna().any()}
    one = long[(long["tag"] == "big_fan")]
    assert set(one["value"]) <= {"true", "false"}


def test_tags_are_point_in_time_later_events_change_nothing(computed, data, sail):
    """Events and orders dated after the as-of date, or arriving in a later batch, never change its tags."""
    lh, cfg, _, before = computed
    _, events, orders = data
    spark = lh.spark
    later = AS_OF + dt.timedelta(days=1)
    person = events["person_id"].iloc[0]
    device = events.loc[events["person_id"] == person, "device_id"].iloc[0]
    extra = [{"event_id": f"late-{k}", "channel": "app", "event_name": "add_cart", "event_time": _day(d), "event_date": d,
              "device_id": device, "_batch_date": later} for k, d in enumerate([AS_OF, later, AS_OF - dt.timedelta(days=3)])]
    lh.write_partition("silver_events", contract_frame(spark, "silver_events", extra), {"_batch_date": later})
    tags.run(lh, cfg, AS_OF)
    after = read_pandas(lh.root, "gold_profile_tags").set_index("person_id").sort_index()
    pd.testing.assert_frame_equal(before, after)


def test_attribution_takes_the_strongest_identifier_that_one_id_kept(sail):
    recs = sail.createDataFrame([("r1", "DEV1", "L2"), ("r2", "DEV1", None), ("r3", "JUNK", None)],
                                "rid string, device_id string, login_id string")
    sets = build_identifier_sets(
        contract_frame(sail, "silver_events", [
            {"event_id": rid, "channel": "app", "device_id": d, "login_id": lg, "event_name": "x",
             "event_time": dt.datetime(2026, 11, 1), "event_date": dt.date(2026, 11, 1), "_batch_date": dt.date(2026, 11, 1)}
            for rid, d, lg in (("r1", "DEV1", "L2"), ("r2", "DEV1", None), ("r3", "JUNK", None))]),
        contract_frame(sail, "silver_orders", []), contract_frame(sail, "silver_contacts", []))
    identifiers = build_identifiers(sets, dt.date(2026, 11, 1))
    id_map = sail.createDataFrame([("device_id", "DEV1", "p1"), ("login_id", "L2", "p2")],
                                  "id_type string, id_value string, person_id string")  # JUNK was blocklisted
    got = with_person_id(recs, build_set_persons(identifiers, id_map), ("device_id", "login_id"))
    assert {r.rid: r.person_id for r in got.collect()} == {"r1": "p2", "r2": "p1", "r3": None}


def _recent_expected(data, days: int, limit: int) -> dict[str, list[dict]]:
    """Each person's newest `limit` events and orders of the `days` days up to AS_OF, from the ground truth."""
    _, events, orders = data
    ev = events[(events["event_date"] <= AS_OF) & (events["_batch_date"] <= AS_OF)]
    od = orders.assign(date=orders["paid_time"].dt.date)
    od = od[(od["date"] <= AS_OF) & (od["_batch_date"] <= AS_OF)]
    rows = pd.concat([
        _window(ev.assign(date=ev["event_date"]), days).assign(ts=lambda d: d["event_time"], action=lambda d: d["event_name"],
                                                              id=lambda d: d["event_id"], amount=None),
        _window(od, days).assign(ts=lambda d: d["paid_time"], action="order", id=lambda d: d["order_id"]),
    ])[["person_id", "ts", "action", "channel", "id", "amount"]]
    rows = rows.sort_values(["person_id", "ts", "id"], ascending=[True, False, False])
    out = {}
    for pid, g in rows.groupby("person_id"):
        out[pid] = [{"time": f"{pd.Timestamp(r.ts):%Y-%m-%dT%H:%M:%S.%f}Z", "action": r.action, "channel": r.channel,
                     "id": r.id, **({"amount": f"{r.amount:.2f}"} if pd.notna(r.amount) else {})}
                    for r in g.head(limit).itertuples()]
    return out


def test_recent_events_are_each_persons_newest_in_the_window(computed, data, sail):
    """gold_recent_events (the profiles stage, for the API's /v1/profiles/{id}/events): newest first, ties by
    id, only the window's days, point-in-time, at most the limit; people without any have no row."""
    import json

    from spark_jobs.activity import read_activity

    lh, cfg, _, _ = computed
    days = cfg.profiles.recent_events_days
    table = read_pandas(lh.root, "gold_recent_events")
    got = {p: json.loads(e) for p, e in zip(table["person_id"], table["events"], strict=True)}
    assert got == _recent_expected(data, days, cfg.profiles.recent_events_limit)
    assert (table["events_count"] == [len(got[p]) for p in table["person_id"]]).all() and (table["as_of"] == AS_OF).all()
    assert any(e["action"] == "order" and "amount" in e for v in got.values() for e in v)
    try:  # a limit below what people have: the newest 3 of each
        capped = profiles.build_recent_events(read_activity(lh, AS_OF, cfg.standardise.timezone, "recent"), AS_OF, days, 3)
        capped = {r["person_id"]: json.loads(r["events"]) for r in capped.collect()}
    finally:
        lh.unstage("recent")
    assert capped == _recent_expected(data, days, 3) and max(map(len, got.values())) > 3
