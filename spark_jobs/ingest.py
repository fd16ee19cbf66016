"""Ingest: reads landing/<channel>/<date>/ files; writes bronze_<channel>, bronze_quarantine and ops_ingest_files."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs.contracts import CHANNEL_FIELDS, CHANNEL_FORMAT, bronze_name, contract
from spark_jobs.tables import Lakehouse

log = logging.getLogger(__name__)

# Accepted timestamp layouts, tried in order (ISO-8601 with offset, with and without milliseconds).
TIMESTAMP_FORMATS = (
    "yyyy-MM-dd'T'HH:mm:ss.SSSXXX",
    "yyyy-MM-dd'T'HH:mm:ssXXX",
    "yyyy-MM-dd HH:mm:ss",
)
DATE_FORMAT = "yyyy-MM-dd"


class IngestError(RuntimeError):
    """Ingest cannot account for every line it read; nothing is published for this channel-day."""


@dataclass(frozen=True)
class LandedFile:
    """One landing file, measured in Python from its bytes (independently of Spark)."""

    path: Path
    rel: str  # path relative to the landing root, as stored in _source_file
    checksum: str
    bytes: int
    lines: int  # data lines: all lines, less the CSV header
    header: str | None


def scan_file(path: Path, landing: Path, fmt: str) -> LandedFile:
    """Checksum and count the data lines of one file in a single streaming pass."""
    sha = hashlib.sha256()
    newlines = 0
    size = 0
    last = b""
    header = None
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            if header is None and fmt == "csv":
                header = chunk.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")
            sha.update(chunk)
            newlines += chunk.count(b"\n")
            size += len(chunk)
            last = chunk[-1:]
    lines = newlines + (1 if size and last != b"\n" else 0)
    if fmt == "csv" and lines:
        lines -= 1
    return LandedFile(path, str(path.relative_to(landing)), sha.hexdigest(), size, lines, header)


def list_batch(landing: Path, channel: str, batch_date: dt.date) -> list[LandedFile]:
    folder = landing / channel / batch_date.isoformat()
    if not folder.is_dir():
        log.warning("no landing folder %s: nothing to ingest for %s on %s", folder, channel, batch_date)
        return []
    fmt = CHANNEL_FORMAT[channel]
    # Shortest name first, so an original `part-00001.csv` is loaded before its `part-00001-resend.csv`.
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "_"))),
        key=lambda p: (len(p.name), p.name),
    )
    return [scan_file(p, landing, fmt) for p in files]


def plan_duplicates(files: list[LandedFile], loaded_elsewhere: dict[str, str]) -> dict[str, str | None]:
    """Map each file to the file it duplicates (same checksum, loaded earlier), or None to load it."""
    seen = dict(loaded_elsewhere)
    plan: dict[str, str | None] = {}
    for f in files:
        original = seen.get(f.checksum)
        plan[f.rel] = original if original and original != f.rel else None
        seen.setdefault(f.checksum, f.rel)
    return plan


_LINES_SCHEMA = "_source_file string, _line long, raw string"
_BATCH_LINES = 100_000


def _split_lines(data: bytes):
    """The lines of a file's bytes as an Arrow string array (split in C++, not in Python)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    offsets = pa.array([0, len(data)], pa.int64()).buffers()[1]
    whole = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)])
    lines = pc.split_pattern(whole, b"\n").flatten()
    try:
        text = lines.view(pa.large_string())
        text.validate(full=True)
    except pa.ArrowInvalid:  # not UTF-8: undecodable bytes become U+FFFD, the line is still kept
        text = pa.array([b.decode("utf-8", errors="replace") for b in lines.to_pylist()], pa.large_string())
    if len(text) and len(data) and data.endswith(b"\n"):
        text = text.slice(0, len(text) - 1)  # the split after a final newline is not a line
    elif not data:
        text = text.slice(0, 0)
    return text


def _file_lines(batches):
    """mapInArrow body: (path, rel, skip_header) rows -> one row per line with its 1-based number."""
    import pyarrow as pa

    for batch in batches:
        for path, rel, skip in zip(*(batch.column(c).to_pylist() for c in ("path", "rel", "skip")), strict=True):
            with open(path, "rb") as fh:
                lines = _split_lines(fh.read())
            for lo in range(1 if skip else 0, len(lines), _BATCH_LINES):
                chunk = lines.slice(lo, _BATCH_LINES).cast(pa.string())
                yield pa.record_batch(
                    [pa.repeat(pa.scalar(rel, pa.string()), len(chunk)), pa.arange(lo + 1, lo + 1 + len(chunk)).cast(pa.int64()), chunk],
                    names=["_source_file", "_line", "raw"],
                )


