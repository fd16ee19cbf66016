"""Forecast benchmark behind the choice of spark_jobs/analytics/alerts.py (README: Analysis): how fast each
candidate fits and forecasts a metric series, and how often a normal next day falls outside its interval
(the false-alarm rate before the alert's minimum move). Candidates: statsforecast AutoETS(model="ANA")
(used), AutoETS() with its full model search, AutoETS(model="AAA"), AutoARIMA(season_length=7) and, when
installed (`.venv/bin/pip install -e '.[bench]'`), Prophet with weekly seasonality.

Series: `--series` daily series of `--days` points shaped like gold_metrics_daily counts: a level drawn per
series, a weekly pattern, a small trend, Poisson noise; each model forecasts day `--days + 1`, which is
drawn from the same process (no anomaly), so every point outside the interval is a false alarm.

    .venv/bin/python bench/forecast.py --series 200 --days 60
Writes bench/results/forecast-<date>.json and prints a Markdown table."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from identity import machine  # noqa: E402

HERE = Path(__file__).resolve().parent
LEVELS = (95, 99)


def make_series(n: int, days: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """`n` series of `days` points (long frame: unique_id, ds, y) and each one's next, held-out value."""
    rng = np.random.default_rng(seed)
    frames, nxt = [], []
    t = np.arange(days + 1)
    for i in range(n):
        level = rng.uniform(20, 400)
        weekly = 1 + rng.uniform(0.05, 0.35) * np.sin(2 * np.pi * (t + rng.integers(7)) / 7)
        trend = 1 + rng.uniform(-0.003, 0.006) * t
        y = rng.poisson(level * weekly * trend).astype(float)
        frames.append(pd.DataFrame({"unique_id": f"s{i}", "ds": t[:-1], "y": y[:-1]}))
        nxt.append(y[-1])
    return pd.concat(frames, ignore_index=True), np.asarray(nxt)


def _outside(lo: np.ndarray, hi: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean((actual < lo) | (actual > hi)))


def statsforecast_model(name: str, model, long: pd.DataFrame, actual: np.ndarray) -> dict:
    os.environ.setdefault("NIXTLA_ID_AS_COL", "1")
    from statsforecast import StatsForecast

    n = long["unique_id"].nunique()
    sf = StatsForecast(models=[model], freq=1, n_jobs=1)
    start = time.perf_counter()
    fc = sf.forecast(df=long, h=1, level=list(LEVELS))
    seconds = time.perf_counter() - start
    fc = fc.set_index("unique_id").loc[[f"s{i}" for i in range(n)]]
    alias = str(model)
    out = {"model": name, "seconds": round(seconds, 3), "ms_per_series": round(1000 * seconds / n, 2)}
    for level in LEVELS:
        out[f"outside_{level}"] = _outside(fc[f"{alias}-lo-{level}"].to_numpy(), fc[f"{alias}-hi-{level}"].to_numpy(), actual)
    return out


def prophet_model(long: pd.DataFrame, actual: np.ndarray) -> dict | None:
    try:
        from prophet import Prophet
    except ImportError:
        return None
    logging.getLogger("cmdstanpy").disabled = True  # one INFO line per chain otherwise
    n = long["unique_id"].nunique()
    base = pd.Timestamp("2026-01-01")
    lows = {level: [] for level in LEVELS}
    highs = {level: [] for level in LEVELS}
    start = time.perf_counter()
    for i in range(n):
        g = long[long["unique_id"] == f"s{i}"]
        frame = pd.DataFrame({"ds": base + pd.to_timedelta(g["ds"], unit="D"), "y": g["y"].to_numpy()})
        future = pd.DataFrame({"ds": [base + pd.Timedelta(days=len(g))]})
        for level in LEVELS:  # Prophet draws one interval width per fit
            m = Prophet(weekly_seasonality=True, daily_seasonality=False, yearly_seasonality=False,
                        interval_width=level / 100)
            m.fit(frame)
            row = m.predict(future).iloc[0]
            lows[level].append(row["yhat_lower"])
            highs[level].append(row["yhat_upper"])
    seconds = (time.perf_counter() - start) / len(LEVELS)  # per fit, as the other models fit once for both levels
    out = {"model": "Prophet (weekly seasonality)", "seconds": round(seconds, 3), "ms_per_series": round(1000 * seconds / n, 2)}
    for level in LEVELS:
        out[f"outside_{level}"] = _outside(np.asarray(lows[level]), np.asarray(highs[level]), actual)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", type=int, default=200)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-arima", action="store_true", help="skip AutoARIMA (the slowest statsforecast model)")
    a = p.parse_args()
    from statsforecast.models import AutoARIMA, AutoETS

    long, actual = make_series(a.series, a.days, a.seed)
    candidates = [("statsforecast AutoETS(ANA) (used)", AutoETS(season_length=7, model="ANA")),
                  ("statsforecast AutoETS() (full search)", AutoETS(season_length=7)),
                  ("statsforecast AutoETS(AAA)", AutoETS(season_length=7, model="AAA"))]
    if not a.no_arima:
        candidates.append(("statsforecast AutoARIMA(season_length=7)", AutoARIMA(season_length=7)))
    statsforecast_model("warm-up", AutoETS(season_length=7, model="ANA"), long[long["unique_id"] == "s0"], actual[:1])
    rows = []
    for name, model in candidates:
        rows.append(statsforecast_model(name, model, long, actual))
        print(f"{name}: {rows[-1]['ms_per_series']} ms per series", file=sys.stderr)
    prophet = prophet_model(long, actual)
    if prophet is None:
        print("prophet is not installed (.venv/bin/pip install -e '.[bench]'): not measured", file=sys.stderr)
    else:
        rows.append(prophet)
    result = {"date": dt.date.today().isoformat(), "machine": machine(), "series": a.series, "days": a.days,
              "seed": a.seed, "rows": rows}
    out = HERE / "results" / f"forecast-{result['date']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| model | ms per series | outside 99 % (nominal 1 %) | outside 95 % (nominal 5 %) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['ms_per_series']} | {100 * r['outside_99']:.1f} % | {100 * r['outside_95']:.1f} % |")
    print(f"written {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
