"""Buy-till-you-die models (BG/NBD, Pareto/NBD, Gamma-Gamma, from `lifetimes`) over the order summaries
that gold_features carries (frequency, recency, T, monetary as of each cutoff): the baselines a model must
beat, and P(alive) / expected purchases as features; reads and writes no tables."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

# gold_features columns the summaries are made of (tags of conf/tags.yaml).
COLUMNS = ("order_days_all", "orders_all", "spend_all", "days_since_first_order", "days_since_last_order")
FEATURES = ("btyd_frequency", "btyd_recency", "btyd_t", "btyd_monetary", "btyd_gap_mean", "bgnbd_p_alive",
            "bgnbd_expected", "pnbd_p_alive", "pnbd_expected", "gg_expected_value")
BASELINES = ("bgnbd", "pnbd")


def summaries(df: pd.DataFrame) -> pd.DataFrame:
    """frequency (repeat order days), recency (days first to last order), T (days since the first order),
    monetary (mean order value) per row, in days as of the row's cutoff; NaN for people with no order."""
    num = {c: pd.to_numeric(df[c], errors="coerce").astype("float64") for c in COLUMNS}
    buyer = num["order_days_all"].fillna(0) > 0
    t = num["days_since_first_order"].where(buyer)
    out = pd.DataFrame({
        "frequency": (num["order_days_all"] - 1).where(buyer),
        "recency": (t - num["days_since_last_order"]).clip(lower=0),
        "T": t,
        "monetary": (num["spend_all"] / num["orders_all"]).where(buyer),
    }, index=df.index)
    # BTYD's data model: recency is 0 without a repeat, and never past T (lifetimes refuses otherwise).
    out["recency"] = np.minimum(out["recency"], out["T"]).where(out["frequency"] > 0, 0.0).where(buyer)
    return out


def _weighted(s: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Distinct rows with their counts: the likelihoods are sums over people, so this fits the same
    parameters in a fraction of the time (days are integers: few distinct triples)."""
    return s[cols].round(6).value_counts().rename("weights").reset_index()


class Btyd:
    """BG/NBD and Pareto/NBD for purchase counts, Gamma-Gamma for order value; fitted on one set of
    summaries, then predicting for any other (a later cutoff's) over `horizon_days`."""

    def __init__(self, horizon_days: int, penalizer: float = 0.001):
        self.horizon_days, self.penalizer = horizon_days, penalizer
        self.bgnbd = self.pnbd = self.gg = None

    def fit(self, s: pd.DataFrame) -> Btyd:
        from lifetimes import BetaGeoFitter, GammaGammaFitter, ParetoNBDFitter

        buyers = s.dropna(subset=["frequency", "recency", "T"])
        buyers = buyers[buyers["T"] > 0]
        if len(buyers) < 20:
            raise ValueError(f"{len(buyers)} people with orders: too few to fit BTYD models")
        w = _weighted(buyers, ["frequency", "recency", "T"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.bgnbd = BetaGeoFitter(penalizer_coef=self.penalizer).fit(
                w["frequency"], w["recency"], w["T"], weights=w["weights"])
            self.pnbd = ParetoNBDFitter(penalizer_coef=self.penalizer).fit(
                w["frequency"], w["recency"], w["T"], weights=w["weights"])
            repeat = buyers[(buyers["frequency"] > 0) & (buyers["monetary"] > 0)]
            if len(repeat) >= 20:
                try:
                    self.gg = GammaGammaFitter(penalizer_coef=self.penalizer).fit(repeat["frequency"], repeat["monetary"])
                except Exception as e:  # Gamma-Gamma is for value only: purchase models do not need it
                    log.warning("Gamma-Gamma did not fit (%s): no expected value feature", e)
        return self

    def params(self) -> dict[str, float]:
        out = {f"bgnbd_{k}": float(v) for k, v in self.bgnbd.params_.items()}
        out |= {f"pnbd_{k}": float(v) for k, v in self.pnbd.params_.items()}
        if self.gg is not None:
            out |= {f"gg_{k}": float(v) for k, v in self.gg.params_.items()}
        return out

    def predict(self, s: pd.DataFrame) -> pd.DataFrame:
        """FEATURES per row: the summaries, mean days between orders, P(alive) and expected purchases in
        the horizon under each model, Gamma-Gamma's expected order value. People with no order get
        P(alive) 0 and 0 expected purchases (they are not in these models' population)."""
        out = pd.DataFrame(index=s.index)
        out["btyd_frequency"], out["btyd_recency"], out["btyd_t"] = s["frequency"], s["recency"], s["T"]
        out["btyd_monetary"] = s["monetary"]
        out["btyd_gap_mean"] = (s["recency"] / s["frequency"]).where(s["frequency"] > 0)
        ok = s["T"].notna()
        f, r, t = (s.loc[ok, c].to_numpy(float) for c in ("frequency", "recency", "T"))
        h = float(self.horizon_days)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            cols = {
                "bgnbd_p_alive": self.bgnbd.conditional_probability_alive(f, r, t),
                "bgnbd_expected": self.bgnbd.conditional_expected_number_of_purchases_up_to_time(h, f, r, t),
                "pnbd_p_alive": self.pnbd.conditional_probability_alive(f, r, t),
                "pnbd_expected": self.pnbd.conditional_expected_number_of_purchases_up_to_time(h, f, r, t),
            }
        for name, values in cols.items():
            v = np.asarray(values, dtype=float)
            v[~np.isfinite(v)] = np.nan  # overflow for extreme histories: unknown, imputed downstream
            out[name] = 0.0
            out.loc[ok, name] = v
        out["gg_expected_value"] = np.nan
        if self.gg is not None:
            rep = ok & (s["frequency"] > 0) & (s["monetary"] > 0)
            v = np.asarray(self.gg.conditional_expected_average_profit(s.loc[rep, "frequency"], s.loc[rep, "monetary"]),
                           dtype=float)
            v[~np.isfinite(v)] = np.nan
            out.loc[rep, "gg_expected_value"] = v
        return out


def baseline_score(target: str, predicted: pd.DataFrame, model: str) -> np.ndarray:
    """A BTYD model's score for a target: expected purchases in the horizon for purchase, their negative
    for churn (fewest expected purchases = most likely to lapse)."""
    e = predicted[f"{model}_expected"].fillna(0.0).to_numpy(float)
    return -e if target == "churn" else e


def has_columns(df: pd.DataFrame) -> bool:
    return all(c in df.columns for c in COLUMNS)
