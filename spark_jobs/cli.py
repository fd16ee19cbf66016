"""The `cdp` command line: generate sample data, run stages without Airflow, show the last run summary."""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import typer

from spark_jobs.config import ConfigError, load_config

app = typer.Typer(help="Customer Data Platform: sample data, pipeline stages and run summaries.", no_args_is_help=True)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _config():
    try:
        return load_config()
    except ConfigError as e:
        _fail(str(e))


@app.command()
def generate(
    people: int = typer.Option(None, help="number of synthetic people (default: conf generate.people)"),
    days: int = typer.Option(None, help="number of daily batches (default: conf generate.days)"),
    seed: int = typer.Option(None, help="random seed: the same seed writes the same files"),
    start: str = typer.Option(None, help="first batch date, yyyy-mm-dd"),
    landing: Path = typer.Option(None, help="landing folder (default: conf paths.landing)"),
    format: str = typer.Option("default", "--format", help="default: the channels of docs/channels.md; "
                               "real: the same records as real systems export them (conf/sources.yaml)"),
    population: str = typer.Option("default", "--population", help="default: the original mix; retail: also "
                                   "re-issued phone numbers, partners' phones, duplicate memberships, store phones "
                                   "and junk device ids (docs/channels.md, Identity patterns)"),
    consent: bool = typer.Option(True, "--consent/--no-consent", help="marketing consent in the CRM and WeChat "
                                 "records, with ground truth in _truth/consent.csv (--no-consent: the files as "
                                 "they were before consent existed)"),
    consent_rates: str = typer.Option("", "--consent-rates", help="override ConsentRates, e.g. "
                                      "'asked=0.9,sms=0.6,wechat=0.5,email=0.4,ads=0.3,change=0.05,wechat_prompt=0.3'"),
) -> None:
    """Write realistic raw channel dumps with ground truth to landing/."""
    import tempfile

    from pydantic import ValidationError
    from rich.console import Console

    from spark_jobs.generate import ConsentRates, GenerateError
    from spark_jobs.generate import generate as run_generate
    from spark_jobs.storage import LandingPath, upload_tree

    cfg = _config()
    g = cfg.generate
    try:
        start_date = dt.date.fromisoformat(start) if start else g.start
    except ValueError:
        _fail(f"--start must be a date like 2026-11-01, got {start!r}")
    rates = None
    if consent:
        try:
            pairs = [kv.split("=", 1) for kv in consent_rates.split(",") if kv.strip()]
            rates = ConsentRates(**{k.strip(): float(v) for k, v in pairs})
        except (ValueError, ValidationError) as e:
            _fail(f"--consent-rates must be name=rate pairs with rates in [0, 1] and names from "
                  f"{', '.join(ConsentRates.model_fields)}, got {consent_rates!r} ({str(e).splitlines()[0]})")
    console = Console(stderr=True)
    out = landing or cfg.paths.landing_path()
    with tempfile.TemporaryDirectory(prefix="cdp-generate-") as scratch:
        # An object-store landing zone: the files are written locally, then uploaded.
        local = Path(scratch) if isinstance(out, LandingPath) else out
        try:
            manifest = run_generate(
                local, people=people or g.people, days=days or g.days, seed=g.seed if seed is None else seed,
                start=start_date, progress=lambda msg: console.log(msg), format=format, population=population,
                consent=rates,
            )
        except GenerateError as e:
            _fail(str(e))
        if local != out:
            console.log(f"uploading to {out}")
            upload_tree(local, str(out))
    console.log(f"wrote {manifest.total_lines:,} lines to {out} (ground truth in {out / '_truth'})")


_OUT_OF_ORDER = typer.Option(False, "--allow-out-of-order", help="run a day before days already run (or skipping "
                             "an unrun landing day); the later days are recorded as needing a re-run")
_ACCEPT_CHANGED = typer.Option(False, "--accept-changed-files", help="take the new content of landing files that "
                               "changed or disappeared since an earlier run of the batch ingested them (recorded in "
                               "ops_ingest_files; later days are recorded as needing a re-run)")
_WAIT = typer.Option(0.0, "--wait", help="seconds to wait for another run to release the lakehouse (default: fail at once)")


def _run_errors():
    from spark_jobs.ingest import IngestError, LandingError
    from spark_jobs.pipeline import PipelineError
    from spark_jobs.runs import RunConflictError, RunOrderError

    return (RunConflictError, RunOrderError, LandingError, IngestError, PipelineError)


@app.command("run")
def run_cmd(
    date: str = typer.Option(..., "--date", help="batch date yyyy-mm-dd"),
    stage: list[str] = typer.Option(None, help="stage(s) to run (default: all)"),
    allow_out_of_order: bool = _OUT_OF_ORDER,
    accept_changed_files: bool = _ACCEPT_CHANGED,
    wait: float = _WAIT,
) -> None:
    """Run the daily pipeline for one batch date without Airflow (development and debugging). One run
    at a time per lakehouse; days in order; recorded in ops_runs when it completes."""
    from spark_jobs.pipeline import render_summary, run_day, summarise

    cfg = _config()
    batch = _date(date, "--date")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_id = run_day(batch, stage or None, cfg, allow_out_of_order, accept_changed_files, wait)
    except _run_errors() as e:
        _fail(f"{type(e).__name__}: {e}")
    typer.echo(render_summary(summarise(run_id, cfg)))


