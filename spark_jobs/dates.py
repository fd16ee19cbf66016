"""Prints the batch dates of a date range (or the Airflow logical dates that process them, or that of
the cdp_train run after the range); no I/O."""

from __future__ import annotations

import datetime as dt
import sys


def batch_dates(start: dt.date, days: int) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range(days)]


def logical_date(batch: dt.date) -> dt.date:
    """The logical date of the cdp_daily run that processes `batch` (the end of its data interval)."""
    return batch + dt.timedelta(days=1)


def training_logical_date(last: dt.date) -> dt.datetime:
    """The logical date of a manual cdp_train run whose data interval (the week to Monday 03:00 UTC, its
    schedule) holds the batch `last`: 04:00 UTC on the first Monday after it."""
    return dt.datetime.combine(last + dt.timedelta(days=7 - last.weekday()), dt.time(4), dt.UTC)


if __name__ == "__main__":
    start, days = dt.date.fromisoformat(sys.argv[1]), int(sys.argv[2])
    dates = batch_dates(start, days)
    if "--logical" in sys.argv:
        dates = [logical_date(d) for d in dates]
    if "--train" in sys.argv:
        dates = [training_logical_date(dates[-1])]
    print(" ".join(d.isoformat() for d in dates))
