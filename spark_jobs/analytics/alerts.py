"""Anomaly alerts on metric series: forecasts each series of gold_metrics_daily rows (pandas, small by
construction: metrics x dimension values x history_days) with statsforecast's ETS and its prediction
intervals, flags the as-of observation outside the interval, and drills down into the dimension values
that explain the deviation; reads and writes no table (spark_jobs.analytics.stage does)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os

import numpy as np
import pandas as pd

from spark_jobs.analytics.config import TOTAL, AlertsConfig

log = logging.getLogger(__name__)
METHOD = "statsforecast AutoETS(ANA)"  # additive error and season, no trend: best calibrated in README's comparison
ADDITIVE = ("people", "count", "sum")  # a missing day of these is a zero; a missing ratio is unknown
NO_FORECAST = "no forecast yet"


def series_frame(history: pd.DataFrame, as_of: dt.date, cfg: AlertsConfig) -> pd.DataFrame:
    """One row per (metric, dimension, dimension_value) series: its kind, the history before `as_of`
    (values oldest first whatever the rows' order, a missing day of an additive metric as 0) and the
    observation on `as_of` (NaN: none, 0 for an additive metric seen before: a channel that sent nothing)."""
    start = as_of - dt.timedelta(days=cfg.history_days)
    h = history[(history["as_of"] >= start) & (history["as_of"] <= as_of)]
    out = []
    for (metric, dim, value), g in h.groupby(["metric", "dimension", "dimension_value"], sort=True):
        kind = g["kind"].iloc[0]
        past = g[g["as_of"] < as_of].set_index("as_of")["value"].sort_index()  # a table's rows come in file order
        today = g.loc[g["as_of"] == as_of, "value"]
        observed = float(today.iloc[0]) if len(today) and pd.notna(today.iloc[0]) else np.nan
        if kind in ADDITIVE and len(past):
            days = pd.date_range(min(past.index), as_of - dt.timedelta(days=1), freq="D").date
            past = past.reindex(days, fill_value=0.0)
            observed = 0.0 if np.isnan(observed) else observed
        past = past.dropna()
        out.append({"metric": metric, "dimension": dim, "dimension_value": value, "kind": kind,
                    "dates": list(past.index), "values": past.astype(float).to_numpy(), "observed": observed})
    return pd.DataFrame(out, columns=["metric", "dimension", "dimension_value", "kind", "dates", "values", "observed"])


def _anscombe(x):
    return 2 * np.sqrt(np.maximum(x, 0) + 3 / 8)


def _anscombe_inverse(y):
    return np.maximum((np.asarray(y, float) / 2) ** 2 - 3 / 8, 0) * (np.asarray(y, float) > 0)


def _cube_root(x):
    return np.cbrt(np.asarray(x, float))


def _cube(y):
    return np.asarray(y, float) ** 3


# Variance-stabilising transforms (AlertsConfig.transform): a count's spread grows with its level (Poisson:
# Anscombe's square root makes it ~constant) and money is heavy-tailed (one large basket) with days of no
# order at all: the cube root damps both (a log would make an empty day look impossible).
TRANSFORMS = {"people": (_anscombe, _anscombe_inverse), "count": (_anscombe, _anscombe_inverse),
              "sum": (_cube_root, _cube)}


def _levels(frame: pd.DataFrame, prefix: str) -> dict[float, str]:
    return {float(c.rsplit("-", 1)[1]): c for c in frame.columns if c.startswith(prefix)}


def forecast(series: pd.DataFrame, cfg: AlertsConfig, fitted: set[tuple] | None = None) -> tuple[pd.DataFrame, dict]:
    """`series` with expected, lower, upper (the `level` interval), critical_lower/upper and status
    (forecast | no forecast yet); and the in-sample fitted bands of the `fitted` series keys."""
    os.environ.setdefault("NIXTLA_ID_AS_COL", "1")
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS, Naive

    series = series.copy()
    enough = series["values"].map(len) >= cfg.min_history_days
    series["status"] = np.where(enough & series["observed"].notna(), "forecast", NO_FORECAST)
    for c in ("expected", "lower", "upper", "critical_lower", "critical_upper"):
        series[c] = np.nan
    todo = series[series["status"] == "forecast"]
    bands: dict[tuple, dict] = {}
    if todo.empty:
        return series, bands
    ids = {i: f"s{i}" for i in todo.index}
    forward = {i: TRANSFORMS.get(r["kind"], (None, None))[0] if cfg.transform else None for i, r in todo.iterrows()}
    long = pd.concat([pd.DataFrame({"unique_id": ids[i], "ds": np.arange(len(r["values"])),
                                    "y": forward[i](r["values"]) if forward[i] else r["values"]})
                      for i, r in todo.iterrows()], ignore_index=True)
    model = AutoETS(season_length=cfg.season_length, model="ANA")
    sf = StatsForecast(models=[model], freq=1, n_jobs=1, fallback_model=Naive())
    levels = [cfg.level, cfg.critical_level]
    want_fitted = bool(fitted)
    fc = sf.forecast(df=long, h=1, level=levels, fitted=want_fitted).set_index("unique_id")
    lo, hi = _levels(fc, "AutoETS-lo-"), _levels(fc, "AutoETS-hi-")
    for i in todo.index:
        row = fc.loc[ids[i]]
        series.loc[i, "expected"] = row["AutoETS"]
        series.loc[i, ["lower", "upper"]] = row[lo[cfg.level]], row[hi[cfg.level]]
        series.loc[i, ["critical_lower", "critical_upper"]] = row[lo[cfg.critical_level]], row[hi[cfg.critical_level]]
    if cfg.small_sample or cfg.per_day:
        _widen(series, todo.index, cfg)
    bounds = ["expected", "lower", "upper", "critical_lower", "critical_upper"]
    for i in todo.index:  # back from the transformed scale: monotonic, so outside there is outside here
        if forward[i]:
            inverse = TRANSFORMS[series.loc[i, "kind"]][1]
            series.loc[i, bounds] = inverse(series.loc[i, bounds].to_numpy(float))
    if want_fitted:
        fv = sf.forecast_fitted_values()
        flo, fhi = _levels(fv, "AutoETS-lo-"), _levels(fv, "AutoETS-hi-")
        for i in todo.index:
            key = tuple(series.loc[i, ["metric", "dimension", "dimension_value"]])
            if key not in fitted:
                continue
            f = fv[fv["unique_id"] == ids[i]]
            inverse = TRANSFORMS[series.loc[i, "kind"]][1] if forward[i] else np.asarray
            bands[key] = {"dates": [d.isoformat() for d in series.loc[i, "dates"]],
                          **{name: np.round(inverse(f[col].to_numpy(float)), 4).tolist() for name, col in
                             (("expected", "AutoETS"), ("lower", flo[cfg.level]), ("upper", fhi[cfg.level]))}}
    return series, bands


def ets_parameters(season_length: int) -> int:
    """Estimated quantities of AutoETS(model="ANA"): alpha, gamma, the initial level and season_length - 1
    free initial seasonal states."""
    return 3 + max(season_length - 1, 0)


def _widen(series: pd.DataFrame, index, cfg: AlertsConfig) -> None:
    """Re-draw the intervals of the `index` rows around their forecast from ETS's own spread (the level
    interval's half-width over its normal quantile): with Student's t on the residual degrees of freedom
    (small_sample) and at the day's family-wise level, Bonferroni over the len(index) series (per_day)."""
    from scipy.stats import norm, t

    m = len(index) if cfg.per_day else 1
    for i in index:
        r = series.loc[i]
        sigma = (r["upper"] - r["lower"]) / (2 * norm.ppf(0.5 + cfg.level / 200))
        df = max(len(r["values"]) - ets_parameters(cfg.season_length), 2)
        for level, names in ((cfg.level, ("lower", "upper")), (cfg.critical_level, ("critical_lower", "critical_upper"))):
            tail = (1 - level / 100) / m / 2
            q = t.ppf(1 - tail, df) if cfg.small_sample else norm.ppf(1 - tail)
            series.loc[i, list(names)] = r["expected"] - q * sigma, r["expected"] + q * sigma


def _outside(r, cfg: AlertsConfig) -> bool:
    if r["status"] != "forecast" or not (r["observed"] < r["lower"] or r["observed"] > r["upper"]):
        return False
    change = abs(r["observed"] - r["expected"])
    if change < cfg.min_relative_change * abs(r["expected"]):
        return False
    return r["kind"] not in ADDITIVE or change >= cfg.min_absolute_change


def drill_down(forecasts: pd.DataFrame, metric: str, deviation: float, top: int) -> list[dict]:
    """The dimension values of `metric` whose own deviation from their forecast explains most of the
    total's `deviation` (same direction, largest share first)."""
    parts = forecasts[(forecasts["metric"] == metric) & (forecasts["dimension"] != TOTAL) & (forecasts["status"] == "forecast")]
    if parts.empty or deviation == 0:
        return []
    dev = parts["observed"] - parts["expected"]
    share = dev / deviation
    ranked = parts.assign(deviation=dev, share=share)
    ranked = ranked[ranked["share"] > 0].sort_values("share", ascending=False).head(top)
    return [{"dimension": r["dimension"], "value": r["dimension_value"], "observed": round(float(r["observed"]), 4),
             "expected": round(float(r["expected"]), 4), "share": round(float(r["share"]), 3)} for _, r in ranked.iterrows()]


def ratio_drill_down(forecasts: pd.DataFrame, metric: str, parts: tuple[str, str], top: int) -> list[dict]:
    """The dimension values that explain most of ratio `metric`'s deviation, by its numerator's and
    denominator's parts rather than by each value's own ratio (a small group's ratio swings most and
    explains least). With N = sum N_i, D = sum D_i and R^ = N^/D^ from the totals' forecasts, the
    deviation of N/D is, to first order, the sum over values of (dN_i - R^ dD_i) / D^: each value's
    contribution, its share the contribution over the total's."""
    numerator, denominator = parts
    ok = forecasts[forecasts["status"] == "forecast"].set_index(["metric", "dimension", "dimension_value"])
    try:
        n_total, d_total = ok.loc[(numerator, TOTAL, TOTAL)], ok.loc[(denominator, TOTAL, TOTAL)]
    except KeyError:
        return []
    if not d_total["expected"] > 0:
        return []
    rate = n_total["expected"] / d_total["expected"]
    total = (n_total["observed"] - n_total["expected"] - rate * (d_total["observed"] - d_total["expected"])) / d_total["expected"]
    if total == 0:
        return []
    rows = []
    for (dim, value), r in forecasts[(forecasts["metric"] == metric) & (forecasts["dimension"] != TOTAL)].set_index(
            ["dimension", "dimension_value"]).iterrows():
        if (numerator, dim, value) not in ok.index or (denominator, dim, value) not in ok.index:
            continue
        n, d = ok.loc[(numerator, dim, value)], ok.loc[(denominator, dim, value)]
        dn, dd = n["observed"] - n["expected"], d["observed"] - d["expected"]
        share = (dn - rate * dd) / d_total["expected"] / total
        if share > 0:
            rows.append({"dimension": dim, "value": value, "observed": round(float(r["observed"]), 4),
                         "expected": round(float(n["expected"] / d["expected"]) if d["expected"] else float("nan"), 4),
                         "share": round(float(share), 3), "numerator_change": round(float(dn), 4),
                         "denominator_change": round(float(dd), 4)})
    return sorted(rows, key=lambda x: -x["share"])[:top]


def detect(history: pd.DataFrame, as_of: dt.date, cfg: AlertsConfig, fitted: set[tuple] | None = None,
           ratios: dict[str, tuple[str, str]] | None = None):
    """Alerts of `as_of` from gold_metrics_daily rows up to it (columns as_of, metric, kind, dimension,
    dimension_value, value): a list of ops_alerts rows (without run_id), the per-series forecasts and the
    fitted bands of the `fitted` series. `ratios`: ratio metric -> (numerator, denominator), whose alerts
    drill down by the parts (ratio_drill_down); other ratios by their values' own deviation."""
    ratios = ratios or {}
    forecasts, bands = forecast(series_frame(history, as_of, cfg), cfg, fitted)
    alerts = []
    for _, r in forecasts.iterrows():
        if not _outside(r, cfg):
            continue
        deviation = float(r["observed"] - r["expected"])
        critical = r["observed"] < r["critical_lower"] or r["observed"] > r["critical_upper"]
        explained = []
        if r["dimension"] == TOTAL and r["metric"] in ratios:
            explained = ratio_drill_down(forecasts, r["metric"], ratios[r["metric"]], cfg.drill_down)
        elif r["dimension"] == TOTAL:
            explained = drill_down(forecasts, r["metric"], deviation, cfg.drill_down)
        alerts.append({
            "as_of": as_of, "metric": r["metric"], "dimension": r["dimension"], "dimension_value": r["dimension_value"],
            "observed": float(r["observed"]), "expected": float(r["expected"]), "lower": float(r["lower"]),
            "upper": float(r["upper"]), "level": float(cfg.level), "severity": "critical" if critical else "warning",
            "direction": "drop" if deviation < 0 else "spike", "drill_down": json.dumps(explained, ensure_ascii=False),
            "method": METHOD, "history_days": int(len(r["values"])),
        })
    return alerts, forecasts, bands
