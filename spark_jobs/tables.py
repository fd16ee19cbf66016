"""The one place that reads and writes CDP tables (Delta by default) under <lakehouse>/<layer>/<table>."""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
import uuid
from collections.abc import Mapping

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.config import file_safe
from spark_jobs.contracts import KeyProof, TableContract, contract
from spark_jobs.storage import children, filesystem, remove_tree

log = logging.getLogger(__name__)

_VIOLATION = "CDP_CONTRACT_VIOLATION"
# Sail reports a lost commit race as "Failed to commit transaction: <n>".
_CONFLICT_MARKERS = ("conflict", "concurrent", "version already exists", "commit failed", "failed to commit transaction")


class ContractError(ValueError):
    """A DataFrame does not match the declared contract of the table it is written to."""


class TableNotFoundError(FileNotFoundError):
    """A table was read before any run created it."""


def sql_literal(value: object) -> str:
    """A value as a SQL literal (delta-rs and Spark predicates): strings quoted with their quotes doubled."""
    if isinstance(value, dt.date | dt.datetime):
        return f"'{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool | int | float):
        return str(value)
    raise TypeError(f"cannot use {value!r} in a partition predicate")


def partition_predicate(partition: Mapping[str, object]) -> str:
    """`partition` as a SQL predicate: a value is `=`, a tuple of values is `IN` (several partitions
    replaced by one commit)."""
    def one(k, v):
        if isinstance(v, tuple):
            return f"`{k}` IN ({', '.join(sql_literal(x) for x in v)})" if v else "FALSE"
        return f"`{k}` = {sql_literal(v)}"

    return " AND ".join(one(k, v) for k, v in partition.items())


def check_contract(df: DataFrame, c: TableContract, partition: Mapping[str, object] | None = None) -> DataFrame:
    """Return `df` in contract column order, guarded so that writing it fails (before any commit)
    on a NULL in a required column or a row outside `partition`. Raises ContractError at once for
    missing, extra or wrongly typed columns: Sail would write a wrong-typed value as NULL."""
    actual = {f.name: f.dataType for f in df.schema.fields}
    missing = [n for n in c.column_names if n not in actual]
    extra = [n for n in actual if n not in set(c.column_names)]
    problems = []
    if missing:
        problems.append(f"missing column(s) {missing}")
    if extra:
        problems.append(f"column(s) {extra} are not in the contract")
    for col in c.columns:
        if col.name in actual and actual[col.name] != col.spark_type():
            problems.append(
                f"column {col.name!r} has type {actual[col.name].simpleString()}, "
                f"contract says {col.spark_type().simpleString()}"
            )
    if problems:
        raise ContractError(f"{c.name}: " + "; ".join(problems))

    partition = dict(partition or {})
    unknown = [k for k in partition if k not in c.partition_by]
    if unknown:
        raise ContractError(f"{c.name}: {unknown} are not partition columns (they are {list(c.partition_by)})")

    guards: list[tuple[SparkColumn, str]] = [(F.col(n).isNull(), f"required column {n!r} is NULL") for n in c.required()]
    guards += [
        (~F.col(k).isin(list(v)) | F.col(k).isNull(), f"{k!r} is outside the partitions being written ({k} in {list(v)})")
        if isinstance(v, tuple) else
        (~F.col(k).eqNullSafe(F.lit(v)), f"{k!r} is outside the partition being written ({k} = {v})")
        for k, v in partition.items()
    ]
    out = df.select(*c.column_names)
    if not guards:
        return out
    violation = None
    for cond, msg in guards:  # one flat CASE, first match wins (Sail plans nested ELSE-CASEs exponentially)
        text = F.lit(f"{_VIOLATION}: {c.name}: {msg}")
        violation = F.when(cond, text) if violation is None else violation.when(cond, text)
    first = c.column_names[0]
    guarded = F.when(violation.isNotNull(), F.raise_error(violation)).otherwise(F.col(first))
    # Cast by type name, not by DataType: over Spark Connect to JVM Spark a StringType object arrives
    # as an explicitly collated string, which delta-spark writes into a new table's schema as
    # "string collate UTF8_BINARY", a type delta-rs cannot read (found on gold_profile_tags).
    return out.withColumn(first, guarded.cast(c.columns[0].spark_type().simpleString()))


def table_path(root: str, name: str) -> str:
    c = contract(name)
    return f"{root.rstrip('/')}/{c.layer}/{c.name}"


