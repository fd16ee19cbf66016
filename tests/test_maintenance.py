"""Delta upkeep (delta-rs) on tables Sail wrote, read back through Sail and through delta-rs."""

import datetime as dt
import json
import os
import shutil
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from pyspark.errors.exceptions.connect import SparkConnectException

from spark_jobs import maintenance
from spark_jobs.config import load_config
from spark_jobs.contracts import UnknownTableError, contract
from spark_jobs.maintenance import CommitConflictError, MaintenanceError
from spark_jobs.tables import TableNotFoundError
from tests.conftest import contract_frame

D1, D2, D3 = dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)
TS = dt.datetime(2026, 11, 1, 3, 0)
TABLE = "bronze_orders"


def _orders(spark, day, ids, files=4):
    """Orders of one batch, written as `files` small files."""
    rows = [{"order_id": i, "member_id": "M1", "phone": "+8613912345678", "items": "s:1", "amount": Decimal("12.50"),
             "paid_time": TS, "category": "shoes", "_source": "orders", "_source_file": f"orders/{day}/p.csv", "_line": n + 1,
             "_batch_date": day, "_ingested_at": TS, "_row_hash": f"h{i}"} for n, i in enumerate(ids)]
    return contract_frame(spark, TABLE, rows).repartition(files)


@pytest.fixture
def orders(lakehouse, sail):
    """bronze_orders in 4 versions (create, D1, D2, D1 replaced), 4 small files per write: 8 current
    files in 2 partitions, 4 removed ones."""
    lakehouse.write_partition(TABLE, _orders(sail, D1, [f"A{i}" for i in range(8)]), {"_batch_date": D1})
    lakehouse.write_partition(TABLE, _orders(sail, D2, [f"B{i}" for i in range(8)]), {"_batch_date": D2})
    lakehouse.write_partition(TABLE, _orders(sail, D1, [f"C{i}" for i in range(8)]), {"_batch_date": D1})
    assert lakehouse.version(TABLE) == 3
    return lakehouse


def _sail_rows(spark, path, version=None):
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return sorted(map(tuple, reader.load(path).select(*contract(TABLE).column_names).collect()))


def _delta_rows(path, version=None):
    rows = DeltaTable(path, version=version).to_pyarrow_table(columns=contract(TABLE).column_names).to_pylist()
    return sorted(tuple(r.values()) for r in rows)


def _files_per_partition(path):
    return {p.name: len(list(p.rglob("*.parquet"))) for p in sorted(Path(path).glob("_batch_date=*"))}


def _current_files(path):
    return set(pa.table(DeltaTable(path).get_add_actions()).column("path").to_pylist())


def test_tables_lists_only_existing_contract_tables(orders, sail):
    assert maintenance.tables(orders.root) == [TABLE]
    orders.write_partition("silver_orders", contract_frame(sail, "silver_orders", []), {"_batch_date": D1})
    assert maintenance.tables(orders.root) == [TABLE, "silver_orders"]  # contract order
    assert maintenance.tables(orders.root + "/nowhere") == []


def test_compact_merges_small_files_per_partition_and_keeps_the_rows(orders, sail):
    path = orders.path(TABLE)
    sail_before, delta_before = _sail_rows(sail, path), _delta_rows(path)
    assert len(sail_before) == 16 and len(_current_files(path)) == 8

    result = maintenance.compact(orders.root, TABLE, target_size_mb=1)

    assert result["files_before"] == 8 and result["files_after"] == 2
    assert (result["files_removed"], result["files_added"], result["partitions_compacted"]) == (8, 2, 2)
    assert result["version_after"] == 5  # one commit per compacted partition
    assert {tuple(c["partition"].items()): (c["files_before"], c["files_after"]) for c in result["compacted"]} == {
        (("_batch_date", "2026-11-01"), ("_source", "orders")): (4, 1), (("_batch_date", "2026-11-02"), ("_source", "orders")): (4, 1)}
    assert len(_current_files(path)) == 2
    assert _sail_rows(sail, path) == sail_before and _delta_rows(path) == delta_before
    assert [h["operation"] for h in maintenance.history(orders.root, TABLE, 2)] == ["OPTIMIZE", "OPTIMIZE"]
    assert DeltaTable(path).protocol().min_writer_version == 2  # delta-rs does not upgrade Sail's protocol


