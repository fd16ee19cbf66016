"""CDNOW to the landing format (ml/cdnow.py): one folder per day in the orders source's columns, every
transaction kept with its amount and day; bad logs refused with the line to fix."""

from __future__ import annotations

import csv

import pandas as pd
import pytest

from ml import cdnow


def test_to_landing_writes_every_transaction_in_the_orders_source_columns(tmp_path):
    tx = cdnow.read_transactions()
    out = cdnow.to_landing(tx, tmp_path / "landing")
    files = sorted((tmp_path / "landing" / "orders").glob("*/part-00000.csv"))
    assert out == {"days": len(files), "rows": len(tx)}
    rows = []
    for f in files:
        with open(f, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            assert tuple(reader.fieldnames) == cdnow.HEADER
            for r in reader:
                assert r["paid_time"].startswith(f.parent.name) and r["paid_time"].endswith("+08:00")
                rows.append(r)
    got = pd.DataFrame(rows)
    assert got["order_id"].is_unique and len(got) == len(tx)
    assert got["member_id"].nunique() == tx["customer"].nunique()
    assert round(got["amount"].astype(float).sum(), 2) == round(tx["amount"].sum(), 2)
    per_day = got.groupby(got["paid_time"].str[:10]).size()
    expected = tx.groupby(tx["date"].dt.date.astype(str)).size()
    assert per_day.sort_index().tolist() == expected.sort_index().tolist()


def test_read_transactions_names_the_first_bad_line(tmp_path):
    bad = tmp_path / "log.txt"
    bad.write_text("1 1 19970101 1 10.00\n2 2 1997-01-02 1 5.00\n")
    with pytest.raises(cdnow.CdnowError, match="first at line 2"):
        cdnow.read_transactions(bad)
    with pytest.raises(cdnow.CdnowError, match="no such transaction log"):
        cdnow.read_transactions(tmp_path / "missing.txt")


def test_read_transactions_reads_the_master_files_four_columns_and_header(tmp_path):
    log = tmp_path / "master.txt"
    log.write_text(" customer_id  date number_of_cds  dollar_value\n 00001 19970101  1   11.77\n 00002 19970112  2   20.50\n")
    tx = cdnow.read_transactions(log)
    assert tx["customer"].tolist() == ["00001", "00002"] and tx["amount"].sum() == pytest.approx(32.27)
    assert tx["date"].tolist() == [pd.Timestamp("1997-01-01"), pd.Timestamp("1997-01-12")]