def _date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        _fail(f"{option} must be a date like 2026-11-01, got {value!r}")


@app.command("load-history")
def load_history_cmd(
    first: str = typer.Option(..., "--from", help="first landing day to load, yyyy-mm-dd"),
    last: str = typer.Option(..., "--to", help="last landing day to load, yyyy-mm-dd: the batch date of the load"),
    source: list[str] = typer.Option(None, help="source(s) of conf/sources.yaml (default: conf's ingest sources)"),
    for_training: bool = typer.Option(False, "--for-training", help="load in batches ending on each day a training "
                                      "run on --to reads a One-ID snapshot of (conf ml: cutoffs, horizon), so "
                                      "that cdp_train can run next"),
    allow_out_of_order: bool = _OUT_OF_ORDER,
    accept_changed_files: bool = _ACCEPT_CHANGED,
    wait: float = _WAIT,
) -> None:
    """Load many days of landing folders as one batch (a first load of history), then run every later
    stage once as of --to. Records keep their own dates: the marts equal those of daily loads, in one
    run instead of one per day."""
    from spark_jobs.pipeline import load_history_ending_on, render_summary, summarise

    cfg = _config()
    start, end = _date(first, "--from"), _date(last, "--to")
    ends = []
    if for_training:
        from ml.features import training_snapshot_days

        ends = training_snapshot_days(end, cfg.ml)
    if ends and ends[0] < start:
        _fail(f"--for-training: a training run on {end} reads One-ID snapshots from {ends[0]} on ({len(ends)} days: "
              f"conf ml.horizon_days {cfg.ml.horizon_days}, ml.cutoffs {cfg.ml.cutoffs}, ml.cutoff_step_days "
              f"{cfg.ml.cutoff_step_days}), before --from {start}: load more history")
    logging.basicConfig(level=logging.WARNING)
    try:
        run_ids = load_history_ending_on(start, end, ends, source or None, cfg, progress=typer.echo,
                                         allow_out_of_order=allow_out_of_order,
                                         accept_changed_files=accept_changed_files, wait=wait)
    except _run_errors() as e:
        _fail(f"{type(e).__name__}: {e}")
    typer.echo(render_summary(summarise(run_ids[-1], cfg)))


@app.command()
def summary() -> None:
    """Print the latest run summary (lakehouse/_runs/latest.json)."""
    import json

    from spark_jobs.pipeline import render_summary

    path = _config().paths.runs() / "latest.json"
    if not path.exists():
        _fail(f"no run summary at {path}: run `make demo` or `cdp run --date ...` first")
    typer.echo(render_summary(json.loads(path.read_text())))
    typer.echo(f"(JSON: {path})")


def _id_map_snapshot(root: str, as_of: str | None) -> str:
    """The gold_id_map snapshot to read: the one asked for, or the newest."""
    from spark_jobs.tables import latest_partition

    snapshot = as_of or latest_partition(root, "gold_id_map", "as_of")
    if snapshot is None:
        _fail("gold_id_map does not exist yet: run the pipeline (make demo) first")
    return snapshot