def read_lines(spark: SparkSession, files: list[LandedFile], fmt: str) -> DataFrame:
    """One row per data line: _source_file, _line (1-based, as in the file), raw.
    Files are read inside the engine (mapInArrow), whole, so line numbers are exact on every engine:
    Sail's wholetext reader splits large files into byte ranges and input_file_name() is unsupported."""
    paths = spark.createDataFrame(
        [(str(f.path), f.rel, fmt == "csv") for f in files], "path string, rel string, skip boolean"
    )
    lines = paths.repartition(len(files)).mapInArrow(_file_lines, _LINES_SCHEMA)
    parallelism = max(2, os.cpu_count() or 2)
    return lines.repartition(parallelism).withColumn("raw", F.regexp_replace("raw", "\r$", ""))


def _blank_to_null(c: Column) -> Column:
    trimmed = F.trim(c)
    return F.when(F.length(trimmed) > 0, trimmed)


def _parse_timestamp(c: Column) -> Column:
    return F.coalesce(*[F.try_to_timestamp(c, F.lit(fmt)) for fmt in TIMESTAMP_FORMATS])


def _typed(text: Column, type_: str, staged_name: str) -> tuple[Column, str | None]:
    """The typed value and the quarantine reason prefix when a present value fails to parse."""
    if type_ == "string":
        return text, None
    if type_ == "timestamp":
        return _parse_timestamp(text), "bad_timestamp"
    if type_ == "date":
        return F.to_date(F.try_to_timestamp(text, F.lit(DATE_FORMAT))), "bad_date"
    return F.expr(f"try_cast(`{staged_name}` as {type_})"), "bad_number"


def parse_lines(lines: DataFrame, channel: str) -> DataFrame:
    """Parse raw lines into the channel's typed fields plus `reason` (NULL when the row is good).
    A present value that does not parse as its type is a reason, never a silent NULL."""
    fields = CHANNEL_FIELDS[channel]
    fmt = CHANNEL_FORMAT[channel]
    raw = F.col("raw")
    if fmt == "jsonl":
        schema = T.StructType([T.StructField(c.name, T.StringType()) for c in fields])
        parsed = lines.withColumn("__j", F.from_json(raw, schema))
        texts = {c.name: _blank_to_null(F.col(f"__j.{c.name}")) for c in fields}
        # from_json yields all-NULL fields for text that is not a JSON object (one parse, no second
        # validity pass); an object with none of the channel's fields is no record either.
        structural = F.when(
            reduce(lambda a, b: a & b, [F.col(f"__j.{c.name}").isNull() for c in fields]), F.lit("malformed_json")
        )
    else:
        parts = F.split(raw, ",", -1)
        structural = F.when(
            F.size(parts) != len(fields),
            F.concat(F.lit(f"wrong_column_count: expected {len(fields)}, got "), F.size(parts).cast("string")),
        )
        parsed = lines.withColumn("__parts", parts)
        texts = {c.name: _blank_to_null(F.get(F.col("__parts"), i)) for i, c in enumerate(fields)}
    empty = F.when(F.length(F.trim(raw)) == 0, F.lit("empty_line"))

    checks = [empty, structural]
    typed: dict[str, Column] = {}
    for c in fields:
        text = texts[c.name]
        value, prefix = _typed(text, c.type, _tmp(c.name))
        typed[c.name] = value
        if not c.nullable:
            checks.append(F.when(text.isNull(), F.lit(f"missing_required: {c.name}")))
        if prefix:
            checks.append(F.when(text.isNotNull() & value.isNull(), F.lit(f"{prefix}: {c.name}")))
    # Numbers are cast from a staged text column (try_cast is reached through SQL).
    staged = parsed.select("*", *[texts[c.name].alias(_tmp(c.name)) for c in fields])
    return staged.select(
        "_source_file", "_line", "raw",
        *[typed[c.name].cast(c.spark_type()).alias(c.name) for c in fields],
        F.coalesce(*checks).alias("reason"),
    )


def _tmp(name: str) -> str:
    return f"__t_{name}"


def build_bronze(parsed: DataFrame, channel: str, batch_date: dt.date, ingested_at: dt.datetime) -> DataFrame:
    """Good rows of `parsed` as bronze_<channel> rows (typed fields + lineage)."""
    names = [c.name for c in CHANNEL_FIELDS[channel]]
    return parsed.where(F.col("reason").isNull()).select(
        *names, "_source_file", "_line",
        F.lit(batch_date).alias("_batch_date"),
        F.lit(ingested_at).cast("timestamp").alias("_ingested_at"),
        F.sha2(F.col("raw"), 256).alias("_row_hash"),
    )


def build_quarantine(parsed: DataFrame, channel: str, batch_date: dt.date, ingested_at: dt.datetime) -> DataFrame:
    """Rows of `parsed` that failed, with the raw text and the reason."""
    return parsed.where(F.col("reason").isNotNull()).select(
        F.lit(channel).alias("channel"), "_source_file", "_line", "raw", "reason",
        F.lit(batch_date).alias("_batch_date"),
        F.lit(ingested_at).cast("timestamp").alias("_ingested_at"),
        F.sha2(F.col("raw"), 256).alias("_row_hash"),
    )


