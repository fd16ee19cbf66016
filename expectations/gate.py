"""Write-audit-publish with Great Expectations. `QualityGate.check` validates a frame a stage is about
to publish (already staged, so the check and the write read the same rows), records every result in
`ops_dq_results` and as a GX result file for Data Docs, and raises QualityGateError when a critical
expectation fails: the caller then writes nothing. `build_docs` renders the Data Docs site."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from expectations.docs_assets import localise
from expectations.suites import CRITICAL, GATED, SuiteContext, gx, gx_suite, label, record_key, suite_for
from spark_jobs.config import PROJECT_ROOT, CdpConfig
from spark_jobs.contracts import KeyProof, contract
from spark_jobs.runs import is_history_run
from spark_jobs.tables import Lakehouse, TableNotFoundError, partition_predicate, read_pandas

log = logging.getLogger(__name__)

DQ_TABLE = "ops_dq_results"
# The partition column that holds the batch date, per layer.
_BATCH_COLUMNS = ("_batch_date", "batch_date", "as_of")


class QualityGateError(RuntimeError):
    """A critical expectation failed: the table was not published (the message names the table, the
    expectation and example bad values)."""


@dataclass(frozen=True)
class _Failure:
    expectation: str
    unexpected: int | None
    observed: str | None
    examples: list


def docs_root(cfg: CdpConfig) -> Path:
    """Where GX result files and the Data Docs site live: quality.docs, else <lakehouse>/_dq; with the
    lakehouse on an object store, the project's local lakehouse/_dq, beside the run figures
    (paths.runs): GX's file data context and its Data Docs site write a local folder."""
    if cfg.quality.docs:
        path = Path(cfg.quality.docs).expanduser()
        return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()
    root = cfg.paths.lakehouse_uri()
    return (PROJECT_ROOT / "lakehouse" if "://" in root else Path(root)) / "_dq"


def _run_folder(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)


def _text(value) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _scope(partition: dict) -> str:
    """The partition without its batch column: the same scope on another day has the same text."""
    rest = {k: v for k, v in partition.items() if k not in _BATCH_COLUMNS}
    return partition_predicate(rest) if rest else "(whole batch)"


