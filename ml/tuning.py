"""Bounded hyperparameter search of the LightGBM model (Optuna's seeded TPE sampler), inside the training
cutoffs only: each trial fits on the training cutoffs before the newest one and is scored by ROC-AUC on that
newest training cutoff (purged as the holdout split is, ml/splits.py), or, with a single training cutoff, on a
stratified 25 % fold of it. The holdout is never seen. Trial 0 is the fixed configuration (`BASELINE`), so
the search can only report something at least as good on its validation; every trial is a nested MLflow
run under the target's run. Optuna over a hand-written random search: TPE, pruning-free time boxes
(`timeout`) and the trial bookkeeping come with it, in one small pure-Python package."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from ml.splits import LeakError, purged_split, rows_of

log = logging.getLogger(__name__)
# The fixed configuration of ml/train.py's CdpModel: the baseline every search starts from.
BASELINE = {"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 50,
            "subsample": 0.8, "colsample_bytree": 0.8, "reg_lambda": 1.0}


def suggest(trial) -> dict:
    """The search space: around the baseline, on log scales where the effect is multiplicative."""
    return {
        "n_estimators": trial.suggest_int("n_estimators", 100, 600, step=50),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 7, 127, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 200, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


def validation_split(train: pd.DataFrame, label: str, horizon_days: int, seed: int):
    """(fit rows, validation rows, how): the newest training cutoff against the earlier ones it does not
    overlap, else a stratified 25 % fold of the training rows."""
    cutoffs = sorted(train["cutoff"].astype(str).str[:10].unique())
    if len(cutoffs) >= 2:
        try:
            inner = purged_split(cutoffs, horizon_days, cutoffs[-1])
            return rows_of(train, inner.train_cutoffs), rows_of(train, [inner.holdout_cutoff]), f"cutoff {inner.holdout_cutoff}"
        except LeakError:
            pass
    from sklearn.model_selection import train_test_split

    y = train[label].astype(int)
    fit_idx, val_idx = train_test_split(train.index, test_size=0.25, stratify=y if y.nunique() == 2 else None,
                                        random_state=seed)
    return train.loc[fit_idx], train.loc[val_idx], "fold 25 %"


def tune(train: pd.DataFrame, label: str, numeric: list[str], categorical: list[str], seed: int,
         horizon_days: int | None, trials: int, timeout_seconds: float, mlflow=None) -> dict | None:
    """The best LightGBM parameters of at most `trials` trials within `timeout_seconds`, or None when the
    validation has a single class. Returns params, its validation ROC-AUC, the baseline's, trials run, seconds."""
    import optuna
    from sklearn.metrics import roc_auc_score

    from ml.train import CdpModel

    fit, val, how = validation_split(train, label, horizon_days or 0, seed)
    y_fit, y_val = fit[label].astype(int), val[label].astype(int).to_numpy()
    if len(np.unique(y_val)) < 2 or y_fit.nunique() < 2:
        log.warning("%s: not tuned, the validation (%s) has one class", label, how)
        return None
    cols = numeric + categorical

    def objective(trial) -> float:
        params = suggest(trial)
        model = CdpModel("lightgbm", numeric, categorical, seed, horizon_days, "none", params=params).fit(fit[cols], y_fit)
        auc = float(roc_auc_score(y_val, model.predict(val[cols])))
        if mlflow is not None:
            with mlflow.start_run(run_name=f"trial {trial.number}", nested=True):
                mlflow.log_params({"kind": "lightgbm tuning trial", "validation": how, **params})
                mlflow.log_metric("validation_roc_auc", auc)
        return auc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(BASELINE)
    start = time.perf_counter()
    study.optimize(objective, n_trials=trials, timeout=timeout_seconds)
    seconds = time.perf_counter() - start
    baseline = study.trials[0].value
    out = {"params": dict(study.best_params), "validation_roc_auc": float(study.best_value),
           "baseline_validation_roc_auc": float(baseline), "trials": len(study.trials), "seconds": round(seconds, 1),
           "validation": how}
    log.info("%s: tuned in %d trials (%.0f s) on %s: validation ROC-AUC %.4f (baseline %.4f)", label, out["trials"],
             seconds, how, out["validation_roc_auc"], baseline)
    return out