def test_compact_leaves_a_table_sail_still_writes(orders, sail):
    maintenance.compact(orders.root, TABLE)
    path = orders.path(TABLE)
    orders.write_partition(TABLE, _orders(sail, D1, ["R1"], files=1), {"_batch_date": D1})  # replaceWhere
    _orders(sail, D3, ["N1", "N2"], files=1).write.format("delta").mode("append").save(path)
    ids = sorted(r[0] for r in _sail_rows(sail, path))
    assert ids == ["B0", "B1", "B2", "B3", "B4", "B5", "B6", "B7", "N1", "N2", "R1"]
    assert sorted(r[0] for r in _delta_rows(path)) == ids


def test_compact_again_or_dry_run_commits_nothing(orders, sail):
    plan = maintenance.compact(orders.root, TABLE, dry_run=True)
    assert (plan["files_removed"], plan["files_after"], plan["partitions_compacted"]) == (8, 2, 2)
    assert plan["version_after"] == 3 and len(_current_files(orders.path(TABLE))) == 8
    maintenance.compact(orders.root, TABLE)
    again = maintenance.compact(orders.root, TABLE)
    assert (again["files_removed"], again["partitions_compacted"], again["version_before"], again["version_after"]) == (0, 0, 5, 5)


def test_compact_concurrent_write_is_reported_as_a_conflict(orders, sail, monkeypatch):
    path = orders.path(TABLE)
    stale = DeltaTable(path)  # what maintenance read before the daily run committed
    orders.write_partition(TABLE, _orders(sail, D2, ["Z1", "Z2"], files=2), {"_batch_date": D2})
    monkeypatch.setattr(maintenance, "_open", lambda root, name: stale)
    with pytest.raises(CommitConflictError, match="concurrent write committed while compacting"):
        maintenance.compact(orders.root, TABLE)
    monkeypatch.undo()
    batch = contract(TABLE).column_names.index("_batch_date")
    assert sorted(r[0] for r in _sail_rows(sail, path) if r[batch] == D2) == ["Z1", "Z2"]
    assert maintenance.compact(orders.root, TABLE)["files_after"] == 2  # a re-run succeeds


def test_vacuum_dry_run_lists_removed_files_and_deletes_nothing(orders):
    path = orders.path(TABLE)
    maintenance.compact(orders.root, TABLE)
    on_disk = sorted(Path(path).rglob("*.parquet"))
    result = maintenance.vacuum(orders.root, TABLE, retention_hours=0, dry_run=True, force=True)
    assert result["files_deleted"] == 12 and result["bytes_deleted"] > 0  # 4 replaced + 8 compacted away
    assert not set(result["files"]) & _current_files(path)
    assert sorted(Path(path).rglob("*.parquet")) == on_disk
    assert maintenance.vacuum(orders.root, TABLE, dry_run=True)["files"] == []  # all removed just now: kept 168 h


def test_vacuum_deletes_only_unreferenced_files_and_time_travel_to_them_fails(orders, sail):
    path = orders.path(TABLE)
    current_v3 = _sail_rows(sail, path)
    maintenance.compact(orders.root, TABLE)
    assert maintenance.vacuum(orders.root, TABLE)["files_deleted"] == 0  # inside the default retention

    result = maintenance.vacuum(orders.root, TABLE, retention_hours=0, force=True)

    assert result["files_deleted"] == 12
    assert sorted(str(p.relative_to(path)) for p in Path(path).rglob("*.parquet")) == sorted(_current_files(path))
    assert _sail_rows(sail, path) == current_v3 and len(_delta_rows(path)) == 16
    with pytest.raises(SparkConnectException, match="not found"):  # that version's files are gone
        _sail_rows(sail, path, version=1)
    with pytest.raises(FileNotFoundError):
        _delta_rows(path, version=3)
    assert [h["operation"] for h in maintenance.history(orders.root, TABLE, 2)] == ["VACUUM END", "VACUUM START"]
    again = maintenance.vacuum(orders.root, TABLE, retention_hours=0, force=True)  # delta-rs lists them again
    assert again["files_deleted"] == 0 and again["version_after"] == result["version_after"]


