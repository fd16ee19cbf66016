"""The analytics stage and the run report on a generated world run day by day (spark_jobs/analytics/stage.py,
report.py): marts per as-of date, idempotent re-runs, no alert without history, and a report that opens
in headless Chromium (Playwright on the system's Chromium) with data points in every chart."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from spark_jobs.analytics.report import write_report
from spark_jobs.config import CdpConfig, EngineConfig, PathsConfig
from spark_jobs.tables import read_pandas

START = dt.date(2026, 11, 1)
DAYS = 3
ARTIFACTS = Path(__file__).resolve().parent / "_artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MARTS = ("gold_metrics_daily", "gold_funnels", "gold_retention", "gold_transitions")


def _cfg(base: Path) -> CdpConfig:
    """The project's config on `base`, its segments without exports: the report reads memberships only."""
    import yaml

    project = yaml.safe_load(PathsConfig().file("segments").read_text())
    base.mkdir(parents=True, exist_ok=True)
    (base / "segments.yaml").write_text(yaml.safe_dump(
        {"segments": [{"name": s["name"], "rule": s["rule"]} for s in project["segments"]]}, allow_unicode=True))
    return CdpConfig(engine=EngineConfig(kind="local"),
                     paths=PathsConfig(landing=str(base / "landing"), lakehouse=str(base / "lh"), exports=str(base / "exports"),
                                       segments=str(base / "segments.yaml")))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """DAYS generated days through every stage, one run per day, then the summary (and its report)."""
    from spark_jobs.generate import generate
    from spark_jobs.pipeline import run_day, summarise

    base = tmp_path_factory.mktemp("analytics")
    generate(base / "landing", people=300, days=DAYS, seed=9, start=START, format="real")
    for app in sorted((base / "landing" / "sensors_app").glob("*/*.jsonl")):  # a broken line a day for the quarantine
        with app.open("a") as fh:
            fh.write('{"event": "broken\n')
    cfg = _cfg(base)
    summaries = []
    for i in range(DAYS):
        run_id = run_day(START + dt.timedelta(days=i), cfg=cfg)
        summaries.append((run_id, summarise(run_id, cfg)))
    return cfg, summaries


