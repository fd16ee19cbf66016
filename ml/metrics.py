"""Holdout metrics that do not depend on row order: top-decile lift with tied scores averaged, and
paired bootstrap intervals of one scorer's margin over another on the same rows; reads and writes no
tables."""

from __future__ import annotations

import numpy as np


def top_share_positives(y, p, share: float = 0.1) -> float:
    """Expected positives among the top `share` of rows by score, ties averaged: a tied group that
    straddles the cut contributes its positive rate times the slots it fills, so any order of the rows
    gives the same answer (the expectation over random tie-breaks)."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    k = max(1, int(len(p) * share))
    values, inverse = np.unique(-p, return_inverse=True)  # ascending -p: highest scores first
    sizes = np.bincount(inverse, minlength=len(values)).astype(float)
    positives = np.bincount(inverse, weights=y, minlength=len(values))
    before = np.concatenate([[0.0], np.cumsum(sizes)[:-1]])
    slots = np.clip(k - before, 0, sizes)
    return float(np.sum(positives * slots / sizes))


def lift_top_decile(y, p) -> float:
    """Positive rate in the top 10% of scores over the overall rate, tied scores averaged."""
    y = np.asarray(y, dtype=float)
    k = max(1, int(len(y) * 0.1))
    return float(top_share_positives(y, p) / k / y.mean())


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def _ap(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, p))


METRICS = {"roc_auc": _auc, "pr_auc": _ap, "lift_top_decile": lambda y, p: lift_top_decile(y, p)}


def paired_bootstrap(y, p_model, p_baseline, resamples: int = 200, seed: int = 42, level: float = 0.95) -> dict:
    """The model's margin over the baseline on each metric, with a percentile interval from `resamples`
    resamples of the rows (the same rows for both scorers: a paired bootstrap). Keys
    `<metric>_margin`, `<metric>_margin_lo`, `<metric>_margin_hi`."""
    y = np.asarray(y, dtype=int)
    a, b = np.asarray(p_model, dtype=float), np.asarray(p_baseline, dtype=float)
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    draws = {m: [] for m in METRICS}
    for _ in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        for m, f in METRICS.items():
            draws[m].append(f(y[idx], a[idx]) - f(y[idx], b[idx]))
    tail = (1 - level) / 2 * 100
    for m, f in METRICS.items():
        out[f"{m}_margin"] = f(y, a) - f(y, b)
        d = np.asarray(draws[m])
        out[f"{m}_margin_lo"] = float(np.percentile(d, tail)) if len(d) else float("nan")
        out[f"{m}_margin_hi"] = float(np.percentile(d, 100 - tail)) if len(d) else float("nan")
    return out
