"""Holdout metrics (ml/metrics.py): top-decile lift independent of row order under tied scores, and
paired bootstrap intervals of a margin."""

from __future__ import annotations

import numpy as np

from ml import metrics, train


def _tied_holdout():
    """40 rows; the top decile is 4 slots, and a tie of 8 rows (3 positive) straddles it after 2 clear leaders."""
    y = np.array([1, 1] + [1, 1, 1, 0, 0, 0, 0, 0] + [0] * 26 + [1, 0, 1, 0])
    p = np.array([0.9, 0.8] + [0.5] * 8 + [0.1] * 30)
    return y, p


def _stable_argsort_lift(y, p):
    top = np.argsort(-p, kind="stable")[: max(1, len(p) // 10)]
    return y[top].mean() / y.mean()


def test_lift_top_decile_tied_scores_do_not_depend_on_row_order():
    y, p = _tied_holdout()
    rng = np.random.default_rng(0)
    by_order = set()
    got = set()
    for _ in range(20):
        perm = rng.permutation(len(y))
        by_order.add(round(_stable_argsort_lift(y[perm], p[perm]), 9))
        got.add(round(metrics.lift_top_decile(y[perm], p[perm]), 9))
    assert len(by_order) > 1  # breaking ties by row order changes the answer
    assert len(got) == 1


def test_lift_top_decile_equals_the_mean_over_random_tie_breaks():
    y, p = _tied_holdout()
    rng = np.random.default_rng(1)
    draws = [_stable_argsort_lift(y, p + rng.uniform(0, 1e-9, len(p))) for _ in range(1500)]
    assert abs(metrics.lift_top_decile(y, p) - np.mean(draws)) < 0.05
    assert train.evaluate(y, p)["lift_top_decile"] == metrics.lift_top_decile(y, p)


def test_lift_top_decile_without_ties_is_the_plain_top_decile_rate():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    p = rng.permutation(200) / 200.0
    assert np.isclose(metrics.lift_top_decile(y, p), _stable_argsort_lift(y, p))


def test_paired_bootstrap_margin_of_a_real_signal_over_noise_is_above_zero():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 600)
    good = y + rng.normal(0, 0.8, 600)
    noise = rng.normal(0, 1, 600)
    m = metrics.paired_bootstrap(y, good, noise, resamples=100, seed=0)
    assert m["roc_auc_margin_lo"] > 0 and m["roc_auc_margin_lo"] <= m["roc_auc_margin"] <= m["roc_auc_margin_hi"]
    same = metrics.paired_bootstrap(y, good, good, resamples=50, seed=0)
    assert same["roc_auc_margin"] == same["roc_auc_margin_lo"] == same["roc_auc_margin_hi"] == 0
