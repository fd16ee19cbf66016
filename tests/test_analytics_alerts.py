"""Anomaly alerts (spark_jobs/analytics/alerts.py) on seeded metric series shaped like gold_metrics_daily:
a channel that sends nothing for a day raises the alert naming it, normal days raise none, and too
little history gives no forecast instead of an alarm."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from spark_jobs.analytics.alerts import NO_FORECAST, detect, series_frame
from spark_jobs.analytics.config import AlertsConfig

START = dt.date(2026, 9, 1)
CFG = AlertsConfig()
CHANNELS = {"app": 900.0, "wechat": 600.0, "pos": 120.0}


def metric_rows(days: int, seed: int, drop: dict[int, str] | None = None) -> pd.DataFrame:
    """active_people per channel and in total, and conversion, for `days` days: weekly seasonality, a slow
    trend and Poisson noise. `drop`: day index -> a channel that sent nothing that day (no rows)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(days):
        day = START + dt.timedelta(days=i)
        season = 1 + 0.15 * np.sin(2 * np.pi * i / 7) + 0.001 * i
        total = 0.0
        for ch, base in CHANNELS.items():
            if drop and drop.get(i) == ch:
                continue
            v = float(rng.poisson(base * season))
            total += v
            rows.append((day, "active_people", "people", "channel", ch, v))
        rows.append((day, "active_people", "people", "total", "total", total))
        buyers = rng.binomial(int(total), 0.08)
        rows.append((day, "conversion", "ratio", "total", "total", buyers / total))
    return pd.DataFrame(rows, columns=["as_of", "metric", "kind", "dimension", "dimension_value", "value"])


def _alerts_on(history: pd.DataFrame, day: dt.date) -> list[dict]:
    return detect(history[history["as_of"] <= day], day, CFG)[0]


def test_detect_names_the_channel_missing_for_a_day():
    history = metric_rows(40, seed=1, drop={39: "wechat"})
    day = START + dt.timedelta(days=39)
    alerts = {(a["metric"], a["dimension"], a["dimension_value"]): a for a in _alerts_on(history, day)}
    wechat = alerts[("active_people", "channel", "wechat")]
    assert wechat["observed"] == 0 and wechat["direction"] == "drop" and wechat["severity"] == "critical"
    total = alerts[("active_people", "total", "total")]
    assert total["observed"] < total["lower"] and total["direction"] == "drop"
    explained = json.loads(total["drill_down"])
    assert explained[0]["dimension"] == "channel" and explained[0]["value"] == "wechat" and explained[0]["share"] > 0.8
    assert ("active_people", "channel", "app") not in alerts and ("active_people", "channel", "pos") not in alerts


def test_detect_raises_nothing_on_30_normal_days():
    history = metric_rows(CFG.min_history_days + 30, seed=2)
    raised = [a for i in range(CFG.min_history_days, CFG.min_history_days + 30)
              for a in _alerts_on(history, START + dt.timedelta(days=i))]
    assert raised == []


@pytest.mark.slow  # 186 daily forecasts of 5 series: ~15 s
def test_detect_false_alarm_rate_over_a_long_run_is_below_half_a_percent():
    days = 200
    history = metric_rows(days, seed=3)
    checked = alarms = 0
    for i in range(CFG.min_history_days, days):
        alerts, forecasts, _ = detect(history[history["as_of"] <= START + dt.timedelta(days=i)], START + dt.timedelta(days=i), CFG)
        checked += int((forecasts["status"] == "forecast").sum())
        alarms += len(alerts)
    rate = alarms / checked
    print(f"false alarms: {alarms} of {checked} series-days = {rate:.4%}")  # README: Analysis
    assert checked == (days - CFG.min_history_days) * 5 and rate < 0.005


def test_detect_gives_no_forecast_yet_on_short_history():
    history = metric_rows(CFG.min_history_days, seed=4, drop={CFG.min_history_days - 1: "wechat"})
    day = START + dt.timedelta(days=CFG.min_history_days - 1)  # 13 earlier days: one short
    alerts, forecasts, _ = detect(history, day, CFG)
    assert alerts == [] and set(forecasts["status"]) == {NO_FORECAST}


def test_series_frame_fills_missing_days_of_counts_with_zero_and_skips_missing_ratios():
    history = metric_rows(10, seed=5, drop={4: "pos"})
    history = history[~((history["metric"] == "conversion") & (history["as_of"] == START + dt.timedelta(days=6)))]
    s = series_frame(history, START + dt.timedelta(days=9), CFG).set_index(["metric", "dimension_value"])
    assert len(s.loc[("active_people", "pos"), "values"]) == 9 and s.loc[("active_people", "pos"), "values"][4] == 0
    assert len(s.loc[("conversion", "total"), "values"]) == 8


