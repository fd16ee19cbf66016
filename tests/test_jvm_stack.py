"""The design card's JVM stack for real: JVM Spark with delta-spark (engine `classic`) runs the whole
daily pipeline and writes the same Delta tables as Sail, row for row; a table written by one engine is
appended to by the other and both agree with delta-rs. Real `cdp run` processes, real JARs from
conf/jars.txt (make jars). Marked e2e and slow."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from deltalake import DeltaTable

from spark_jobs.generate import NoiseRates, generate
from spark_jobs.session import delta_jars, pinned_jars
from tests.lakehouse_compare import assert_same_tables, cdp, table

START = dt.date(2026, 11, 1)
# One day of a small world: JVM Spark spends most of a small day on fixed per-query costs (ingest and
# standardise of 800 people x 2 days took 464 + 211 s on day 1 against Sail's 40 s for the whole day),
# so more data adds CI minutes, not coverage; the two-batch paths are covered on Sail (test_pipeline).
DAYS = 1


@pytest.fixture(scope="module")
def two_engines(tmp_path_factory):
    """One generated world, its daily runs through `cdp run` on Sail and on JVM Spark with Delta."""
    base = tmp_path_factory.mktemp("jvm-stack")
    generate(base / "landing", people=400, days=DAYS, seed=7, start=START, noise=NoiseRates.preset("retail"))
    roots = {}
    for kind in ("local", "classic"):
        env = {**os.environ, "CDP_ENGINE": kind, "CDP_LANDING": str(base / "landing"),
               "CDP_LAKEHOUSE": str(base / kind / "lakehouse"), "CDP_EXPORTS": str(base / kind / "exports")}
        env.pop("SPARK_CONNECT_MODE_ENABLED", None)
        for i in range(DAYS):
            day = (START + dt.timedelta(days=i)).isoformat()
            done = cdp(env, "run", "--date", day)
            assert done.returncode == 0, f"cdp run --date {day} on {kind}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        roots[kind] = base / kind / "lakehouse"
    return roots


pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_pinned_jars_are_local_files_with_the_pinned_checksums():
    import hashlib

    rows = pinned_jars("delta")
    assert [c.split(":")[1] for c, _, _ in rows] == ["delta-spark_4.2_2.13", "delta-storage"]
    for path, (_coord, sha1, _set) in zip(delta_jars(), rows, strict=True):
        assert hashlib.sha1(Path(path).read_bytes()).hexdigest() == sha1, path


def test_jvm_spark_with_delta_runs_the_daily_pipeline_and_writes_sails_tables_row_for_row(two_engines):
    sail, jvm = two_engines["local"], two_engines["classic"]
    assert_same_tables(sail, jvm)
    assert table(jvm, "gold_profiles").history()[-1]["operation"] != ""


def test_the_jvm_engine_writes_through_delta_spark(two_engines):
    """The JVM's tables are Delta tables committed by delta-spark (its engineInfo), not by Sail or delta-rs."""
    profiles = table(two_engines["classic"], "gold_profiles")
    info = [h.get("engineInfo", "") for h in profiles.history()]
    assert any("Delta-Lake" in i or "Apache-Spark" in i for i in info), info


def test_a_table_written_by_one_engine_is_appended_to_by_the_other_and_delta_rs_agrees(tmp_path, monkeypatch):
    """JVM Spark (delta-spark) creates a partitioned Delta table, Sail replaces one partition and adds
    another, JVM Spark adds a third: all three readers see the same rows, and the log has all commits."""
    from spark_jobs.tables import Lakehouse
    from tests.conftest import _use, contract_frame

    root = str(tmp_path / "lh")

    def rows(day: str, n: int, tag: str) -> list[dict]:
        return [{"person_id": f"p{i:03d}", "tag": tag, "value": f"v{i}", "value_type": "string", "as_of": dt.date.fromisoformat(day)}
                for i in range(n)]

    def write(kind: str, day: str, n: int, tag: str) -> None:
        spark = _use(kind, monkeypatch)
        df = contract_frame(spark, "gold_tags", rows(day, n, tag))
        Lakehouse(spark, root).write_partition("gold_tags", df, {"as_of": dt.date.fromisoformat(day)})

    write("jvm", "2026-11-01", 5, "a")
    write("sail", "2026-11-01", 3, "b")   # replaces the JVM's partition
    write("sail", "2026-11-02", 4, "c")
    write("jvm", "2026-11-03", 2, "d")
    want = sorted((r["person_id"], r["tag"], str(r["as_of"])) for r in
                  rows("2026-11-01", 3, "b") + rows("2026-11-02", 4, "c") + rows("2026-11-03", 2, "d"))

    def seen(kind: str) -> list[tuple]:
        got = Lakehouse(_use(kind, monkeypatch), root).read("gold_tags").collect()
        return sorted((r["person_id"], r["tag"], str(r["as_of"])) for r in got)

    assert seen("sail") == want
    assert seen("jvm") == want
    tags = DeltaTable(f"{root}/gold/gold_tags")
    assert sorted((r["person_id"], r["tag"], str(r["as_of"])) for r in tags.to_pyarrow_table().to_pylist()) == want
    assert tags.version() >= 4


def test_delta_rs_maintenance_works_on_tables_delta_spark_wrote(tmp_path, monkeypatch):
    """cdp maintain (delta-rs) compacts, checkpoints, lists and restores a table JVM Spark wrote, and JVM
    Spark reads and appends to it afterwards. delta-spark on a local file system also writes Hadoop
    checksum files (.<name>.crc) into _delta_log; the checkpoint's log cleanup used to crash on them."""
    from spark_jobs import maintenance
    from spark_jobs.tables import Lakehouse
    from tests.conftest import _use, contract_frame

    jvm = _use("jvm", monkeypatch)
    root = str(tmp_path / "lh")
    lh = Lakehouse(jvm, root)

    def write(day: dt.date, n: int) -> None:
        rows = [{"person_id": f"p{i}", "tag": "t", "value": str(i), "value_type": "long", "as_of": day} for i in range(n)]
        lh.write_partition("gold_tags", contract_frame(jvm, "gold_tags", rows).repartition(3), {"as_of": day})

    for d in range(3):
        write(START + dt.timedelta(days=d), 50)
    log = tmp_path / "lh" / "gold" / "gold_tags" / "_delta_log"
    assert any(p.name.startswith(".") and p.name.endswith(".crc") for p in log.iterdir())
    compacted = maintenance.compact(root, "gold_tags")
    assert (compacted["files_before"], compacted["files_after"]) == (9, 3)
    assert maintenance.checkpoint(root, "gold_tags")["version"] == compacted["version_after"]
    assert [h["operation"] for h in maintenance.history(root, "gold_tags")][:3] == ["OPTIMIZE"] * 3
    restored = maintenance.restore(root, "gold_tags", version=2)  # 0 created it empty; 1-3 wrote the days
    assert restored["restored_version"] == 2 and lh.read("gold_tags").count() == 100
    write(START + dt.timedelta(days=9), 1)
    assert lh.read("gold_tags").count() == 101
    assert DeltaTable(f"{root}/gold/gold_tags").to_pyarrow_table().num_rows == 101
