"""CdpModel (ml/train.py) without Spark or MLflow: calibration on a validation fold keeps the ranking and
brings the mean score to the base rate; BTYD features join the inputs when the order summaries are there."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from ml import btyd, train


def _rows(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "tier": rng.choice(["x", "y"], n)})
    logit = 2.5 * x["a"] - 1.0 * x["b"] - 2.0
    return x, pd.Series((rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int))


@pytest.mark.slow
def test_calibration_keeps_the_ranking_and_matches_the_base_rate():
    x, y = _rows(2000, 0)
    hold_x, hold_y = _rows(2000, 1)
    raw = train.CdpModel("lightgbm", ["a", "b"], ["tier"], calibration="none").fit(x, y)
    cal = train.CdpModel("lightgbm", ["a", "b"], ["tier"], calibration="sigmoid").fit(x, y)
    assert cal.calibrator is not None and raw.calibrator is None
    p = cal.predict(hold_x)
    assert spearmanr(p, cal._raw(hold_x)).statistic > 0.9999  # a monotone map of the refitted estimator
    assert abs(p.mean() - hold_y.mean()) < 0.02 and ((p > 0) & (p < 1)).all()
    iso = train.CdpModel("logistic", ["a", "b"], ["tier"], calibration="isotonic").fit(x, y)
    assert iso.calibrator is not None and abs(iso.predict(hold_x).mean() - hold_y.mean()) < 0.02


@pytest.mark.slow
def test_btyd_features_join_the_inputs_only_with_the_order_summaries():
    rng = np.random.default_rng(2)
    n = 600
    days = rng.integers(1, 6, n)
    first = rng.integers(30, 300, n)
    x = pd.DataFrame({"order_days_all": days, "orders_all": days + rng.integers(0, 2, n),
                      "spend_all": days * rng.uniform(10, 50, n), "days_since_first_order": first,
                      "days_since_last_order": (first * rng.uniform(0, 1, n)).astype(int), "tier": "x"})
    y = pd.Series((x["days_since_last_order"] < 60).astype(int))
    numeric = list(btyd.COLUMNS)
    for kind in ("lightgbm", "logistic"):
        with_btyd = train.CdpModel(kind, numeric, ["tier"], horizon_days=90).fit(x, y)
        assert with_btyd.btyd is not None and with_btyd.inputs == numeric + list(btyd.FEATURES)
        assert set(btyd.FEATURES) <= set(with_btyd.importance().index)
        assert train.CdpModel(kind, numeric, ["tier"]).fit(x, y).btyd is None  # no horizon: no BTYD


def _cutoff_rows(cutoffs: list[str], n: int, seed: int) -> pd.DataFrame:
    frames = []
    for i, c in enumerate(cutoffs):
        x, y = _rows(n, seed + i)
        frames.append(x.assign(cutoff=pd.Timestamp(c), label=y))
    return pd.concat(frames, ignore_index=True)


def test_validation_split_uses_the_newest_training_cutoff_and_never_an_overlapping_one():
    from ml.tuning import validation_split

    rows = _cutoff_rows(["2026-10-01", "2026-10-15", "2026-10-29"], 200, 0)
    fit, val, how = validation_split(rows, "label", horizon_days=14, seed=0)
    assert how == "cutoff 2026-10-29" and set(val["cutoff"].astype(str).str[:10]) == {"2026-10-29"}
    assert set(fit["cutoff"].astype(str).str[:10]) == {"2026-10-01", "2026-10-15"}
    fit, val, how = validation_split(rows, "label", horizon_days=21, seed=0)  # 10-15 + 21 d overlaps 10-29
    assert set(fit["cutoff"].astype(str).str[:10]) == {"2026-10-01"}
    one = _cutoff_rows(["2026-10-01"], 400, 0)
    fit, val, how = validation_split(one, "label", horizon_days=14, seed=0)
    assert how == "fold 25 %" and len(val) == 100 and not set(fit.index) & set(val.index)


@pytest.mark.slow
def test_tune_starts_from_the_fixed_set_is_seeded_and_bounded():
    from ml.tuning import BASELINE, tune

    rows = _cutoff_rows(["2026-10-01", "2026-10-15"], 600, 3)
    first = tune(rows, "label", ["a", "b"], ["tier"], seed=5, horizon_days=14, trials=6, timeout_seconds=120)
    again = tune(rows, "label", ["a", "b"], ["tier"], seed=5, horizon_days=14, trials=6, timeout_seconds=120)
    assert first["trials"] == 6 and first["params"] == again["params"]  # the TPE sampler is seeded
    assert first["validation_roc_auc"] >= first["baseline_validation_roc_auc"] > 0.7
    assert set(first["params"]) == set(BASELINE) and first["validation"] == "cutoff 2026-10-15"
    boxed = tune(rows, "label", ["a", "b"], ["tier"], seed=5, horizon_days=14, trials=10_000, timeout_seconds=2)
    assert 1 <= boxed["trials"] < 10_000  # the time box ends the search
    single = rows.assign(label=0)
    assert tune(single, "label", ["a", "b"], ["tier"], seed=5, horizon_days=14, trials=3, timeout_seconds=60) is None
