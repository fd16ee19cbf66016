"""Analysis marts (spark_jobs/analytics/marts.py) on Sail against independent pandas computations on
seeded random activity, plus hand-made people on the edges: the end of a conversion window, repeated
steps, skipped steps, steps out of order, people who appear or disappear between snapshots."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from spark_jobs.analytics.config import FunnelSpec, RetentionSpec, load_analytics
from spark_jobs.analytics.marts import (
    ABSENT,
    NONE,
    build_funnel,
    build_metrics,
    build_retention,
    build_transitions,
    segment_states,
    source_rows,
)
from spark_jobs.config import load_config

AS_OF = dt.date(2026, 11, 20)
TZ_HOURS = 8  # local day = UTC + 8 h (Asia/Shanghai), as standardise computes event_date
EVENT_SCHEMA = "person_id string, event_name string, channel string, platform string, appid string, ts timestamp, date date"
ORDER_SCHEMA = "person_id string, channel string, category string, store_id string, amount double, ts timestamp, date date"
STEPS = ("view_item", "add_cart", "pay_order")


def _local(ts: dt.datetime) -> dt.date:
    return (ts + dt.timedelta(hours=TZ_HOURS)).date()


def random_events(seed: int, people: int = 40, days: int = 25, per_person: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    names = [*STEPS, "app_start", "search"]
    start = dt.datetime.combine(AS_OF - dt.timedelta(days=days - 1), dt.time()) - dt.timedelta(hours=TZ_HOURS)
    rows = []
    for p in range(people):
        for _ in range(rng.integers(1, per_person)):
            ts = start + dt.timedelta(seconds=int(rng.integers(0, days * 86400)))
            rows.append({"person_id": f"p{p:02d}", "event_name": str(rng.choice(names, p=[.35, .25, .15, .15, .1])),
                         "channel": "app", "platform": str(rng.choice(["ios", "android", "web"])), "appid": None,
                         "ts": ts, "date": _local(ts)})
    return pd.DataFrame(rows)


def edge_events(window_days: int) -> pd.DataFrame:
    """People on the edges of the app_purchase funnel, all entering on AS_OF - window_days."""
    t0 = dt.datetime.combine(AS_OF - dt.timedelta(days=window_days), dt.time(3, 0))  # 11:00 local, same day
    w = dt.timedelta(days=window_days)
    s = dt.timedelta(seconds=1)
    plan = {
        "edge_in": [("view_item", t0), ("add_cart", t0 + w - s), ("pay_order", t0 + w)],  # last step on the edge
        "edge_out": [("view_item", t0), ("add_cart", t0 + s), ("pay_order", t0 + w + s)],  # one second late
        "repeats": [("view_item", t0), ("add_cart", t0 + s), ("view_item", t0 + 2 * s), ("add_cart", t0 + 3 * s),
                    ("add_cart", t0 + 4 * s), ("pay_order", t0 + 5 * s), ("pay_order", t0 + 6 * s)],
        "skipper": [("view_item", t0), ("pay_order", t0 + s)],  # never adds to cart
        "reorder": [("view_item", t0), ("pay_order", t0 + s), ("add_cart", t0 + 2 * s)],  # strict: 2, any: 3
        "before": [("add_cart", t0 - s), ("view_item", t0), ("pay_order", t0 + s)],  # cart before the entry
        "same_time": [("view_item", t0), ("add_cart", t0), ("pay_order", t0)],
        "late_entry": [("view_item", t0 + dt.timedelta(hours=12)), ("add_cart", t0 + w + dt.timedelta(hours=1))],
    }
    return pd.DataFrame([{"person_id": p, "event_name": n, "channel": "app", "platform": "ios", "appid": None,
                          "ts": ts, "date": _local(ts)} for p, evs in plan.items() for n, ts in evs])


def reference_funnel(ev: pd.DataFrame, tags: pd.DataFrame, spec: FunnelSpec, as_of: dt.date) -> dict:
    """(cohort_date, dimension, value, step) -> people, computed attempt by attempt in plain Python."""
    first = as_of - dt.timedelta(days=spec.window_days)
    ev = ev[(ev["date"] >= first) & ev["event_name"].isin(spec.steps)]
    by_person = {p: g.sort_values("ts") for p, g in ev.groupby("person_id")}
    tag_of = tags.set_index("person_id").to_dict("index") if len(tags) else {}
    depth: dict[tuple, int] = {}
    for _, e in ev[ev["event_name"] == spec.steps[0]].iterrows():
        mine, t0 = by_person[e["person_id"]], e["ts"]
        end = t0 + dt.timedelta(days=spec.window_days)
        d, prev = 1, t0
        for name in spec.steps[1:]:
            lo = prev if spec.order == "strict" else t0
            hits = mine[(mine["event_name"] == name) & (mine["ts"] >= lo) & (mine["ts"] <= end)]
            if hits.empty:
                break
            d, prev = d + 1, hits["ts"].min()
        groups = [("total", "total")]
        for dim in spec.dimensions:
            v = e[dim] if dim in ev.columns else tag_of.get(e["person_id"], {}).get(dim)
            groups.append((dim, "unknown" if v is None or pd.isna(v) else v))
        for g in groups:
            k = (e["date"], *g, e["person_id"])
            depth[k] = max(depth.get(k, 0), d)
    out: dict[tuple, int] = {}
    for (cohort, dim, val, _), d in depth.items():
        for step in range(1, len(spec.steps) + 1):
            out[(cohort, dim, val, step)] = out.get((cohort, dim, val, step), 0) + (d >= step)
    return out


def _spark_funnel(sail, ev: pd.DataFrame, tags: pd.DataFrame, spec: FunnelSpec) -> pd.DataFrame:
    events = sail.createDataFrame(ev[["person_id", "event_name", "channel", "platform", "appid", "ts", "date"]], EVENT_SCHEMA)
    person_tags = sail.createDataFrame(tags, "person_id string, city_tier string") if len(tags) else None
    return build_funnel(events, person_tags, spec, AS_OF).toPandas()


@pytest.mark.parametrize("order", ["strict", "any"])
def test_build_funnel_equals_pandas_on_seeded_data_by_dimension(sail, order):
    ev = pd.concat([random_events(seed=3), edge_events(7)], ignore_index=True)
    people = sorted(ev["person_id"].unique())
    tags = pd.DataFrame({"person_id": people[::2], "city_tier": ["tier1", "tier2"] * (len(people[::2]) // 2) + ["tier1"] * (len(people[::2]) % 2)})
    spec = FunnelSpec(name="app_purchase", steps=STEPS, window_days=7, order=order, dimensions=("platform", "city_tier"))
    got = _spark_funnel(sail, ev, tags, spec)
    want = reference_funnel(ev, tags, spec, AS_OF)
    assert {(r.cohort_date, r.dimension, r.dimension_value, r.step): r.people for r in got.itertuples()} == want
    assert set(got["cohort_date"]) == {AS_OF - dt.timedelta(days=d) for d in range(8)} & set(ev["date"])
    assert (got["complete"] == (got["cohort_date"] == AS_OF - dt.timedelta(days=7))).all()
    first = got[got["step"] == 1].set_index(["cohort_date", "dimension", "dimension_value"])["people"]
    for r in got[got["step"] > 1].itertuples():
        assert r.conversion == pytest.approx(r.people / first[(r.cohort_date, r.dimension, r.dimension_value)])


@pytest.mark.parametrize("order, reached", [("strict", {"edge_in": 3, "edge_out": 2, "repeats": 3, "skipper": 1, "reorder": 2,
                                                       "before": 1, "same_time": 3}),
                                           ("any", {"edge_in": 3, "edge_out": 2, "repeats": 3, "skipper": 1, "reorder": 3,
                                                    "before": 1, "same_time": 3})])
def test_build_funnel_counts_window_edges_repeats_and_skipped_steps(sail, order, reached):
    ev = edge_events(7)
    spec = FunnelSpec(name="f", steps=STEPS, window_days=7, order=order)
    for person, depth in reached.items():
        got = _spark_funnel(sail, ev[ev["person_id"] == person], pd.DataFrame(), spec)
        assert got["people"].tolist() == [1] * depth + [0] * (3 - depth), person


def test_build_funnel_keeps_an_open_cohort_incomplete(sail):
    t0 = dt.datetime.combine(AS_OF - dt.timedelta(days=2), dt.time(3))
    ev = pd.DataFrame([{"person_id": "p", "event_name": n, "channel": "app", "platform": "ios", "appid": None, "ts": t,
                        "date": _local(t)} for n, t in (("view_item", t0), ("add_cart", t0 + dt.timedelta(days=1)))])
    got = _spark_funnel(sail, ev, pd.DataFrame(), FunnelSpec(name="f", steps=STEPS, window_days=7))
    assert got["people"].tolist() == [1, 1, 0] and set(got["complete"]) == {False}
    assert set(got["cohort_date"]) == {AS_OF - dt.timedelta(days=2)} and got["step_conversion"].tolist() == [1.0, 1.0, 0.0]


def reference_retention(acts: pd.DataFrame, firsts: pd.DataFrame, spec: RetentionSpec, as_of: dt.date) -> dict:
    def start(d: dt.date) -> dt.date:
        return d if spec.period == "day" else d - dt.timedelta(days=d.weekday())

    days = spec.period_days
    current = start(as_of)
    earliest = current - dt.timedelta(days=days * spec.periods)
    cohort = {p: start(d) for p, d in zip(firsts["person_id"], firsts["first_date"], strict=True) if earliest <= start(d) <= current}
    if spec.return_actions:
        acts = acts[acts["action"].isin(spec.return_actions)]
    acts = acts[(acts["date"] <= as_of) & (acts["date"] >= earliest)]
    returned: dict[tuple, set] = {}
    for p, d in zip(acts["person_id"], acts["date"], strict=True):
        if p in cohort and start(d) >= cohort[p]:
            returned.setdefault((cohort[p], (start(d) - cohort[p]).days // days), set()).add(p)
    out = {}
    for c in set(cohort.values()):
        size = sum(1 for v in cohort.values() if v == c)
        for n in range((current - c).days // days + 1):
            out[(c, n)] = (size, len(returned.get((c, n), ())))
    return out


@pytest.mark.parametrize("period, periods, actions", [("week", 3, ()), ("day", 10, ()), ("week", 2, ("order",)),
                                                      ("day", 5, ("add_cart", "pay_order"))])
def test_build_retention_equals_pandas_on_seeded_data(sail, period, periods, actions):
    ev = random_events(seed=11, people=60, days=40, per_person=8)
    rng = np.random.default_rng(12)
    orders = ev.sample(frac=0.2, random_state=1)[["person_id", "ts", "date"]]
    acts = pd.concat([ev.assign(action=ev["event_name"])[["person_id", "action", "date"]],
                      orders.assign(action="order")[["person_id", "action", "date"]]], ignore_index=True)
    firsts = acts.groupby("person_id", as_index=False)["date"].min().rename(columns={"date": "first_date"})
    # Some people were registered before their first activity (first_seen is the earliest evidence).
    early = rng.random(len(firsts)) < 0.2
    firsts.loc[early, "first_date"] = firsts.loc[early, "first_date"].map(lambda d: d - dt.timedelta(days=9))
    spec = RetentionSpec(name="r", period=period, periods=periods, return_actions=actions)
    got = build_retention(sail.createDataFrame(acts, "person_id string, action string, date date"),
                          sail.createDataFrame(firsts, "person_id string, first_date date"), spec, AS_OF).toPandas()
    want = reference_retention(acts, firsts, spec, AS_OF)
    assert {(r.cohort, r.period_n): (r.cohort_people, r.returned) for r in got.itertuples()} == want
    days = spec.period_days
    for r in got.itertuples():
        assert r.rate == pytest.approx(r.returned / r.cohort_people)
        assert r.complete == (r.cohort + dt.timedelta(days=(r.period_n + 1) * days - 1) <= AS_OF)


def test_build_transitions_equals_pandas_including_people_who_appear_and_leave(sail):
    rng = np.random.default_rng(5)
    stages = ["new", "active", "at_risk", "churned"]
    before_people = [f"p{i}" for i in range(0, 50)]
    after_people = [f"p{i}" for i in range(5, 58)]  # p0-p4 merged away, p50-p57 are new
    before = pd.DataFrame({"person_id": before_people, "state": rng.choice(stages, 50)}).iloc[3:]  # 3 without the tag
    after = pd.DataFrame({"person_id": after_people, "state": rng.choice(stages, 53)})
    got = build_transitions(sail.createDataFrame(before, "person_id string, state string"),
                            sail.createDataFrame(after, "person_id string, state string"),
                            sail.createDataFrame(pd.DataFrame({"person_id": before_people})),
                            sail.createDataFrame(pd.DataFrame({"person_id": after_people})),
                            "lifecycle", AS_OF - dt.timedelta(days=1), AS_OF).toPandas()
    b = pd.DataFrame({"person_id": before_people}).merge(before, how="left").fillna({"state": NONE})
    a = pd.DataFrame({"person_id": after_people}).merge(after, how="left").fillna({"state": NONE})
    both = b.merge(a, on="person_id", how="outer", suffixes=("_from", "_to")).fillna(ABSENT)
    want = both.groupby(["state_from", "state_to"]).size().to_dict()
    assert {(r.from_state, r.to_state): r.people for r in got.itertuples()} == want
    assert got.groupby("from_state")["share"].sum().round(9).eq(1).all()
    assert got.loc[got["from_state"] == ABSENT, "people"].sum() == 8 and got.loc[got["to_state"] == ABSENT, "people"].sum() == 5


def test_segment_states_takes_the_first_listed_segment(sail):
    members = sail.createDataFrame(
        [("a", "champions", "stayed"), ("a", "cart_abandoners", "entered"), ("b", "cart_abandoners", "stayed"),
         ("c", "champions", "left"), ("d", "other", "entered")], "person_id string, segment string, status string")
    got = dict(segment_states(members, ("champions", "cart_abandoners")).collect())
    assert got == {"a": "champions", "b": "cart_abandoners"}


def test_build_metrics_equal_pandas_with_dimensions_new_people_and_ratios(sail, tmp_path):
    ev = random_events(seed=21, people=50, days=3)
    rng = np.random.default_rng(22)
    orders = ev.sample(frac=0.3, random_state=2)[["person_id", "ts", "date"]].assign(
        channel=lambda d: rng.choice(["ecommerce", "pos"], len(d)), category="shoes", store_id=None,
        amount=lambda d: rng.integers(10, 500, len(d)).astype(float))
    people = sorted(ev["person_id"].unique())
    tags = pd.DataFrame({"person_id": people, "city_tier": rng.choice(["tier1", "new_tier1", None], len(people)),
                         "lifecycle_stage": rng.choice(["new", "active"], len(people))})
    firsts = pd.DataFrame({"person_id": people, "first_date": rng.choice([AS_OF, AS_OF - dt.timedelta(days=3)], len(people))})
    cfg = load_config(env={})
    acfg = cfg.analytics
    events = sail.createDataFrame(ev[["person_id", "event_name", "channel", "platform", "appid", "ts", "date"]], EVENT_SCHEMA)
    od = sail.createDataFrame(orders[["person_id", "channel", "category", "store_id", "amount", "ts", "date"]], ORDER_SCHEMA)
    got = build_metrics(events, od, sail.createDataFrame(tags, "person_id string, city_tier string, lifecycle_stage string"),
                        sail.createDataFrame(firsts, "person_id string, first_date date"), acfg.metrics, AS_OF).toPandas()
    got = got.set_index(["metric", "dimension", "dimension_value"])["value"]

    day_ev, day_od = ev[ev["date"] == AS_OF], orders[orders["date"] == AS_OF]
    act = pd.concat([day_ev[["person_id", "channel", "platform"]], day_od[["person_id", "channel"]]]).merge(tags, how="left")
    act_tot = act["person_id"].nunique()
    assert got[("active_people", "total", "total")] == act_tot
    for dim in ("channel", "platform", "city_tier", "lifecycle_stage"):
        want = act.fillna({dim: "unknown"}).groupby(dim)["person_id"].nunique()
        assert {k: got[("active_people", dim, k)] for k in want.index} == want.astype(float).to_dict(), dim
    new = set(firsts.loc[firsts["first_date"] == AS_OF, "person_id"])
    assert got[("new_people", "total", "total")] == act.loc[act["person_id"].isin(new), "person_id"].nunique()
    od_t = day_od.merge(tags, how="left")
    assert got[("orders", "total", "total")] == len(day_od)
    assert got[("gmv", "channel", "pos")] == pytest.approx(day_od.loc[day_od["channel"] == "pos", "amount"].sum())
    assert got[("aov", "total", "total")] == pytest.approx(day_od["amount"].sum() / len(day_od))
    conv = od_t.fillna({"city_tier": "unknown"}).groupby("city_tier")["person_id"].nunique() / \
        act.fillna({"city_tier": "unknown"}).groupby("city_tier")["person_id"].nunique()
    for k, v in conv.fillna(0).items():
        assert got[("conversion", "city_tier", k)] == pytest.approx(v), k
    assert got[("conversion", "total", "total")] == pytest.approx(day_od["person_id"].nunique() / act_tot)


def test_source_rows_of_activity_carry_orders_as_the_order_action(sail):
    ev = random_events(seed=1, people=3, days=2)
    events = sail.createDataFrame(ev[["person_id", "event_name", "channel", "platform", "appid", "ts", "date"]], EVENT_SCHEMA)
    od = sail.createDataFrame([("p00", "pos", None, "s1", 10.0, dt.datetime(2026, 11, 20, 1), AS_OF)], ORDER_SCHEMA)
    rows = source_rows(events, od, "activity").toPandas()
    assert len(rows) == len(ev) + 1 and rows.loc[rows["action"] == "order", "channel"].tolist() == ["pos"]


def test_load_analytics_reads_the_project_file():
    cfg = load_config(env={})
    again = load_analytics(cfg.paths.file("analytics"), cfg.tags.types, {s.name for s in cfg.segments.segments})
    assert again == cfg.analytics and {m.name for m in again.metrics} >= {"active_people", "gmv", "aov", "conversion"}
