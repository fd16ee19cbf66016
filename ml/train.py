"""Training: reads gold_features (delta-rs, no Spark) and the Delta versions of its inputs; fits LightGBM
and a logistic-regression baseline per target on a time split (the newest cutoff is the holdout); logs
parameters, data versions, metrics, plots and models to MLflow; registers the better model as a new
version with alias `challenger`, and promotes it to `champion` only if it beats the champion on the
same holdout."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml.metrics import lift_top_decile, paired_bootstrap
from ml.splits import TimeSplit, purged_split, rolling_origins, rows_of
from spark_jobs.config import CdpConfig

log = logging.getLogger(__name__)

TARGETS = {"churn": "label_churn", "purchase": "label_purchase"}
KINDS = ("lightgbm", "logistic")
TUNED = "lightgbm_tuned"  # the LightGBM kind with ml.tuning's best parameters (when ml.tuning_trials > 0)
# Tables whose Delta versions pin a training run's data (logged as data.<table>.version).
INPUT_TABLES = ("gold_features", "silver_events", "silver_orders", "silver_contacts", "gold_id_map", "gold_profiles")


class TrainError(ValueError):
    """Training cannot run (no features, a target without both classes, ...)."""


def _import_mlflow():
    import mlflow
    import mlflow.pyfunc

    return mlflow


class CdpModel:
    """A fitted estimator and the columns it reads; scores are the probability of the positive class.
    Both kinds also read the BTYD features (ml/btyd.py: P(alive), expected purchases, the order
    summaries; fitted on the training rows) when the order summaries are among their inputs. With
    `calibration`, a Platt (sigmoid) or isotonic map is fitted on a 20% validation fold's scores of an
    estimator fitted on the other 80%; the estimator is then refitted on every training row. Wrapped as
    an MLflow pyfunc model (see `as_pyfunc`)."""

    def __init__(self, kind: str, numeric: list[str], categorical: list[str], seed: int = 42,
                 horizon_days: int | None = None, calibration: str = "none", params: dict | None = None):
        self.kind, self.numeric, self.categorical, self.seed = kind, list(numeric), list(categorical), seed
        self.horizon_days, self.calibration = horizon_days, calibration
        self.params = dict(params or {})  # LightGBM: over ml.tuning.BASELINE (a tuned set)
        self.categories: dict[str, list[str]] = {}
        self.estimator = None
        self.btyd = None
        self.calibrator = None

    @property
    def inputs(self) -> list[str]:
        """The estimator's numeric columns: the model inputs, then the BTYD features when fitted."""
        from ml.btyd import FEATURES

        return self.numeric + (list(FEATURES) if self.btyd is not None else [])

    def prepare(self, df: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=df.index)
        for c in self.numeric:
            out[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
        if self.btyd is not None:
            from ml.btyd import summaries

            out = pd.concat([out, self.btyd.predict(summaries(df))], axis=1)
        for c in self.categorical:
            values = df[c].astype("object").where(df[c].notna(), "missing").astype(str)
            out[c] = (pd.Categorical(values, categories=self.categories[c]) if self.kind == "lightgbm" else values)
        return out

    def _fit_btyd(self, df: pd.DataFrame) -> None:
        from ml.btyd import Btyd, has_columns, summaries

        if self.horizon_days is None or not has_columns(df):
            return
        try:
            self.btyd = Btyd(self.horizon_days).fit(summaries(df))
        except Exception as e:  # too few buyers, or a fit that does not converge: the model goes without
            log.warning("no BTYD features for %s: %s", self.kind, e)
            self.btyd = None

    def fit(self, df: pd.DataFrame, y: pd.Series) -> CdpModel:
        y = pd.Series(np.asarray(y, dtype=int), index=df.index)
        if self.calibration != "none" and len(df) >= 50 and y.nunique() == 2 and y.value_counts().min() >= 10:
            from sklearn.model_selection import train_test_split

            fit_idx, val_idx = train_test_split(df.index, test_size=0.2, stratify=y, random_state=self.seed)
            self._fit_estimator(df.loc[fit_idx], y.loc[fit_idx])
            self._fit_calibrator(self._raw(df.loc[val_idx]), y.loc[val_idx].to_numpy())
        # Refit on every training row (as scikit-learn's CalibratedClassifierCV(ensemble=False)): the
        # map learnt out of fold is kept, and the ranking gets all the data.
        self._fit_estimator(df, y)
        return self

    def _raw(self, df: pd.DataFrame) -> np.ndarray:
        return self.estimator.predict_proba(self.prepare(df))[:, 1]

    def _fit_calibrator(self, p: np.ndarray, y: np.ndarray) -> None:
        if self.calibration == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            self.calibrator = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(p, y)
        else:
            from sklearn.linear_model import LogisticRegression

            self.calibrator = LogisticRegression(C=1e6).fit(_logit(p).reshape(-1, 1), y)

    def _fit_estimator(self, df: pd.DataFrame, y: pd.Series) -> None:
        self._fit_btyd(df)
        self.categories = {c: sorted({*df[c].dropna().astype(str), "missing"}) for c in self.categorical}
        x = self.prepare(df)
        if self.kind == "lightgbm":
            from lightgbm import LGBMClassifier

            from ml.tuning import BASELINE

            self.estimator = LGBMClassifier(**{**BASELINE, **self.params}, subsample_freq=1, random_state=self.seed,
                                            verbose=-1, n_jobs=2)
        else:
            from sklearn.compose import ColumnTransformer
            from sklearn.impute import SimpleImputer
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import Pipeline
            from sklearn.preprocessing import OneHotEncoder, StandardScaler

            self.estimator = Pipeline([
                ("columns", ColumnTransformer([
                    ("numeric", Pipeline([("impute", SimpleImputer(strategy="median", add_indicator=True)),
                                          ("scale", StandardScaler())]), self.inputs),
                    ("categorical", OneHotEncoder(handle_unknown="ignore"), self.categorical),
                ])),
                ("model", LogisticRegression(max_iter=2000)),
            ])
        self.estimator.fit(x, y.astype(int))

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        p = self._raw(df)
        if self.calibrator is None:
            return p
        if self.calibration == "isotonic":
            return self.calibrator.predict(p)
        return self.calibrator.predict_proba(_logit(p).reshape(-1, 1))[:, 1]

    def importance(self) -> pd.Series:
        """Feature importance: LightGBM's total gain, or the logistic regression's |coefficient| summed
        per input column."""
        if self.kind == "lightgbm":
            gain = self.estimator.booster_.feature_importance(importance_type="gain")
            return pd.Series(gain, index=self.inputs + self.categorical).sort_values()
        names = self.estimator.named_steps["columns"].get_feature_names_out()
        coef = np.abs(self.estimator.named_steps["model"].coef_[0])
        totals: dict[str, float] = {}
        for n, v in zip(names, coef, strict=True):
            raw = n.split("__", 1)[1]
            col = next((c for c in self.inputs + self.categorical if raw == c or raw.startswith(f"{c}_")), raw)
            totals[col] = totals.get(col, 0.0) + float(v)
        return pd.Series(totals).sort_values()


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def model_input(df: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """What the registered models take: numeric features as float64, categorical as text (None when missing)."""
    out = pd.DataFrame(index=df.index)
    for c in numeric:
        out[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in categorical:
        out[c] = df[c].astype("object").where(df[c].notna(), None)
    return out


def signature(numeric: list[str], categorical: list[str]):
    """Every input optional (features can be NULL: no orders, no CRM record); the output is one double."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("double", c, required=False) for c in numeric]
                    + [ColSpec("string", c, required=False) for c in categorical])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double")]))


def as_pyfunc(model: CdpModel):
    """The model as an MLflow PythonModel: predict() returns the positive-class probability."""
    import mlflow.pyfunc

    class _Pyfunc(mlflow.pyfunc.PythonModel):
        def __init__(self, inner: CdpModel):
            self.inner = inner

        def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
            return self.inner.predict(model_input)

    return _Pyfunc(model)


# --- metrics and plots ----------------------------------------------------------------------------------
def evaluate(y: np.ndarray, p: np.ndarray, probabilities: bool = True) -> dict[str, float]:
    """ROC-AUC, PR-AUC, Brier score (when `p` are probabilities; a rule's scores are not), lift in the top
    decile (positive rate there / overall), base rate."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    if len(set(y)) < 2:
        raise TrainError("the holdout has only one class: choose other cutoffs or a longer horizon")
    out = {
        "roc_auc": float(roc_auc_score(y, p)), "pr_auc": float(average_precision_score(y, p)),
        "lift_top_decile": lift_top_decile(y, p), "positive_rate": float(y.mean()), "rows": float(len(y)),
    }
    if probabilities:
        out["brier"] = float(brier_score_loss(y, p))
    return out


def figures(y: np.ndarray, p: np.ndarray, importance: pd.Series, title: str) -> dict:
    """ROC curve, cumulative gains and lift, calibration, feature importance (matplotlib figures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_curve

    out = {}
    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, label="model")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="random")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC: {title}")
    ax.legend()
    out["roc.png"] = fig
    order = np.argsort(-p, kind="stable")
    share = np.arange(1, len(p) + 1) / len(p)
    gains = np.cumsum(np.asarray(y)[order]) / max(1, np.sum(y))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.5))
    a1.plot(share, gains, label="model")
    a1.plot([0, 1], [0, 1], "--", color="grey", label="random")
    a1.set(xlabel="share of people, best scores first", ylabel="share of positives found", title="cumulative gains")
    a1.legend()
    deciles = np.array_split(np.asarray(y)[order], 10)
    a2.bar(range(1, 11), [d.mean() / np.mean(y) if len(d) else 0 for d in deciles])
    a2.axhline(1, color="grey", linestyle="--")
    a2.set(xlabel="decile (1 = highest scores)", ylabel="lift", title="lift per decile")
    out["gains_lift.png"] = fig
    frac, mean = calibration_curve(y, p, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(mean, frac, "o-", label="model")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.set(xlabel="mean predicted probability", ylabel="observed positive rate", title="calibration")
    ax.legend()
    out["calibration.png"] = fig
    fig, ax = plt.subplots(figsize=(6, max(3, 0.25 * len(importance))))
    importance.plot.barh(ax=ax)
    ax.set(title="feature importance")
    fig.tight_layout()
    out["feature_importance.png"] = fig
    return out


def fit_and_log(kind: str, x_train: pd.DataFrame, y_train: pd.Series, x_hold: pd.DataFrame, y_hold: np.ndarray,
                numeric: list[str], categorical: list[str], seed: int, title: str, params: dict,
                horizon_days: int | None = None, calibration: str = "none", model_params: dict | None = None,
                name: str | None = None) -> dict:
    """One nested MLflow run (`name`, default the kind): fit, evaluate on the holdout, log params, metrics,
    plots and the pyfunc model (signature and input example). `model_params`: LightGBM parameters over the
    fixed ones (a tuned set). Returns run id, metrics, model URI and the holdout scores."""
    mlflow = _import_mlflow()
    with mlflow.start_run(run_name=name or kind, nested=True) as run:
        model = CdpModel(kind, numeric, categorical, seed, horizon_days, calibration, model_params).fit(x_train, y_train)
        p = model.predict(x_hold)
        m = evaluate(y_hold, p)
        mlflow.log_params({"kind": kind, "calibration": calibration if model.calibrator is not None else "none",
                           "btyd_features": model.btyd is not None, **params,
                           **{f"lgbm.{k}": v for k, v in (model_params or {}).items()}})
        if model.calibrator is not None:
            m["brier_uncalibrated"] = evaluate(y_hold, model._raw(x_hold))["brier"]
        if model.btyd is not None:
            mlflow.log_params({f"btyd.{k}": round(v, 6) for k, v in model.btyd.params().items()})
        mlflow.log_metrics(m)
        _log_figures(mlflow, figures(y_hold, p, model.importance(), title))
        info = mlflow.pyfunc.log_model(
            name="model", python_model=as_pyfunc(model), input_example=model_input(x_hold.head(5), numeric, categorical),
            signature=signature(numeric, categorical),
        )
    return {"run_id": run.info.run_id, "metrics": m, "model_uri": info.model_uri, "scores": p}


# --- one target -----------------------------------------------------------------------------------------
@dataclass
class Split:
    train: pd.DataFrame
    holdout: pd.DataFrame
    label: str
    holdout_cutoff: str
    purged: dict[str, int] = field(default_factory=dict)


def horizon_of(frame: pd.DataFrame) -> int:
    """The label horizon the rows were built with (gold_features.horizon_days; one value per set)."""
    values = sorted({int(v) for v in frame["horizon_days"].dropna().unique()})
    if len(values) != 1:
        raise TrainError(f"gold_features mixes horizons {values}: rebuild it (cdp ml features)")
    return values[0]


def _split_of(rows: pd.DataFrame, label: str, ts: TimeSplit) -> Split:
    return Split(rows_of(rows, ts.train_cutoffs), rows_of(rows, [ts.holdout_cutoff]), label, ts.holdout_cutoff,
                 ts.purged)


def split(frame: pd.DataFrame, target: str, holdout_cutoff: str | None = None) -> Split:
    """Rows with a label; the newest cutoff (or `holdout_cutoff`) is the holdout, and the training rows
    are the earlier cutoffs whose label windows end by it: cutoffs within the horizon of the holdout are
    purged with a warning (ml/splits.py); none left raises LeakError naming the config keys."""
    label = TARGETS[target]
    rows = frame[frame[label].notna()]
    cutoffs = sorted(rows["cutoff"].astype(str).str[:10].unique())
    if len(cutoffs) < 2:
        raise TrainError(f"{target}: need at least two cutoffs with labels, got {cutoffs}")
    return _split_of(rows, label, purged_split(cutoffs, horizon_of(frame), holdout_cutoff))


def rule_score(target: str, df: pd.DataFrame) -> np.ndarray:
    """The simple rule a marketer would use: churn, days since last activity; purchase, orders in 90 days."""
    if target == "churn":
        return pd.to_numeric(df["days_since_last_active"], errors="coerce").fillna(10_000).to_numpy(float)
    return pd.to_numeric(df["orders_90d"], errors="coerce").fillna(0).to_numpy(float)


def btyd_scores(frame: pd.DataFrame, sp: Split, target: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """BG/NBD and Pareto/NBD fitted on the history as of the holdout cutoff (every person's order
    summary then; no label is read), scoring the holdout rows. Empty when gold_features lacks the order
    summaries or the fit fails."""
    from ml.btyd import BASELINES, Btyd, baseline_score, has_columns, summaries

    if not has_columns(frame):
        return {}, {}
    people = rows_of(frame, [sp.holdout_cutoff])
    try:
        fitted = Btyd(horizon_of(frame)).fit(summaries(people))
    except Exception as e:
        log.warning("%s: BTYD baselines not fitted (%s)", target, e)
        return {}, {}
    predicted = fitted.predict(summaries(sp.holdout))
    return {m: baseline_score(target, predicted, m) for m in BASELINES}, fitted.params()


def _log_figures(mlflow, figs: dict) -> None:
    import matplotlib.pyplot as plt

    for name, fig in figs.items():
        mlflow.log_figure(fig, f"plots/{name}")
        plt.close(fig)


def _spread(per_origin: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for k in ("roc_auc", "pr_auc", "lift_top_decile"):
        v = np.asarray([m[k] for m in per_origin])
        out |= {f"{k}_mean": float(v.mean()), f"{k}_std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                f"{k}_min": float(v.min()), f"{k}_max": float(v.max())}
    return out


def rolling_evaluation(cfg: CdpConfig, frame: pd.DataFrame, target: str, kinds: tuple[str, ...]) -> dict:
    """Rolling-origin evaluation: each of the newest `ml.holdouts` cutoffs as a holdout (training on the
    earlier cutoffs its purge keeps), every kind and BTYD baseline scored; per-origin metrics and their
    spread (mean, std, min, max). Fits without logging models."""
    label = TARGETS[target]
    rows = frame[frame[label].notna()]
    origins = rolling_origins(sorted(rows["cutoff"].astype(str).str[:10].unique()), horizon_of(frame),
                              cfg.ml.holdouts)
    numeric, categorical = list(cfg.ml.features), list(cfg.ml.categorical)
    per: dict[str, list[dict]] = {}
    for ts in origins:
        sp = _split_of(rows, label, ts)
        y = sp.holdout[label].astype(int).to_numpy()
        if len(set(y)) < 2 or sp.train[label].nunique() < 2:
            continue
        scores = {k: CdpModel(k, numeric, categorical, cfg.ml.seed, horizon_of(frame), cfg.ml.calibration).fit(
            sp.train[numeric + categorical], sp.train[label]).predict(sp.holdout) for k in kinds}
        scores |= btyd_scores(frame, sp, target)[0]
        for name, p in scores.items():
            per.setdefault(name, []).append({"holdout_cutoff": ts.holdout_cutoff, **evaluate(y, p, name in kinds)})
    return {"origins": [ts.holdout_cutoff for ts in origins],
            "per_origin": per, "spread": {n: _spread(v) for n, v in per.items()}}


def train_target(cfg: CdpConfig, frame: pd.DataFrame, target: str, data_versions: dict[str, int | None],
                 kinds: tuple[str, ...] = KINDS) -> dict:
    """Fit every kind on the (purged) training cutoffs, evaluate on the holdout beside the rule and the
    BTYD baselines (BG/NBD, Pareto/NBD) with paired bootstrap intervals of the best model's margin over
    each, log to MLflow, register the best as a new version of the target's model with alias
    `challenger`. With `ml.holdouts` > 1, a rolling-origin evaluation is logged too. Returns the figures."""
    mlflow = _import_mlflow()
    from mlflow.tracking import MlflowClient

    sp = split(frame, target)
    numeric, categorical = list(cfg.ml.features), list(cfg.ml.categorical)
    cols = numeric + categorical
    y_train, y_hold = sp.train[sp.label].astype(int), sp.holdout[sp.label].astype(int).to_numpy()
    name = cfg.ml.models[target]
    horizon = horizon_of(frame)
    results: dict[str, dict] = {}
    with mlflow.start_run(run_name=f"{target} holdout {sp.holdout_cutoff}") as parent:
        mlflow.set_tags({"target": target, "model_name": name})
        mlflow.log_params({
            "target": target, "horizon_days": horizon, "holdout_cutoff": sp.holdout_cutoff,
            "train_cutoffs": ",".join(sorted(sp.train["cutoff"].astype(str).str[:10].unique())),
            "purged_cutoffs": ",".join(sp.purged) or "none",
            "train_rows": len(sp.train), "holdout_rows": len(sp.holdout), "features": ",".join(cols),
            **{f"data.{t}.version": v for t, v in data_versions.items()},
        })
        rule = evaluate(y_hold, rule_score(target, sp.holdout), probabilities=False)
        mlflow.log_metrics({f"rule_{k}": v for k, v in rule.items()})
        baselines, btyd_params = btyd_scores(frame, sp, target)
        btyd = {b: evaluate(y_hold, p, probabilities=False) for b, p in baselines.items()}
        for b, m in btyd.items():
            mlflow.log_metrics({f"{b}_{k}": v for k, v in m.items()})
        mlflow.log_params({f"baseline.{k}": round(v, 6) for k, v in btyd_params.items()})
        run_params = {"target": target, "holdout_cutoff": sp.holdout_cutoff,
                      **{f"data.{t}.version": v for t, v in data_versions.items()}}
        for kind in kinds:
            results[kind] = fit_and_log(
                kind, sp.train[cols], y_train, sp.holdout[cols], y_hold, numeric, categorical, cfg.ml.seed,
                f"{target} ({kind})", run_params, horizon_days=horizon, calibration=cfg.ml.calibration)
            log.info("%s %s: holdout ROC-AUC %.4f (rule %.4f, %s)", target, kind, results[kind]["metrics"]["roc_auc"],
                     rule["roc_auc"], {b: round(m["roc_auc"], 4) for b, m in btyd.items()})
        tuning = None
        if cfg.ml.tuning_trials and "lightgbm" in kinds:
            from ml.tuning import tune

            with mlflow.start_run(run_name="lightgbm tuning", nested=True):
                tuning = tune(sp.train, sp.label, numeric, categorical, cfg.ml.seed, horizon, cfg.ml.tuning_trials,
                              cfg.ml.tuning_timeout_seconds, mlflow)
                if tuning is not None:
                    mlflow.log_params({"trials": tuning["trials"], "validation": tuning["validation"],
                                       **{f"best.{k}": v for k, v in tuning["params"].items()}})
                    mlflow.log_metrics({"validation_roc_auc": tuning["validation_roc_auc"],
                                        "baseline_validation_roc_auc": tuning["baseline_validation_roc_auc"],
                                        "seconds": tuning["seconds"]})
            if tuning is not None:  # the tuned set, refitted on every training row, beside the fixed baseline
                results[TUNED] = fit_and_log(
                    "lightgbm", sp.train[cols], y_train, sp.holdout[cols], y_hold, numeric, categorical, cfg.ml.seed,
                    f"{target} ({TUNED})", run_params, horizon_days=horizon, calibration=cfg.ml.calibration,
                    model_params=tuning["params"], name=TUNED)
        best = max(results, key=lambda k: results[k]["metrics"]["roc_auc"])
        margins = {}
        for b, p in {"rule": rule_score(target, sp.holdout), **baselines}.items():
            margins[b] = paired_bootstrap(y_hold, results[best]["scores"], p, cfg.ml.bootstrap, cfg.ml.seed)
            mlflow.log_metrics({f"margin_{b}_{k.replace('_margin', '')}": v for k, v in margins[b].items()})
        version = mlflow.register_model(results[best]["model_uri"], name)
        client = MlflowClient()
        client.set_registered_model_alias(name, "challenger", version.version)
        client.set_model_version_tag(name, version.version, "holdout_cutoff", sp.holdout_cutoff)
        client.set_model_version_tag(name, version.version, "kind", best)
        mlflow.log_metrics({f"best_{k}": v for k, v in results[best]["metrics"].items()})
        mlflow.set_tags({"best_kind": best, "registered_version": version.version})
        rolling = None
        if cfg.ml.holdouts > 1:
            rolling = rolling_evaluation(cfg, frame, target, kinds)
            for n, spread in rolling["spread"].items():
                mlflow.log_metrics({f"rolling_{n}_{k}": v for k, v in spread.items()})
            mlflow.log_dict(rolling, "rolling_origin.json")
    return {"target": target, "model": name, "version": int(version.version), "best": best,
            "run_id": parent.info.run_id, "holdout_cutoff": sp.holdout_cutoff, "purged": sp.purged, "rule": rule,
            "btyd": btyd, "margins": margins, "rolling": rolling, "tuning": tuning,
            "kinds": {k: v["metrics"] for k, v in results.items()}}


def promote(cfg: CdpConfig, frame: pd.DataFrame, target: str, version: int | None = None) -> dict:
    """Make `version` (default: the `challenger`) the `champion` if it beats both the champion (when there
    is one) and the best BTYD baseline (when gold_features has the order summaries) on ROC-AUC on the same
    holdout (the newest cutoff of `frame`). Ties keep the champion."""
    mlflow = _import_mlflow()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    name = cfg.ml.models[target]
    if version is None:
        version = int(client.get_model_version_by_alias(name, "challenger").version)
    try:
        champion = int(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        champion = None
    sp = split(frame, target)
    y = sp.holdout[sp.label].astype(int).to_numpy()

    x = model_input(sp.holdout, list(cfg.ml.features), list(cfg.ml.categorical))

    def auc(v: int) -> float:
        model = mlflow.pyfunc.load_model(f"models:/{name}/{v}")
        return evaluate(y, np.asarray(model.predict(x), dtype=float).ravel())["roc_auc"]

    new_auc = auc(version)
    baselines = {b: evaluate(y, p, probabilities=False)["roc_auc"] for b, p in btyd_scores(frame, sp, target)[0].items()}
    best_btyd = max(baselines, key=baselines.get) if baselines else None
    if champion is None:
        decision, champ_auc = "promoted: no champion yet", None
    elif champion == version:
        decision, champ_auc = "already champion", new_auc
    else:
        try:
            champ_auc = auc(champion)
        except Exception as e:  # e.g. the champion reads features the config no longer has
            log.warning("champion %s v%s cannot score this holdout (%s); the challenger wins", name, champion, e)
            champ_auc = None
        decision = ("promoted: beats the champion" if champ_auc is None or new_auc > champ_auc
                    else "kept the champion: the challenger is not better")
    if decision.startswith("promoted") and best_btyd is not None and not new_auc > baselines[best_btyd]:
        decision = f"not promoted: the challenger does not beat the {best_btyd} baseline"
    if decision.startswith("promoted"):
        client.set_registered_model_alias(name, "champion", version)
    client.set_model_version_tag(name, version, "promotion", decision)
    log.info("%s v%s: %s (challenger %.4f, champion %s, BTYD %s)", name, version, decision, new_auc, champ_auc,
             baselines)
    try:
        current = int(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        current = None
    return {"model": name, "version": version, "champion_before": champion, "decision": decision,
            "challenger_roc_auc": new_auc, "champion_roc_auc": champ_auc, "btyd_roc_auc": baselines,
            "holdout_cutoff": sp.holdout_cutoff, "champion": current}


def read_training_set(root: str) -> tuple[pd.DataFrame, dict[str, int | None]]:
    """gold_features as pandas, and the Delta versions of it and its inputs."""
    from spark_jobs.tables import TableNotFoundError, read_pandas, table_stats

    try:
        frame = read_pandas(root, "gold_features")
    except TableNotFoundError:
        raise TrainError("gold_features does not exist: build it first (cdp ml features, or the cdp_train DAG)") from None
    if frame.empty:
        raise TrainError("gold_features is empty")
    versions = {t: (s or {}).get("version") for t in INPUT_TABLES for s in [table_stats(root, t)]}
    return frame, versions


def run(cfg: CdpConfig, targets: list[str] | None = None, promote_after: bool = True) -> dict:
    """Train (and by default promote) every configured target from the current gold_features."""
    from ml.tracking import configure

    configure(cfg.ml)
    frame, versions = read_training_set(cfg.paths.lakehouse_uri())
    out = {}
    for target in targets or list(cfg.ml.models):
        trained = train_target(cfg, frame, target, versions)
        if promote_after:
            trained["promotion"] = promote(cfg, frame, target, trained["version"])
        out[target] = trained
    return out
