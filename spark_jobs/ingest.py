"""Ingest: reads landing/<source>/<date>/ files of one source (conf/sources.yaml); writes its rows of
bronze_<model>, bronze_quarantine and ops_ingest_files."""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from spark_jobs.contracts import CHANNEL_FIELDS, RECORD_RULES, RecordRule, bronze_name, contract
from spark_jobs.contracts import Column as FieldSpec
from spark_jobs.privacy import suppression
from spark_jobs.privacy.suppression import with_suppressed
from spark_jobs.sources.config import SourceConfig, SourcesConfig, is_naive
from spark_jobs.sources.expressions import staged_sql
from spark_jobs.sources.readers import UNMAPPED_SEP, count_lines, header_of, read_plan, records_udf
from spark_jobs.tables import Lakehouse

log = logging.getLogger(__name__)

# Named timestamp formats as Spark patterns (Sail's SSS reads 1-3 fraction digits, SSSSSS 1-6).
ISO_PATTERNS = ("yyyy-MM-dd'T'HH:mm:ss.SSSXXX", "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX", "yyyy-MM-dd'T'HH:mm:ssXXX")
ISO_LOCAL_PATTERNS = (
    "yyyy-MM-dd'T'HH:mm:ss.SSS", "yyyy-MM-dd'T'HH:mm:ss.SSSSSS", "yyyy-MM-dd'T'HH:mm:ss",
    "yyyy-MM-dd HH:mm:ss.SSS", "yyyy-MM-dd HH:mm:ss.SSSSSS", "yyyy-MM-dd HH:mm:ss",
)
DEFAULT_TIMESTAMP_FORMATS = ("iso", "iso_local")
DEFAULT_DATE_FORMATS = ("yyyy-MM-dd",)
DEFAULT_TIMEZONE = "Asia/Shanghai"


class IngestError(RuntimeError):
    """Ingest cannot account for every line it read; nothing is published for this source-day."""


@dataclass(frozen=True)
class LandedFile:
    """One landing file, measured on the driver from its bytes (independently of the engine's reader),
    or an entry of a landing folder that is not read (`status` skipped or refused, with the `note`)."""

    path: Path  # or a storage.LandingPath: a file of a landing zone on an object store
    rel: str  # path relative to the landing root, as stored in _source_file
    checksum: str | None
    bytes: int
    lines: int  # physical data lines: all lines, less the header's
    names: tuple[str, ...] | None = None  # CSV column names (header row or declared)
    header_lines: int = 0
    reason: str | None = None  # why the whole file cannot be read (bad_header, bad_encoding)
    status: str = "loaded"  # loaded | skipped (hidden name, a folder) | refused (a symlink, outside the root)
    note: str | None = None


def scan_file(path: Path, landing: Path, source: SourceConfig) -> LandedFile:
    """Checksum, physical lines and (CSV) header of one file."""
    if source.format == "parquet":
        import hashlib

        import pyarrow.parquet as pq

        with path.open("rb") as fh:
            rows = pq.ParquetFile(fh).metadata.num_rows
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        return LandedFile(path, str(path.relative_to(landing)), sha, path.stat().st_size, rows)
    lines, sha = count_lines(path, source.encoding)
    names, header_lines, reason = header_of(path, source)
    return LandedFile(path, str(path.relative_to(landing)), sha, path.stat().st_size, max(0, lines - header_lines),
                      names, header_lines, reason)


class LandingError(ValueError):
    """A landing folder changed since an earlier run of the batch ingested it; nothing was published."""


def _not_read(path: Path, landing: Path, status: str, note: str) -> LandedFile:
    size = path.lstat().st_size if path.is_symlink() or path.exists() else 0
    return LandedFile(path, str(path.relative_to(landing)), None, size, 0, status=status, note=note)


