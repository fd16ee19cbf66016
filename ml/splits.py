"""Leak-proof time splits of the training rows (gold_features as pandas): a holdout cutoff, the training
cutoffs whose label windows end by it (purged, as in purged / embargoed cross-validation), and the
rolling origins of a multi-holdout evaluation; reads and writes no tables."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

import pandas as pd

log = logging.getLogger(__name__)

LAYOUT_KEYS = "ml.horizon_days, ml.cutoff_step_days, ml.cutoffs"


class LeakError(ValueError):
    """A training label window overlaps the holdout's: the split would score the model on days it learnt."""


def _day(d) -> dt.date:
    return d if isinstance(d, dt.date) and not isinstance(d, dt.datetime) else dt.date.fromisoformat(str(d)[:10])


def label_overlap_days(train_cutoff, holdout_cutoff, horizon_days: int) -> int:
    """Days that the label window (c, c + H] of a training cutoff shares with the holdout's (h, h + H]."""
    c, h = _day(train_cutoff), _day(holdout_cutoff)
    return max(0, horizon_days - abs((h - c).days))


def overlapping_cutoffs(train_cutoffs, holdout_cutoff, horizon_days: int) -> dict[str, int]:
    """Training cutoffs whose label windows overlap the holdout's, with the days they share; a training
    cutoff at or after the holdout is always listed (its features see the holdout's label days)."""
    out = {}
    for c in sorted({_day(c) for c in train_cutoffs}):
        days = label_overlap_days(c, holdout_cutoff, horizon_days)
        if days > 0 or c >= _day(holdout_cutoff):
            out[c.isoformat()] = days
    return out


def check_layout(cutoffs, horizon_days: int) -> None:
    """Refuse a set of cutoffs (oldest to newest; the newest is the holdout) in which a training label
    window overlaps the holdout's; the message names the config keys that set the layout."""
    days = sorted({_day(c) for c in cutoffs})
    if len(days) < 2:
        return
    leaks = overlapping_cutoffs(days[:-1], days[-1], horizon_days)
    if leaks:
        shared = ", ".join(f"{c} ({n} of {horizon_days} days)" for c, n in leaks.items())
        raise LeakError(
            f"the holdout {days[-1]} shares label days with training cutoffs {shared}: labels of training rows "
            f"would cover the holdout's horizon. Space the cutoffs at least ml.horizon_days apart before the "
            f"holdout (ml.cutoff_step_days >= ml.horizon_days), or let the split purge them ({LAYOUT_KEYS})")


@dataclass
class TimeSplit:
    """One origin: its holdout cutoff, the training cutoffs kept and the ones purged (with shared days)."""

    holdout_cutoff: str
    train_cutoffs: list[str]
    purged: dict[str, int] = field(default_factory=dict)


def purged_split(cutoffs, horizon_days: int, holdout_cutoff=None) -> TimeSplit:
    """The training cutoffs for `holdout_cutoff` (default: the newest): every cutoff c with c + H <= the
    holdout; the later ones are purged with a warning. Raises LeakError, naming the config keys, when
    nothing is left to train on."""
    days = sorted({_day(c) for c in cutoffs})
    hold = _day(holdout_cutoff) if holdout_cutoff is not None else days[-1]
    before = [c for c in days if c < hold]
    purged = overlapping_cutoffs(before, hold, horizon_days)
    kept = [c.isoformat() for c in before if c.isoformat() not in purged]
    if purged:
        log.warning("holdout %s: purged training cutoffs %s (their labels overlap the holdout's %d-day horizon; "
                    "set ml.cutoff_step_days >= ml.horizon_days to keep them)", hold, purged, horizon_days)
    if not kept:
        raise LeakError(
            f"holdout {hold}: every earlier cutoff ({[c.isoformat() for c in before]}) has labels overlapping the "
            f"holdout's {horizon_days}-day horizon, so nothing is left to train on. Add cutoffs or space them "
            f"ml.horizon_days apart ({LAYOUT_KEYS})")
    return TimeSplit(hold.isoformat(), kept, purged)


def rolling_origins(cutoffs, horizon_days: int, count: int) -> list[TimeSplit]:
    """Up to `count` origins, newest first: each of the newest cutoffs that keeps at least one training
    cutoff after purging (expanding window: every earlier cutoff whose labels end by it)."""
    days = sorted({_day(c) for c in cutoffs})
    out = []
    for hold in reversed(days):
        if len(out) == count:
            break
        if any(c + dt.timedelta(days=horizon_days) <= hold for c in days):
            out.append(purged_split(days, horizon_days, hold))
    return out


def rows_of(frame: pd.DataFrame, cutoffs) -> pd.DataFrame:
    """The rows of `frame` whose cutoff is one of `cutoffs`."""
    wanted = {str(c) for c in ([cutoffs] if isinstance(cutoffs, str) else cutoffs)}
    return frame[frame["cutoff"].astype(str).str[:10].isin(wanted)]