@app.command()
def whois(
    id_type: str = typer.Argument(..., help="phone | email | device_id | login_id | member_id | openid | unionid"),
    value: str = typer.Argument(..., help="the identifier, in any format the channels send it"),
    as_of: str = typer.Option(None, help="gold_id_map snapshot date (default: the newest)"),
    on: str = typer.Option(None, "--on", help="who held the identifier on this local day (conf standardise.timezone), "
                           "yyyy-mm-dd: a recycled phone has one owner per validity window; without windows, the "
                           "newest snapshot up to that day answers"),
    explain: bool = typer.Option(False, "--explain", help="also print why: the links joining the person's identifiers, "
                                 "a path to each, and what the rules cut"),
    graph: Path = typer.Option(None, "--graph", help="draw the person's identity graph to this .svg file"),
    show_pii: bool = typer.Option(False, "--show-pii", help="print phones and e-mails in plaintext: needs an API key "
                                  "with the pii:read scope in CDP_API_KEY (`cdp api-key add`); logged in the access log"),
) -> None:
    """Print the person id of an identifier and every identifier linked to that person. Phones and e-mails
    are masked as the API masks them unless --show-pii is given and allowed."""
    import pandas as pd
    import pyarrow.compute as pc

    from spark_jobs.config import ID_TYPES
    from spark_jobs.identity.explain import ExplainError, dropped_rows, holders, map_rows
    from spark_jobs.identity.stage import canonical_identifier
    from spark_jobs.tables import TableNotFoundError

    if id_type not in ID_TYPES:
        _fail(f"unknown id_type {id_type!r}; one of {', '.join(ID_TYPES)}")
    day = _date(on, "--on") if on else None
    if as_of:
        _date(as_of, "--as-of")
    cfg = _config()
    root = cfg.paths.lakehouse_uri()
    reader = _pii_reader(root) if show_pii else None
    shown = _identifier_text(show_pii)
    canonical = canonical_identifier(id_type, value, cfg.standardise.phone_region)
    if canonical is None:
        _fail(f"{shown(id_type, value)!r} is not a valid {id_type}")
    snapshot = _whois_snapshot(root, as_of, day)
    try:
        held = holders(map_rows(root, snapshot, (pc.field("id_type") == id_type) & (pc.field("id_value") == canonical)),
                       day, cfg.standardise.timezone)
    except TableNotFoundError as e:
        _fail(str(e))
    when = f" on {day}" if day else ""
    if held.empty:
        typer.echo(f"{id_type} {shown(id_type, canonical)}: no person{when} as of {snapshot} "
                   "(never seen, or removed by a rule: see gold_id_dropped)")
        if explain:
            try:
                _echo_cut(dropped_rows(root, snapshot, {(id_type, canonical)}), snapshot, shown)
            except TableNotFoundError as e:
                _fail(str(e))
        raise typer.Exit(1)
    person = held["person_id"].iloc[-1]
    if reader is not None:
        reader[1].write(reader[0], [person], f"cdp whois --show-pii {id_type}")
    rows = map_rows(root, snapshot, pc.field("person_id") == person).sort_values(["id_type", "id_value"])
    typer.echo(f"{id_type} {shown(id_type, canonical)} -> person {person} (as of {snapshot}{when}), {len(rows)} identifiers:")
    if len(held) > 1:  # it changed hands that day: the owner at the end of the day is shown
        typer.echo(f"  (earlier that day: person {', '.join(held['person_id'].iloc[:-1])})")
    for r in rows.to_dict("records"):
        window = (f"  valid {_instant(r['valid_from'])} to {_instant(r['valid_to'])}"
                  if pd.notna(r.get("valid_from")) or pd.notna(r.get("valid_to")) else "")
        typer.echo(f"  {r['id_type']:<10} {shown(r['id_type'], r['id_value']):<40} first seen {r['first_seen']}  last seen {r['last_seen']}{window}")
    if explain or graph:
        from spark_jobs.identity.explain import draw, render
        from spark_jobs.identity.explain import explain as explain_person

        try:
            why = explain_person(root, (id_type, canonical), person, snapshot)
            name = _node_label(shown)
            if explain:
                for line in render(why, name):
                    typer.echo(line)
            if graph:
                typer.echo(f"(graph: {draw(why, graph, name)})")
        except (TableNotFoundError, ExplainError) as e:
            _fail(str(e))


def _pii_reader(root: str):
    """(key name, access log) of the pii:read API key in CDP_API_KEY; exits with how to get one otherwise."""
    from serving.access import PII_SCOPE, AccessLog, KeyFileError, KeyRing
    from serving.store import serving_dir

    folder = serving_dir(root)
    try:
        key = KeyRing(folder / "api_keys.json").check(os.environ.get("CDP_API_KEY"))
    except KeyFileError as e:
        _fail(str(e))
    if key is None or PII_SCOPE not in key.scopes:
        why = "is not set" if not os.environ.get("CDP_API_KEY") else (
            "is not a key of " + str(folder / "api_keys.json") if key is None else f"(key {key.name!r}) lacks pii:read")
        _fail(f"--show-pii needs an API key with the pii:read scope in CDP_API_KEY, which {why}: "
              "create one with `cdp api-key add <name> --scope pii:read`")
    return key.name, AccessLog(folder / "access.log")


def _identifier_text(show_pii: bool):
    """(id_type, value) -> the text whois prints: phones and e-mails masked as the API masks them."""
    from serving.access import PII_ID_TYPES, mask

    return lambda id_type, value: value if show_pii or id_type not in PII_ID_TYPES else mask(id_type, value)


def _node_label(shown):
    """explain's `type:value` node label, the value as `shown` prints it."""
    return lambda node: f"{node[0]}:{shown(*node)}"


def _whois_snapshot(root: str, as_of: str | None, day: dt.date | None) -> str:
    """The snapshot whois reads: --as-of; for --on without validity windows in gold_id_map, the newest
    snapshot up to that day (with windows the newest snapshot knows every owner); else the newest."""
    from spark_jobs.identity.explain import table_columns
    from spark_jobs.tables import latest_partition

    columns = table_columns(root, "gold_id_map")
    if as_of or day is None or columns is None or {"valid_from", "valid_to"} <= set(columns):
        return _id_map_snapshot(root, as_of)
    snapshot = latest_partition(root, "gold_id_map", "as_of", before=day + dt.timedelta(days=1))
    if snapshot is None:
        _fail(f"no gold_id_map snapshot on or before {day}: run the pipeline for that day first")
    return snapshot


def _instant(ts) -> str:
    import pandas as pd

    return "open" if pd.isna(ts) else str(ts)


