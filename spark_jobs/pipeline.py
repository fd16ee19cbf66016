"""Runs one stage of the daily pipeline on the configured engine and records its figures under
<lakehouse>/_runs/<run_id>/; summarise() merges them into _runs/latest.json."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import time

from spark_jobs import ingest, profiles, runs, segments, standardise, tags
from spark_jobs.config import CdpConfig, load_config
from spark_jobs.contracts import bronze_name
from spark_jobs.identity import stage as identity
from spark_jobs.session import spark_session
from spark_jobs.tables import Lakehouse

log = logging.getLogger(__name__)

STAGES = ("ingest", "standardise", "identity", "profiles", "score", "tags", "segments", "analytics")


class PipelineError(ValueError):
    """A stage was asked for something it cannot do (unknown stage or source, bad date)."""


def run_stage(
    stage: str,
    batch_date: dt.date,
    run_id: str,
    channel: str | None = None,
    cfg: CdpConfig | None = None,
    started_at: dt.datetime | None = None,
    days: list[dt.date] | None = None,
    accept_changed_files: bool = False,
) -> dict:
    """Run `stage` for `batch_date` in its own Spark session; return and record its figures. The
    stage runs under the lakehouse claim of `run_id` (taken for the stage alone when the run holds
    none; RunConflictError when another run holds it)."""
    cfg = cfg or load_config()
    if stage not in STAGES:
        raise PipelineError(f"unknown stage {stage!r}; stages: {list(STAGES)}")
    if stage == "ingest" and channel not in cfg.sources.sources:
        raise PipelineError(f"ingest needs a source of {cfg.paths.sources}, got {channel!r}; declared: {sorted(cfg.sources.sources)}")
    took = runs.acquire(cfg, run_id, batch_date, pid=os.getpid())
    try:
        return _run_stage(stage, batch_date, run_id, channel, cfg, started_at, days, accept_changed_files)
    finally:
        if took:
            runs.release(cfg, run_id)


def _run_stage(stage, batch_date, run_id, channel, cfg, started_at, days, accept_changed_files) -> dict:
    started_at = (started_at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(tzinfo=None)
    t0 = time.perf_counter()
    with spark_session(cfg.engine, cfg.paths.on_object_store()) as spark:
        lh = Lakehouse(spark, cfg.paths.lakehouse_uri(), run_id=run_id)
        if cfg.quality.enabled:  # write-audit-publish: every table write is validated first
            from expectations.gate import QualityGate

            lh.gate = QualityGate(lh, cfg, run_id, batch_date, started_at)
        with lh.gate or contextlib.nullcontext():  # the stage's results reach ops_dq_results in one commit
            result = _compute(stage, lh, spark, batch_date, run_id, channel, cfg, started_at, days, accept_changed_files)
        if lh.gate is not None:
            checked = lh.gate.results
            result["quality"] = {"expectations": len(checked), "failed": sum(not r["success"] for r in checked),
                                 "seconds": round(sum(lh.gate.seconds.values()), 2), "seconds_by_table": {t: round(v, 2) for t, v in lh.gate.seconds.items()}}
    figures = {
        "stage": stage, "channel": channel, "batch_date": batch_date.isoformat(), "run_id": run_id,
        "engine": cfg.engine.kind, "engine_remote": cfg.engine.remote.split(";")[0] if cfg.engine.kind == "connect" else None,
        "seconds": round(time.perf_counter() - t0, 2), **result,
    }
    out = cfg.paths.runs(run_id) / (f"{stage}-{channel}.json" if channel else f"{stage}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, sort_keys=True))
    log.info("%s%s done in %.1fs", stage, f"[{channel}]" if channel else "", figures["seconds"])
    return figures


def _compute(stage, lh, spark, batch_date, run_id, channel, cfg, started_at, days, accept_changed_files) -> dict:
    """The stage's own work on `lh`: its figures and rows per table written."""
    if stage == "ingest":
        result = ingest.run(spark, lh, cfg.paths.landing_path(), cfg.sources.get(channel), batch_date, started_at,
                            timezone=cfg.standardise.timezone, days=days, accept_changed_files=accept_changed_files,
                            phone_region=cfg.standardise.phone_region)
    elif stage == "standardise":
        result = {"tables": standardise.run(lh, cfg.standardise, batch_date,
                                            standardise.declared_id_columns(cfg.sources),
                                            standardise.declared_strengths(cfg.sources))}
    elif stage == "identity":
        figures = identity.run(lh, cfg.identity, batch_date)
        result = {"identity": figures, "tables": {"gold_id_map": figures["identifiers"]}}
    elif stage == "score":  # before tags: predicted tags read the batch date's scores
        from ml import score

        result = score.run(lh, cfg, batch_date)
    elif stage == "analytics":  # after segments: transitions read the day's memberships
        from spark_jobs.analytics import stage as analytics

        result = analytics.run(lh, cfg, batch_date, run_id)
    else:  # the marts: each returns its figures and rows per table written
        result = {"profiles": profiles.run, "tags": tags.run, "segments": segments.run}[stage](lh, cfg, batch_date)
    return result