def table_stats(root: str, name: str) -> dict | None:
    """Rows (from the Delta log's per-file statistics, no data read) and version of a table, or None
    when it does not exist. Needs no Spark session."""
    import pyarrow as pa
    from deltalake import DeltaTable

    path = table_path(root, name)
    if not DeltaTable.is_deltatable(path):
        return None
    t = DeltaTable(path)
    actions = pa.table(t.get_add_actions(flatten=True))
    rows = sum(n or 0 for n in actions.column("num_records").to_pylist()) if actions.num_rows else 0
    return {"rows": rows, "version": t.version(), "files": actions.num_rows}


def append_arrow(root: str, name: str, rows) -> None:
    """Append a pyarrow table of `name`'s contract columns through delta-rs, no Spark session: for the
    small run-bookkeeping tables written after the stages (ops_runs). Checked against the contract."""
    from deltalake import write_deltalake

    c = contract(name)
    if rows.schema.names != c.column_names:
        raise ContractError(f"{name}: columns {rows.schema.names} are not the contract's {c.column_names}")
    missing = [n for n in c.required() if rows.column(n).null_count]
    if missing:
        raise ContractError(f"contract violation, nothing written: {name}: required column(s) {missing} are NULL")
    write_deltalake(table_path(root, name), rows.cast(c.arrow_schema()), mode="append",
                    partition_by=list(c.partition_by) or None)


def read_pandas(root: str, name: str, columns: list[str] | None = None, partition: Mapping[str, str] | None = None,
                where=None):
    """A table, one partition of it, or the rows matching a pyarrow `where` expression, as pandas,
    through delta-rs: no Spark session. For tools and look-ups (evaluation, whois), not for stages."""
    from deltalake import DeltaTable

    path = table_path(root, name)
    if not DeltaTable.is_deltatable(path):
        raise TableNotFoundError(f"table {name} does not exist at {path}: run the stage that writes it first")
    partitions = [(k, "=", str(v)) for k, v in (partition or {}).items()] or None
    dataset = DeltaTable(path).to_pyarrow_dataset(partitions=partitions)
    return dataset.to_table(columns=columns, filter=where).to_pandas()


def read_dataset(root: str, name: str, version: int | None = None):
    """(pyarrow dataset, version) of a table at `version` (default: the newest) through delta-rs, reading
    nothing yet; None when the table does not exist. For readers that scan lazily (the BI SQL endpoint)."""
    from deltalake import DeltaTable

    path = table_path(root, name)
    if not DeltaTable.is_deltatable(path):
        return None
    table = DeltaTable(path, version=version)
    return table.to_pyarrow_dataset(), table.version()


def latest_partition(root: str, name: str, column: str, before: object | None = None, version: int | None = None) -> str | None:
    """The largest value of a partition column (e.g. the newest as_of snapshot), or the largest below
    `before` (the previous snapshot), from the Delta log (of `version`: a pinned read)."""
    from deltalake import DeltaTable

    path = table_path(root, name)
    if not DeltaTable.is_deltatable(path):
        return None
    values = [v for p in DeltaTable(path, version=version).partitions() if (v := p.get(column)) is not None]
    return max((v for v in values if before is None or v < str(before)), default=None)