def test_the_forecast_does_not_depend_on_the_order_of_the_history_rows():
    """gold_metrics_daily comes back in file order (a restated day is a newer file): a ratio series, which is
    not re-indexed by day, must still be oldest first, or AutoETS fits a shuffled series (fresh-clone CI,
    2026-12-04: a false alarm on one run and none on the next)."""
    history = metric_rows(30, seed=8)
    day = START + dt.timedelta(days=29)
    shuffled = history.sample(frac=1.0, random_state=0)
    ordered, mixed = series_frame(history, day, CFG), series_frame(shuffled, day, CFG)
    ratio = mixed.set_index(["metric", "dimension_value"]).loc[("conversion", "total")]
    assert ratio["dates"] == sorted(ratio["dates"]) and len(ratio["dates"]) == 29
    a, b = detect(history, day, CFG)[1], detect(shuffled, day, CFG)[1]
    pd.testing.assert_frame_equal(a.drop(columns=["dates", "values"]), b.drop(columns=["dates", "values"]))
    assert all(np.array_equal(x, y) for x, y in zip(ordered["values"], mixed["values"], strict=True))


def test_detect_returns_fitted_bands_of_the_asked_series():
    history = metric_rows(30, seed=6)
    _, _, bands = detect(history, START + dt.timedelta(days=29), CFG, fitted={("active_people", "total", "total")})
    band = bands[("active_people", "total", "total")]
    assert len(band["dates"]) == len(band["lower"]) == len(band["upper"]) == 29
    assert all(lo <= hi for lo, hi in zip(band["lower"], band["upper"], strict=True))


@pytest.mark.parametrize("spike", [3.0])
def test_detect_calls_a_spike_a_spike(spike):
    history = metric_rows(30, seed=7)
    last = history["as_of"] == START + dt.timedelta(days=29)
    history.loc[last & (history["dimension_value"] == "pos"), "value"] *= spike
    alerts = _alerts_on(history, START + dt.timedelta(days=29))
    assert [(a["dimension_value"], a["direction"]) for a in alerts] == [("pos", "spike")]


TIERS = {"tier1": (1000.0, 0.10), "tier3": (15.0, 0.40)}  # active people, conversion: a big and a small group
RATIOS = {"conversion": ("buyers", "active_people")}


def conversion_rows(days: int, seed: int, last_day: dict[str, float]) -> pd.DataFrame:
    """active_people, buyers and conversion = buyers / active_people by city tier and in total; on the last
    day each tier of `last_day` converts at the given rate instead of its own."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(days):
        day = START + dt.timedelta(days=i)
        season = 1 + 0.1 * np.sin(2 * np.pi * i / 7)
        active_total = buyers_total = 0.0
        for tier, (active, rate) in TIERS.items():
            a = float(rng.poisson(active * season))
            rate = last_day.get(tier, rate) if i == days - 1 else rate
            b = float(rng.binomial(int(a), rate))
            active_total, buyers_total = active_total + a, buyers_total + b
            rows += [(day, "active_people", "people", "city_tier", tier, a), (day, "buyers", "people", "city_tier", tier, b),
                     (day, "conversion", "ratio", "city_tier", tier, b / a)]
        rows += [(day, "active_people", "people", "total", "total", active_total),
                 (day, "buyers", "people", "total", "total", buyers_total),
                 (day, "conversion", "ratio", "total", "total", buyers_total / active_total)]
    return pd.DataFrame(rows, columns=["as_of", "metric", "kind", "dimension", "dimension_value", "value"])


def test_a_ratio_alert_drills_down_by_its_numerator_and_denominator_parts():
    """Checkout breaks in the big tier (10 % -> 3 %) and the small tier sells nothing that day: the small
    tier's own ratio moves most (-0.40 against -0.07), but the big tier explains the total's drop."""
    history = conversion_rows(40, seed=8, last_day={"tier1": 0.03, "tier3": 0.0})
    day = START + dt.timedelta(days=39)
    alerts, forecasts, _ = detect(history, day, CFG, ratios=RATIOS)
    total = next(a for a in alerts if (a["metric"], a["dimension"]) == ("conversion", "total"))
    assert total["direction"] == "drop"
    own = forecasts[(forecasts["metric"] == "conversion") & (forecasts["dimension"] == "city_tier")].set_index("dimension_value")
    own_change = (own["observed"] - own["expected"]).abs()
    assert own_change["tier3"] > own_change["tier1"]  # the old ranking (own deviation) would name tier3 first
    explained = json.loads(total["drill_down"])
    assert [d["value"] for d in explained] == ["tier1", "tier3"]
    assert explained[0]["share"] > 0.8 and explained[0]["numerator_change"] < -40
    assert sum(d["share"] for d in explained) == pytest.approx(1.0, abs=0.1)  # first-order: the parts add up


def test_a_ratio_alert_without_forecast_parts_has_no_drill_down():
    history = conversion_rows(40, seed=9, last_day={"tier1": 0.03})
    history = history[history["metric"] != "buyers"]  # the numerator's series are not in the mart
    day = START + dt.timedelta(days=39)
    total = next(a for a in detect(history, day, CFG, ratios=RATIOS)[0] if (a["metric"], a["dimension"]) == ("conversion", "total"))
    assert json.loads(total["drill_down"]) == []
