"""A real transaction log through the project: CDNOW (Fader & Hardie's CD purchases, 1997-98; `lifetimes`
ships the 2,357-customer sample and the master file) converted into the landing format of the `orders`
source, loaded with `load_history` up to each snapshot day the cutoffs need, then the same features
(gold_features), training, BTYD baselines and promotion as cdp_train. Writes landing files, a lakehouse
and an MLflow experiment `cdnow`."""

from __future__ import annotations

import csv
import datetime as dt
import logging
from pathlib import Path

import pandas as pd

from spark_jobs.config import CdpConfig

log = logging.getLogger(__name__)

HEADER = ("order_id", "member_id", "phone", "items", "amount", "paid_time", "category")
SAMPLE = "CDNOW_sample.txt"  # the development set; CDNOW_master.txt is the independent check: do not tune on it


class CdnowError(ValueError):
    """The transaction log cannot be read (missing file, wrong column count, bad date or amount)."""


def read_transactions(path: str | Path | None = None) -> pd.DataFrame:
    """customer, date, quantity, amount per transaction, from a CDNOW-format file, whitespace-separated:
    the sample's five columns (customer id, id in the master file, yyyymmdd, CDs, dollars) or the master
    file's four (customer id, yyyymmdd, CDs, dollars; a header line is skipped); default: `lifetimes`'
    sample."""
    if path is None:
        import lifetimes

        path = Path(lifetimes.__file__).parent / "datasets" / SAMPLE
    path = Path(path)
    if not path.is_file():
        raise CdnowError(f"{path}: no such transaction log")
    raw = pd.read_csv(path, sep=r"\s+", header=None, dtype=str)
    if len(raw) and not str(raw.iloc[0, 0]).isdigit():
        raw = raw.iloc[1:].reset_index(drop=True)  # the master file's header line
    if raw.shape[1] not in (4, 5):
        raise CdnowError(f"{path}: expected 5 columns (id, master id, yyyymmdd, quantity, amount) or 4 "
                         f"(id, yyyymmdd, quantity, amount), got {raw.shape[1]}")
    date, qty, amount = (raw.columns[-3], raw.columns[-2], raw.columns[-1])
    out = pd.DataFrame({"customer": raw[0].astype(str),
                        "date": pd.to_datetime(raw[date], format="%Y%m%d", errors="coerce"),
                        "quantity": pd.to_numeric(raw[qty], errors="coerce"),
                        "amount": pd.to_numeric(raw[amount], errors="coerce")})
    bad = out["date"].isna() | out["quantity"].isna() | out["amount"].isna() | (out["amount"] < 0)
    if bad.any():
        raise CdnowError(f"{path}: {int(bad.sum())} lines with a bad date, quantity or amount, first at line "
                         f"{int(bad.idxmax()) + 1}")
    return out


def to_landing(tx: pd.DataFrame, landing: str | Path, source: str = "orders") -> dict[str, int]:
    """One landing folder per day (`<landing>/<source>/<yyyy-mm-dd>/part-00000.csv`) in the orders
    source's columns: member id `CDNOW<customer>`, paid at noon local time (+08:00), one item line
    `CD:<quantity>`. Returns days and rows written."""
    root = Path(landing) / source
    tx = tx.sort_values(["date", "customer"], kind="stable").reset_index(drop=True)
    for day, rows in tx.groupby(tx["date"].dt.date):
        folder = root / day.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "part-00000.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(HEADER)
            for i, r in enumerate(rows.itertuples(index=False)):
                w.writerow([f"CD{day:%Y%m%d}{i:05d}", f"CDNOW{int(r.customer):05d}", "", f"CD:{int(r.quantity)}",
                            f"{r.amount:.2f}", f"{day.isoformat()}T12:00:00+08:00", "music"])
    return {"days": int(tx["date"].dt.date.nunique()), "rows": len(tx)}


def config(base: Path, cfg: CdpConfig, horizon_days: int, cutoffs: int, step_days: int, holdouts: int) -> CdpConfig:
    """`cfg` with the lakehouse and landing under `base`, orders as the only source, and the CDNOW layout."""
    return cfg.model_copy(update={
        "paths": cfg.paths.model_copy(update={"lakehouse": str(base / "lakehouse"), "landing": str(base / "landing")}),
        "ingest": cfg.ingest.model_copy(update={"sources": ("orders",)}),
        "ml": cfg.ml.model_copy(update={"horizon_days": horizon_days, "cutoffs": cutoffs, "cutoff_step_days": step_days,
                                        "holdouts": holdouts, "experiment": "cdnow",
                                        "artifacts": str(base / "mlruns" / "artifacts")}),
    })


def run(cfg: CdpConfig, base: str | Path, last_cutoff: dt.date, path: str | Path | None = None,
        horizon_days: int = 90, cutoffs: int = 6, step_days: int = 30, holdouts: int = 3,
        targets: list[str] | None = None, progress=lambda message: None) -> dict:
    """Convert the log, load its history in chunks that end on each snapshot day, build gold_features for
    the cutoff layout ending at `last_cutoff`, train and promote. Returns the training figures."""
    from ml import features, train
    from spark_jobs.pipeline import load_history_ending_on
    from spark_jobs.session import spark_session
    from spark_jobs.tables import Lakehouse

    base = Path(base)
    cfg = config(base, cfg, horizon_days, cutoffs, step_days, holdouts)
    tx = read_transactions(path)
    landed = to_landing(tx, cfg.paths.landing)
    layout = features.cutoff_layout(last_cutoff, cfg.ml)
    days = features.snapshot_days(layout, horizon_days)
    first = tx["date"].min().date()
    if days[-1] > tx["date"].max().date():
        raise CdnowError(f"the last horizon ends {days[-1]}, after the log's last day {tx['date'].max().date()}: "
                         f"choose an earlier --last-cutoff")
    progress(f"landed {landed['rows']} orders on {landed['days']} days; cutoffs {layout}; snapshots on {len(days)} days")
    load_history_ending_on(first, days[-1], days, ["orders"], cfg, progress)
    with spark_session(cfg.engine) as spark:
        built = features.run(Lakehouse(spark, cfg.paths.lakehouse_uri()), cfg, layout)
    progress(f"gold_features: {built['cutoffs']}")
    return {"landed": landed, "cutoffs": [c.isoformat() for c in layout], "features": built,
            "trained": train.run(cfg, targets)}