class QualityGate:
    """One stage run's gate: `Lakehouse.write_partition` calls `check` before every publish. The
    results are committed to ops_dq_results by `flush`, once per stage (on leaving `with`), failures
    included: one Delta commit per stage instead of one per validation."""

    def __init__(self, lh: Lakehouse, cfg: CdpConfig, run_id: str, batch_date: dt.date, checked_at: dt.datetime | None = None):
        self.lh, self.cfg, self.run_id, self.batch_date = lh, cfg, run_id, batch_date
        self.checked_at = (checked_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(tzinfo=None)
        self.results: list[dict] = []
        self.seconds: dict[str, float] = {}  # per table: validating and recording its checks
        self._context = None
        self._row_counts = None  # ops_dq_results' row counts of earlier batches (read on the first check)
        self._pending: list[dict] = []  # checked, not yet committed to ops_dq_results

    def __enter__(self) -> QualityGate:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.flush()
            return
        try:  # the stage failed (a critical check, or anything else): its results are still recorded
            self.flush()
        except Exception:
            log.exception("could not record the quality results of a failed stage in %s", DQ_TABLE)

    def flush(self) -> int:
        """Commit the results checked since the last flush to ops_dq_results, one partition per
        validation (batch_date, table_name, check_key) replaced in a single commit: a retry with the
        same run id replaces its own rows. Returns the rows written."""
        if not self._pending:
            return 0
        rows, self._pending = self._pending, []
        t0 = time.perf_counter()
        try:
            c = contract(DQ_TABLE)
            frame = self.lh.spark.createDataFrame([tuple(r[n] for n in c.column_names) for r in rows], c.schema())
            self.lh.write_partition(DQ_TABLE, frame, {
                "batch_date": self.batch_date, "table_name": tuple(sorted({r["table_name"] for r in rows})),
                "check_key": tuple(sorted({r["check_key"] for r in rows}))})
        except Exception:
            self._pending = rows + self._pending  # kept for the next flush
            raise
        finally:
            self.seconds[DQ_TABLE] = self.seconds.get(DQ_TABLE, 0.0) + time.perf_counter() - t0
        return len(rows)

    def covers(self, table: str) -> bool:
        return table in GATED

    # ------------------------------------------------------------------ validation
    def _gx(self):
        if self._context is None:
            self._context = gx.get_context(mode="ephemeral")
            self._context.variables.progress_bars = {"globally": False, "metric_calculations": False}
            self._source = self._context.data_sources.add_spark(name="cdp")
        return self._context

    def _history(self, table: str, scope: str) -> tuple[int, ...]:
        """Row counts of earlier daily batches of `table` in the same scope (latest check per batch). A
        history load (one batch of many days) is neither compared with them nor counted among them: its
        size is that of many days. The row counts of every table are read once per gate, not once per check."""
        if is_history_run(self.run_id):
            return ()
        if self._row_counts is None:
            import pyarrow.compute as pc

            columns = ["run_id", "table_name", "batch_date", "scope", "observed_value", "checked_at"]
            try:
                self._row_counts = read_pandas(
                    self.lh.root, DQ_TABLE, columns,
                    where=(pc.field("expectation") == "row_count") & (pc.field("batch_date") < pc.scalar(self.batch_date)))
            except TableNotFoundError:
                import pandas as pd

                self._row_counts = pd.DataFrame(columns=columns)
        df = self._row_counts
        df = df[(df["table_name"] == table) & (df["scope"] == scope) & ~df["run_id"].map(is_history_run).astype(bool)]
        df = df.sort_values("checked_at").drop_duplicates("batch_date", keep="last")
        return tuple(int(v) for v in df.sort_values("batch_date")["observed_value"])

    def _context_for(self, table: str, scope: str, partition: dict | None = None) -> SuiteContext:
        known = None
        if table == "silver_orders" and self.lh.exists("silver_contacts"):
            from pyspark.sql import functions as F

            known = (self.lh.read("silver_contacts").where(F.col("_batch_date") <= F.lit(self.batch_date))
                     .where(F.col("source") == "crm").select("member_id"))
        key, earlier = record_key(table, self.cfg.sources.sources.get((partition or {}).get("_source"))), None
        if key and self.lh.exists(table):
            from pyspark.sql import functions as F

            earlier = self.lh.read(table).where(F.col("_batch_date") < F.lit(self.batch_date)).select(*key)
        return SuiteContext(
            batch_date=self.batch_date, quality=self.cfg.quality, identity=self.cfg.identity,
            timezone=self.cfg.standardise.timezone, row_history=self._history(table, scope), known_members=known,
            record_key=key, earlier_keys=earlier, recent_events_limit=self.cfg.profiles.recent_events_limit,
            tag_types=dict(self.cfg.tags.types), segments=tuple(s.name for s in self.cfg.segments.segments),
            sources=tuple(self.cfg.sources.sources),
            source_window=source.window if (source := self.cfg.sources.sources.get((partition or {}).get("_source"))) else "daily",
        )

    def check(self, table: str, df, partition: dict, key_proof: KeyProof | None = None) -> list[dict]:
        """Validate `df` (what is about to be published to `partition` of `table`); record the results;
        raise QualityGateError on a critical failure. With a `key_proof` whose premise holds, the key
        check is recorded as proved instead of run over `df`."""
        t0 = time.perf_counter()
        try:
            return self._check(table, df, partition, key_proof)
        finally:
            self.seconds[table] = self.seconds.get(table, 0.0) + time.perf_counter() - t0

    def _check(self, table: str, df, partition: dict, key_proof: KeyProof | None) -> list[dict]:
        scope = _scope(partition)
        suite = suite_for(table, self._context_for(table, scope, partition))
        proved = self._prove(table, suite, key_proof)
        ctx = self._gx()
        name = f"{table}-{uuid.uuid4().hex[:12]}"
        asset = self._source.add_dataframe_asset(name=name)
        batch = asset.add_batch_definition_whole_dataframe("batch")
        gx_s = ctx.suites.add(gx_suite(suite))
        try:
            validation = gx.ValidationDefinition(name=name, data=batch, suite=gx_s)
            run = gx.RunIdentifier(run_name=self.run_id, run_time=self.checked_at)
            result = validation.run(batch_parameters={"dataframe": suite.prepare(df)}, result_format="SUMMARY", run_id=run)
            suite_json = gx_s.to_json_dict()
        finally:
            ctx.suites.delete(suite.name)
        _add_proved(result, suite_json, proved)

        key = hashlib.sha256(f"{self.run_id}|{table}|{scope}".encode()).hexdigest()[:16]
        rows, failures = [], []
        for r in result.results:
            config = r.expectation_config
            level = str(getattr(config.severity, "value", config.severity))
            res = r.result or {}
            _withhold_personal(res, table, config.kwargs)  # before the row, the message and result.json take them
            examples = (res.get("partial_unexpected_list") or [])[:10]
            row = {
                "run_id": self.run_id, "batch_date": self.batch_date, "table_name": table, "scope": scope,
                "suite": suite.name, "expectation": label(config), "level": level, "success": bool(r.success),
                "observed_value": _text(res.get("observed_value")), "unexpected_count": res.get("unexpected_count"),
                "unexpected_examples": json.dumps(examples, default=str) if examples else None,
                "checked_at": self.checked_at, "check_key": key,
            }
            rows.append(row)
            if level == CRITICAL and not r.success:
                failures.append(_Failure(row["expectation"], row["unexpected_count"], row["observed_value"], examples))
        self._record(table, key, rows, result, suite_json)
        self.results.extend(rows)
        if failures:
            raise QualityGateError(self._message(table, scope, failures))
        warned = [r["expectation"] for r in rows if not r["success"]]
        if warned:
            log.warning("quality warnings on %s (%s): %s", table, scope, ", ".join(warned))
        return rows

    def _prove(self, table: str, suite, key_proof: KeyProof | None) -> list[tuple[object, str]]:
        """Take the table's key check out of `suite` when `key_proof`'s premise holds (one aggregate
        over the premise frame); return it with the text its result records. Without a proof, with
        proving turned off (quality.prove_keys) or when the premise fails, the key is checked as usual."""
        if key_proof is None or not self.cfg.quality.prove_keys or suite.key not in suite.expectations:
            return []
        from pyspark.sql import functions as F

        k = list(key_proof.premise_key)
        missing = F.lit(False)
        for col in k:
            missing = missing | F.col(col).isNull()
        row = key_proof.premise.agg(F.count(F.lit(1)).alias("rows"), F.count_distinct(*[F.col(c) for c in k]).alias("distinct"),
                                    F.sum(F.when(missing, 1).otherwise(0)).alias("nulls")).collect()[0]
        rows, distinct, nulls = int(row["rows"]), int(row["distinct"]), int(row["nulls"] or 0)
        if nulls or distinct != rows:
            log.warning("%s: key proof premise failed (%d rows, %d distinct on %s, %d with a NULL): checking the key itself",
                        table, rows, distinct, ",".join(k), nulls)
            return []
        suite.expectations.remove(suite.key)
        return [(suite.key, f"proved: {key_proof.reason} (premise checked: {rows} rows unique on {','.join(k)})")]

    def _message(self, table: str, scope: str, failures: list[_Failure]) -> str:
        lines = [f"quality gate: {table} was not published (batch {self.batch_date}, {scope}); critical failures:"]
        for f in failures:
            what = f"{f.unexpected} unexpected value(s), e.g. {f.examples}" if f.unexpected else f"observed {f.observed}"
            lines.append(f"  - {f.expectation}: {what}")
        return "\n".join(lines)

    def _record(self, table: str, key: str, rows: list[dict], result, suite_json: dict) -> None:
        """Queue `rows` for ops_dq_results (see flush); write the GX result and suite files of Data Docs."""
        self._pending = [r for r in self._pending if r["check_key"] != key] + rows  # a re-check replaces
        out = docs_root(self.cfg) / "results" / _run_folder(self.run_id) / key
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(result.to_json_dict(), default=str))
        (out / "meta.json").write_text(json.dumps({
            "table": table, "run_id": self.run_id, "run_time": self.checked_at.isoformat(),
            "batch_date": self.batch_date.isoformat(), "suite": suite_json,
        }, default=str))