def _rendered(report: Path, screenshot: Path) -> dict:
    """Open the report in headless Chromium; per chart: the data points of its traces and the SVG marks drawn."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.as_uri())
            page.wait_for_function("window.CDP_CHARTS && window.CDP_CHARTS.every("
                                   "k => document.querySelector('#chart-' + k + ' .main-svg'))", timeout=60_000)
            charts = page.evaluate("""() => Object.fromEntries(window.CDP_CHARTS.map(k => {
                const el = document.getElementById('chart-' + k);
                const count = v => v == null ? 0 : (typeof v !== 'object' ? 1 : Array.from(v).reduce((n, x) => n + count(x), 0));
                // Points plotly computed (calcdata; a heat-map's cells are its z values), not what the page claims.
                const points = el.calcdata.reduce((n, cd, i) => n + (el._fullData[i].type === 'heatmap'
                                                                     ? count(cd[0].z) : cd.length), 0);
                const marks = el.querySelectorAll('path.point, g.point, path.js-line, g.hm image, image').length;
                return [k, {points, marks, traces: el.data.length}];
            }))""")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return {"charts": charts, "errors": errors}


@pytest.mark.slow
@pytest.mark.e2e
def test_analytics_stage_writes_each_mart_per_as_of_date(world):
    cfg, summaries = world
    root = cfg.paths.lakehouse_uri()
    for table in MARTS:
        days = set(read_pandas(root, table, ["as_of"])["as_of"])
        want = {START + dt.timedelta(days=i) for i in range(DAYS)}
        assert days == (want - {START} if table == "gold_transitions" else want), table  # transitions need a day before
    metrics = read_pandas(root, "gold_metrics_daily")
    last = metrics[metrics["as_of"] == START + dt.timedelta(days=DAYS - 1)].set_index(["metric", "dimension", "dimension_value"])
    assert last.loc[("active_people", "total", "total"), "value"] > 0
    by_channel = last.loc["active_people"].loc["channel"]["value"]
    assert set(by_channel.index) >= {"app", "wechat"} and by_channel.sum() >= last.loc[("active_people", "total", "total"), "value"]
    _, summary = summaries[-1]
    an = summary["analytics"]
    assert an["alerts"] == [] and an["forecast"] == 0 and an["no_forecast_yet"] == an["series"] > 0  # 2 days of history
    assert set(summary["rows"]) >= {*MARTS, "ops_alerts"} and summary["rows"]["ops_alerts"] == 0
    dq = read_pandas(root, "ops_dq_results")
    gated = dq[dq["table_name"].isin([*MARTS, "ops_alerts"])]
    assert set(gated["table_name"]) == {*MARTS, "ops_alerts"} and gated["success"].all()  # every write passed its suite


@pytest.mark.slow
@pytest.mark.e2e
def test_analytics_stage_rerun_replaces_its_partition(world):
    from spark_jobs.pipeline import run_stage

    cfg, summaries = world
    root = cfg.paths.lakehouse_uri()
    day = START + dt.timedelta(days=DAYS - 1)
    before = {t: len(read_pandas(root, t, partition={"as_of": day})) for t in MARTS}
    run_stage("analytics", day, "rerun", cfg=cfg)
    after = {t: len(read_pandas(root, t, partition={"as_of": day})) for t in MARTS}
    assert after == before and all(n > 0 for n in after.values()), after


@pytest.mark.slow
@pytest.mark.e2e
def test_report_opens_in_chromium_with_data_points_in_every_chart(world):
    cfg, summaries = world
    run_id, summary = summaries[-1]
    report = Path(summary["report"])
    assert report == cfg.paths.runs(run_id) / "report.html" and report.stat().st_size > 1_000_000  # plotly.js inlined
    text = report.read_text()
    # Self-contained, works offline: no script, style sheet or image is fetched.
    assert re.findall(r"<script[^>]*\bsrc=|<link[^>]*\bhref=|<img[^>]*\bsrc=", text) == []
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "analytics_report.png"
    seen = _rendered(report, shot)
    assert seen["errors"] == []
    charts = seen["charts"]
    expected = {"rows_per_table", "quarantine", "identity", "segment_sizes", "segment_flow", "quality",
                *(f"metric_{m.name}" for m in cfg.analytics.metrics), *(f"retention_{r.name}" for r in cfg.analytics.retention),
                *(f"transition_{t.name}" for t in cfg.analytics.transitions)}
    assert expected <= set(charts), sorted(expected - set(charts))
    assert any(k.startswith("funnel_") for k in charts)
    empty = {k: v for k, v in charts.items() if v["points"] == 0 or v["marks"] == 0}
    assert empty == {}, empty
    assert shot.stat().st_size > 50_000


def test_write_report_on_an_empty_lakehouse_says_what_is_missing(tmp_path):
    cfg = _cfg(tmp_path)
    out = write_report(cfg, "empty-run", {"batch_date": "2026-11-01", "engine": "local", "seconds_total": 0})
    text = out.read_text()
    assert out == cfg.paths.runs("empty-run") / "report.html"
    assert "no metrics computed yet" in text and "no cohorts as of 2026-11-01" in text and "no segment members yet" in text
    assert "window.CDP_CHARTS=[]" in text


def test_report_draws_forecast_bands_and_alerts_in_chromium(tmp_path):
    """30 days of metrics with a channel missing on the last: the trend chart holds the band, the forecast
    and the alert marker; the alert table names the dimension."""
    import pyarrow as pa

    from spark_jobs.analytics.alerts import detect
    from spark_jobs.contracts import contract
    from spark_jobs.tables import append_arrow
    from tests.test_analytics_alerts import CFG, metric_rows

    cfg = _cfg(tmp_path)
    rows = metric_rows(30, seed=1, drop={29: "wechat"})
    day = rows["as_of"].max()
    alerts, forecasts, bands = detect(rows, day, CFG, fitted={("active_people", "total", "total")})
    total = forecasts.set_index(["metric", "dimension"]).loc[("active_people", "total")]
    root = cfg.paths.lakehouse_uri()
    metrics = rows.assign(numerator=None, denominator=None)[contract("gold_metrics_daily").column_names]
    append_arrow(root, "gold_metrics_daily", pa.Table.from_pandas(metrics, preserve_index=False))
    found = pa.Table.from_pylist([{**a, "run_id": "r"} for a in alerts]).select(contract("ops_alerts").column_names)
    append_arrow(root, "ops_alerts", found)
    band = bands[("active_people", "total", "total")]
    analytics = {"alerts": [{**a, "as_of": a["as_of"].isoformat()} for a in alerts], "forecast": 5, "no_forecast_yet": 0,
                 "method": "m", "metrics": {"active_people": {"status": "forecast", "band": band, "expected": total["expected"],
                                                              "lower": total["lower"], "upper": total["upper"]}}}
    out = write_report(cfg, "r", {"batch_date": day.isoformat(), "engine": "local", "seconds_total": 1}, analytics)
    assert "channel=wechat" in out.read_text()  # the alert table's drill-down
    ARTIFACTS.mkdir(exist_ok=True)
    seen = _rendered(out, ARTIFACTS / "analytics_report_alerts.png")
    chart = seen["charts"]["metric_active_people"]
    assert seen["errors"] == [] and chart["traces"] == 4  # band, series, forecast, alert
    assert chart["points"] == 2 * len(band["dates"]) + 30 + 1 + 1
