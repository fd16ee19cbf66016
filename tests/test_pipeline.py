"""End to end on generated data: every line accounted for, corrupt lines caught exactly, tables
readable by an independent Delta reader, run summary written. Marked e2e (runs in CI)."""

import datetime as dt
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from deltalake import DeltaTable

from spark_jobs.config import CdpConfig, EngineConfig, PathsConfig, load_config
from spark_jobs.contracts import CONTRACTS
from spark_jobs.generate import generate
from spark_jobs.orchestration import AUDIT_TABLES, PUBLISHES
from spark_jobs.pipeline import PipelineError, render_summary
from tests.pipeline_world import START, world_changes  # the `world` fixture: tests/pipeline_world.py (shared)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
# Generator corruption kinds -> the quarantine reason that must catch them.
REASON_OF = {"truncated_json": "malformed_json", "wrong_column_count": "wrong_column_count",
             "bad_timestamp": "bad_timestamp", "non_numeric_amount": "bad_number"}


def _rows(cfg, name):
    c = CONTRACTS[name]
    return DeltaTable(f"{cfg.paths.lakehouse_uri()}/{c.layer}/{name}").to_pyarrow_table().to_pylist()


def test_each_stage_writes_exactly_the_tables_its_task_publishes_as_assets(world):
    """The DAGs' asset outlets (orchestration.PUBLISHES) are the tables each stage really commits to."""
    assert set(world_changes) == {"ingest", "standardise", "identity", "profiles", "tags", "segments", "analytics"}
    for stage, tables in world_changes.items():
        assert tables - set(AUDIT_TABLES) == set(PUBLISHES[stage]), stage
    assert "ops_dq_results" in world_changes["identity"]  # every gated write records its validation


def test_every_file_is_accounted_for_and_corrupt_lines_caught_exactly(world):
    _, cfg, manifest, _ = world
    files = {r["file"]: r for r in _rows(cfg, "ops_ingest_files")}
    quarantine = Counter((r["_source_file"], r["reason"].split(":")[0]) for r in _rows(cfg, "bronze_quarantine"))
    duplicates = {d.duplicate: d.original for ch in manifest.channels.values() for d in ch.duplicate_files}
    assert duplicates, "the generator delivers one file twice"
    expected_files = [f for ch in manifest.channels.values() for f in ch.per_file]
    assert sorted(files) == sorted(f.path for f in expected_files)
    injected = 0
    for f in expected_files:
        row = files[f.path]
        assert row["lines"] == f.lines
        if f.path in duplicates:
            assert (row["duplicate_of"], row["loaded"], row["quarantined"]) == (duplicates[f.path], 0, 0)
            continue
        assert row["loaded"] + row["quarantined"] == row["lines"]
        want = Counter()
        for kind, n in f.corrupt_lines.items():
            want[REASON_OF[kind]] += n
        got = Counter({reason: n for (path, reason), n in quarantine.items() if path == f.path})
        assert got == +want, f.path
        injected += sum(want.values())
    assert injected > 0


def test_every_table_reads_the_same_in_deltalake_and_sail(world, sail):
    _, cfg, _, _ = world
    from spark_jobs.contracts import profile_tags_contract
    from spark_jobs.tables import Lakehouse

    lh = Lakehouse(sail, cfg.paths.lakehouse_uri())
    for name, c in CONTRACTS.items():
        if not lh.exists(name):
            continue
        if name == "gold_profile_tags":  # its columns follow conf/tags.yaml
            c = profile_tags_contract(cfg.tags.types)
        t = DeltaTable(lh.path(name))
        assert {f.name for f in t.schema().fields} == set(c.column_names), name
        assert t.to_pyarrow_table().num_rows == lh.read(name).count(), name
    assert lh.read("silver_events").count() > 1000