def _add_proved(result, suite_json: dict, proved: list[tuple[object, str]]) -> None:
    """Record each proved check in the GX result and suite (so ops_dq_results and Data Docs list it as
    passed, with the proof as its observed value)."""
    from great_expectations.core import ExpectationValidationResult

    for e, text in proved:
        result.results.append(ExpectationValidationResult(
            success=True, expectation_config=e.configuration, meta={"proved": True},
            result={"observed_value": text, "unexpected_count": 0, "unexpected_percent": 0.0, "partial_unexpected_list": []}))
        suite_json["expectations"].append(e.configuration.to_json_dict())
    if proved:
        stats = result.statistics
        stats["evaluated_expectations"] = stats.get("evaluated_expectations", 0) + len(proved)
        stats["successful_expectations"] = stats.get("successful_expectations", 0) + len(proved)
        total = stats["evaluated_expectations"]
        stats["success_percent"] = 100.0 * stats["successful_expectations"] / total if total else None


def _personal_columns(table: str, kwargs) -> list[str]:
    """The columns an expectation checks that hold personal data (by their PII class)."""
    from spark_jobs.privacy.classes import UnclassifiedColumnError, column_class

    names = [kwargs.get("column"), *(kwargs.get("column_list") or ())]
    out = []
    for c in names:
        if not c:
            continue
        try:
            if column_class(table, c) != "none":
                out.append(c)
        except UnclassifiedColumnError:
            continue  # not a table column: a check's own derived flag (true/false), no personal value
    return out


