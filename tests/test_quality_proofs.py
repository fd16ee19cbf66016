"""Key proofs: a writer that proves its key by construction (gold_tags: one row per distinct tag name
of each row of a frame unique on person_id) gets the key check recorded as proved after the gate
checks the proof's premise, with the same ops_dq_results rows as a full check; a premise that does
not hold falls back to the full check, which stops the write. Real GX validations and Delta tables."""

import datetime as dt
import itertools

import pytest
from pyspark.sql import functions as F

from expectations.gate import DQ_TABLE, QualityGate, QualityGateError, build_docs
from spark_jobs.config import CdpConfig, PathsConfig, QualityConfig
from spark_jobs.tables import Lakehouse, read_pandas
from spark_jobs.tags import build_tags, tags_key_proof

DAY = dt.date(2026, 11, 1)
KEY_CHECK = "expect_compound_columns_to_be_unique(person_id,tag)"


@pytest.fixture
def lakehouse(spark, tmp_path):
    """A lakehouse on the engine under test (conftest's is on Sail)."""
    return Lakehouse(spark, str(tmp_path / "lakehouse"))


def _cfg(lh, tmp_path, prove=True):
    return CdpConfig(paths=PathsConfig(lakehouse=lh.root, landing=str(tmp_path / "landing")),
                     quality=QualityConfig(prove_keys=prove, docs=str(tmp_path / "dq")))


def _wide(spark, cfg, people):
    """A wide tag frame over three of the configured tags (their declared types)."""
    types = dict(itertools.islice(cfg.tags.types.items(), 3))
    value = {"string": F.lit("x"), "boolean": F.lit(True)}
    cols = [F.col("person_id"), F.lit(DAY).alias("as_of")]
    cols += [value.get(t, F.lit(1)).cast(t).alias(n) for n, t in types.items()]
    return spark.createDataFrame([(p,) for p in people], "person_id string").select(*cols), types


def _rows(lh, cfg, run_id):
    dq = read_pandas(lh.root, DQ_TABLE)
    return dq[dq["run_id"] == run_id].set_index("expectation")


def test_a_proved_key_records_the_same_rows_as_the_full_check(spark, lakehouse, tmp_path):
    cfg = _cfg(lakehouse, tmp_path)
    wide, types = _wide(spark, cfg, [f"p_{i:020x}" for i in range(50)])
    tags = build_tags(wide, types)
    QualityGate(lakehouse, cfg, "proved", DAY).check("gold_tags", tags, {"as_of": DAY}, tags_key_proof(wide))
    QualityGate(lakehouse, _cfg(lakehouse, tmp_path, prove=False), "checked", DAY).check(
        "gold_tags", tags, {"as_of": DAY}, tags_key_proof(wide))
    proved, checked = _rows(lakehouse, cfg, "proved"), _rows(lakehouse, cfg, "checked")
    assert sorted(proved.index) == sorted(checked.index)
    assert bool(proved.loc[KEY_CHECK, "success"]) and bool(checked.loc[KEY_CHECK, "success"])
    assert proved.loc[KEY_CHECK, "observed_value"].startswith("proved: ")
    assert "50 rows unique on person_id" in proved.loc[KEY_CHECK, "observed_value"]
    assert proved.loc[KEY_CHECK, "unexpected_count"] == 0
    assert checked.loc[KEY_CHECK, "observed_value"] is None
    others = proved.index.drop(KEY_CHECK)
    assert (proved.loc[others, "success"] == checked.loc[others, "success"]).all()
    # Data Docs list the proved check as passed, with its proof.
    html = "".join(p.read_text() for p in build_docs(cfg, "proved").parent.rglob("*.html"))
    assert "proved: one row per tag" in html


def test_a_premise_that_does_not_hold_falls_back_to_the_full_check(spark, lakehouse, tmp_path):
    cfg = _cfg(lakehouse, tmp_path)
    wide, types = _wide(spark, cfg, ["p_00000000000000000001", "p_00000000000000000001", "p_00000000000000000002"])
    gate = QualityGate(lakehouse, cfg, "duplicate", DAY)
    with pytest.raises(QualityGateError, match=r"expect_compound_columns_to_be_unique\(person_id,tag\)"):
        gate.check("gold_tags", build_tags(wide, types), {"as_of": DAY}, tags_key_proof(wide))
    row = _rows(lakehouse, cfg, "duplicate").loc[KEY_CHECK]
    assert not bool(row["success"]) and row["unexpected_count"] == 2 * len(types)


def test_a_null_in_the_premise_key_is_no_proof(spark, lakehouse, tmp_path):
    cfg = _cfg(lakehouse, tmp_path)
    wide, types = _wide(spark, cfg, ["p_00000000000000000001", None])
    gate = QualityGate(lakehouse, cfg, "null", DAY)
    with pytest.raises(QualityGateError, match=r"not_be_null\(person_id\)"):
        gate.check("gold_tags", build_tags(wide, types), {"as_of": DAY}, tags_key_proof(wide))
    assert _rows(lakehouse, cfg, "null").loc[KEY_CHECK, "observed_value"] is None  # checked, not proved