def _entry(path: Path, landing: Path, root: Path, source: SourceConfig) -> LandedFile:
    """One entry of a day folder: a file to read, or why it is not read. Symlinks are never followed
    (a link could expose any file of the machine), nor is anything that resolves outside the root."""
    if path.is_symlink():
        return _not_read(path, landing, "refused", f"a symbolic link (to {os.readlink(path)}): links are not followed")
    if not path.resolve().is_relative_to(root):
        return _not_read(path, landing, "refused", "resolves outside the landing root")
    if path.is_dir():
        return _not_read(path, landing, "skipped", "a folder: ingest reads the files of landing/<source>/<day>/ only")
    if not path.is_file():
        return _not_read(path, landing, "refused", "not a regular file (a pipe, socket or device)")
    if path.name.startswith((".", "_")):
        return _not_read(path, landing, "skipped", "a hidden name (starts with '.' or '_'): rename it to load it")
    return scan_file(path, landing, source)


def list_batch(landing: Path, source: SourceConfig, batch_date: dt.date, days: list[dt.date] | None = None) -> list[LandedFile]:
    """Every entry of the batch's folders: landing/<source>/<day>/ for the batch date, or for each of
    `days` (a history load: many days' folders in one batch), in day order. Files to read, and the
    entries that are not read (skipped or refused, with the reason), so nothing is outside the accounting."""
    out = []
    root = landing.resolve()
    for day in days or [batch_date]:
        folder = landing / source.name / day.isoformat()
        if folder.is_symlink() or (folder.parent.is_symlink()):
            out.append(_not_read(folder, landing, "refused", "the day folder is (inside) a symbolic link: links are not followed"))
            continue
        if not folder.is_dir():
            log.warning("no landing folder %s: nothing to ingest for %s on %s", folder, source.name, day)
            continue
        # Shortest name first, so an original `part-00001.csv` is loaded before its `part-00001-resend.csv`.
        entries = sorted(folder.iterdir(), key=lambda p: (len(p.name), p.name))
        out += [_entry(p, landing, root, source) for p in entries]
    return out


def plan_duplicates(files: list[LandedFile], loaded_elsewhere: dict[str, str]) -> dict[str, str | None]:
    """Map each file to the file it duplicates (same checksum, loaded earlier), or None to load it."""
    seen = dict(loaded_elsewhere)
    plan: dict[str, str | None] = {}
    for f in files:
        if f.status != "loaded":
            plan[f.rel] = None
            continue
        original = seen.get(f.checksum)
        plan[f.rel] = original if original and original != f.rel else None
        seen.setdefault(f.checksum, f.rel)
    return plan


@dataclass(frozen=True)
class FileChange:
    file: str
    change: str  # changed | deleted
    previous_checksum: str
    ingested_at: dt.datetime


def landing_changes(files: list[LandedFile], previous: dict[str, tuple[str, dt.datetime]]) -> list[FileChange]:
    """Files an earlier run of this batch ingested (file -> checksum, when) whose bytes changed since,
    or which are gone."""
    now = {f.rel: f.checksum for f in files if f.status == "loaded"}
    out = [FileChange(rel, "changed", sha, at) for rel, (sha, at) in previous.items() if rel in now and now[rel] != sha]
    out += [FileChange(rel, "deleted", sha, at) for rel, (sha, at) in previous.items() if rel not in now]
    return sorted(out, key=lambda c: c.file)


def read_records(spark: SparkSession, files: list[LandedFile], source: SourceConfig) -> DataFrame:
    """One row per record of `files`: _source_file, _line (where it starts), _lines (physical lines it
    spans), raw, reason (structural: NULL when it parsed), the mapped fields as text, the expression
    inputs, _unmapped and _extra. Files are read inside the engine (mapInArrow), whole, so line numbers
    are exact on every engine."""
    plan = read_plan(source)
    paths = spark.createDataFrame(
        [(str(f.path), f.rel, list(f.names) if f.names is not None else None, f.header_lines, f.reason) for f in files],
        "path string, rel string, names array<string>, skip int, file_reason string",
    )
    records = paths.repartition(len(files)).mapInArrow(records_udf(plan), plan.ddl())
    return records.repartition(max(2, os.cpu_count() or 2))