def history_config(cfg: CdpConfig) -> CdpConfig:
    """`cfg` for a history load: every source's batch window is `history` (event times spread over many
    days are expected: a warning, not the critical finding of a daily delivery)."""
    sources = cfg.sources.model_copy(update={"sources": {
        n: s.model_copy(update={"window": "history"}) for n, s in cfg.sources.sources.items()}})
    return cfg.model_copy(update={"sources": sources})


def run_day(batch_date: dt.date, stages: list[str] | None = None, cfg: CdpConfig | None = None,
            allow_out_of_order: bool = False, accept_changed_files: bool = False, wait: float = 0.0,
            progress=lambda message: None) -> str:
    """Run the daily pipeline (or some `stages`) for one batch date as one run: claim the lakehouse
    (RunConflictError when another run holds it), check the day's order (RunOrderError), run the
    stages, then record the run in ops_runs last. Returns the run id."""
    cfg = cfg or load_config()
    stages = list(stages or STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise PipelineError(f"unknown stage(s) {unknown}; stages: {list(STAGES)}")
    run_id = f"cli__{batch_date.isoformat()}__{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}"
    sources = list(cfg.ingest_sources())
    return _as_one_run(cfg, run_id, batch_date, batch_date, stages, sources, None, allow_out_of_order,
                       accept_changed_files, wait, progress)


def _as_one_run(cfg, run_id, batch_date, first_day, stages, sources, days, allow_out_of_order, accept_changed_files,
                wait, progress) -> str:
    started = dt.datetime.now(dt.UTC)
    runs.acquire(cfg, run_id, batch_date, pid=os.getpid(), wait=wait)
    try:
        later = runs.check_order(cfg, batch_date, allow_out_of_order, sources, first_day)
        changed = []
        for stage in stages:
            if stage == "ingest":
                for name in sources:
                    r = run_stage("ingest", batch_date, run_id, channel=name, cfg=cfg, days=days,
                                  accept_changed_files=accept_changed_files)
                    changed += r["changed_files"]
                    span = f" of {len(days)} days" if days else ""
                    progress(f"ingest {name}: {r['files']} files{span}, {r['records']:,} records = {r['loaded']:,} loaded + "
                             f"{r['quarantined']:,} quarantined + {r['duplicates']:,} duplicates ({r['seconds']} s)")
            else:
                r = run_stage(stage, batch_date, run_id, cfg=cfg)
                progress(f"{stage} as of {batch_date} ({r['seconds']} s)")
        if changed and not later:
            later = sorted(d for d in runs.run_days(cfg) if d > batch_date)
        notes = [n for n, on in ((f"out of order (allowed): {len(later)} later day(s) need a re-run", allow_out_of_order and later),
                                 (f"accepted {len(changed)} changed or deleted landing file(s)", changed)) if on]
        status = "complete" if stages == list(STAGES) else "partial"
        runs.record_run(cfg, run_id, batch_date, started, status, first_day, later, "; ".join(notes) or None)
    except BaseException as e:
        try:
            runs.record_run(cfg, run_id, batch_date, started, "failed", first_day, (), f"{type(e).__name__}: {e}"[:2000])
        except Exception:  # the original error matters more than the bookkeeping
            log.exception("could not record the failed run %s", run_id)
        raise
    finally:
        runs.clear_staging(cfg, run_id)
        runs.release(cfg, run_id)
    return run_id


def load_history(first: dt.date, last: dt.date, sources: list[str] | None = None, cfg: CdpConfig | None = None,
                 progress=lambda message: None, allow_out_of_order: bool = False, accept_changed_files: bool = False,
                 wait: float = 0.0) -> str:
    """Load the landing folders of `first`..`last` as ONE batch dated `last`, then run every later stage
    once for that date: a year of history in one run instead of one run per day. Records keep their
    own dates, so the marts as of `last` equal those of daily loads. Returns the run id."""
    cfg = history_config(cfg or load_config())
    if last < first:
        raise PipelineError(f"--to {last} is before --from {first}")
    names = sources or list(cfg.ingest_sources())
    unknown = sorted(set(names) - set(cfg.sources.sources))
    if unknown:
        raise PipelineError(f"unknown source(s) {unknown}; declared in {cfg.paths.sources}: {sorted(cfg.sources.sources)}")
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    run_id = runs.history_run_id(first, last)
    return _as_one_run(cfg, run_id, last, first, list(STAGES), names, days, allow_out_of_order, accept_changed_files,
                       wait, progress)


def load_history_ending_on(first: dt.date, last: dt.date, ends: list[dt.date], sources: list[str] | None = None,
                           cfg: CdpConfig | None = None, progress=lambda message: None, **options) -> list[str]:
    """`load_history` of `first`..`last` as consecutive batches, one ending on each day of `ends` inside
    the range and the last on `last`, so that One-ID and the marts hold a snapshot as of each of those
    days (what training cutoffs read). `options` are load_history's. Returns the run ids, oldest first."""
    if last < first:
        raise PipelineError(f"--to {last} is before --from {first}")
    run_ids, start = [], first
    for end in sorted({d for d in ends if first <= d < last} | {last}):
        progress(f"load-history {start} .. {end}")
        run_ids.append(load_history(start, end, sources, cfg, progress, **options))
        start = end + dt.timedelta(days=1)
    return run_ids


def summarise(run_id: str, cfg: CdpConfig | None = None) -> dict:
    """Merge the figures every stage of `run_id` recorded into one summary; write it to
    _runs/<run_id>/summary.json and _runs/latest.json."""
    cfg = cfg or load_config()
    folder = cfg.paths.runs(run_id)
    stages = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.name != "summary.json"]
    if not stages:
        raise PipelineError(f"no stage figures recorded for run {run_id!r} in {folder}")
    ingests = [s for s in stages if s["stage"] == "ingest"]
    tables: dict[str, int] = {}
    for s in ingests:  # several sources may feed one model's bronze table
        name = bronze_name(s.get("model", s["channel"]))
        tables[name] = tables.get(name, 0) + s["loaded"]
    tables["bronze_quarantine"] = sum(s["quarantined"] for s in ingests)
    for s in stages:
        tables.update(s.get("tables", {}))
    reasons: dict[str, int] = {}
    for s in ingests:
        for k, v in s["quarantine_reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
    seconds: dict[str, float] = {}
    for s in stages:
        seconds[s["stage"]] = round(seconds.get(s["stage"], 0.0) + s["seconds"], 2)
    summary = {
        "run_id": run_id,
        "batch_date": stages[0]["batch_date"],
        "engine": stages[0]["engine"],
        "engine_remote": stages[0].get("engine_remote"),
        "rows": tables,
        "ingest": {
            "files": sum(s["files"] for s in ingests),
            "duplicate_files": sum(s["duplicate_files"] for s in ingests),
            "lines": sum(s["lines"] for s in ingests),
            "records": sum(s.get("records", s["lines"]) for s in ingests),
            "loaded": sum(s["loaded"] for s in ingests),
            "quarantined": tables["bronze_quarantine"],
            "duplicates": sum(s.get("duplicates", 0) for s in ingests),
            "quarantine_reasons": dict(sorted(reasons.items())),
            "skipped_files": [f for s in ingests for f in s.get("skipped_files", [])],
            "refused_files": [f for s in ingests for f in s.get("refused_files", [])],
            "changed_files": [f for s in ingests for f in s.get("changed_files", [])],
            "per_channel": {s["channel"]: {k: s.get(k) for k in ("model", "files", "duplicate_files", "lines", "records", "loaded",
                                                              "quarantined", "duplicates")} for s in ingests},
        },
        "needs_rerun": [d.isoformat() for d in runs.stale_days(cfg)],
        "seconds": seconds,
        "seconds_total": round(sum(seconds.values()), 2),
        "gate_seconds": round(sum(s.get("quality", {}).get("seconds", 0.0) for s in stages), 2),
        "identity": next((s["identity"] for s in stages if s["stage"] == "identity"), None),
        "profiles": next((s["profiles"] for s in stages if s["stage"] == "profiles"), None),
        "tags": next(({k: s[k] for k in ("people", "tags", "tag_rows", "profile_tags_updated")}
                      for s in stages if s["stage"] == "tags"), None),
        "consent": next((s.get("consent") for s in stages if s["stage"] == "profiles"), None),
        "segments": next(({"members": s["segments"], "exports": s["exports"], "consent": s.get("consent", {})}
                          for s in stages if s["stage"] == "segments"), None),
        "scores": next(({"models": s["scores"], "skipped": s["skipped"]} for s in stages if s["stage"] == "score"), None),
        "quality": _quality(cfg, run_id),
        "analytics": _analytics(next((s["analytics"] for s in stages if s["stage"] == "analytics"), None)),
        "tables": _table_totals(cfg),
    }
    summary["report"] = _report(cfg, run_id, summary, next((s["analytics"] for s in stages if s["stage"] == "analytics"), None))
    text = json.dumps(summary, indent=2)
    (folder / "summary.json").write_text(text)
    (cfg.paths.runs() / "latest.json").write_text(text)
    return summary


def _analytics(figures: dict | None) -> dict | None:
    """The analytics stage's figures for the summary: alerts and forecast counts (the bands stay in its own file)."""
    if figures is None:
        return None
    metrics = {n: {k: v for k, v in m.items() if k != "band"} for n, m in figures["metrics"].items()}
    return {**figures, "metrics": metrics}


def _report(cfg: CdpConfig, run_id: str, summary: dict, analytics: dict | None) -> str | None:
    """Write _runs/<run>/report.html; a report that cannot be drawn is logged, never fails the summary."""
    from spark_jobs.analytics.report import write_report

    try:
        return str(write_report(cfg, run_id, summary, analytics))
    except Exception:
        log.exception("could not write the run report of %s", run_id)
        return None


def _quality(cfg: CdpConfig, run_id: str) -> dict | None:
    """The run's validation results from ops_dq_results, and the Data Docs site rebuilt."""
    if not cfg.quality.enabled:
        return None
    import pyarrow.compute as pc

    from expectations.gate import DQ_TABLE, build_docs
    from spark_jobs.tables import TableNotFoundError, read_pandas

    try:
        dq = read_pandas(cfg.paths.lakehouse_uri(), DQ_TABLE, where=pc.field("run_id") == run_id)
    except TableNotFoundError:
        return None
    failed = dq[~dq["success"]].sort_values(["level", "table_name", "expectation"])
    return {
        "expectations": len(dq),
        "passed": int(dq["success"].sum()),
        "failed": {lvl: int((failed["level"] == lvl).sum()) for lvl in ("critical", "warning", "info")},
        "failures": [
            {k: r[k] for k in ("table_name", "scope", "expectation", "level", "observed_value", "unexpected_count")}
            for r in failed.head(20).to_dict("records")
        ],
        "data_docs": str(build_docs(cfg, run_id)),
    }


def _table_totals(cfg: CdpConfig) -> dict[str, dict]:
    """Every existing table's total rows (all batches) and Delta version, from the Delta logs."""
    from spark_jobs.contracts import CONTRACTS
    from spark_jobs.tables import table_stats

    root = cfg.paths.lakehouse_uri()
    return {name: stats for name in CONTRACTS if (stats := table_stats(root, name)) is not None}


def render_summary(summary: dict) -> str:
    """The run summary as readable text tables (rich)."""
    import io

    from rich.console import Console
    from rich.table import Table

    console = Console(record=True, width=100, file=io.StringIO())
    console.print(f"CDP run {summary['run_id']}: batch {summary['batch_date']} on engine {summary['engine']}"
                  + (f" ({summary['engine_remote']})" if summary.get("engine_remote") else ""))
    totals = summary.get("tables", {})
    rows = Table(title="rows per table")
    rows.add_column("table")
    rows.add_column("this batch", justify="right")
    rows.add_column("all batches", justify="right")
    rows.add_column("version", justify="right")
    for name, n in summary["rows"].items():
        t = totals.get(name, {})
        rows.add_row(name, f"{n:,}", f"{t['rows']:,}" if t else "-", str(t.get("version", "-")))
    console.print(rows)
    ing = summary["ingest"]
    console.print(
        f"ingest: {len(ing.get('per_channel', {}))} sources, {ing['files']} files ({ing['duplicate_files']} duplicate, skipped), "
        f"{ing['lines']:,} lines = {ing.get('records', ing['lines']):,} records = "
        f"{ing['loaded']:,} loaded + {ing['quarantined']:,} quarantined + {ing.get('duplicates', 0):,} duplicates"
    )
    if ing.get("duplicates"):
        console.print(f"duplicates: {ing['duplicates']:,} records an earlier batch or file already loaded (same key, same values): "
                      "counted, not loaded again")
    if ing["quarantine_reasons"]:
        console.print("quarantine reasons: " + ", ".join(f"{k} {v:,}" for k, v in ing["quarantine_reasons"].items()))
    for what in ("skipped_files", "refused_files", "changed_files"):
        for f in ing.get(what, []):
            console.print(f"{what.replace('_', ' ')}: {f}")
    if summary.get("needs_rerun"):
        console.print(f"NEEDS A RE-RUN, in order (made stale by an out-of-order day or changed files): {', '.join(summary['needs_rerun'])}")
    ident = summary.get("identity")
    if ident:
        console.print(
            f"identity: {ident['identifiers']:,} identifiers -> {ident['people']:,} people "
            f"(largest {ident['largest_person']}, {ident['singletons']:,} single-identifier) in {ident['rounds']} rounds; "
            f"changes {ident['changes']}; dropped {sum(ident['dropped'].values()):,} values/links by rule "
            f"({ident.get('limit_cuts', 0):,} links cut by per-person limits)"
        )
    prof = summary.get("profiles")
    if prof:
        filled = ", ".join(f"{k.removeprefix('with_')} {v / max(prof['people'], 1):.0%}" for k, v in prof.items() if k != "people")
        console.print(f"profiles: {prof['people']:,} people; attributes filled: {filled}")
    sc = summary.get("scores")
    if sc:
        scored = ", ".join(f"{m} v{f['version']} ({f['people']:,} people, mean {f['mean_score']:.3f})" for m, f in sc["models"].items())
        console.print(f"scores: {scored or 'none'}"
                      + (f"; no champion yet for {', '.join(sc['skipped'])}" if sc["skipped"] else ""))
    tg = summary.get("tags")
    if tg:
        console.print(f"tags: {tg['tags']} tags for {tg['people']:,} people = {tg['tag_rows']:,} non-null values in gold_tags"
                      + ("" if tg["profile_tags_updated"] else " (gold_profile_tags holds a newer date; not replaced)"))
    consent = summary.get("consent")
    if consent:
        console.print("consent (gold_consent, people): " + ", ".join(
            f"{ch} {consent.get(f'{ch}_opt_in', 0):,} in / {consent.get(f'{ch}_opt_out', 0):,} out"
            for ch in ("sms", "wechat", "email", "ads")))
    seg = summary.get("segments")
    if seg:
        table = Table(title="segments")
        for col in ("segment", "members", "entered", "stayed", "left", "no consent", "export"):
            table.add_column(col, justify="left" if col in ("segment", "export") else "right")
        for name, f in seg["members"].items():
            c = seg.get("consent", {}).get(name, {})
            excluded = f"{c['excluded_no_consent']:,} ({c['channel']})" if "excluded_no_consent" in c else "-"
            table.add_row(name, f"{f['members']:,}", f"{f['entered']:,}", f"{f['stayed']:,}", f"{f['left']:,}",
                          excluded, seg["exports"].get(name, "-"))
        console.print(table)
        for name, c in seg.get("consent", {}).items():
            if c.get("excluded_no_consent"):
                console.print(f"{name}: {c['excluded_no_consent']:,} of {c['members']:,} members left out of its exports "
                              f"(no {c['channel']} consent, purpose {c['purpose']})")
    dq = summary.get("quality")
    if dq:
        console.print(
            f"quality: {dq['expectations']:,} expectations checked, {dq['passed']:,} passed; failed: "
            + ", ".join(f"{k} {v}" for k, v in dq["failed"].items())
        )
        for f in dq["failures"]:
            console.print(f"  {f['level']}: {f['table_name']} {f['expectation']} (observed {f['observed_value']}, "
                          f"unexpected {f['unexpected_count']})")
        console.print(f"Data Docs: {dq['data_docs']}")
    an = summary.get("analytics")
    if an:
        console.print(f"analytics: {an['series']} metric series, {an['forecast']} forecast, {an['no_forecast_yet']} with no "
                      f"forecast yet ({an['method']}); {len(an['alerts'])} alert(s)")
        if an.get("restated"):
            console.print(f"metrics restated for late records: {', '.join(an['restated'])}")
        if an["alerts"]:
            table = Table(title="alerts (ops_alerts)")
            for col in ("severity", "metric", "dimension", "observed", "expected interval", "drill-down"):
                table.add_column(col, justify="right" if col == "observed" else "left")
            for a in an["alerts"]:
                explained = ", ".join(f"{d['dimension']}={d['value']} {d['share']:.0%}" for d in json.loads(a["drill_down"]))
                table.add_row(a["severity"], a["metric"], f"{a['dimension']}={a['dimension_value']}", f"{a['observed']:,.2f}",
                              f"{a['expected']:,.2f} [{a['lower']:,.2f}, {a['upper']:,.2f}]", explained or "-")
            console.print(table)
    secs = Table(title="seconds per stage")
    secs.add_column("stage")
    secs.add_column("seconds", justify="right")
    for name, s in summary["seconds"].items():
        secs.add_row(name, f"{s:.1f}")
    secs.add_row("total", f"{summary['seconds_total']:.1f}")
    if summary.get("gate_seconds"):
        secs.add_row("of which quality gates", f"{summary['gate_seconds']:.1f}")
    console.print(secs)
    if summary.get("report"):
        console.print(f"Run report: {summary['report']}")
    return console.export_text()
