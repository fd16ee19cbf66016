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
from spark_jobs.tables import Lakehouse, TableNotFoundError, read_pandas, table_path
from spark_jobs.tags import build_tags, tags_key_proof
from tests.conftest import contract_frame

DAY = dt.date(2026, 11, 1)
TRANSITION = {"as_of": DAY, "transition": "t", "from_date": DAY - dt.timedelta(days=1), "from_state": "new",
              "to_state": "active", "people": 3, "share": 0.5}
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
    with QualityGate(lakehouse, cfg, "proved", DAY) as gate:
        gate.check("gold_tags", tags, {"as_of": DAY}, tags_key_proof(wide))
    with QualityGate(lakehouse, _cfg(lakehouse, tmp_path, prove=False), "checked", DAY) as gate:
        gate.check("gold_tags", tags, {"as_of": DAY}, tags_key_proof(wide))
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
    with pytest.raises(QualityGateError, match=r"expect_compound_columns_to_be_unique\(person_id,tag\)"), \
            QualityGate(lakehouse, cfg, "duplicate", DAY) as gate:
        gate.check("gold_tags", build_tags(wide, types), {"as_of": DAY}, tags_key_proof(wide))
    row = _rows(lakehouse, cfg, "duplicate").loc[KEY_CHECK]
    assert not bool(row["success"]) and row["unexpected_count"] == 2 * len(types)


def test_a_null_in_the_premise_key_is_no_proof(spark, lakehouse, tmp_path):
    cfg = _cfg(lakehouse, tmp_path)
    wide, types = _wide(spark, cfg, ["p_00000000000000000001", None])
    with pytest.raises(QualityGateError, match=r"not_be_null\(person_id\)"), QualityGate(lakehouse, cfg, "null", DAY) as gate:
        gate.check("gold_tags", build_tags(wide, types), {"as_of": DAY}, tags_key_proof(wide))
    assert _rows(lakehouse, cfg, "null").loc[KEY_CHECK, "observed_value"] is None  # checked, not proved


def test_a_stages_results_are_one_commit_and_a_retry_replaces_its_own(spark, lakehouse, tmp_path):
    """The gate queues its results and commits them once when the stage ends (failures included); a
    retry of the same run id replaces its rows, another run's stay."""
    from deltalake import DeltaTable

    cfg = _cfg(lakehouse, tmp_path)
    wide, types = _wide(spark, cfg, [f"p_{i:020x}" for i in range(20)])
    tags, proof = build_tags(wide, types), tags_key_proof(wide)
    with QualityGate(lakehouse, cfg, "first", DAY) as gate:
        gate.check("gold_tags", tags, {"as_of": DAY}, proof)
        gate.check("gold_transitions", contract_frame(spark, "gold_transitions", [TRANSITION]), {"as_of": DAY})
        with pytest.raises(TableNotFoundError):
            read_pandas(lakehouse.root, DQ_TABLE)  # nothing committed before the stage ends
    path = table_path(lakehouse.root, DQ_TABLE)
    once = DeltaTable(path).version()
    first = read_pandas(lakehouse.root, DQ_TABLE)
    assert set(first["table_name"]) == {"gold_tags", "gold_transitions"} and first["check_key"].nunique() == 2
    for _ in range(2):  # an Airflow retry reuses the run id
        with QualityGate(lakehouse, cfg, "second", DAY) as gate:
            gate.check("gold_tags", tags, {"as_of": DAY}, proof)
            gate.check("gold_tags", tags, {"as_of": DAY}, proof)  # the same scope checked again: the later result
    dq = read_pandas(lakehouse.root, DQ_TABLE)
    assert DeltaTable(path).version() == once + 2  # one commit per gate
    assert len(dq[dq["run_id"] == "first"]) == len(first)
    assert len(dq[dq["run_id"] == "second"]) == len(first[first["table_name"] == "gold_tags"])
    duplicate = build_tags(*_wide(spark, cfg, ["p_00000000000000000001"] * 2))
    with pytest.raises(QualityGateError), QualityGate(lakehouse, cfg, "failed", DAY) as gate:
        gate.check("gold_tags", tags, {"as_of": DAY}, proof)
        gate.check("gold_tags", duplicate, {"as_of": DAY}, None)  # stops the stage
    failed = read_pandas(lakehouse.root, DQ_TABLE).query("run_id == 'failed'")
    assert failed["check_key"].nunique() == 1 and not failed["success"].all()  # same scope: the failing check's rows