# --- typing ----------------------------------------------------------------------------------------

def timestamp_col(text: Column, formats: tuple[str, ...], tz: str) -> Column:
    """The instant a text means under the declared formats, tried in order (NULL: none fits). A format
    without an offset is a wall clock in `tz`, never silently UTC."""
    out = []
    for f in formats:
        if f == "iso":
            out += [F.try_to_timestamp(text, F.lit(p)) for p in ISO_PATTERNS]
        elif f == "iso_local":
            out += [F.to_utc_timestamp(F.try_to_timestamp(text, F.lit(p)), tz) for p in ISO_LOCAL_PATTERNS]
        elif f == "epoch_ms":
            out.append(F.when(text.rlike(r"^-?[0-9]{1,15}$"), F.timestamp_millis(text.cast("long"))))
        elif f == "epoch_s":
            out.append(F.when(text.rlike(r"^-?[0-9]{1,12}$"), F.timestamp_seconds(text.cast("long"))))
        else:
            parsed = F.try_to_timestamp(text, F.lit(f))
            out.append(F.to_utc_timestamp(parsed, tz) if is_naive(f) else parsed)
    return F.coalesce(*out)


def _escape(s: str) -> str:
    """`s` as a literal in a regex (only the metacharacters escaped: Sail's regex refuses other escapes)."""
    return "".join(f"\\{ch}" if ch in r"\.^$|?*+()[]{}-" else ch for ch in s)


def number_text(text: Column, type_: str, thousands: str | None, symbols: tuple[str, ...]) -> Column:
    """The plain decimal text of a number (symbols and valid thousands separators removed), NULL when
    the text is not exactly such a number: a value with more decimals than the type keeps (it would be
    rounded), bad grouping (`1,2,3`) or any other text is not read."""
    t = text
    if symbols:
        sym = "|".join(_escape(s) for s in symbols)
        t = F.regexp_replace(F.regexp_replace(t, rf"^(-?)\s*(?:{sym})\s*", "$1"), rf"\s*(?:{sym})$", "")
    if type_.startswith("decimal"):
        scale = int(type_.rstrip(")").split(",")[1])
        frac = rf"(\.[0-9]{{1,{scale}}})?" if scale else ""
    else:
        frac = r"(\.[0-9]+)?" if type_ == "double" else ""
    plain = rf"^-?[0-9]+{frac}$"
    if thousands:
        grouped = rf"^-?[0-9]{{1,3}}({_escape(thousands)}[0-9]{{3}})+{frac}$"
        return F.when(t.rlike(plain), t).when(t.rlike(grouped), F.regexp_replace(t, _escape(thousands), ""))
    return F.when(t.rlike(plain), t)


def _typed(text: Column, spec: FieldSpec, m, tz: str) -> tuple[Column, str | None]:
    """The typed value of a field and the reason prefix when a present text does not read as its type."""
    if spec.type == "string":
        return text, None
    if spec.type == "timestamp":
        return timestamp_col(text, m.formats or DEFAULT_TIMESTAMP_FORMATS, tz), "bad_timestamp"
    if spec.type == "date":
        fmts = m.formats or DEFAULT_DATE_FORMATS
        return F.coalesce(*[F.to_date(F.try_to_timestamp(text, F.lit(f))) for f in fmts]), "bad_date"
    number = m.number
    clean = number_text(text, spec.type, number.thousands if number else None, number.symbols if number else ())
    return clean.try_cast(spec.spark_type()), "bad_number"


def _blank_to_null(c: Column) -> Column:
    trimmed = F.trim(c)
    return F.when(F.length(trimmed) > 0, trimmed)


