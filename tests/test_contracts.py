import pytest
from pyspark.sql import types as T

from spark_jobs.config import CHANNELS
from spark_jobs.contracts import CONTRACTS, LINEAGE, TableContract, UnknownTableError, _c, contract


def test_contract_every_channel_has_a_bronze_table_with_lineage():
    for ch in CHANNELS:
        c = contract(f"bronze_{ch}")
        assert [col.name for col in LINEAGE] == c.column_names[-len(LINEAGE):]
        assert c.partition_by == ("_batch_date", "_source")  # several sources feed one model
        assert {"_extra", "_source"} <= set(c.column_names)


def test_contract_storage_schema_is_all_nullable_but_required_columns_are_declared():
    for c in CONTRACTS.values():
        assert all(f.nullable for f in c.schema().fields), c.name
        assert c.layer in c.name.split("_", 1)[0]
    assert "order_id" in contract("bronze_orders").required()
    assert contract("bronze_orders").schema()["amount"].dataType == T.DecimalType(12, 2)


def test_contract_unknown_table_names_the_declared_ones():
    with pytest.raises(UnknownTableError, match="bronze_orders"):
        contract("bronze_fax")


def test_contract_rejects_bad_layer_and_unknown_partition_column():
    with pytest.raises(ValueError, match="must start with"):
        TableContract("platinum_x", (_c("a"),))
    with pytest.raises(ValueError, match="not a column"):
        TableContract("gold_x", (_c("a"),), partition_by=("b",))