def _withhold_personal(res: dict, table: str, kwargs) -> None:
    """Replace the example values of a personal-data column by keyed tokens (`tok:` + 16 hex of
    HMAC-SHA-256 under the project key; the same value gives the same token, so repeated offenders are
    still visible), or by a count when no key is configured: ops_dq_results, the gate's error message,
    the result files and the Data Docs built from them never show the values themselves."""
    if not res.get("partial_unexpected_list") or not _personal_columns(table, kwargs):
        return
    from spark_jobs.privacy.suppression import token_key
    from spark_jobs.privacy.tokens import TokenKeyError, token

    try:
        key = token_key()
        hide = lambda v: None if v is None else "tok:" + token(str(v), key)[:16]  # noqa: E731
    except TokenKeyError:
        hide = lambda v: None if v is None else "[personal value withheld]"  # noqa: E731
    res["partial_unexpected_list"] = [hide(v) for v in res["partial_unexpected_list"]]
    if res.get("partial_unexpected_counts"):
        res["partial_unexpected_counts"] = [{**c, "value": hide(c.get("value"))} for c in res["partial_unexpected_counts"]]
    res.pop("partial_unexpected_index_list", None)


def build_docs(cfg: CdpConfig, run_id: str | None = None) -> Path:
    """Render the GX Data Docs site from every recorded result (or those of `run_id`); return index.html."""
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    root = docs_root(cfg)
    ctx = gx.get_context(mode="file", project_root_dir=str(root))
    ctx.variables.progress_bars = {"globally": False, "metric_calculations": False}
    # The GX store keeps what earlier builds added: a run adds only its own results.
    results: list = []
    suites: dict[str, object] = {}  # one page per suite, however many results it has
    for folder in sorted((root / "results").glob(f"{_run_folder(run_id) if run_id else '*'}/*")):
        meta_file = folder / "meta.json"
        if not meta_file.exists():
            continue
        meta = json.loads(meta_file.read_text())
        if run_id and meta["run_id"] != run_id:
            continue
        suite = meta["suite"]
        ctx.suites.add_or_update(gx.ExpectationSuite(name=suite["name"], expectations=suite["expectations"]))
        result = ExpectationSuiteValidationResult(**json.loads((folder / "result.json").read_text()))
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=meta["table"]),
            run_id=gx.RunIdentifier(run_name=meta["run_id"], run_time=dt.datetime.fromisoformat(meta["run_time"])),
            batch_identifier=f"{meta['table']}-{folder.name}",
        )
        ctx.validation_results_store.set(key, result)
        results.append(key)
        suites.setdefault(suite["name"], ExpectationSuiteIdentifier(name=suite["name"]))
    built = results + list(suites.values())
    # A run's build renders its own pages (and the index); earlier runs' pages are on the site already,
    # so the cost follows the run, not the history.
    started = time.time() - 1  # file times may be coarser than the clock
    ctx.build_data_docs(resource_identifiers=built if run_id and built else None)
    site = root / "gx" / "uncommitted" / "data_docs" / "local_site"
    # jQuery, Bootstrap, bootstrap-table from npm, so the site works offline.
    localise(site, root / "vendor-cache", since=started if run_id else None)
    return site / "index.html"
