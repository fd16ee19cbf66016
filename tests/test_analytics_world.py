"""Anomaly alerts on a whole generated world, not on hand-made series: DAYS generated days through every
stage, one `run_day` per day, with the app SDK's files of the last day taken out of the landing (a channel
that sent nothing, the break the seed's platform teams see most). The alert must name that channel, the
total's drill-down must name it first, and the normal days before it, with a forecast, raise nothing.

Quality gates are off here (QualityConfig.enabled=False): they take two thirds of a small day and do not
touch the marts; tests/test_analytics_report.py runs the analytics stage with them on."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest

from spark_jobs.config import CdpConfig, EngineConfig, PathsConfig, QualityConfig
from spark_jobs.tables import read_pandas

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
START = dt.date(2026, 9, 1)
DAYS = 26  # 14 days of history before the first forecast, 11 normal forecast days, the break on the last
BREAK = START + dt.timedelta(days=DAYS - 1)
CHANNEL = "app"  # landing/app_events/<BREAK>/ is emptied


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from spark_jobs.generate import generate
    from spark_jobs.pipeline import run_day, summarise

    base = tmp_path_factory.mktemp("alerts_world")
    generate(base / "landing", people=600, days=DAYS, seed=21, start=START)
    missing = base / "landing" / "app_events" / BREAK.isoformat()
    assert any(missing.iterdir())
    shutil.rmtree(missing)
    missing.mkdir()
    cfg = CdpConfig(engine=EngineConfig(kind="local"), quality=QualityConfig(enabled=False),
                    paths=PathsConfig(landing=str(base / "landing"), lakehouse=str(base / "lh"), exports=str(base / "exports")))
    summaries = {}
    for i in range(DAYS):
        day = START + dt.timedelta(days=i)
        summaries[day] = summarise(run_day(day, cfg=cfg), cfg)
    alerts = read_pandas(cfg.paths.lakehouse_uri(), "ops_alerts")
    metrics = read_pandas(cfg.paths.lakehouse_uri(), "gold_metrics_daily")
    return cfg, summaries, alerts, metrics


def test_the_missing_channel_raises_a_critical_alert_naming_it(world):
    _, summaries, alerts, metrics = world
    today = alerts[alerts["as_of"] == BREAK]
    app = today[(today["metric"] == "active_people") & (today["dimension"] == "channel") & (today["dimension_value"] == CHANNEL)]
    assert len(app) == 1, today[["metric", "dimension", "dimension_value"]].to_string()
    row = app.iloc[0]
    assert row["observed"] == 0 and row["direction"] == "drop" and row["severity"] == "critical"
    usual = metrics[(metrics["metric"] == "active_people") & (metrics["dimension"] == "channel")
                    & (metrics["dimension_value"] == CHANNEL) & (metrics["as_of"] < BREAK)]["value"]
    assert len(usual) == DAYS - 1 and usual.min() > 20 and row["lower"] > 0  # a channel that is always there
    assert any(a["dimension_value"] == CHANNEL and a["metric"] == "active_people"
               for a in summaries[BREAK]["analytics"]["alerts"])  # the run summary shows it


def test_the_totals_drill_down_names_the_missing_channel_first(world):
    _, _, alerts, _ = world
    total = alerts[(alerts["as_of"] == BREAK) & (alerts["metric"] == "active_people") & (alerts["dimension"] == "total")]
    assert len(total) == 1 and total.iloc[0]["direction"] == "drop"
    explained = json.loads(total.iloc[0]["drill_down"])
    assert (explained[0]["dimension"], explained[0]["value"]) == ("channel", CHANNEL) and explained[0]["share"] > 0.8


def test_normal_days_with_a_forecast_raise_nothing(world):
    cfg, summaries, alerts, _ = world
    forecast_days = [d for d, s in summaries.items() if d < BREAK and s["analytics"]["forecast"] > 0]
    assert len(forecast_days) >= DAYS - 1 - cfg.analytics.alerts.min_history_days
    checked = sum(summaries[d]["analytics"]["forecast"] for d in forecast_days)
    raised = alerts[alerts["as_of"] < BREAK]
    print(f"false alarms: {len(raised)} of {checked} series-days on {len(forecast_days)} normal days")  # README: Analysis
    assert raised.empty, raised[["as_of", "metric", "dimension", "dimension_value", "observed", "expected"]].to_string()
    assert all(summaries[d]["analytics"]["forecast"] == 0 for d in summaries
               if d < START + dt.timedelta(days=cfg.analytics.alerts.min_history_days))  # no forecast yet, no alarm