def test_silver_identifiers_are_canonical(world):
    _, cfg, _, _ = world
    ids = _rows(cfg, "silver_identifiers")
    by_type = Counter(r["id_type"] for r in ids)
    assert set(by_type) >= {"phone", "email", "device_id", "login_id", "member_id", "openid", "unionid"}
    for r in ids:
        if r["id_type"] == "phone":
            assert r["id_value"].startswith("+") and r["id_value"][1:].isdigit(), r
        if r["id_type"] == "email":
            assert r["id_value"] == r["id_value"].strip().lower()
        if r["id_type"] == "device_id":
            assert r["id_value"] == r["id_value"].upper()


def test_silver_identifiers_cover_the_ground_truth(world):
    base, cfg, _, _ = world
    import csv

    with open(base / "landing" / "_truth" / "identities.csv") as fh:
        truth = {(r["id_type"], r["id_value"]) for r in csv.DictReader(fh)}
    seen = {(r["id_type"], r["id_value"]) for r in _rows(cfg, "silver_identifiers")}
    assert seen <= truth, sorted(seen - truth)[:5]
    # Identifiers only on quarantined lines may be missing; nearly all must be found.
    assert len(seen) >= 0.97 * len(truth), (len(seen), len(truth))


def test_summary_reports_rows_quarantine_and_seconds(world):
    _, cfg, _, summaries = world
    latest = json.loads((Path(cfg.paths.lakehouse_uri()) / "_runs" / "latest.json").read_text())
    assert latest == summaries[-1]
    s = summaries[0]
    assert s["ingest"]["lines"] == s["ingest"]["loaded"] + s["ingest"]["quarantined"]
    assert s["rows"]["bronze_quarantine"] == s["ingest"]["quarantined"] > 0
    assert set(s["seconds"]) == {"ingest", "standardise", "identity", "profiles", "tags", "segments", "analytics"}
    totals = summaries[-1]["tables"]
    loaded = sum(x["ingest"]["per_channel"]["app_events"]["loaded"] for x in summaries)
    assert totals["bronze_app_events"]["rows"] == loaded  # from the Delta log, all batches
    assert totals["silver_events"]["rows"] == sum(x["rows"]["silver_events"] for x in summaries)
    text = render_summary(summaries[-1])
    assert "silver_identifiers" in text and "quarantined" in text and f"{loaded:,}" in text