def parse_records(records: DataFrame, source: SourceConfig, timezone: str = DEFAULT_TIMEZONE) -> DataFrame:
    """Type the reader's records into the model's fields plus `reason` (NULL when the record is good).
    A present value that does not read exactly as its type is a reason, never a silent NULL. Reasons
    are taken in order: the reader's (empty_line, bad_encoding, malformed_*, wrong_column_count,
    bad_header), then per field in model order: missing_required, bad_value, bad_<type>."""
    plan = read_plan(source)
    staged = {".".join(path): name for name, path in plan.staged}
    tz = source.zone(timezone)
    mapping = source.mapping()
    unmapped = F.split(F.col("_unmapped"), UNMAPPED_SEP)
    checks = [F.col("reason")]
    typed: dict[str, Column] = {}
    for spec in CHANNEL_FIELDS[source.model]:
        m = mapping[spec.name]
        raw = F.expr(staged_sql(m.expr, staged)).cast("string") if m.expr else F.col(spec.name)
        text = _blank_to_null(raw)
        value, prefix = _typed(text, spec, m, tz)
        typed[spec.name] = value.cast(spec.spark_type())
        if not spec.nullable:
            checks.append(F.when(text.isNull(), F.lit(f"missing_required: {spec.name}")))
        if m.values is not None and m.other == "quarantine":
            checks.append(F.when(F.array_contains(unmapped, spec.name), F.lit(f"bad_value: {spec.name}")))
        if prefix:
            checks.append(F.when(text.isNotNull() & value.isNull(), F.lit(f"{prefix}: {spec.name}")))
    for rule in RECORD_RULES[source.model]:  # the table's row-level expectations: one bad value, one record
        checks.append(F.when(~rule_holds(typed[rule.column], rule), F.lit(rule.name)))
    return records.select(
        "_source_file", "_line", "_lines", "raw", *[typed[n].alias(n) for n in typed], "_extra",
        F.coalesce(*checks).alias("reason"),
    )


def rule_holds(value: Column, rule: RecordRule) -> Column:
    """Whether a value keeps a record rule (an empty value keeps every rule: required fields are
    checked as missing_required)."""
    if rule.in_set is not None:
        allowed = {v for x in rule.in_set for v in ((x, x.upper(), x.lower(), x.capitalize()) if rule.ignore_case else (x,))}
        ok = value.isin(sorted(allowed))
    else:
        ok = value >= F.lit(rule.min_value)
    return value.isNull() | ok


def with_duplicates(parsed: DataFrame, earlier: DataFrame, key: tuple[str, ...], fields: list[str],
                    file_order: DataFrame) -> DataFrame:
    """`parsed` plus `_duplicate` (true: a record already loaded, same key and same content: by an
    earlier batch in `earlier`, or by an earlier file or line of this batch), with `reason` set to
    `conflicting_duplicate` for a good record whose key was loaded with other content (a silent
    change otherwise: which version is right is for a person to decide)."""
    good = F.col("reason").isNull()
    w = Window.partitionBy(F.col("reason").isNull(), *key).orderBy("__file_order", "_line")
    ranked = parsed.join(F.broadcast(file_order), "_source_file", "left").withColumn(
        "__rank", F.when(good, F.row_number().over(w)))
    firsts = ranked.where(good & (F.col("__rank") == 1)).select(
        *key, *[F.col(f).alias(f"__first_{f}") for f in fields if f not in key], F.col("_source_file").alias("__first_file"))
    keys = ranked.where(good).select(*key).distinct()
    prior = (earlier.join(keys, list(key), "left_semi")
             .select(*key, *[F.col(f).alias(f"__prior_{f}") for f in fields if f not in key],
                     F.col("_batch_date").alias("__prior_batch"), F.col("_source_file").alias("__prior_file")))
    joined = ranked.join(firsts, list(key), "left").join(prior, list(key), "left")
    others = [f for f in fields if f not in key]

    def same(prefix: str) -> Column:
        return F.lit(True) if not others else F.expr(" AND ".join(f"`{f}` <=> `{prefix}{f}`" for f in others))

    has_prior = F.col("__prior_batch").isNotNull()
    later_in_batch = F.col("__rank") > 1
    label = ", ".join(key)
    conflict = (
        F.when(good & has_prior & ~same("__prior_"), F.concat(
            F.lit(f"conflicting_duplicate: {label} loaded with other values by batch "), F.col("__prior_batch").cast("string"),
            F.lit(" ("), F.col("__prior_file"), F.lit(")")))
        .when(good & ~has_prior & later_in_batch & ~same("__first_"), F.concat(
            F.lit(f"conflicting_duplicate: {label} delivered with other values in "), F.col("__first_file")))
    )
    duplicate = good & ((has_prior & same("__prior_")) | (~has_prior & later_in_batch & same("__first_")))
    return joined.select(
        *[c for c in parsed.columns if c != "reason"],
        F.coalesce(F.col("reason"), conflict).alias("reason"),
        F.coalesce(duplicate, F.lit(False)).alias("_duplicate"),
    )


