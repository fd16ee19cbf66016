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