def test_airflow_dags_test_runs_cdp_daily_end_to_end(tmp_path):
    """The real thing: `airflow dags test` with an AIRFLOW_HOME of its own, on Sail."""
    landing, lh = tmp_path / "landing", tmp_path / "lh"
    generate(landing, people=300, days=1, seed=5, start=START)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "CDP_LANDING": str(landing),
        "CDP_LAKEHOUSE": str(lh),
        "CDP_EXPORTS": str(tmp_path / "exports"),
    }
    env.pop("SPARK_CONNECT_MODE_ENABLED", None)
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    out = subprocess.run([airflow, "dags", "test", "cdp_daily", "2026-11-02"], env=env, capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert re.search(r"DagRun Finished: .*?, state=success, .*data_interval_start=2026-11-01", log), log[-4000:]
    summary = json.loads((lh / "_runs" / "latest.json").read_text())
    assert summary["batch_date"] == "2026-11-01"
    assert summary["ingest"]["files"] == 7 and summary["ingest"]["duplicate_files"] == 1  # one file redelivered
    assert summary["rows"]["silver_events"] > 0
    assert summary["profiles"]["people"] > 0 and summary["tags"]["tag_rows"] > 0
    assert set(summary["segments"]["members"]) == {s.name for s in load_config(env={}).segments.segments}
    assert summary["rows"]["gold_segment_members"] > 0


def test_identity_drops_junk_and_audits_it(world):
    base, cfg, _, _ = world
    import csv

    with open(base / "landing" / "_truth" / "identities.csv") as fh:
        junk = {(r["id_type"], r["id_value"]) for r in csv.DictReader(fh) if r["kind"] == "junk"}
    assert junk
    mapped = {(r["id_type"], r["id_value"]) for r in _rows(cfg, "gold_id_map")}
    assert not (junk & mapped)
    audited = {(r["id_type"], r["id_value"]) for r in _rows(cfg, "gold_id_dropped") if r["other_type"] is None}
    assert junk <= audited


def test_identity_person_id_changes_between_batches_are_all_logged(world):
    _, cfg, _, _ = world
    by_day: dict = {}
    for r in _rows(cfg, "gold_id_map"):
        by_day.setdefault(r["as_of"], {})[(r["id_type"], r["id_value"])] = r["person_id"]
    day1, day2 = (by_day[d] for d in sorted(by_day))
    changes = {(r["person_id"], r["other_person_id"]) for r in _rows(cfg, "gold_id_changes")
               if r["as_of"] == max(by_day) and r["change"] in ("merge", "split")}
    moved = {(day2[k], day1[k]) for k in day1 if k in day2 and day2[k] != day1[k]}
    assert moved <= changes
    kept = sum(1 for k in day1 if day2.get(k) == day1[k])
    assert kept >= 0.95 * len(day1)  # most people's ids are stable from one batch to the next


def test_cdp_eval_identity_reports_accuracy_against_truth(world, monkeypatch):
    from typer.testing import CliRunner

    from spark_jobs.cli import app

    base, cfg, _, _ = world
    monkeypatch.setenv("CDP_LANDING", str(base / "landing"))
    monkeypatch.setenv("CDP_LAKEHOUSE", cfg.paths.lakehouse_uri())
    result = CliRunner().invoke(app, ["eval", "identity"])
    assert result.exit_code == 0, result.output
    figures = json.loads((Path(cfg.paths.lakehouse_uri()) / "_runs" / "identity_eval.json").read_text())
    assert figures["as_of"] == "2026-11-02" and figures["junk_linked"] == 0
    assert 0.9 < figures["pairwise_precision"] <= 1.0 and 0 < figures["pairwise_recall"] <= 1.0
    assert "pairwise_precision" in result.output
    missing = CliRunner().invoke(app, ["eval", "identity", "--landing", str(base / "nowhere")])
    assert missing.exit_code == 2 and "cdp generate" in missing.output


def test_cdp_whois_finds_the_person_from_a_raw_phone(world, monkeypatch):
    from typer.testing import CliRunner

    from serving.access import mask
    from spark_jobs.cli import app

    base, cfg, _, _ = world
    monkeypatch.setenv("CDP_LANDING", str(base / "landing"))
    monkeypatch.setenv("CDP_LAKEHOUSE", cfg.paths.lakehouse_uri())
    rows = [r for r in _rows(cfg, "gold_id_map") if str(r["as_of"]) == "2026-11-02"]
    members: dict = {}
    for r in rows:
        members.setdefault(r["person_id"], []).append((r["id_type"], r["id_value"]))
    person, ids = next((p, i) for p, i in members.items() if len(i) >= 2 and any(t == "phone" for t, _ in i))
    phone = next(v for t, v in ids if t == "phone")
    raw = f"{phone[3:6]} {phone[6:10]}-{phone[10:]}"  # +8613912345678 -> "139 1234-5678"
    result = CliRunner().invoke(app, ["whois", "phone", raw])
    assert result.exit_code == 0, result.output
    assert f"person {person}" in result.output
    shown = [mask(t, v) if t in ("phone", "email") else v for t, v in ids]  # masked without --show-pii
    assert all(v in result.output for v in shown) and phone not in result.output
    assert CliRunner().invoke(app, ["whois", "phone", "13800000000"]).exit_code == 1  # junk: removed by a rule
    assert CliRunner().invoke(app, ["whois", "fax", "1"]).exit_code == 2


def test_marts_two_batches_profiles_tags_and_segment_history(world):
    """profiles, tags and segments on generated data: every One-ID person has a profile and tags, the
    membership of day 2 follows day 1, and the summary renders their figures."""
    base, cfg, _, summaries = world
    day2 = [r for r in _rows(cfg, "gold_id_map") if str(r["as_of"]) == "2026-11-02"]
    profiles = [r for r in _rows(cfg, "gold_profiles") if str(r["as_of"]) == "2026-11-02"]
    assert len(profiles) == len({r["person_id"] for r in day2})
    wide = _rows(cfg, "gold_profile_tags")
    assert {str(r["as_of"]) for r in wide} == {"2026-11-02"} and len(wide) == len(profiles)
    members = _rows(cfg, "gold_segment_members")
    day1 = {(r["segment"], r["person_id"]) for r in members if str(r["as_of"]) == "2026-11-01"}
    for r in (r for r in members if str(r["as_of"]) == "2026-11-02"):
        was = (r["segment"], r["person_id"]) in day1
        assert r["status"] == ("left" if r["left_on"] else "stayed" if was else "entered")
    assert sum(f["stayed"] for f in summaries[1]["segments"]["members"].values()) > 0
    text = render_summary(summaries[1])
    assert "profiles:" in text and "tags:" in text and "cart_abandoners" in text
    export = Path(summaries[1]["segments"]["exports"]["cart_abandoners"])
    assert export.parent.parent == base / "exports" and (export / "_manifest.json").exists()


def test_cdp_segment_preview_counts_without_writing(world, monkeypatch):
    from typer.testing import CliRunner

    from spark_jobs.cli import app

    base, cfg, _, _ = world
    monkeypatch.setenv("CDP_LAKEHOUSE", cfg.paths.lakehouse_uri())
    version = DeltaTable(f"{cfg.paths.lakehouse_uri()}/gold/gold_segment_members").version()
    result = CliRunner().invoke(app, ["segment", "preview", "lifecycle_stage = 'new' or orders_30d >= 1", "--sample", "3"])
    assert result.exit_code == 0, result.output
    assert "as of 2026-11-02:" in result.output and "match" in result.output
    bad = CliRunner().invoke(app, ["segment", "preview", "orders_30d = 'many'"])
    assert bad.exit_code == 2 and "type mismatch" in bad.output
    assert DeltaTable(f"{cfg.paths.lakehouse_uri()}/gold/gold_segment_members").version() == version


def _value_text(k: str, v, row: dict) -> str:
    """A value as text; a double (a tag of value_type double) to 12 significant digits: an average of
    doubles depends on the order it is summed in, which differs between two physical plans."""
    if row.get("value_type") == "double" and k == "value" and v is not None:
        return f"{float(v):.12g}"
    return str(v)


def _by_identifiers(rows, id_map):
    """Rows keyed by their person's identifier set instead of the person id (ids are labels)."""
    people: dict[str, set] = {}
    for r in id_map:
        people.setdefault(r["person_id"], set()).add((r["id_type"], r["id_value"]))
    key = {p: tuple(sorted(ids)) for p, ids in people.items()}
    return sorted((key[r["person_id"]], tuple((k, _value_text(k, v, r)) for k, v in sorted(r.items()) if k != "person_id"))
                  for r in rows)


def test_load_history_of_many_days_in_one_batch_equals_the_daily_loads(world, tmp_path):
    """cdp load-history: both generated days as one batch dated day 2; identities, profiles and tags as
    of day 2 are those of the daily runs, and no record is lost or duplicated."""
    from spark_jobs.pipeline import load_history

    _, cfg, _, _ = world
    day2 = START + dt.timedelta(days=1)
    hist = cfg.model_copy(update={"paths": cfg.paths.model_copy(update={
        "lakehouse": str(tmp_path / "lh"), "exports": str(tmp_path / "exports")})})
    messages = []
    run_id = load_history(START, day2, cfg=hist, progress=messages.append)
    assert any(m.startswith("ingest crm: 2 files of 2 days, ") for m in messages) and run_id.startswith("history__")

    def as_of(c, table, column="as_of"):
        return [r for r in _rows(c, table) if str(r[column]) == day2.isoformat()]

    for table in ("gold_profiles", "gold_tags"):
        got = _by_identifiers(as_of(hist, table), as_of(hist, "gold_id_map"))
        want = _by_identifiers(as_of(cfg, table), as_of(cfg, "gold_id_map"))
        diff = [(g, w) for g, w in zip(got, want, strict=False) if g != w][:1]
        assert len(got) == len(want) and not diff, (table, [(dict(g[1]), dict(w[1])) for g, w in diff])
    daily_events = sorted(r["event_id"] for r in _rows(cfg, "silver_events"))
    assert sorted(r["event_id"] for r in _rows(hist, "silver_events")) == daily_events
    files = _rows(hist, "ops_ingest_files")
    assert {str(r["batch_date"]) for r in files} == {day2.isoformat()}
    assert sum(r["loaded"] for r in files) == sum(r["loaded"] for r in _rows(cfg, "ops_ingest_files"))
    warnings = [r for r in _rows(hist, "ops_dq_results") if r["level"] == "critical" and not r["success"]]
    assert warnings == []  # two days in one batch: the daily window check is not critical for a history load


def test_history_for_training_is_loaded_in_batches_ending_on_each_snapshot_day(world, tmp_path):
    """load_history_ending_on (`cdp load-history --for-training`): one batch per end inside the range
    (ends outside it are ignored), so One-ID holds a snapshot as of each end, every file is loaded once in
    the batch of its end, and the marts as of the last day equal those of the daily runs."""
    from spark_jobs.pipeline import load_history_ending_on

    _, cfg, _, _ = world
    day2 = START + dt.timedelta(days=1)
    hist = cfg.model_copy(update={"paths": cfg.paths.model_copy(update={
        "lakehouse": str(tmp_path / "lh"), "exports": str(tmp_path / "exports")})})
    messages = []
    ends = [START - dt.timedelta(days=1), START, day2 + dt.timedelta(days=30)]
    run_ids = load_history_ending_on(START, day2, ends, cfg=hist, progress=messages.append)
    assert len(run_ids) == 2 and all(r.startswith("history__") for r in run_ids)
    assert [m for m in messages if m.startswith("load-history ")] == [
        f"load-history {START} .. {START}", f"load-history {day2} .. {day2}"]
    assert {str(r["as_of"]) for r in _rows(hist, "gold_id_map")} == {START.isoformat(), day2.isoformat()}
    batches = sorted((r["file"], str(r["batch_date"]), r["loaded"]) for r in _rows(hist, "ops_ingest_files"))
    assert batches == sorted((r["file"], str(r["batch_date"]), r["loaded"]) for r in _rows(cfg, "ops_ingest_files"))

    def as_of(c, table):
        return [r for r in _rows(c, table) if str(r["as_of"]) == day2.isoformat()]

    got = _by_identifiers(as_of(hist, "gold_profiles"), as_of(hist, "gold_id_map"))
    assert got == _by_identifiers(as_of(cfg, "gold_profiles"), as_of(cfg, "gold_id_map"))
    with pytest.raises(PipelineError, match="before --from"):
        load_history_ending_on(day2, START, [], cfg=hist)


def _silver_rows(lh_root: str, table: str, drop: set[str]) -> list[tuple]:
    """A silver table as sorted rows without `drop`; props as parsed objects with numeric values as numbers."""
    out = []
    for r in DeltaTable(f"{lh_root}/silver/{table}").to_pyarrow_table().to_pylist():
        if r.get("props") is not None:
            props = json.loads(r["props"])
            r["props"] = json.dumps({k: (float(v) if k == "amount" else v) for k, v in props.items()}, sort_keys=True)
        out.append(tuple(sorted((k, str(v)) for k, v in r.items() if k not in drop)))
    return sorted(out)


def test_real_world_exports_of_the_same_records_give_the_same_silver_rows(tmp_path):
    """cdp generate --format real writes the generator's records as real systems export them (Sensors
    and Segment JSON, a GB18030 Excel CRM export, quoted CSV with thousands separators, UTF-16 tab text,
    epoch and naive local times), and redelivers as they do: whole files re-exported in other bytes, the
    last records of a day again in the next day's file. Through conf/sources.yaml, over two days, they
    give the silver rows of the default format, value for value: nothing rejected, nothing changed,
    nothing loaded twice; each file's duplicates are exactly the generator's truth. (Sensors exports
    carry no event id: those rows are compared without it.)"""
    from spark_jobs import ingest, standardise
    from spark_jobs.tables import Lakehouse, read_pandas
    from tests.conftest import _session

    days = [START, START + dt.timedelta(days=1)]
    roots = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARK_CONNECT_MODE_ENABLED", "1")
        spark = _session("sail")
        for fmt in ("default", "real"):
            landing = tmp_path / fmt / "landing"
            manifest = generate(landing, people=600, days=2, seed=23, start=START, format=fmt)
            cfg = CdpConfig(engine=EngineConfig(kind="local"), paths=PathsConfig(landing=str(landing), lakehouse=str(tmp_path / fmt / "lh")))
            lh = Lakehouse(spark, cfg.paths.lakehouse_uri())
            results = []
            for day in days:
                results += [ingest.run(spark, lh, landing, cfg.sources.get(s), day, dt.datetime(2026, 12, 1), sources=cfg.sources)
                            for s in cfg.ingest_sources()]
                standardise.run(lh, cfg.standardise, day, standardise.declared_id_columns(cfg.sources),
                                standardise.declared_strengths(cfg.sources))
            assert len(results) == 2 * (6 if fmt == "default" else 7) and all(r["files"] for r in results), fmt
            roots[fmt] = (lh.root, results)
            if fmt == "real":
                truth = {f.path: f.duplicates for ch in manifest.channels.values() for f in ch.per_file}
                files = read_pandas(lh.root, "ops_ingest_files")
                loaded = files[files["status"] == "loaded"]
                assert dict(zip(loaded["file"], loaded["duplicates"], strict=True)) == {f: truth[f] for f in loaded["file"]}
                assert loaded["duplicates"].sum() > 0 and any("-reexport." in f for f in loaded["file"])
    (default, d_res), (real, r_res) = roots["default"], roots["real"]
    assert sum(r["loaded"] for r in r_res) == sum(r["loaded"] for r in d_res) > 0
    reasons = [Counter(), Counter()]
    for counter, res in zip(reasons, (d_res, r_res), strict=True):
        for r in res:
            counter.update({k: v for k, v in r["quarantine_reasons"].items()})
    assert reasons[0] == reasons[1]  # the same corrupt records, caught for the same reasons
    # The bronze source differs by design (sensors vs app_events), and so does the declared strength of a
    # web phone: Segment's `traits.phone` is what the site was told (contact), the SDK's login phone verified.
    for table, drop in (("silver_orders", {"_source"}), ("silver_contacts", {"_source"}),
                        ("silver_identifiers", {"record_ref", "strength"}), ("silver_id_links", {"strength"})):
        assert _silver_rows(real, table, drop) == _silver_rows(default, table, drop), table
    web = {r for r in _silver_rows(default, "silver_events", {"_source"}) if ("platform", "web") in r}
    assert web and web <= set(_silver_rows(real, "silver_events", {"_source"}))  # Segment keeps the message id
    assert _silver_rows(real, "silver_events", {"event_id", "_source"}) == _silver_rows(default, "silver_events",
                                                                                       {"event_id", "_source"})
    strengths = {(r["id_type"], r["strength"]) for r in DeltaTable(f"{real}/silver/silver_identifiers").to_pyarrow_table().to_pylist()}
    assert ("phone", "contact") in strengths and ("phone", "verified") in strengths and ("member_id", "verified") in strengths