def _suppressed(parsed: DataFrame) -> Column:
    return F.col("_suppressed") if "_suppressed" in parsed.columns else F.lit(False)


def build_bronze(parsed: DataFrame, source: SourceConfig, batch_date: dt.date, ingested_at: dt.datetime) -> DataFrame:
    """Good rows of `parsed` as bronze_<model> rows (typed fields, _extra and lineage)."""
    names = [c.name for c in CHANNEL_FIELDS[source.model]]
    return parsed.where(F.col("reason").isNull() & ~F.col("_duplicate") & ~_suppressed(parsed)).select(
        *names, "_extra", F.lit(source.name).alias("_source"), "_source_file", "_line",
        F.lit(batch_date).alias("_batch_date"),
        F.lit(ingested_at).cast("timestamp").alias("_ingested_at"),
        F.sha2(F.col("raw"), 256).alias("_row_hash"),
    )


def build_quarantine(parsed: DataFrame, source: SourceConfig, batch_date: dt.date, ingested_at: dt.datetime) -> DataFrame:
    """Records of `parsed` that failed, with the raw text and the reason."""
    return parsed.where(F.col("reason").isNotNull() & ~_suppressed(parsed)).select(
        F.lit(source.name).alias("channel"), "_source_file", "_line", "raw", "reason",
        F.lit(batch_date).alias("_batch_date"),
        F.lit(ingested_at).cast("timestamp").alias("_ingested_at"),
        F.sha2(F.col("raw"), 256).alias("_row_hash"),
    )


def _loaded_checksums(lh: Lakehouse, source: str, batch_date: dt.date) -> dict[str, str]:
    """Checksums of files loaded by earlier batches of this source (a bounded, per-file table). Only
    earlier ones: a re-run of a day never makes its files duplicates of a later day's resend."""
    if not lh.exists("ops_ingest_files"):
        return {}
    rows = (
        lh.read("ops_ingest_files")
        .where((F.col("channel") == source) & (F.col("batch_date") < F.lit(batch_date)) & (F.col("status") == "loaded")
               & F.col("duplicate_of").isNull())
        .select("checksum", "file")
        .collect()
    )
    return {r["checksum"]: r["file"] for r in sorted(rows, key=lambda r: r["file"])}


def _ingested_before(lh: Lakehouse, source: str, batch_date: dt.date) -> dict[str, tuple[str, dt.datetime]]:
    """The files an earlier run of this same batch ingested: file -> (checksum, when)."""
    if not lh.exists("ops_ingest_files"):
        return {}
    rows = (
        lh.read("ops_ingest_files", {"batch_date": batch_date, "channel": source})
        .where(F.col("status").isin("loaded", "duplicate"))
        .select("file", "checksum", "ingested_at").collect()
    )
    return {r["file"]: (r["checksum"], r["ingested_at"]) for r in rows}


@dataclass(frozen=True)
class FileCounts:
    records: int = 0
    lines: int = 0
    loaded: int = 0
    quarantined: int = 0
    duplicates: int = 0
    suppressed: int = 0


