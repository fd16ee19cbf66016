"""Late records restate the metrics of the day they belong to (spark_jobs/analytics/stage.py: late_dates,
restate_metrics). Two copies of one generated world run day by day: on time, and with a share of day 2's
app events (a fifth) and orders (half) delivered in day 3's files instead (an SDK that uploads its offline buffer the next
morning, a store that sends yesterday's receipts late). After day 3, the late world's metrics of day 2
equal the on-time world's (people over all channels: up to what One-ID learned on day 3); before
restatement they were short. Quality gates are off (they do not touch
the marts; tests/test_analytics_report.py runs the stage with them on)."""

from __future__ import annotations

import datetime as dt
import shutil

import pandas as pd
import pytest

from spark_jobs.config import CdpConfig, EngineConfig, PathsConfig, QualityConfig
from spark_jobs.tables import read_pandas

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
START = dt.date(2026, 9, 1)
DAY2, DAY3 = START + dt.timedelta(days=1), START + dt.timedelta(days=2)
COLUMN_DIMENSIONS = ("total", "channel", "platform")  # tag dimensions are each day's own tags: not compared


def _deliver_late(landing, folder: str, header: bool, every: int) -> int:
    """Move every `every`-th record line of `folder`'s day-2 file to the end of its day-3 file; the count moved."""
    (src,) = sorted((landing / folder / DAY2.isoformat()).iterdir())
    (dst,) = sorted((landing / folder / DAY3.isoformat()).iterdir())
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    head, body = (lines[:1], lines[1:]) if header else ([], lines)
    late = body[::every]
    keep = [line for i, line in enumerate(body) if i % every]
    src.write_text("".join(head + keep), encoding="utf-8")
    with dst.open("a", encoding="utf-8") as fh:
        fh.writelines(late)
    return len(late)


def _run(base, late: bool):
    from spark_jobs.pipeline import run_day, summarise

    cfg = CdpConfig(engine=EngineConfig(kind="local"), quality=QualityConfig(enabled=False),
                    paths=PathsConfig(landing=str(base / "landing"), lakehouse=str(base / "lh"), exports=str(base / "exports")))
    moved = {}
    if late:
        moved = {"app_events": _deliver_late(base / "landing", "app_events", header=False, every=5),
                 "orders": _deliver_late(base / "landing", "orders", header=True, every=2)}
    summaries, before = {}, None
    for i in range(3):
        day = START + dt.timedelta(days=i)
        summaries[day] = summarise(run_day(day, cfg=cfg), cfg)
        if day == DAY2:
            before = read_pandas(cfg.paths.lakehouse_uri(), "gold_metrics_daily", partition={"as_of": DAY2.isoformat()})
    after = read_pandas(cfg.paths.lakehouse_uri(), "gold_metrics_daily", partition={"as_of": DAY2.isoformat()})
    return summaries, before, after, moved


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    from spark_jobs.generate import generate

    base = tmp_path_factory.mktemp("late")
    generate(base / "on_time" / "landing", people=400, days=3, seed=31, start=START)
    shutil.copytree(base / "on_time" / "landing", base / "late" / "landing")
    return _run(base / "on_time", late=False), _run(base / "late", late=True)


def _values(frame: pd.DataFrame) -> pd.Series:
    f = frame[frame["dimension"].isin(COLUMN_DIMENSIONS)]
    return f.set_index(["metric", "dimension", "dimension_value"])["value"].sort_index()


# Counted over all channels, people depend on One-ID: restated on day 3, the late world counts them with day
# 3's identities, the on-time world counted them with day 2's (a link learned on day 3 joins two of them,
# and a person joined to someone seen on day 1 is no longer new on day 2).
def _identity_dependent(key) -> bool:
    metric, dimension, _ = key
    return metric == "new_people" or (dimension == "total" and metric in ("active_people", "buyers", "conversion"))


def test_late_records_restate_the_day_they_belong_to(worlds):
    (on_time, _, on_time_day2, _), (late, _, after, moved) = worlds
    assert moved["app_events"] > 20 and moved["orders"] >= 5
    assert late[DAY3]["analytics"]["restated"] == [DAY2.isoformat()]
    assert on_time[DAY3]["analytics"]["restated"] == []  # nothing late: nothing recomputed
    want, got = _values(on_time_day2), _values(after)
    assert list(got.index) == list(want.index)
    exact = [k for k in want.index if not _identity_dependent(k)]
    pd.testing.assert_series_equal(got[exact], want[exact])  # orders, GMV, AOV, people per channel and platform


def test_restated_people_totals_differ_only_by_identities_learned_since(worlds):
    (_, _, on_time_day2, _), (_, before, after, _) = worlds
    want, got, short = _values(on_time_day2), _values(after), _values(before)
    for key in filter(_identity_dependent, want.index):
        assert abs(got[key] - want[key]) <= max(1.0, 0.03 * want[key]), (key, got[key], want[key])
    for metric in ("active_people", "orders", "gmv"):  # before the restatement the late day was short
        key = (metric, "total", "total")
        assert short[key] < want[key] and abs(got[key] - want[key]) < abs(short[key] - want[key])


def test_tag_dimensions_are_restated_with_that_days_tags(worlds):
    """lifecycle_stage rows of day 2 are recomputed too: their values add up to the restated total."""
    _, (_, before, after, _) = worlds
    orders = after[after["metric"] == "orders"]
    by_stage = orders[orders["dimension"] == "lifecycle_stage"]["value"].sum()
    assert by_stage == orders[orders["dimension"] == "total"]["value"].iloc[0]
    assert by_stage > before[(before["metric"] == "orders") & (before["dimension"] == "lifecycle_stage")]["value"].sum()
