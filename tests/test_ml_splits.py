"""Leak-proof time splits (ml/splits.py, ml/features.cutoff_layout, ml/train.split): no training label
window overlaps a holdout's, purging with a warning, refusing with the config keys, rolling origins."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pandas as pd
import pytest

from ml import features, train
from ml.splits import LeakError, check_layout, label_overlap_days, purged_split, rolling_origins
from spark_jobs.config import MlConfig, load_config

LAST = dt.date(2026, 11, 20)


def _grid(last: dt.date, step: int, n: int) -> list[dt.date]:
    """The layout default_cutoffs made before issue 17: n cutoffs `step` days apart, no embargo."""
    return [last - dt.timedelta(days=step * k) for k in reversed(range(n))]


def _frame(cutoffs: list[dt.date], horizon: int, people: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for c in cutoffs:
        for i in range(people):
            rows.append({"person_id": f"p{i}", "cutoff": c, "horizon_days": horizon,
                         "days_since_last_active": int(rng.integers(0, 20)), "orders_90d": int(rng.integers(0, 4)),
                         "label_churn": int(rng.integers(0, 2)), "label_purchase": int(rng.integers(0, 2))})
    return pd.DataFrame(rows)


def test_default_cutoffs_default_config_has_no_training_label_overlapping_the_holdout():
    """The default layout (horizon 14, cutoffs 7 days apart) used to stack a training cutoff 7 days before
    the holdout: its labels covered 7 of the holdout's 14 days. check_layout refuses that layout."""
    cfg = load_config(env={})
    ml = cfg.ml
    layout = features.default_cutoffs(None, cfg, LAST)  # `last` given: no lakehouse is read
    assert len(layout) == ml.cutoffs and layout[-1] == LAST and layout == sorted(layout)
    check_layout(layout, ml.horizon_days)
    for c in layout[:-1]:
        assert label_overlap_days(c, LAST, ml.horizon_days) == 0


def test_check_layout_refuses_the_old_default_grid_naming_the_config_keys():
    ml = MlConfig()
    old = _grid(LAST, ml.cutoff_step_days, ml.cutoffs)
    assert ml.cutoff_step_days < ml.horizon_days  # the defaults that leaked
    with pytest.raises(LeakError, match=r"ml\.cutoff_step_days >= ml\.horizon_days") as e:
        check_layout(old, ml.horizon_days)
    overlap = ml.horizon_days - ml.cutoff_step_days
    assert f"({overlap} of {ml.horizon_days} days)" in str(e.value) and "ml.cutoffs" in str(e.value)


def test_purged_split_drops_cutoffs_within_the_horizon_and_warns(caplog):
    old = _grid(LAST, 7, 4)  # LAST-21, LAST-14, LAST-7, LAST; horizon 14
    with caplog.at_level(logging.WARNING, logger="ml.splits"):
        ts = purged_split(old, 14)
    assert ts.holdout_cutoff == LAST.isoformat()
    assert ts.purged == {(LAST - dt.timedelta(days=7)).isoformat(): 7}
    assert ts.train_cutoffs == [(LAST - dt.timedelta(days=d)).isoformat() for d in (21, 14)]
    assert "purged training cutoffs" in caplog.text
    for c in ts.train_cutoffs:
        assert dt.date.fromisoformat(c) + dt.timedelta(days=14) <= LAST


def test_purged_split_with_nothing_left_refuses_naming_the_keys():
    with pytest.raises(LeakError, match=r"ml\.horizon_days, ml\.cutoff_step_days, ml\.cutoffs"):
        purged_split(_grid(LAST, 7, 2), 14)


def test_split_on_the_old_default_layout_never_trains_on_labels_of_the_holdout_horizon():
    """train.split on rows stacked the old way: no training row's label window reaches into (T, T+H]."""
    ml = MlConfig()
    frame = _frame(_grid(LAST, ml.cutoff_step_days, ml.cutoffs), ml.horizon_days)
    for target in train.TARGETS:
        sp = train.split(frame, target)
        train_days = {dt.date.fromisoformat(str(c)[:10]) for c in sp.train["cutoff"]}
        assert train_days and max(train_days) + dt.timedelta(days=ml.horizon_days) <= LAST
        assert set(sp.purged) == {(LAST - dt.timedelta(days=ml.cutoff_step_days)).isoformat()}
        assert set(sp.holdout["cutoff"].astype(str)) == {LAST.isoformat()}


def test_rolling_origins_each_train_only_on_cutoffs_whose_labels_end_by_it():
    ml = MlConfig(horizon_days=14, cutoff_step_days=7, cutoffs=6, holdouts=3)
    layout = features.cutoff_layout(LAST, ml)
    check_layout(layout, ml.horizon_days)
    origins = rolling_origins(layout, ml.horizon_days, ml.holdouts)
    assert [o.holdout_cutoff for o in origins] == [c.isoformat() for c in sorted(layout, reverse=True)[:3]]
    for o in origins:
        hold = dt.date.fromisoformat(o.holdout_cutoff)
        assert o.train_cutoffs and not o.purged
        assert all(dt.date.fromisoformat(c) + dt.timedelta(days=14) <= hold for c in o.train_cutoffs)
    # expanding window: a newer origin trains on at least what an older one did
    sizes = [len(o.train_cutoffs) for o in origins]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]


def test_split_with_mixed_horizons_says_to_rebuild():
    frame = _frame(_grid(LAST, 14, 3), 14)
    frame.loc[frame.index[:5], "horizon_days"] = 7
    with pytest.raises(train.TrainError, match="mixes horizons"):
        train.split(frame, "purchase")


def test_snapshot_days_cover_every_cutoff_and_horizon_end():
    cutoffs = [dt.date(1997, 7, 1), dt.date(1997, 10, 1)]
    days = features.snapshot_days(cutoffs, 90)
    assert days == sorted(days) and set(cutoffs) <= set(days)
    assert {c + dt.timedelta(days=90) for c in cutoffs} <= set(days)


def test_a_training_run_reads_the_snapshots_of_its_default_cutoffs():
    """The days `cdp load-history --for-training` ends its batches on are those default_cutoffs reads
    for a run on the newest snapshot: the default layout (horizon 14, 3 cutoffs 7 days apart) needs five."""
    newest = dt.date(2026, 12, 6)
    ml = load_config().ml
    days = features.training_snapshot_days(newest, ml)
    layout = features.cutoff_layout(newest - dt.timedelta(days=ml.horizon_days), ml)
    assert days[-1] == newest and set(layout) <= set(days)
    assert {c + dt.timedelta(days=ml.horizon_days) for c in layout} <= set(days)
    assert [(newest - d).days for d in days] == [35, 28, 21, 14, 0]


def test_load_history_for_training_refuses_a_range_that_starts_after_the_first_snapshot_day():
    from typer.testing import CliRunner

    from spark_jobs.cli import app

    out = CliRunner().invoke(app, ["load-history", "--from", "2026-11-10", "--to", "2026-12-06", "--for-training"])
    assert out.exit_code != 0
    assert "reads One-ID snapshots from 2026-11-01 on (5 days" in out.output and "load more history" in out.output
