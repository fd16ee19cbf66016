"""Delta I/O on Sail, checked by an independent reader (delta-rs)."""

import datetime as dt
from decimal import Decimal

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from spark_jobs.contracts import contract
from spark_jobs.tables import ContractError, TableNotFoundError

D1, D2 = dt.date(2026, 11, 1), dt.date(2026, 11, 2)
TS = dt.datetime(2026, 11, 1, 3, 0)


def _orders(spark, day, ids=("O1", "O2"), amount="12.50"):
    rows = [(i, "M1", "+8613912345678", "s:1", amount, TS, "shoes", None, "orders", f"orders/{day}/p.csv", n + 1, day, TS, "h")
            for n, i in enumerate(ids)]
    df = spark.createDataFrame(
        rows,
        "order_id string, member_id string, phone string, items string, amount string, paid_time timestamp, "
        "category string, _extra string, _source string, _source_file string, _line long, _batch_date date, "
        "_ingested_at timestamp, _row_hash string",
    )
    return df.withColumn("amount", F.col("amount").cast("decimal(12,2)"))


def test_write_partition_creates_table_from_contract_readable_by_deltalake(lakehouse, sail):
    lakehouse.write_partition("bronze_orders", _orders(sail, D1), {"_batch_date": D1})
    t = DeltaTable(lakehouse.path("bronze_orders"))
    assert t.metadata().partition_columns == ["_batch_date", "_source"]
    assert sorted(f.name for f in t.schema().fields) == sorted(contract("bronze_orders").column_names)
    got = t.to_pyarrow_table().to_pylist()
    assert sorted(r["order_id"] for r in got) == ["O1", "O2"]
    assert {r["amount"] for r in got} == {Decimal("12.50")}
    assert lakehouse.read("bronze_orders").count() == 2


def test_write_partition_is_idempotent_and_leaves_other_batches_alone(lakehouse, sail):
    lakehouse.write_partition("bronze_orders", _orders(sail, D1), {"_batch_date": D1})
    lakehouse.write_partition("bronze_orders", _orders(sail, D2, ids=("O9",)), {"_batch_date": D2})
    before = sorted(map(tuple, lakehouse.read("bronze_orders").collect()))
    lakehouse.write_partition("bronze_orders", _orders(sail, D1), {"_batch_date": D1})
    after = sorted(map(tuple, lakehouse.read("bronze_orders").collect()))
    assert before == after and len(after) == 3
    lakehouse.write_partition("bronze_orders", _orders(sail, D1, ids=("O3",)), {"_batch_date": D1})
    assert sorted(r.order_id for r in lakehouse.read("bronze_orders").collect()) == ["O3", "O9"]


def test_write_partition_rejects_wrong_type_naming_the_column(lakehouse, sail):
    bad = _orders(sail, D1).withColumn("amount", F.col("amount").cast("string"))
    with pytest.raises(ContractError, match=r"column 'amount' has type string, contract says decimal\(12,2\)"):
        lakehouse.write_partition("bronze_orders", bad, {"_batch_date": D1})
    assert not lakehouse.exists("bronze_orders")


def test_write_partition_rejects_missing_and_extra_columns(lakehouse, sail):
    with pytest.raises(ContractError, match=r"missing column\(s\) \['category'\]"):
        lakehouse.write_partition("bronze_orders", _orders(sail, D1).drop("category"), {"_batch_date": D1})
    with pytest.raises(ContractError, match=r"\['surprise'\] are not in the contract"):
        lakehouse.write_partition("bronze_orders", _orders(sail, D1).withColumn("surprise", F.lit(1)), {"_batch_date": D1})


def test_write_partition_null_in_required_column_fails_and_keeps_table_version(lakehouse, sail):
    lakehouse.write_partition("bronze_orders", _orders(sail, D1), {"_batch_date": D1})
    version = lakehouse.version("bronze_orders")
    bad = _orders(sail, D1).withColumn("order_id", F.when(F.col("_line") == 2, None).otherwise(F.col("order_id")))
    with pytest.raises(ContractError, match="required column 'order_id' is NULL"):
        lakehouse.write_partition("bronze_orders", bad, {"_batch_date": D1})
    assert lakehouse.version("bronze_orders") == version
    assert lakehouse.read("bronze_orders").count() == 2


def test_write_partition_rejects_rows_outside_the_partition(lakehouse, sail):
    lakehouse.write_partition("bronze_orders", _orders(sail, D2), {"_batch_date": D2})
    with pytest.raises(ContractError, match="outside the partition"):
        lakehouse.write_partition("bronze_orders", _orders(sail, D2), {"_batch_date": D1})
    assert lakehouse.read("bronze_orders", {"_batch_date": D2}).count() == 2


def test_read_unknown_and_missing_tables_are_clear_errors(lakehouse):
    with pytest.raises(TableNotFoundError, match="bronze_orders does not exist"):
        lakehouse.read("bronze_orders")
    assert lakehouse.read_or_empty("bronze_orders").count() == 0
    with pytest.raises(KeyError, match="unknown table"):
        lakehouse.read("bronze_fax")


def test_concurrent_writers_of_one_table_all_land(lakehouse, sail, caplog):
    """Two ingest tasks run at once and both write ops tables: a commit that loses the race is retried
    (Sail reports it as "Failed to commit transaction"), and every partition lands exactly once."""
    import logging
    from concurrent.futures import ThreadPoolExecutor

    lakehouse.write_partition("bronze_orders", _orders(sail, D1), {"_batch_date": D1})  # the table exists
    days = [D1 + dt.timedelta(days=i) for i in range(1, 25)]
    with caplog.at_level(logging.WARNING, logger="spark_jobs.tables"), ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda d: lakehouse.write_partition("bronze_orders", _orders(sail, d, ids=(f"O{d.day}",)),
                                                          {"_batch_date": d}), days))
    got = DeltaTable(lakehouse.path("bronze_orders")).to_pyarrow_table().to_pylist()
    assert sorted(r["order_id"] for r in got) == sorted(["O1", "O2", *(f"O{d.day}" for d in days)])
    retries = sum("commit conflict" in r.message for r in caplog.records)
    assert retries >= 1, "no race happened: the test would not notice a retry that does not work"
