"""BTYD baselines and features (ml/btyd.py) on CDNOW_sample.txt as shipped by `lifetimes`, the order
summaries taken from gold_features-shaped rows, and training with them (ml/train.py) into a real MLflow
store in tmp_path: baselines and margins logged, promotion gated by the best BTYD baseline."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ml import btyd, cdnow, train
from spark_jobs.config import load_config

HORIZON = 90


def orders_frame(tx: pd.DataFrame, cutoffs: list[dt.date], horizon: int, features: list[str]) -> pd.DataFrame:
    """gold_features-shaped rows from a transaction log, order tags only (a pandas recount, for tests):
    every customer with an order on or before the cutoff; labels from (cutoff, cutoff + horizon]."""
    parts = []
    day = tx["date"].dt.normalize()
    for c in cutoffs:
        ts = pd.Timestamp(c)
        past = tx[day <= ts]
        g = past.groupby("customer")
        f = pd.DataFrame({
            "orders_all": g.size(), "order_days_all": g["date"].nunique(), "spend_all": g["amount"].sum(),
            "days_since_first_order": (ts - g["date"].min()).dt.days,
            "days_since_last_order": (ts - g["date"].max()).dt.days,
        })
        for w in (30, 90, 180, 365):
            recent = past[day[past.index] > ts - pd.Timedelta(days=w)].groupby("customer")
            f[f"orders_{w}d"] = recent.size().reindex(f.index).fillna(0)
        f["spend_90d"] = past[day[past.index] > ts - pd.Timedelta(days=90)].groupby("customer")["amount"].sum().reindex(
            f.index).fillna(0)
        f["days_since_last_active"] = f["days_since_last_order"]
        future = tx[(day > ts) & (day <= ts + pd.Timedelta(days=horizon))]["customer"].unique()
        bought = f.index.isin(future).astype(int)
        f["label_purchase"] = bought
        f["label_churn"] = np.where(f["days_since_last_active"] < 30, 1 - bought, np.nan)
        f["cutoff"], f["horizon_days"] = c, horizon
        parts.append(f.rename_axis("person_id").reset_index())
    out = pd.concat(parts, ignore_index=True)
    for col in features:
        if col not in out:
            out[col] = np.nan
    return out


@pytest.fixture(scope="module")
def tx():
    return cdnow.read_transactions()


def test_read_transactions_reads_the_shipped_cdnow_sample(tx):
    assert tx["customer"].nunique() == 2357 and len(tx) == 6919
    assert tx["date"].min() == pd.Timestamp("1997-01-01") and (tx["amount"] >= 0).all()


def test_summaries_from_feature_columns_fit_the_same_bgnbd_as_lifetimes_own_summary(tx):
    from lifetimes import BetaGeoFitter
    from lifetimes.utils import summary_data_from_transaction_data

    cutoff = dt.date(1997, 9, 30)
    rows = orders_frame(tx, [cutoff], HORIZON, list(btyd.COLUMNS))
    s = btyd.summaries(rows)
    ours = btyd.Btyd(HORIZON, penalizer=0.0).fit(s)
    ref = summary_data_from_transaction_data(tx, "customer", "date", observation_period_end=str(cutoff), freq="D")
    theirs = BetaGeoFitter().fit(ref["frequency"], ref["recency"], ref["T"])
    for k, v in theirs.params_.items():
        assert np.isclose(ours.bgnbd.params_[k], v, rtol=0.02), (k, ours.bgnbd.params_[k], v)
    pred = ours.predict(s)
    assert pred[["bgnbd_p_alive", "pnbd_p_alive"]].stack().between(0, 1).all()
    assert (pred[["bgnbd_expected", "pnbd_expected"]] >= 0).all().all()
    assert pred["gg_expected_value"].notna().sum() > 100 and ours.gg is not None


def test_btyd_baselines_rank_next_quarter_buyers_better_than_chance(tx):
    cutoff = dt.date(1997, 9, 30)
    rows = orders_frame(tx, [cutoff], HORIZON, list(btyd.COLUMNS))
    fitted = btyd.Btyd(HORIZON).fit(btyd.summaries(rows))
    pred = fitted.predict(btyd.summaries(rows))
    y = rows["label_purchase"].to_numpy()
    for m in btyd.BASELINES:
        assert train.evaluate(y, btyd.baseline_score("purchase", pred, m), probabilities=False)["roc_auc"] > 0.65


@pytest.mark.slow
def test_train_target_logs_btyd_baselines_margins_and_rolling_spread(tx, tmp_path, monkeypatch):
    """CDNOW rows for 5 cutoffs (the 3 newest rolling origins), trained into a real MLflow store: BTYD
    metrics and parameters, bootstrap margins over each baseline and the rolling-origin spread are logged;
    the promotion decision compares with the best BTYD baseline."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from ml import features
    from ml.tracking import configure

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    cfg = load_config(env={})
    ml = cfg.ml.model_copy(update={"horizon_days": HORIZON, "cutoffs": 5, "cutoff_step_days": 30, "holdouts": 3,
                                   "bootstrap": 50, "experiment": "test-btyd", "artifacts": str(tmp_path / "art")})
    cfg = cfg.model_copy(update={"ml": ml})
    layout = features.cutoff_layout(dt.date(1998, 3, 31), ml)
    frame = orders_frame(tx, layout, HORIZON, list(ml.features) + list(ml.categorical))
    configure(ml)
    result = train.train_target(cfg, frame, "purchase", {"gold_features": 1}, kinds=("lightgbm",))
    assert set(result["btyd"]) == set(btyd.BASELINES) and not result["purged"]
    assert set(result["margins"]) == {"rule", *btyd.BASELINES}
    for m in result["margins"].values():
        assert m["roc_auc_margin_lo"] <= m["roc_auc_margin"] <= m["roc_auc_margin_hi"]
    run = MlflowClient().get_run(result["run_id"])
    assert {"bgnbd_roc_auc", "pnbd_pr_auc", "margin_bgnbd_roc_auc_lo", "margin_pnbd_roc_auc_hi"} <= set(run.data.metrics)
    assert "baseline.bgnbd_r" in run.data.params and run.data.params["purged_cutoffs"] == "none"
    rolling = result["rolling"]
    assert len(rolling["origins"]) == 3 and {"lightgbm", *btyd.BASELINES} <= set(rolling["spread"])
    assert "rolling_lightgbm_roc_auc_std" in run.data.metrics
    child = MlflowClient().search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")[0]
    assert child.data.params["btyd_features"] == "True" and child.data.params["calibration"] == "sigmoid"
    decision = train.promote(cfg, frame, "purchase", result["version"])
    best = max(result["btyd"], key=lambda b: result["btyd"][b]["roc_auc"])
    beats = decision["challenger_roc_auc"] > result["btyd"][best]["roc_auc"]
    assert decision["decision"] == ("promoted: no champion yet" if beats
                                    else f"not promoted: the challenger does not beat the {best} baseline")
    # a model trained on shuffled labels never becomes champion, whatever the champion is
    sp = train.split(frame, "purchase")
    cols = list(ml.features) + list(ml.categorical)
    noise = sp.train[sp.label].sample(frac=1.0, random_state=1).to_numpy()
    with mlflow.start_run(run_name="worse"):
        bad = train.fit_and_log("logistic", sp.train[cols], pd.Series(noise), sp.holdout[cols],
                                sp.holdout[sp.label].astype(int).to_numpy(), list(ml.features), list(ml.categorical),
                                0, "worse", {})
    version = int(mlflow.register_model(bad["model_uri"], cfg.ml.models["purchase"]).version)
    worse = train.promote(cfg, frame, "purchase", version)
    assert not worse["decision"].startswith("promoted") and worse["champion"] == decision["champion"]