def _audit(staged: DataFrame, files: list[LandedFile], plan: dict[str, str | None]) -> tuple[dict[str, FileCounts], dict[str, int]]:
    """Count staged records per file (loaded / quarantined / duplicates / suppressed: an erased person's,
    which neither bronze nor quarantine keeps; physical lines) and reason;
    raise IngestError, before anything is published, unless the records of every loaded file cover
    each of its lines."""
    rows = (
        staged.select("_source_file", "_lines", "_duplicate", "_suppressed", F.split("reason", ":")[0].alias("kind"))
        .groupBy("_source_file", "kind", "_duplicate", "_suppressed").agg(F.count(F.lit(1)).alias("n"), F.sum("_lines").alias("lines"))
        .collect()
    )
    per_file: dict[str, dict[str, int]] = {}
    reasons: dict[str, int] = {}
    for r in rows:
        c = per_file.setdefault(r["_source_file"], {"records": 0, "lines": 0, "loaded": 0, "quarantined": 0, "duplicates": 0,
                                                    "suppressed": 0})
        c["records"] += r["n"]
        c["lines"] += r["lines"]
        if r["_suppressed"]:
            c["suppressed"] += r["n"]
            continue
        c["quarantined" if r["kind"] is not None else "duplicates" if r["_duplicate"] else "loaded"] += r["n"]
        if r["kind"] is not None:
            reasons[r["kind"]] = reasons.get(r["kind"], 0) + r["n"]
    out = {}
    for f in files:
        c = FileCounts(**per_file.get(f.rel, {}))
        if f.status == "loaded" and plan[f.rel] is None and c.lines != f.lines:
            raise IngestError(
                f"{f.rel}: the file has {f.lines} data lines but ingest read {c.records} records spanning {c.lines} "
                f"lines ({c.loaded} loaded, {c.quarantined} quarantined, {c.duplicates} duplicates, {c.suppressed} suppressed); "
                "nothing was published"
            )
        out[f.rel] = c
    return out, reasons


def _source_of(source: str | SourceConfig, sources: SourcesConfig | None) -> SourceConfig:
    if isinstance(source, SourceConfig):
        return source
    if sources is None:  # the default file of paths.sources
        from spark_jobs.config import PathsConfig
        from spark_jobs.sources.config import load_sources

        sources = load_sources(PathsConfig().file("sources"))
    return sources.get(source)


def _changed_error(src: SourceConfig, batch_date: dt.date, changes: list[FileChange]) -> LandingError:
    listed = "; ".join(f"{c.file} {c.change} (ingested {c.ingested_at:%Y-%m-%d %H:%M} with sha256 {c.previous_checksum[:12]}…)"
                       for c in changes[:10])
    more = f" and {len(changes) - 10} more" if len(changes) > 10 else ""
    return LandingError(
        f"{src.name} {batch_date}: landing files changed since an earlier run of this batch ingested them: {listed}{more}. "
        "Landing files are never modified; restore the delivered files, or re-run with --accept-changed-files to take "
        "the new content (the change is recorded in ops_ingest_files and later days are marked as needing a re-run)"
    )