def _echo_cut(cut, snapshot: str, shown) -> None:
    from spark_jobs.identity.explain import cut_lines

    typer.echo(f"cut (gold_id_dropped as of {snapshot}):")
    for line in cut_lines(cut, _node_label(shown)) or ["nothing"]:
        typer.echo(f"  {line}")


eval_app = typer.Typer(help="Measure the pipeline's results against the sample data's ground truth.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("identity")
def eval_identity(
    as_of: str = typer.Option(None, help="gold_id_map snapshot date (default: the newest)"),
    landing: Path = typer.Option(None, help="landing folder with _truth/ (default: conf paths.landing)"),
    ablation: bool = typer.Option(False, help="also resolve with each rule switched off (runs the engine; writes nothing)"),
) -> None:
    """Pairwise precision/recall of gold_id_map against landing/_truth/identities.csv, the recall the
    data allows at best (evidence ceiling) and, with --ablation, what each rule prevents."""
    import json

    import pyarrow.compute as pc

    from spark_jobs.identity.eval import (
        TruthNotFoundError,
        evaluate,
        evidence_ceiling,
        pattern_figures,
        read_households,
        read_truth,
    )
    from spark_jobs.tables import TableNotFoundError, read_pandas

    cfg = _config()
    root = cfg.paths.lakehouse_uri()
    snapshot = _id_map_snapshot(root, as_of)
    out = landing or cfg.paths.landing_path()
    try:
        mapping = read_pandas(root, "gold_id_map", ["id_type", "id_value", "person_id", "valid_to"], {"as_of": snapshot})
        mapping = mapping[mapping["valid_to"].isna()].drop(columns="valid_to")  # a re-issued value: its current owner
        truth, households = read_truth(out), read_households(out)
        links = read_pandas(root, "silver_id_links", ["src_type", "src_value", "dst_type", "dst_value"],
                            where=pc.field("_batch_date") <= pc.scalar(dt.date.fromisoformat(snapshot)))
    except (TruthNotFoundError, TableNotFoundError) as e:
        _fail(str(e))
    accuracy = evaluate(mapping, truth, households)
    ceiling = evaluate(evidence_ceiling(links, truth), truth)
    figures = {"as_of": snapshot, **accuracy.as_dict(), "evidence_ceiling_recall": ceiling.pairwise_recall,
               "recall_of_ceiling": accuracy.pairwise_recall / ceiling.pairwise_recall if ceiling.pairwise_recall else 1.0,
               **pattern_figures(mapping, truth, out)}
    for k, v in figures.items():
        typer.echo(f"{k:>24}: {v:.4f}" if isinstance(v, float) else f"{k:>24}: {v}")
    if ablation:
        figures["ablation"] = _ablation(cfg, root, snapshot, truth, households, out)
    path = cfg.paths.runs() / "identity_eval.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2))
    typer.echo(f"(JSON: {path})")


def _ablation(cfg, root: str, snapshot: str, truth, households, landing: Path) -> dict:
    """Resolve with each rule switched off; print and return the accuracy of each variant."""
    from rich.console import Console
    from rich.table import Table

    from spark_jobs.identity.eval import evaluate, pattern_figures
    from spark_jobs.identity.stage import ablation
    from spark_jobs.session import spark_session
    from spark_jobs.tables import Lakehouse

    console = Console(width=120)
    results = {}
    table = Table("rules", "precision", "recall", "F1", "false merges", "largest", "junk linked", "shared linked",
                  "duplicate members joined", "re-issued merged")
    with spark_session(cfg.engine, cfg.paths.on_object_store()) as spark:
        lh = Lakehouse(spark, root)
        for variant, mapping in ablation(lh, cfg.identity, dt.date.fromisoformat(snapshot)):
            a = evaluate(mapping, truth, households)
            results[variant] = {**a.as_dict(), **pattern_figures(mapping, truth, landing)}
            r = results[variant]
            table.add_row(variant, f"{a.pairwise_precision:.4f}", f"{a.pairwise_recall:.4f}", f"{a.f1:.4f}",
                          str(a.false_merges), str(a.largest_component), str(a.junk_linked), str(a.shared_linked),
                          str(r.get("duplicate_memberships_joined", "-")), str(r.get("reissued_false_merges", "-")))
            console.log(f"ablation {variant}: precision {a.pairwise_precision:.4f} recall {a.pairwise_recall:.4f}")
    console.print(table)
    return results


if __name__ == "__main__":
    app()


segment_app = typer.Typer(help="Audiences (conf/segments.yaml): try a rule before declaring it.", no_args_is_help=True)
app.add_typer(segment_app, name="segment")


@segment_app.command("preview")
def segment_preview(
    rule: str = typer.Argument(..., help="a condition over tags and behaviour, e.g. \"rfm_segment = 'champions'\" "
                                         "or \"event_count('add_cart', 7) >= 2 and order_count(7) = 0\""),
    as_of: str = typer.Option(None, help="tags as of this date (default: the newest computed)"),
    sample: int = typer.Option(10, min=0, help="how many matching people to show"),
) -> None:
    """Count and sample the people a rule selects, writing nothing."""
    from rich.console import Console
    from rich.table import Table

    from spark_jobs.segments import SegmentError, preview
    from spark_jobs.session import spark_session
    from spark_jobs.tables import Lakehouse, TableNotFoundError

    cfg = _config()
    try:
        day = dt.date.fromisoformat(as_of) if as_of else None
    except ValueError:
        _fail(f"--as-of must be a date like 2026-11-01, got {as_of!r}")
    try:
        with spark_session(cfg.engine, cfg.paths.on_object_store()) as spark:
            result = preview(Lakehouse(spark, cfg.paths.lakehouse_uri()), cfg, rule, day, sample)
    except (SegmentError, TableNotFoundError) as e:
        _fail(str(e))
    console = Console()
    console.print(f"as of {result['as_of']}: {result['count']:,} of {result['people']:,} people "
                  f"({result['share']:.2%}) match {result['rule']!r}")
    if result["sample"]:
        table = Table(title=f"sample ({len(result['sample'])})")
        for col in result["sample"][0]:
            table.add_column(col)
        for row in result["sample"]:
            table.add_row(*("" if v is None else str(v) for v in row.values()))
        console.print(table)


ml_app = typer.Typer(help="Churn and purchase-propensity models (MLflow).", no_args_is_help=True)
app.add_typer(ml_app, name="ml")


def _print_json(data) -> None:
    import json

    typer.echo(json.dumps(data, indent=2, default=str))


@ml_app.command("features")
def ml_features(
    last_cutoff: str = typer.Option(None, help="newest cutoff, yyyy-mm-dd (default: horizon_days before the newest "
                                               "One-ID snapshot)"),
) -> None:
    """Build the point-in-time training set (gold_features) for conf ml.cutoffs cutoffs."""
    from ml.features import FeatureError, default_cutoffs, run
    from spark_jobs.session import spark_session
    from spark_jobs.tables import Lakehouse, TableNotFoundError

    cfg = _config()
    try:
        last = dt.date.fromisoformat(last_cutoff) if last_cutoff else None
    except ValueError:
        _fail(f"--last-cutoff must be a date like 2026-11-20, got {last_cutoff!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from spark_jobs.runs import pinned_versions

        # The tables as of the last complete run (ops_runs): a run in progress is never half read.
        with spark_session(cfg.engine, cfg.paths.on_object_store()) as spark:
            lh = Lakehouse(spark, cfg.paths.lakehouse_uri(), pinned=pinned_versions(cfg, writes=("gold_features",)))
            _print_json(run(lh, cfg, default_cutoffs(lh, cfg, last)))
    except (FeatureError, TableNotFoundError) as e:
        _fail(str(e))


@ml_app.command("train")
def ml_train(
    target: list[str] = typer.Option(None, help="churn and/or purchase (default: both)"),
    promote: bool = typer.Option(True, help="promote the new version to champion when it beats the champion"),
) -> None:
    """Train, log to MLflow, register (alias challenger) and promote, from the current gold_features."""
    from ml.train import TrainError, run

    cfg = _config()
    unknown = sorted(set(target or []) - set(cfg.ml.models))
    if unknown:
        _fail(f"unknown target(s) {unknown}; targets: {list(cfg.ml.models)}")
    try:
        result = run(cfg, list(target) if target else None, promote_after=promote)
    except TrainError as e:
        _fail(str(e))
    _print_json(result)


@ml_app.command("telco")
def ml_telco() -> None:
    """The same models and metrics on IBM's Telco customer churn data (MLflow experiment `telco`)."""
    from ml.telco import run

    _print_json(run(_config().ml))


@ml_app.command("cdnow")
def ml_cdnow(
    base: str = typer.Option("cdnow", help="folder for the landing files, lakehouse and (without $MLFLOW_TRACKING_URI) mlflow.db"),
    log_file: str = typer.Option(None, "--log", help="a CDNOW-format transaction log (default: lifetimes' CDNOW_sample.txt)"),
    last_cutoff: str = typer.Option("1998-03-31", help="newest cutoff (the newest holdout), yyyy-mm-dd"),
    horizon: int = typer.Option(90, help="label horizon in days"),
    cutoffs: int = typer.Option(6, help="cutoffs in the layout, holdouts included"),
    step: int = typer.Option(30, help="days between training cutoffs"),
    holdouts: int = typer.Option(3, help="rolling origins"),
) -> None:
    """A real transaction log (CDNOW) through landing, history loads, features, training, BTYD baselines
    and promotion (MLflow experiment `cdnow`)."""
    import os
    from pathlib import Path

    from ml.cdnow import CdnowError, run

    try:
        last = dt.date.fromisoformat(last_cutoff)
    except ValueError:
        _fail(f"--last-cutoff must be a date like 1998-03-31, got {last_cutoff!r}")
    root = Path(base).resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    logging.basicConfig(level=logging.WARNING)
    try:
        _print_json(run(_config(), root, last, log_file, horizon, cutoffs, step, holdouts, progress=typer.echo))
    except CdnowError as e:
        _fail(str(e))


table_app = typer.Typer(help="Delta table upkeep: history, restore, compaction and vacuum (delta-rs, no Spark).",
                        no_args_is_help=True)
app.add_typer(table_app, name="table")


def _table_errors():
    """The errors a user causes at the table commands (unknown table or version, short retention)."""
    from spark_jobs.contracts import UnknownTableError
    from spark_jobs.maintenance import MaintenanceError
    from spark_jobs.tables import TableNotFoundError

    return UnknownTableError, TableNotFoundError, MaintenanceError


@table_app.command("describe")
def table_describe(
    table: str = typer.Argument(..., help="table name, e.g. gold_profiles"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Show a table's contract: columns, types, keys and each column's personal-data (PII) class."""
    from spark_jobs.contracts import UnknownTableError, contract
    from spark_jobs.privacy.classes import CLASSES, UnclassifiedColumnError, table_classes

    try:
        c = contract(table)
        classes = table_classes(c)
    except (UnknownTableError, UnclassifiedColumnError) as e:
        _fail(str(e))
    cols = [{"name": col.name, "type": col.type, "nullable": col.nullable, "pii": classes[col.name], "doc": col.doc}
            for col in c.columns]
    if as_json:
        _print_json({"table": c.name, "doc": c.doc, "partition_by": list(c.partition_by), "keys": list(c.keys),
                     "columns": cols})
        return
    typer.echo(f"{c.name}: {c.doc}")
    typer.echo(f"partitioned by {', '.join(c.partition_by) or '-'}; keys {', '.join(c.keys) or '-'}")
    width = max(len(col["name"]) for col in cols)
    for col in cols:
        typer.echo(f"  {col['name']:<{width}}  {col['type']:<14} {'' if col['nullable'] else 'NOT NULL':<8}  "
                   f"{col['pii']:<12} {col['doc']}")
    held = sorted({col["pii"] for col in cols} - {"none"})
    typer.echo("personal data: " + ("; ".join(f"{k}: {CLASSES[k]}" for k in held) if held else "none"))


@table_app.command("history")
def table_history(
    table: str = typer.Argument(..., help="table name, e.g. silver_events"),
    limit: int = typer.Option(20, min=1, help="how many versions to show, newest first"),
    as_json: bool = typer.Option(False, "--json", help="print JSON (with parameters and metrics)"),
) -> None:
    """List a table's versions: what wrote each, when."""
    from spark_jobs.maintenance import history

    cfg = _config()
    try:
        rows = history(cfg.paths.lakehouse_uri(), table, limit)
    except _table_errors() as e:
        _fail(str(e))
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["parameters"].items() if k in ("mode", "predicate", "targetSize", "version"))
        typer.echo(f"{r['version']:>6}  {r['timestamp']}  {r['operation']:<14} {r['engine'] or '':<24} {params}")


@table_app.command("restore")
def table_restore(
    table: str = typer.Argument(..., help="table name, e.g. gold_profiles"),
    version: int = typer.Option(None, help="the version to bring back (see `cdp table history`)"),
    timestamp: str = typer.Option(None, help="or the version current at this time, ISO 8601 (UTC when no offset)"),
) -> None:
    """Make an earlier version the table's content again, as a new version (history is kept)."""
    from spark_jobs.maintenance import CommitConflictError, restore

    cfg = _config()
    try:
        _print_json(restore(cfg.paths.lakehouse_uri(), table, version=version, timestamp=timestamp))
    except _table_errors() as e:
        _fail(str(e))
    except CommitConflictError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


@table_app.command("maintain")
def table_maintain(
    table: list[str] = typer.Option(None, "--table", help="table(s) to maintain (default: every existing table)"),
    retention_hours: int = typer.Option(None, help="vacuum files unreferenced for longer (default: conf maintenance.retention_hours)"),
    target_file_mb: int = typer.Option(None, min=1, help="compaction target file size (default: conf maintenance.target_file_mb)"),
    dry_run: bool = typer.Option(False, help="plan compaction and list the files vacuum would delete; change nothing"),
    force: bool = typer.Option(False, help="allow a retention below conf maintenance.min_retention_hours"),
) -> None:
    """Compact small files, vacuum unreferenced ones and checkpoint the log of each table."""
    from spark_jobs.maintenance import CommitConflictError, run

    cfg = _config()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _print_json(run(cfg, list(table) if table else None, retention_hours, target_file_mb, dry_run, force))
    except _table_errors() as e:
        _fail(str(e))
    except CommitConflictError as e:  # a concurrent write won: a retry is safe
        if e.result is not None:
            _print_json(e.result)
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


runs_app = typer.Typer(help="Runs of the pipeline: the ops_runs manifest, days needing a re-run, the lakehouse claim.",
                       no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("list")
def runs_list(limit: int = typer.Option(20, help="newest runs to show")) -> None:
    """The newest runs recorded in ops_runs, the run readers pin (the last complete one), days that
    need a re-run, and who holds the lakehouse now."""
    from spark_jobs import runs

    cfg = _config()
    history = runs.run_history(cfg).tail(limit)
    for r in history.to_dict("records"):
        typer.echo(f"{r['finished_at']:%Y-%m-%d %H:%M:%S}  {r['batch_date']}  {r['status']:<8}  {r['run_id']}"
                   + (f"  ({r['note']})" if r["note"] else ""))
    snap = runs.last_complete(cfg)
    typer.echo(f"consistent snapshot: {f'run {snap.run_id} (batch {snap.batch_date}), {len(snap.tables)} tables' if snap else 'none yet'}")
    stale = runs.stale_days(cfg)
    typer.echo(f"needs a re-run: {', '.join(d.isoformat() for d in stale) if stale else 'nothing'}")
    held = runs.current_claim(cfg)
    typer.echo(f"claim: {held.describe() if held else 'free'}")


@runs_app.command("release")
def runs_release(run_id: str = typer.Argument(..., help="the run whose claim to remove (see `cdp runs list`)")) -> None:
    """Remove the lakehouse claim of a run that is no longer alive (e.g. an Airflow run whose workers died)."""
    from spark_jobs import runs

    cfg = _config()
    if not runs.release(cfg, run_id):
        held = runs.current_claim(cfg)
        _fail(f"run {run_id!r} holds no claim; the claim is {held.describe() if held else 'free'}")
    typer.echo(f"released the claim of {run_id}")


@app.command()
def publish(
    as_of: str = typer.Option(None, help="as-of date to publish (default: the newest of the last complete run)"),
    store: str = typer.Option(None, help="online store URL: sqlite:///path or redis://host:port/0 "
                              "(default: CDP_ONLINE_STORE, else <lakehouse>/_serving/online.sqlite)"),
) -> None:
    """Publish the newest profiles, tags, scores, audiences and identifier map to the online store (one atomic swap)."""
    from serving.publish import PublishError, publish_config
    from serving.store import StoreError
    from spark_jobs.tables import TableNotFoundError

    if as_of:
        _date(as_of, "--as-of")
    try:
        meta = publish_config(_config(), store, as_of)
    except (PublishError, StoreError, TableNotFoundError) as e:
        _fail(str(e))
    typer.echo(f"published {meta['people']:,} people, {meta['identifiers']:,} identifiers as of {meta['as_of']} "
               f"(generation {meta['generation']}, {sum(meta['seconds'].values()):.1f} s)")


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8000, help="port to listen on"),
    store: str = typer.Option(None, help="online store URL (default: CDP_ONLINE_STORE, else the embedded one)"),
) -> None:
    """Serve the data-services HTTP API (OpenAPI at /v1/openapi.json, docs at /v1/docs)."""
    from serving.api import serve as run_server
    from serving.store import StoreError

    try:
        run_server(_config(), host, port, store)
    except StoreError as e:
        _fail(str(e))


api_key_app = typer.Typer(help="API keys of `cdp serve` (stored hashed under <lakehouse>/_serving/).", no_args_is_help=True)
app.add_typer(api_key_app, name="api-key")


@api_key_app.command("add")
def api_key_add(
    name: str = typer.Argument(..., help="who uses the key (written to the access log)"),
    scope: list[str] = typer.Option(..., "--scope", help="profiles:read | audiences:read | pii:read | sql:read (repeat)"),
) -> None:
    """Create (or replace) a key and print it once."""
    from serving.access import KeyFileError, add_key
    from serving.store import serving_dir

    try:
        key = add_key(serving_dir(_config().paths.lakehouse_uri()) / "api_keys.json", name, scope)
    except KeyFileError as e:
        _fail(str(e))
    typer.echo(key)


sql_app = typer.Typer(help="The BI SQL endpoint: Arrow Flight SQL over the gold and ops tables, read-only.",
                      no_args_is_help=True)
app.add_typer(sql_app, name="sql")


@sql_app.command("serve")
def sql_serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(32010, help="port to listen on (grpc://HOST:PORT)"),
    refresh: float = typer.Option(10.0, help="seconds between checks for a newer complete run"),
) -> None:
    """Serve Flight SQL (ADBC, JDBC) over the lakehouse; needs keys with the sql:read scope (`cdp api-key add`)."""
    from serving.sql.server import SqlEndpointError
    from serving.sql.server import serve as run_sql_server

    try:
        run_sql_server(_config(), host, port, refresh)
    except SqlEndpointError as e:
        _fail(str(e))


export_app = typer.Typer(help="Bulk pulls of gold tables to files.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("tags")
def export_tags_cmd(
    out: Path = typer.Argument(..., help="file to write"),
    as_of: str = typer.Option(None, help="as-of date (default: the newest of the last complete run)"),
    format: str = typer.Option("parquet", "--format", help="parquet | arrow (Arrow IPC stream)"),
    shape: str = typer.Option("wide", help="wide: a column per tag (newest date only) | long: one row per tag value"),
) -> None:
    """Write the whole tag table of an as-of date as Parquet or Arrow IPC (as GET /v1/tags/export streams it)."""
    from serving.export import ExportError, export_tags
    from spark_jobs.tables import TableNotFoundError

    day = _date(as_of, "--as-of") if as_of else None
    try:
        written, size = export_tags(_config(), out, day, format, shape)
    except (ExportError, TableNotFoundError) as e:
        _fail(str(e))
    typer.echo(f"wrote the {shape} tags as of {written} to {out} ({size:,} bytes)")


def _erasure_summary(report: dict) -> None:
    deleted = sum(t.get("rows_deleted", 0) for t in report["tables"])
    redacted = sum(t.get("rows_redacted", 0) for t in report["tables"])
    typer.echo(f"{report['request_id']}: {report['person_ids']} person id(s), "
               f"{sum(report['identifiers'].values())} identifier(s); {deleted:,} row(s) deleted and {redacted:,} redacted "
               f"in {len(report['tables'])} table(s), {sum(e['rows_deleted'] for e in report['exports'])} export row(s), "
               f"{len(report['files_redacted'])} file(s) redacted, {report['suppressions']} suppression(s) recorded"
               + (f", history purged in {len(report['purged'])} table(s)" if report["purged"] else "")
               + f" ({report['seconds']} s)")
    for t in report["tables"]:
        typer.echo(f"  {t['table']}: " + ", ".join(f"{k.removeprefix('rows_')} {v:,}" for k, v in t.items() if k.startswith("rows_")))
    if report["shared"]:
        typer.echo(f"  kept, shared with other people: {report['shared']} (erase those people to remove them)")


@app.command("token-key")
def token_key_cmd(
    file: Path = typer.Option(None, "--file", help="where to keep it (default: $CDP_TOKEN_KEY_FILE, else .secrets/token.key)"),
) -> None:
    """Create the project's token key (HMAC key of the keyed tokens, suppressions and masked examples) in a
    file only you can read, unless one is there; prints how to point the CDP at it."""
    from spark_jobs.config import PROJECT_ROOT
    from spark_jobs.privacy.suppression import KEY_ENV, create_key_file
    from spark_jobs.privacy.tokens import TokenKeyError

    path = file or Path(os.environ.get(f"{KEY_ENV}_FILE") or PROJECT_ROOT / ".secrets" / "token.key")
    try:
        created = create_key_file(path)
    except (TokenKeyError, OSError) as e:
        _fail(str(e))
    typer.echo(f"{'created' if created else 'kept the existing'} token key {path}; use it with: export {KEY_ENV}_FILE={path}")


@app.command()
def erase(
    id_type: str = typer.Argument(None, help="identifier type: phone, email, member_id, device_id, login_id, openid, unionid"),
    value: str = typer.Argument(None, help="the identifier, in any form the sources write it (normalised as the pipeline does)"),
    person: str = typer.Option(None, "--person", help="erase this person id instead of looking one up"),
    purge_history: bool = typer.Option(False, "--purge-history", help="vacuum at zero retention and prune the Delta log of "
                                       "every touched table: old versions stop holding the data now (time travel before it ends)"),
    queue: bool = typer.Option(False, "--queue", help="queue the request for the cdp_privacy DAG instead of erasing now"),
    store: str = typer.Option(None, help="online store URL to republish (default: CDP_ONLINE_STORE, else the embedded one)"),
    wait: float = typer.Option(0.0, help="seconds to wait for a running pipeline's claim on the lakehouse"),
) -> None:
    """Erase a person (right to be forgotten) from every table, export, run record and the online store, and
    suppress their identifiers so that later deliveries do not load them again."""
    from spark_jobs.privacy.erase import ErasureError, enqueue
    from spark_jobs.privacy.erase import erase as run_erase
    from spark_jobs.privacy.tokens import TokenKeyError
    from spark_jobs.runs import RunConflictError

    if person is None and (id_type is None or value is None):
        _fail("name the person: `cdp erase <id_type> <value>` or `cdp erase --person <person_id>`")
    cfg = _config()
    try:
        if queue:
            typer.echo(f"queued {enqueue(cfg, id_type, value, person, purge_history)} for the cdp_privacy DAG")
            return
        report = run_erase(cfg, id_type, value, person, purge_history, store, wait=wait)
    except (ErasureError, TokenKeyError, RunConflictError) as e:
        _fail(str(e))
    _erasure_summary(report)


@app.command("erase-queued")
def erase_queued(
    store: str = typer.Option(None, help="online store URL to republish"),
    wait: float = typer.Option(0.0, help="seconds to wait for a running pipeline's claim on the lakehouse"),
) -> None:
    """Carry out the queued erasure requests (`cdp erase --queue`); what the cdp_privacy DAG runs."""
    from spark_jobs.privacy.erase import ErasureError, process_queue
    from spark_jobs.privacy.tokens import TokenKeyError
    from spark_jobs.runs import RunConflictError

    try:
        reports = process_queue(_config(), store, wait)
    except (ErasureError, TokenKeyError, RunConflictError) as e:
        _fail(str(e))
    for r in reports:
        _erasure_summary(r)
    typer.echo(f"{len(reports)} erasure request(s) done")