def test_vacuum_removes_files_no_commit_added_only_after_the_retention(orders):
    # What a failed or running write leaves: a data file the log does not know (a Sail write that a
    # contract guard stops can leave some, depending on which tasks finished first).
    path = Path(orders.path(TABLE))
    uncommitted = "_batch_date=2026-11-01/_source=orders/part-00009-uncommitted-c000.snappy.parquet"
    shutil.copy(next(path.glob("_batch_date=2026-11-01/_source=orders/*.parquet")), path / uncommitted)
    assert uncommitted not in maintenance.vacuum(orders.root, TABLE, dry_run=True)["files"]  # could be in flight
    old = dt.datetime.now().timestamp() - 200 * 3600
    os.utime(path / uncommitted, (old, old))
    assert maintenance.vacuum(orders.root, TABLE)["files"] == [uncommitted]
    assert not (path / uncommitted).exists() and len(_delta_rows(str(path))) == 16


def test_vacuum_refuses_a_retention_below_the_minimum(orders, tmp_path):
    with pytest.raises(MaintenanceError, match=r"retention 24 h is below the minimum 168 h.*--force"):
        maintenance.vacuum(orders.root, TABLE, retention_hours=24)
    with pytest.raises(MaintenanceError, match="below the minimum 48 h"):
        maintenance.vacuum(orders.root, TABLE, retention_hours=24, min_retention_hours=48)
    assert maintenance.vacuum(orders.root, TABLE, retention_hours=24, min_retention_hours=24)["files_deleted"] == 0
    cfg = load_config(env={"CDP_LAKEHOUSE": orders.root})
    with pytest.raises(MaintenanceError, match="below the minimum"):
        maintenance.run(cfg, retention_hours=1)
    assert DeltaTable(orders.path(TABLE)).version() == 3  # refused before anything ran


def test_restore_brings_back_an_earlier_version_as_a_new_version(orders, sail):
    path = orders.path(TABLE)
    sail_v2, delta_v2 = _sail_rows(sail, path, version=2), _delta_rows(path, version=2)
    assert sail_v2 != _sail_rows(sail, path)

    result = maintenance.restore(orders.root, TABLE, version=2)

    assert result == {"table": TABLE, "version_before": 3, "restored_version": 2, "version_after": 4,
                      "files_restored": 4, "files_removed": 4}
    assert _sail_rows(sail, path) == sail_v2 and _delta_rows(path) == delta_v2
    assert maintenance.history(orders.root, TABLE, 1)[0]["operation"] == "RESTORE"
    orders.write_partition(TABLE, _orders(sail, D2, ["N1"], files=1), {"_batch_date": D2})  # Sail writes on
    assert sorted(r[0] for r in _sail_rows(sail, path))[-1] == "N1"


def test_restore_by_timestamp_takes_the_version_current_then(orders, sail):
    path = orders.path(TABLE)
    v2 = next(h for h in maintenance.history(orders.root, TABLE) if h["version"] == 2)
    at = dt.datetime.fromisoformat(v2["timestamp"])
    assert maintenance.restore(orders.root, TABLE, timestamp=at.isoformat())["restored_version"] == 2
    assert _sail_rows(sail, path) == _sail_rows(sail, path, version=2)
    with pytest.raises(MaintenanceError, match="no version at or before 2000-01-01"):
        maintenance.restore(orders.root, TABLE, timestamp="2000-01-01T00:00:00")


