"""Delta table upkeep through delta-rs (no Spark): compacts, vacuums, checkpoints, lists and restores the
versions of the CDP tables under <lakehouse>/<layer>/<table>.

Sail has no OPTIMIZE, VACUUM, RESTORE or DESCRIBE HISTORY; delta-rs reads and writes the same tables.
Paths are passed to delta-rs as they are: local paths are what is tested; an object-store lakehouse
gets its credentials from the environment (AWS_*, AZURE_*, GOOGLE_*), as everywhere else in
spark_jobs.tables, since the config has no storage options.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import time
from collections.abc import Iterable

from spark_jobs.contracts import CONTRACTS, contract
from spark_jobs.tables import TableNotFoundError, table_path

log = logging.getLogger(__name__)

_MB = 1024 * 1024
DEFAULT_RETENTION_HOURS = 168  # the Delta default (delta.deletedFileRetentionDuration)
DEFAULT_TARGET_FILE_MB = 128


class MaintenanceError(ValueError):
    """A maintenance request that cannot be done as asked (version, timestamp, retention); the message says why."""


class CommitConflictError(RuntimeError):
    """A concurrent write (e.g. the daily DAG) committed first; nothing half-done is left. Re-run: every
    maintenance step is idempotent."""

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result  # what run() did on the other tables


def tables(root: str) -> list[str]:
    """The contract tables that exist under `root`, in contract order."""
    from deltalake import DeltaTable

    return [name for name in CONTRACTS if DeltaTable.is_deltatable(table_path(root, name))]


_existing = tables  # run() takes a `tables` argument


def _check_retention(what: str, retention_hours: int, floor: int, force: bool) -> None:
    if retention_hours < 0:
        raise MaintenanceError(f"{what}: retention must be 0 hours or more, got {retention_hours}")
    if retention_hours < floor and not force:
        raise MaintenanceError(
            f"{what}: vacuum retention {retention_hours} h is below the minimum {floor} h "
            f"(maintenance.min_retention_hours, or the table's delta.deletedFileRetentionDuration): running "
            f"writes and readers of recent versions may still need those files. Use a longer retention, "
            f"or force it (--force) when nothing else uses the table."
        )


def _open(root: str, name: str):
    from deltalake import DeltaTable

    contract(name)  # UnknownTableError names the declared tables
    path = table_path(root, name)
    if not DeltaTable.is_deltatable(path):
        raise TableNotFoundError(f"table {name} does not exist at {path}: run the stage that writes it first")
    return DeltaTable(path)


def _conflict(name: str, what: str, e: Exception) -> CommitConflictError:
    return CommitConflictError(
        f"{name}: a concurrent write committed while {what}, so this commit was refused and the table is "
        f"as that write left it; re-run maintenance (it is idempotent). delta-rs: {str(e).splitlines()[0]}"
    )


def _partition_value(v: object) -> str | None:
    return v.isoformat() if isinstance(v, dt.date | dt.datetime) else (None if v is None else str(v))


def _files_by_partition(t, partition_by: tuple[str, ...]) -> dict[tuple, list[int]]:
    """Sizes of the table's current files, grouped by partition values (as Delta writes them)."""
    import pyarrow as pa

    actions = pa.table(t.get_add_actions(flatten=True))
    sizes = actions.column("size_bytes").to_pylist() if actions.num_rows else []
    keys = [actions.column(f"partition.{p}").to_pylist() for p in partition_by] if actions.num_rows else []
    groups: dict[tuple, list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault(tuple(_partition_value(k[i]) for k in keys), []).append(size)
    return groups


def compact(root: str, name: str, target_size_mb: int = DEFAULT_TARGET_FILE_MB, dry_run: bool = False) -> dict:
    """Bin-pack the small files of each partition into files of about `target_size_mb` (delta-rs
    optimize.compact, dataChange=false: readers see the same rows). Only partitions with two or more
    files below the target are rewritten, one commit each; a table with none gets no commit. dry_run
    plans without writing (files_added is then an estimate). Raises CommitConflictError when a concurrent
    write wins; partitions committed before it stay compacted."""
    from deltalake.exceptions import CommitFailedError

    if target_size_mb < 1:
        raise MaintenanceError(f"target size must be at least 1 MB, got {target_size_mb}")
    started = time.monotonic()
    c = contract(name)
    t = _open(root, name)
    target = target_size_mb * _MB
    version_before = t.version()
    before = _files_by_partition(t, c.partition_by)
    plan = {k: sizes for k, sizes in before.items() if sum(s < target for s in sizes) >= 2}
    done: list[dict] = []
    added = removed = 0
    for key, sizes in sorted(plan.items(), key=lambda kv: tuple(v or "" for v in kv[0])):
        partition = dict(zip(c.partition_by, key, strict=True))
        if dry_run:
            small = [s for s in sizes if s < target]
            files_added, files_removed = math.ceil(sum(small) / target), len(small)
        else:
            filters = [(k, "=", v) for k, v in partition.items()] or None
            try:
                metrics = t.optimize.compact(partition_filters=filters, target_size=target)
            except CommitFailedError as e:
                raise _conflict(name, f"compacting {partition or 'the table'} ({len(done)} partition(s) "
                                      f"compacted before it)", e) from None
            files_added, files_removed = metrics["numFilesAdded"], metrics["numFilesRemoved"]
        if files_removed:
            done.append({"partition": partition, "files_before": len(sizes),
                         "files_after": len(sizes) - files_removed + files_added})
            added, removed = added + files_added, removed + files_removed
            log.info("%s: %s %s: %d files -> %d", name, "would compact" if dry_run else "compacted",
                     partition or "table", len(sizes), len(sizes) - files_removed + files_added)
    after = before if dry_run or not done else _files_by_partition(t, c.partition_by)
    files_before = sum(len(s) for s in before.values())
    return {
        "table": name, "dry_run": dry_run, "target_size_mb": target_size_mb,
        "version_before": version_before, "version_after": t.version(),
        "partitions": len(before), "partitions_compacted": len(done),
        "files_before": files_before,
        "files_after": files_before - removed + added if dry_run else sum(len(s) for s in after.values()),
        "files_added": added, "files_removed": removed,
        "bytes_before": sum(sum(s) for s in before.values()), "bytes_after": sum(sum(s) for s in after.values()),
        "compacted": done, "seconds": round(time.monotonic() - started, 3),
    }


_INTERVAL = re.compile(r"(?:interval\s+)?(\d+)\s*(hour|day|week)s?", re.IGNORECASE)
_HOURS = {"hour": 1, "day": 24, "week": 168}


def _table_retention_hours(t) -> int | None:
    """delta.deletedFileRetentionDuration of the table in hours (e.g. 'interval 14 days'), if set."""
    m = _INTERVAL.fullmatch((t.metadata().configuration.get("delta.deletedFileRetentionDuration") or "").strip())
    return int(m.group(1)) * _HOURS[m.group(2).lower()] if m else None


def _store(uri: str):
    """The pyarrow filesystem and path of a local path or object-store URI."""
    from spark_jobs.storage import filesystem

    return filesystem(uri)


def _sizes(table_uri: str, files: list[str]) -> dict[str, int]:
    """Bytes of those of a table's files (paths relative to the table) that exist."""
    from pyarrow import fs

    if not files:
        return {}
    filesystem, base = _store(table_uri)
    infos = filesystem.get_file_info([f"{base.rstrip('/')}/{f}" for f in files])
    return {f: i.size or 0 for f, i in zip(files, infos, strict=True) if i.type == fs.FileType.File}


def vacuum(root: str, name: str, retention_hours: int = DEFAULT_RETENTION_HOURS, dry_run: bool = False,
           force: bool = False, min_retention_hours: int = DEFAULT_RETENTION_HOURS) -> dict:
    """Delete the files no current version references that were removed (or, for files no commit ever
    added, last modified) more than `retention_hours` ago; dry_run only lists them. Time travel to the
    versions that needed them fails afterwards. A retention below `min_retention_hours` (or the table's
    delta.deletedFileRetentionDuration) is refused unless `force`: writers in flight and readers of
    recent versions may still need those files."""
    from deltalake.exceptions import CommitFailedError

    t = _open(root, name)
    _check_retention(name, retention_hours, max(min_retention_hours, _table_retention_hours(t) or 0), force)
    started = time.monotonic()
    # full: also files no commit added (a failed Sail write leaves its files behind), judged by their
    # modification time, so a write still in flight inside the retention window is left alone.
    # Our own minimum replaces delta-rs's fixed 168 h check, so it can be lowered in config.
    # delta-rs lists a removed file again on every run until its tombstone leaves the log, deleted or
    # not: only files still there count, and without any the run commits nothing.
    try:
        listed = t.vacuum(retention_hours=retention_hours, dry_run=True, enforce_retention_duration=False, full=True)
        sizes = _sizes(t.table_uri, listed)
        if sizes and not dry_run:
            t.vacuum(retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False, full=True)
    except CommitFailedError as e:
        raise _conflict(name, "vacuuming", e) from None
    log.info("%s: %s %d unreferenced file(s), %d bytes, older than %d h", name,
             "would delete" if dry_run else "deleted", len(sizes), sum(sizes.values()), retention_hours)
    return {"table": name, "dry_run": dry_run, "retention_hours": retention_hours, "files_deleted": len(sizes),
            "bytes_deleted": sum(sizes.values()), "files": sorted(sizes), "version_after": t.version(),
            "seconds": round(time.monotonic() - started, 3)}


def checkpoint(root: str, name: str) -> dict:
    """Write a log checkpoint at the current version and delete commit files older than the table's
    delta.logRetentionDuration (30 days by default) that the checkpoint makes unnecessary: readers then
    load one Parquet file instead of replaying every JSON commit, and the log stops growing with every
    daily write. Time travel keeps working inside the log retention (vacuum bounds it more tightly)."""
    t = _open(root, name)
    before = _log_files(t.table_uri)
    t.create_checkpoint()
    t.cleanup_metadata()
    _drop_stale_checksums(t.table_uri)
    deleted = before - _log_files(t.table_uri)
    log.info("%s: checkpoint at version %d, %d expired log file(s) deleted", name, t.version(), len(deleted))
    return {"table": name, "version": t.version(), "log_files_deleted": len(deleted)}


def prune_log(root: str, name: str) -> dict:
    """Checkpoint at the current version and delete every older commit, checksum and checkpoint, whatever
    delta.logRetentionDuration says: after an erasure, an old commit's add actions still carry column
    statistics (minimum and maximum values) of files that held the erased rows. Time travel to any
    version before the checkpoint ends."""
    t = _open(root, name)
    t.create_checkpoint()
    version = t.version()
    filesystem, _ = _store(t.table_uri)
    deleted = 0
    for f in sorted(_log_files(t.table_uri)):
        base = f.rsplit("/", 1)[-1]
        m = re.match(r"^\.?(\d{20})\.", base)
        if m and int(m[1]) < version:
            filesystem.delete_file(f)
            deleted += 1
    log.info("%s: log pruned to the checkpoint at version %d, %d file(s) deleted", name, version, deleted)
    return {"table": name, "version": version, "log_files_deleted": deleted}


def _log_files(table_uri: str) -> set[str]:
    from pyarrow import fs

    filesystem, base = _store(table_uri)
    listing = filesystem.get_file_info(fs.FileSelector(f"{base.rstrip('/')}/_delta_log"))
    return {i.path for i in listing if i.type == fs.FileType.File}


_LOG_ENTRY = re.compile(r"^(\d{20})\.(json|crc)$")


def _drop_stale_checksums(table_uri: str) -> None:
    """Sail and delta-spark write a <version>.crc beside each commit; delta-rs's log cleanup leaves
    those of the commits it deleted. Drop the ones older than the oldest commit left, and the Hadoop
    checksum files (.<name>.crc, written by JVM Spark on a local file system) whose file is gone."""
    filesystem, _ = _store(table_uri)
    files = _log_files(table_uri)
    names = {f.rsplit("/", 1)[-1]: f for f in files}
    entries = [(m[1], m[2], f) for n, f in names.items() if (m := _LOG_ENTRY.match(n))]
    commits = [int(v) for v, kind, _ in entries if kind == "json"]
    stale = [f for v, kind, f in entries if kind == "crc" and commits and int(v) < min(commits)]
    stale += [f for n, f in names.items() if n.startswith(".") and n.endswith(".crc") and n[1:-4] not in names
              or n.startswith(".") and n.endswith(".crc") and names.get(n[1:-4]) in stale]
    for f in stale:
        filesystem.delete_file(f)


def history(root: str, name: str, limit: int | None = None) -> list[dict]:
    """The table's versions, newest first: version, timestamp (UTC), operation, parameters, metrics, engine."""
    if limit is not None and limit < 1:
        raise MaintenanceError(f"limit must be at least 1, got {limit}")
    rows = []
    for h in _open(root, name).history(limit):
        rows.append({
            "version": h.get("version"),
            "timestamp": dt.datetime.fromtimestamp(h["timestamp"] / 1000, dt.UTC).isoformat() if h.get("timestamp") else None,
            "operation": h.get("operation"),
            "parameters": h.get("operationParameters") or {},
            "metrics": h.get("operationMetrics") or {},
            "engine": h.get("engineInfo") or h.get("clientVersion"),
        })
    return sorted(rows, key=lambda r: -(r["version"] or 0))


def _version_at(t, name: str, when: dt.datetime) -> int:
    """The newest version committed at or before `when` (naive = UTC)."""
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    millis = when.timestamp() * 1000
    versions = [(h["version"], h["timestamp"]) for h in t.history() if h.get("timestamp") is not None]
    eligible = [v for v, ts in versions if ts <= millis]
    if not eligible:
        first = min(ts for _, ts in versions)
        raise MaintenanceError(f"{name} has no version at or before {when.isoformat()}: its oldest "
                               f"version in the log is from {dt.datetime.fromtimestamp(first / 1000, dt.UTC).isoformat()}")
    return max(eligible)


def restore(root: str, name: str, version: int | None = None, timestamp: dt.datetime | str | None = None) -> dict:
    """Make an earlier version (or the one current at `timestamp`) the table's content again, as a new
    version: history is kept, and restoring back is another restore. Fails clearly when the version does
    not exist or its files were vacuumed."""
    from deltalake.exceptions import CommitFailedError, DeltaError

    if (version is None) == (timestamp is None):
        raise MaintenanceError("give exactly one of version or timestamp to restore to")
    t = _open(root, name)
    current = t.version()
    if timestamp is not None:
        if isinstance(timestamp, str):
            try:
                timestamp = dt.datetime.fromisoformat(timestamp)
            except ValueError:
                raise MaintenanceError(f"timestamp must be ISO 8601 like 2026-11-02T08:00:00Z, got {timestamp!r}") from None
        version = _version_at(t, name, timestamp)
    if not 0 <= version < current:
        raise MaintenanceError(
            f"{name} is at version {current}: " + ("that is the current version, nothing to restore"
                                                   if version == current else f"restore to a version from 0 to {current - 1}, not {version}")
        )
    try:
        metrics = t.restore(version)
    except CommitFailedError as e:
        raise _conflict(name, f"restoring version {version}", e) from None
    except DeltaError as e:  # the version's log or data files are gone (log cleanup, vacuum)
        raise MaintenanceError(f"{name}: cannot restore version {version}: {str(e).splitlines()[0]} "
                               f"(its files were probably vacuumed or its log expired)") from None
    log.info("%s: restored version %d as version %d", name, version, t.version())
    return {"table": name, "version_before": current, "restored_version": version, "version_after": t.version(),
            "files_restored": metrics.get("numRestoredFile"), "files_removed": metrics.get("numRemovedFile")}


_TOTALS = ("files_before", "files_after", "files_added", "files_removed")


def run(cfg, tables: Iterable[str] | None = None, retention_hours: int | None = None,
        target_size_mb: int | None = None, dry_run: bool = False, force: bool = False) -> dict:
    """Compact, vacuum and checkpoint each table (default: every existing contract table) with the
    settings of cfg.maintenance unless given. Returns per-table figures and totals (file lists left out:
    small enough for an XCom). A table a concurrent write beat is reported under `conflicts` and the
    others still run; CommitConflictError is raised at the end so that a scheduler retries."""
    m = cfg.maintenance
    root = cfg.paths.lakehouse_uri()
    retention = m.retention_hours if retention_hours is None else retention_hours
    target = target_size_mb or m.target_file_mb
    existing = _existing(root)
    if tables is None:
        names = existing
    else:
        names = list(dict.fromkeys(tables))
        for name in names:
            contract(name)  # unknown names fail before anything runs
        missing = [n for n in names if n not in existing]
        if missing:
            raise TableNotFoundError(f"table(s) {missing} do not exist under {root}: run the stages that write them first")
    _check_retention("maintenance", retention, m.min_retention_hours, force)  # before any table is touched
    started = time.monotonic()
    result: dict = {"root": root, "dry_run": dry_run, "retention_hours": retention, "target_size_mb": target,
                    "tables": {}, "conflicts": []}
    for i, name in enumerate(names, 1):
        log.info("maintenance %d/%d: %s", i, len(names), name)
        try:
            compacted = compact(root, name, target, dry_run)
            vacuumed = vacuum(root, name, retention, dry_run, force, m.min_retention_hours)
            logged = None if dry_run else checkpoint(root, name)
        except CommitConflictError as e:
            log.warning("%s", e)
            result["conflicts"].append({"table": name, "error": str(e)})
            continue
        vacuumed = {**vacuumed, "files_sample": vacuumed.pop("files")[:10]}
        result["tables"][name] = {"compact": compacted, "vacuum": vacuumed, "checkpoint": logged}
    done = result["tables"].values()
    result["totals"] = {
        "tables": len(result["tables"]),
        **{k: sum(t["compact"][k] for t in done) for k in _TOTALS},
        "partitions_compacted": sum(t["compact"]["partitions_compacted"] for t in done),
        "files_vacuumed": sum(t["vacuum"]["files_deleted"] for t in done),
        "bytes_vacuumed": sum(t["vacuum"]["bytes_deleted"] for t in done),
        "seconds": round(time.monotonic() - started, 3),
    }
    log.info("maintenance %s: %d table(s), files %d -> %d, %d vacuumed (%d bytes), %d conflict(s)",
             "dry run" if dry_run else "done", len(done), result["totals"]["files_before"],
             result["totals"]["files_after"], result["totals"]["files_vacuumed"], result["totals"]["bytes_vacuumed"],
             len(result["conflicts"]))
    if result["conflicts"]:
        beaten = [c["table"] for c in result["conflicts"]]
        raise CommitConflictError(f"concurrent writes beat maintenance of {beaten}; the other tables are done. "
                                  f"Re-run (idempotent).", result)
    return result


def summarise_runs(folder) -> dict:
    """Merge the per-table figures a maintenance run wrote (maintenance-<table>.json) into
    maintenance.json in the same folder and latest-maintenance.json beside it."""
    import json
    from pathlib import Path

    folder = Path(folder)
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("maintenance-*.json"))]
    if not results:
        raise MaintenanceError(f"no table figures recorded in {folder}: did every maintain task fail?")
    tables = {name: t for r in results for name, t in r["tables"].items()}
    totals = {k: sum(r["totals"][k] for r in results) for k in results[0]["totals"]}
    summary = {"run": folder.name, "dry_run": results[0]["dry_run"], "retention_hours": results[0]["retention_hours"],
               "tables": tables, "conflicts": [c for r in results for c in r["conflicts"]], "totals": totals}
    text = json.dumps(summary, indent=2, default=str)
    (folder / "maintenance.json").write_text(text)
    (folder.parent / "latest-maintenance.json").write_text(text)
    return summary


def render_report(summary: dict) -> str:
    """The maintenance figures as a table per table, for task logs and the CLI."""
    import io

    from rich.console import Console
    from rich.table import Table

    console = Console(record=True, width=110, file=io.StringIO())
    grid = Table(title=f"Delta maintenance {summary['run']}" + (" (dry run)" if summary["dry_run"] else "")
                 + f", vacuum retention {summary['retention_hours']} h")
    for col in ("table", "files before", "files after", "partitions compacted", "files vacuumed", "MB vacuumed"):
        grid.add_column(col, justify="left" if col == "table" else "right")
    for name, t in sorted(summary["tables"].items()):
        c, v = t["compact"], t["vacuum"]
        grid.add_row(name, str(c["files_before"]), str(c["files_after"]), str(c["partitions_compacted"]),
                     str(v["files_deleted"]), f"{v['bytes_deleted'] / _MB:.1f}")
    console.print(grid)
    for c in summary["conflicts"]:
        console.print(f"[red]conflict[/red] {c['table']}: {c['error']}")
    return console.export_text()
