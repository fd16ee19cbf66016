"""Prints the batch dates of a date range (or the Airflow logical dates that process them); no I/O."""

from __future__ import annotations

import datetime as dt
import sys


def batch_dates(start: dt.date, days: int) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(days)]


def logical_date(batch: dt.date) -> dt.date:
    """The logical date of the cdp_daily run that processes `batch` (the end of its data interval)."""
    return batch + dt.timedelta(days=1)


if __name__ == "__main__":
    start, days = dt.date.fromisoformat(sys.argv[1]), int(sys.argv[2])
    dates = batch_dates(start, days)
    if "--logical" in sys.argv:
        dates = [logical_date(d) for d in dates]
    print(" ".join(d.isoformat() for d in dates))