def test_restore_unknown_version_or_table_is_a_clear_error(orders):
    with pytest.raises(MaintenanceError, match="restore to a version from 0 to 2, not 9"):
        maintenance.restore(orders.root, TABLE, version=9)
    with pytest.raises(MaintenanceError, match="current version"):
        maintenance.restore(orders.root, TABLE, version=3)
    with pytest.raises(MaintenanceError, match="exactly one"):
        maintenance.restore(orders.root, TABLE)
    with pytest.raises(UnknownTableError, match="declared tables"):
        maintenance.restore(orders.root, "bronze_nope", version=1)
    with pytest.raises(TableNotFoundError, match="gold_profiles does not exist"):
        maintenance.restore(orders.root, "gold_profiles", version=1)
    assert DeltaTable(orders.path(TABLE)).version() == 3


def test_restore_of_a_vacuumed_version_is_a_clear_error(orders):
    maintenance.compact(orders.root, TABLE)
    maintenance.vacuum(orders.root, TABLE, retention_hours=0, force=True)
    with pytest.raises(MaintenanceError, match="cannot restore version 1.*vacuumed"):
        maintenance.restore(orders.root, TABLE, version=1)


def test_run_compacts_vacuums_checkpoints_and_a_rerun_changes_nothing(orders, sail):
    path = orders.path(TABLE)
    cfg = load_config(env={"CDP_LAKEHOUSE": orders.root})
    sail_before, delta_before = _sail_rows(sail, path), _delta_rows(path)

    first = maintenance.run(cfg)

    done = first["tables"][TABLE]
    assert first["conflicts"] == [] and first["totals"]["tables"] == 1
    assert (done["compact"]["files_before"], done["compact"]["files_after"]) == (8, 2)
    assert done["vacuum"]["files_deleted"] == 0  # removed files are younger than 168 h
    assert done["checkpoint"]["version"] == 5 and (Path(path) / "_delta_log/_last_checkpoint").exists()
    assert _files_per_partition(path) == {"_batch_date=2026-11-01": 9, "_batch_date=2026-11-02": 5}  # 1 live each
    json.dumps(first)  # fits an XCom

    second = maintenance.run(cfg, tables=[TABLE])

    assert second["totals"]["files_removed"] == 0 and second["totals"]["partitions_compacted"] == 0
    assert DeltaTable(path).version() == 5
    assert _sail_rows(sail, path) == sail_before and _delta_rows(path) == delta_before


def test_run_forced_short_retention_and_dry_run(orders, sail):
    cfg = load_config(env={"CDP_LAKEHOUSE": orders.root})
    path = orders.path(TABLE)
    plan = maintenance.run(cfg, retention_hours=0, force=True, dry_run=True)
    assert plan["tables"][TABLE]["vacuum"]["files_deleted"] == 4 and plan["tables"][TABLE]["checkpoint"] is None
    assert DeltaTable(path).version() == 3 and len(list(Path(path).rglob("*.parquet"))) == 12
    result = maintenance.run(cfg, retention_hours=0, force=True)
    assert result["totals"]["files_vacuumed"] == 12  # compaction ran first: its removals go too
    assert _files_per_partition(path) == {"_batch_date=2026-11-01": 1, "_batch_date=2026-11-02": 1}
    with pytest.raises(TableNotFoundError, match="gold_tags"):
        maintenance.run(cfg, tables=["gold_tags"])
    with pytest.raises(UnknownTableError):
        maintenance.run(cfg, tables=["gold_nope"])


@pytest.fixture
def cli(orders, monkeypatch):
    from typer.testing import CliRunner

    from spark_jobs.cli import app

    monkeypatch.setenv("CDP_LAKEHOUSE", orders.root)
    return lambda *args: CliRunner().invoke(app, ["table", *args])


def test_cli_history_restore_and_maintain(cli, orders, sail):
    path = orders.path(TABLE)
    history = cli("history", TABLE, "--limit", "2")
    assert history.exit_code == 0, history.output
    assert [line.split()[0] for line in history.stdout.splitlines()] == ["3", "2"]
    assert json.loads(cli("history", TABLE, "--json").stdout)[-1]["operation"] == "CREATE TABLE"

    v1 = _sail_rows(sail, path, version=1)
    restored = cli("restore", TABLE, "--version", "1")
    assert restored.exit_code == 0 and json.loads(restored.stdout)["version_after"] == 4
    assert _sail_rows(sail, path) == v1

    plan = cli("maintain", "--dry-run", "--table", TABLE)
    assert plan.exit_code == 0, plan.output
    assert json.loads(plan.stdout)["tables"][TABLE]["compact"]["files_removed"] == 4
    assert DeltaTable(path).version() == 4