def run(spark: SparkSession, lh: Lakehouse, landing: Path, source: str | SourceConfig, batch_date: dt.date,
        ingested_at: dt.datetime, sources: SourcesConfig | None = None, timezone: str = DEFAULT_TIMEZONE,
        days: list[dt.date] | None = None, accept_changed_files: bool = False, phone_region: str = "CN") -> dict:
    """Load one source-day into bronze (or, with `days`, those days' folders as one batch dated
    `batch_date`: a history load); return its accounting (also written to ops_ingest_files).
    Write-audit-publish: records are parsed once and staged, every line is accounted for, then the
    source's partitions of bronze, quarantine and ops_ingest_files are replaced for the batch.
    A record whose key an earlier batch (or file) loaded with the same values is a duplicate, counted
    and not loaded; with other values it is quarantined. A record carrying an erased person's identifier
    (ops_suppressions) is counted as suppressed and kept nowhere. A re-run stops with LandingError when files an
    earlier run of the batch ingested changed or disappeared, unless `accept_changed_files`."""
    src = _source_of(source, sources)
    files = list_batch(landing, src, batch_date, days)
    changes = landing_changes(files, _ingested_before(lh, src.name, batch_date))
    if changes and not accept_changed_files:
        raise _changed_error(src, batch_date, changes)
    plan = plan_duplicates(files, _loaded_checksums(lh, src.name, batch_date))
    to_read = [f for f in files if f.status == "loaded" and plan[f.rel] is None and f.lines > 0]
    bronze_table = bronze_name(src.model)
    stage_key = f"ingest/{src.name}/{batch_date.isoformat()}"
    counts: dict[str, FileCounts] = {}
    reasons: dict[str, int] = {}
    try:
        if to_read:
            parsed = parse_records(read_records(spark, to_read, src), src, timezone)
            order = spark.createDataFrame([(f.rel, i) for i, f in enumerate(to_read)], "_source_file string, __file_order int")
            earlier = lh.read_or_empty(bronze_table).where(F.col("_batch_date") < F.lit(batch_date))
            fields = [c.name for c in CHANNEL_FIELDS[src.model]]
            checked = with_duplicates(parsed, earlier, src.record_key(), fields, order)
            staged = lh.stage(stage_key, with_suppressed(checked, suppression.load(lh.root), phone_region=phone_region))
            counts, reasons = _audit(staged, files, plan)
            bronze = build_bronze(staged, src, batch_date, ingested_at)
            quarantine = build_quarantine(staged, src, batch_date, ingested_at)
        else:
            bronze = spark.createDataFrame([], contract(bronze_table).schema())
            quarantine = spark.createDataFrame([], contract("bronze_quarantine").schema())
        lh.write_partition(bronze_table, bronze, {"_batch_date": batch_date, "_source": src.name})
        lh.write_partition("bronze_quarantine", quarantine, {"_batch_date": batch_date, "channel": src.name})
    finally:
        lh.unstage(stage_key)

    changed = {c.file: c for c in changes}
    rows = []
    for f in files:
        c = counts.get(f.rel, FileCounts()) if f.status == "loaded" and not plan[f.rel] else FileCounts()
        status = "duplicate" if plan[f.rel] else f.status
        ch = changed.get(f.rel)
        note = f.note or (f"changed since the run of {ch.ingested_at:%Y-%m-%d %H:%M}; accepted" if ch else None)
        rows.append((batch_date, src.name, f.rel, f.checksum, f.bytes, f.lines, c.records, c.loaded, c.quarantined,
                     c.duplicates, c.suppressed, status, plan[f.rel], ch.previous_checksum if ch else None, note, ingested_at))
    for ch in changes:
        if ch.change == "deleted":
            rows.append((batch_date, src.name, ch.file, None, 0, 0, 0, 0, 0, 0, 0, "deleted", None, ch.previous_checksum,
                         f"ingested {ch.ingested_at:%Y-%m-%d %H:%M}, gone since; accepted: its records are no longer loaded",
                         ingested_at))
    files_df = spark.createDataFrame(rows, contract("ops_ingest_files").schema())
    lh.write_partition("ops_ingest_files", files_df, {"batch_date": batch_date, "channel": src.name})
    return {
        "channel": src.name,
        "model": src.model,
        "files": sum(1 for f in files if f.status == "loaded"),
        "duplicate_files": sum(1 for v in plan.values() if v),
        "skipped_files": [f"{f.rel}: {f.note}" for f in files if f.status == "skipped"],
        "refused_files": [f"{f.rel}: {f.note}" for f in files if f.status == "refused"],
        "changed_files": [f"{c.file}: {c.change}" for c in changes],
        "lines": sum(f.lines for f in to_read),
        "records": sum(c.records for c in counts.values()),
        "loaded": sum(c.loaded for c in counts.values()),
        "quarantined": sum(c.quarantined for c in counts.values()),
        "duplicates": sum(c.duplicates for c in counts.values()),
        "suppressed": sum(c.suppressed for c in counts.values()),
        "quarantine_reasons": dict(sorted(reasons.items())),
    }