def _header_reason(f: LandedFile, channel: str) -> str | None:
    if CHANNEL_FORMAT[channel] != "csv":
        return None
    expected = ",".join(c.name for c in CHANNEL_FIELDS[channel])
    if (f.header or "").strip().lstrip("\ufeff") != expected:
        return f"bad_header: expected '{expected}', got '{(f.header or '')[:200]}'"
    return None


def _loaded_checksums(lh: Lakehouse, channel: str, batch_date: dt.date) -> dict[str, str]:
    """Checksums of files loaded by earlier batches of this channel (a bounded, per-file table)."""
    if not lh.exists("ops_ingest_files"):
        return {}
    rows = (
        lh.read("ops_ingest_files")
        .where((F.col("channel") == channel) & (F.col("batch_date") != F.lit(batch_date)) & F.col("duplicate_of").isNull())
        .select("checksum", "file")
        .collect()
    )
    return {r["checksum"]: r["file"] for r in sorted(rows, key=lambda r: r["file"])}


def _audit(staged: DataFrame, files: list[LandedFile], plan: dict[str, str | None]) -> tuple[dict, dict, dict]:
    """Count staged rows per file (loaded / quarantined) and reason; raise IngestError, before
    anything is published, unless every line of every loaded file is accounted for."""
    counts = (
        staged.select("_source_file", F.split("reason", ":")[0].alias("kind"))
        .groupBy("_source_file", "kind").count().collect()
    )
    loaded: dict[str, int] = {}
    quarantined: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for r in counts:
        target = loaded if r["kind"] is None else quarantined
        target[r["_source_file"]] = target.get(r["_source_file"], 0) + r["count"]
        if r["kind"] is not None:
            reasons[r["kind"]] = reasons.get(r["kind"], 0) + r["count"]
    for f in files:
        if plan[f.rel] is None and loaded.get(f.rel, 0) + quarantined.get(f.rel, 0) != f.lines:
            raise IngestError(
                f"{f.rel}: the file has {f.lines} lines but ingest produced {loaded.get(f.rel, 0)} rows and "
                f"{quarantined.get(f.rel, 0)} quarantined; nothing was published"
            )
    return loaded, quarantined, reasons


def run(spark: SparkSession, lh: Lakehouse, landing: Path, channel: str, batch_date: dt.date, ingested_at: dt.datetime) -> dict:
    """Load one channel-day into bronze; return its accounting (also written to ops_ingest_files).
    Write-audit-publish: lines are parsed once and staged, every line is accounted for, then bronze,
    quarantine and ops_ingest_files are replaced for the batch."""
    fmt = CHANNEL_FORMAT[channel]
    files = list_batch(landing, channel, batch_date)
    plan = plan_duplicates(files, _loaded_checksums(lh, channel, batch_date))
    to_read = [f for f in files if plan[f.rel] is None and f.lines > 0]
    bad_header = {f.rel: r for f in to_read if (r := _header_reason(f, channel))}
    bronze_table = bronze_name(channel)
    part = {"_batch_date": batch_date}
    stage_key = f"ingest/{channel}/{batch_date.isoformat()}"
    try:
        if to_read:
            parsed = parse_lines(read_lines(spark, to_read, fmt), channel)
            if bad_header:  # a file whose header is wrong is quarantined whole: its columns are unknown
                by_file = F.create_map(*[x for k, v in bad_header.items() for x in (F.lit(k), F.lit(v))])
                parsed = parsed.withColumn("reason", F.coalesce(by_file[F.col("_source_file")], F.col("reason")))
            staged = lh.stage(stage_key, parsed)
            loaded, quarantined, reasons = _audit(staged, files, plan)
            bronze = build_bronze(staged, channel, batch_date, ingested_at)
            quarantine = build_quarantine(staged, channel, batch_date, ingested_at)
        else:
            loaded, quarantined, reasons = {}, {}, {}
            bronze = spark.createDataFrame([], contract(bronze_table).schema())
            quarantine = spark.createDataFrame([], contract("bronze_quarantine").schema())
        lh.write_partition(bronze_table, bronze, part)
        lh.write_partition("bronze_quarantine", quarantine, {**part, "channel": channel})
    finally:
        lh.unstage(stage_key)

    rows = [
        (batch_date, channel, f.rel, f.checksum, f.bytes, f.lines,
         0 if plan[f.rel] else loaded.get(f.rel, 0), 0 if plan[f.rel] else quarantined.get(f.rel, 0),
         plan[f.rel], ingested_at)
        for f in files
    ]
    files_df = spark.createDataFrame(rows, contract("ops_ingest_files").schema())
    lh.write_partition("ops_ingest_files", files_df, {"batch_date": batch_date, "channel": channel})
    return {
        "channel": channel,
        "files": len(files),
        "duplicate_files": sum(1 for v in plan.values() if v),
        "lines": sum(f.lines for f in to_read),
        "loaded": sum(loaded.values()),
        "quarantined": sum(quarantined.values()),
        "quarantine_reasons": dict(sorted(reasons.items())),
    }