class Lakehouse:
    """Reads and writes the CDP tables under one root (local path or object-store URI)."""

    def __init__(self, spark: SparkSession, root: str, fmt: str = "delta", retries: int = 5, run_id: str | None = None,
                 pinned: Mapping[str, int] | None = None):
        self.spark = spark
        self.root = root.rstrip("/")
        self.fmt = fmt
        self.retries = retries
        # Staged intermediates of this run only: two runs never share (or delete) each other's files.
        self.staging = f"{self.root}/_staging/{file_safe(run_id) if run_id else 'adhoc-' + uuid.uuid4().hex[:12]}"
        # Table -> Delta version to read (the tables as of the last complete run: runs.last_complete).
        self.pinned = dict(pinned or {})
        # Write-audit-publish: an object with covers(table) and check(table, df, partition) that raises
        # to stop a write (expectations.gate.QualityGate); None publishes unchecked.
        self.gate = None

    def path(self, name: str) -> str:
        return table_path(self.root, name)

    def exists(self, name: str) -> bool:
        if self.fmt != "delta":
            import os

            return os.path.exists(self.path(name))
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.path(name))

    def version(self, name: str) -> int | None:
        """The table's current Delta version (None when it does not exist yet)."""
        if not self.exists(name):
            return None
        from deltalake import DeltaTable

        return DeltaTable(self.path(name)).version()

    def has_partition(self, name: str, partition: Mapping[str, object]) -> bool:
        """Whether the table holds the partition (from the Delta log; other formats: whether it exists)."""
        if not self.exists(name):
            return False
        if self.fmt != "delta":
            return True
        from deltalake import DeltaTable

        want = {k: str(v) for k, v in partition.items()}
        table = DeltaTable(self.path(name), version=self.pinned.get(name))
        return any(all(p.get(k) == v for k, v in want.items()) for p in table.partitions())

    def read_partition(self, name: str, partition: Mapping[str, object], hint: str) -> DataFrame:
        """One partition of a table that an earlier stage must have written; TableNotFoundError saying
        which stage to run (`hint`) when it has not."""
        if not self.has_partition(name, partition):
            raise TableNotFoundError(f"{name} has no partition {partition_predicate(partition)}: {hint}")
        return self.read(name, partition)

    def create(self, name: str) -> bool:
        """Create the table from its contract if it does not exist; True when it was created."""
        if self.exists(name):
            return False
        c = contract(name)
        empty = self.spark.createDataFrame([], c.schema())
        writer = empty.write.format(self.fmt).mode("append")
        if c.partition_by:
            writer = writer.partitionBy(*c.partition_by)
        writer.save(self.path(name))
        log.info("created table %s at %s", name, self.path(name))
        return True

    def read(self, name: str, where: Mapping[str, object] | None = None) -> DataFrame:
        if not self.exists(name):
            raise TableNotFoundError(f"table {name} does not exist at {self.path(name)}: run the stage that writes it first")
        reader = self.spark.read.format(self.fmt)
        if name in self.pinned:
            reader = reader.option("versionAsOf", self.pinned[name])
        df = reader.load(self.path(name))
        if where:
            df = df.where(partition_predicate(where))
        return df

    def read_or_empty(self, name: str, where: Mapping[str, object] | None = None) -> DataFrame:
        """Like read, but a table that does not exist yet reads as an empty frame of its contract."""
        if self.exists(name):
            return self.read(name, where)
        return self.spark.createDataFrame([], contract(name).schema())

    def write_partition(self, name: str, df: DataFrame, partition: Mapping[str, object],
                        key_proof: KeyProof | None = None) -> None:
        """Replace exactly the rows of `partition` (a tuple value: each of those partitions) with `df`
        (idempotent per batch), after checking `df` against the table's contract. The write is one
        atomic commit: on any violation the table is left as it was. `key_proof`: the writer's proof
        that `df` is unique on the key (the gate checks its premise instead of the key)."""
        c = contract(name)
        if not partition:
            raise ContractError(f"{name}: write_partition needs the partition values to replace")
        guarded, audit_key = self._audit(name, df, c, partition, key_proof)
        try:
            self._publish(name, c, guarded, partition)
        finally:
            if audit_key:
                self.unstage(audit_key)

    def _audit(self, name: str, df: DataFrame, c: TableContract, partition: Mapping[str, object],
               key_proof: KeyProof | None = None):
        """The frame to publish, contract-guarded, and the staging key to drop after publishing. With a
        gate: stage `df` once, validate the staged rows (raises to stop the write), publish those."""
        if self.gate is None or not self.gate.covers(name):
            return check_contract(df, c, partition), None
        audit_key = f"_audit/{name}/{uuid.uuid4().hex}"
        staged = self.stage(audit_key, df.select(*c.column_names))
        try:
            self.gate.check(name, staged, dict(partition), key_proof)
        except Exception:
            self.unstage(audit_key)
            raise
        return check_contract(staged, c, partition), audit_key

    def write_table(self, name: str, df: DataFrame, c: TableContract | None = None) -> None:
        """Replace the whole table with `df`, schema included: for tables whose columns follow config
        (gold_profile_tags, one column per tag; pass its contract as `c`). Checked and gated like
        write_partition; one atomic commit."""
        c = c or contract(name)
        guarded, audit_key = self._audit(name, df, c, {})
        try:
            writer = guarded.write.format(self.fmt).mode("overwrite")
            if self.fmt == "delta":
                writer = writer.option("overwriteSchema", "true")
            if c.partition_by:
                writer = writer.partitionBy(*c.partition_by)
            self._commit(name, lambda: writer.save(self.path(name)))
        finally:
            if audit_key:
                self.unstage(audit_key)

    def write_export(self, df: DataFrame, uri: str, fmt: str) -> None:
        """Write `df` as `fmt` files (csv with a header, or parquet) into the folder `uri`, replacing it:
        files for activation channels, not tables. An empty `df` still gives one file with the columns."""
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"unknown export format {fmt!r}: csv or parquet")
        writer = df.coalesce(1).write.mode("overwrite")
        if fmt == "csv":
            writer.option("header", "true").csv(uri)
        else:
            writer.parquet(uri)
        if not any(n.endswith((".csv", ".parquet")) for n in children(uri)):
            # An empty result writes no file here; consumers still get one file with the columns.
            import pyarrow as pa
            import pyarrow.csv as pcsv
            import pyarrow.parquet as pq

            filesystem_, folder = filesystem(uri)
            filesystem_.create_dir(folder, recursive=True)
            empty = pa.table({f.name: pa.array([], pa.string()) for f in df.schema.fields})
            with filesystem_.open_output_stream(f"{folder}/part-00000.{fmt}") as fh:
                if fmt == "csv":
                    pcsv.write_csv(empty, fh)
                else:
                    pq.write_table(empty, fh)

    def write_export_file(self, df: DataFrame, uri: str, header: bool = True) -> None:
        """Write `df` as one CSV file named `uri` (replacing it), not a folder of part files: what an
        activation channel's upload takes. The engine's part files (Sail 0.7.2 ignores coalesce(1) on
        some plans) are joined beside it, then moved into place, so a reader never sees half a file.
        An empty `df` still gives the header row (when `header`)."""
        filesystem_, path = filesystem(uri)
        scratch = f"{uri}.writing-{uuid.uuid4().hex}"
        try:
            df.write.mode("overwrite").option("header", "false").csv(f"{scratch}/parts")
            _, scratch_path = filesystem(scratch)
            parts = [n for n in children(f"{scratch}/parts") if n.endswith(".csv")]
            filesystem_.create_dir(scratch_path, recursive=True)  # an empty result may leave no folder
            with filesystem_.open_output_stream(f"{scratch_path}/joined.csv") as out:
                if header:
                    out.write((",".join(df.columns) + "\n").encode())
                for name in parts:
                    with filesystem_.open_input_stream(f"{scratch_path}/parts/{name}") as part:
                        while chunk := part.read(1 << 20):
                            out.write(chunk)
            filesystem_.create_dir(path.rsplit("/", 1)[0], recursive=True)
            filesystem_.move(f"{scratch_path}/joined.csv", path)
        finally:
            remove_tree(scratch)

    def _publish(self, name: str, c, guarded: DataFrame, partition: Mapping[str, object]) -> None:
        self.create(name)
        writer = guarded.write.format(self.fmt).mode("overwrite")
        if self.fmt == "delta":
            writer = writer.option("replaceWhere", partition_predicate(partition))
        else:  # plain Parquet (benchmarks on JVM Spark without Delta JARs)
            writer = writer.option("partitionOverwriteMode", "dynamic")
        if c.partition_by:
            writer = writer.partitionBy(*c.partition_by)
        self._commit(name, lambda: writer.save(self.path(name)))

    def stage(self, key: str, df: DataFrame) -> DataFrame:
        """Materialise `df` once as Parquet under <root>/_staging/<run>/<key> and return it read back, so
        that several writes can share one expensive computation (Sail's cache() is a no-op)."""
        path = f"{self.staging}/{key}"
        df.write.mode("overwrite").parquet(path)
        return self.spark.read.schema(df.schema).parquet(path)  # an empty result has no file to infer from

    def unstage(self, key: str) -> None:
        """Delete a staged intermediate (local path or object store)."""
        remove_tree(f"{self.staging}/{key}")

    def _commit(self, name: str, action) -> None:
        for attempt in range(self.retries + 1):
            try:
                action()
                return
            except Exception as e:  # Spark Connect / JVM errors carry our guard message as text
                text = str(e)
                if _VIOLATION in text:
                    detail = text[text.index(_VIOLATION) + len(_VIOLATION) + 2 :].split("\n")[0]
                    raise ContractError(f"contract violation, nothing written: {detail}") from None
                conflict = any(m in text.lower() for m in _CONFLICT_MARKERS)
                if not conflict or attempt == self.retries:
                    raise
                delay = min(30.0, 0.5 * 2**attempt) * (0.5 + random.random())
                log.warning("commit conflict on %s (attempt %d), retrying in %.1fs", name, attempt + 1, delay)
                time.sleep(delay)