@pytest.mark.parametrize(("args", "says"), [
    (("history", "bronze_nope"), "unknown table 'bronze_nope'"),
    (("history", "gold_tags"), "does not exist"),
    (("restore", TABLE, "--version", "42"), "not 42"),
    (("restore", TABLE), "exactly one of version or timestamp"),
    (("restore", TABLE, "--timestamp", "yesterday"), "ISO 8601"),
    (("maintain", "--retention-hours", "1"), "below the minimum"),
    (("maintain", "--table", "gold_nope"), "unknown table 'gold_nope'"),
])
def test_cli_user_errors_exit_2_with_the_reason(cli, orders, args, says):
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert says in result.stderr and "Traceback" not in result.output
    assert DeltaTable(orders.path(TABLE)).version() == 3



def test_checkpoint_deletes_expired_log_files_and_sail_still_reads(orders, sail):
    path = orders.path(TABLE)
    maintenance.compact(orders.root, TABLE)  # versions 4 and 5
    assert maintenance.checkpoint(orders.root, TABLE) == {"table": TABLE, "version": 5, "log_files_deleted": 0}
    month_ago = dt.datetime.now().timestamp() - 40 * 24 * 3600
    for f in Path(path, "_delta_log").glob("0*"):
        os.utime(f, (month_ago, month_ago))  # older than delta.logRetentionDuration (30 days)
    orders.write_partition(TABLE, _orders(sail, D3, ["N1"], files=1), {"_batch_date": D3})
    rows = _sail_rows(sail, path)

    result = maintenance.checkpoint(orders.root, TABLE)

    # Commits before the newest expired checkpoint (version 5) go; that checkpoint keeps the table readable.
    assert result["version"] == 6 and result["log_files_deleted"] > 0
    assert not list(Path(path, "_delta_log").glob("00000000000000000000.json"))
    assert _sail_rows(sail, path) == rows and len(_delta_rows(path)) == 17
    assert [h["version"] for h in maintenance.history(orders.root, TABLE)] == [6]
    assert sorted(f.name for f in Path(path, "_delta_log").iterdir()) == [
        "00000000000000000006.checkpoint.parquet", "00000000000000000006.crc", "00000000000000000006.json",
        "_last_checkpoint"]  # Sail's checksums of the deleted commits go too
    with pytest.raises(MaintenanceError, match="cannot restore version 2"):
        maintenance.restore(orders.root, TABLE, version=2)  # its log expired
    orders.write_partition(TABLE, _orders(sail, D3, ["N2"], files=1), {"_batch_date": D3})
    assert len(_sail_rows(sail, path)) == 17


def test_compact_unpartitioned_table_as_one(lakehouse, sail):
    rows = [{"person_id": f"P{i}", "as_of": D1} for i in range(9)]
    lakehouse.write_table("gold_profile_tags", contract_frame(sail, "gold_profile_tags", rows).repartition(3))
    path = lakehouse.path("gold_profile_tags")
    before = sorted(map(tuple, sail.read.format("delta").load(path).collect()))
    result = maintenance.compact(lakehouse.root, "gold_profile_tags")
    assert (result["files_before"], result["files_after"], result["compacted"][0]["partition"]) == (3, 1, {})
    assert sorted(map(tuple, sail.read.format("delta").load(path).collect())) == before


def test_maintenance_config_defaults_and_rejects_retention_below_minimum(tmp_path):
    from spark_jobs.config import ConfigError

    m = load_config(env={}).maintenance
    assert (m.retention_hours, m.min_retention_hours, m.target_file_mb) == (168, 168, 128)
    conf = tmp_path / "cdp.yaml"
    conf.write_text("maintenance:\n  retention_hours: 24\n")
    with pytest.raises(ConfigError, match="maintenance.*below min_retention_hours 168"):
        load_config(conf, env={})
