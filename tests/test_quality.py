"""Quality gates: every suite passes on good generated data and fails on crafted bad frames; a bad batch
stops the stage and leaves the published table as it was; results land in ops_dq_results; Data Docs
render in headless Chromium. Real GX validations on Sail and real Delta tables."""

import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from expectations.gate import DQ_TABLE, QualityGate, QualityGateError, build_docs
from expectations.suites import GATED
from spark_jobs.config import CdpConfig, EngineConfig, PathsConfig, QualityConfig
from spark_jobs.generate import generate
from spark_jobs.pipeline import run_stage, summarise
from spark_jobs.tables import Lakehouse, read_pandas

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
DAY = dt.date(2026, 11, 1)
ARTIFACTS = Path(__file__).resolve().parent / "_artifacts"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """One generated day through every stage, every write gated."""
    base = tmp_path_factory.mktemp("dq")
    generate(base / "landing", people=400, days=1, seed=5, start=DAY)
    cfg = CdpConfig(engine=EngineConfig(kind="local"),
                    paths=PathsConfig(landing=str(base / "landing"), lakehouse=str(base / "lh")))
    for ch in cfg.ingest_sources():
        run_stage("ingest", DAY, "good", channel=ch, cfg=cfg)
    run_stage("standardise", DAY, "good", cfg=cfg)
    for stage in ("identity", "profiles", "tags", "segments", "analytics"):
        run_stage(stage, DAY, "good", cfg=cfg)
    return cfg, summarise("good", cfg)


def _gate(sail, cfg, run_id, **quality):
    config = cfg.model_copy(update={"quality": QualityConfig(**quality)}) if quality else cfg
    lh = Lakehouse(sail, cfg.paths.lakehouse_uri())
    return lh, QualityGate(lh, config, run_id, DAY)


def _partition(table):
    from spark_jobs.contracts import contract

    parts = contract(table).partition_by
    return {parts[0]: DAY} if parts else {}


def test_every_suite_passes_on_good_data_and_every_result_is_recorded(good):
    cfg, summary = good
    dq = read_pandas(cfg.paths.lakehouse_uri(), DQ_TABLE)
    dq = dq[dq["run_id"] == "good"]
    assert set(dq["table_name"]) == set(GATED) - WRITTEN_LATER
    critical = dq[dq["level"] == "critical"]
    assert critical["success"].all(), critical[~critical["success"]][["table_name", "expectation", "observed_value"]]
    assert summary["quality"]["failed"]["critical"] == 0
    assert summary["quality"]["expectations"] == len(dq)
    # every table's row count is recorded (the volume check's history)
    counts = dq[dq["expectation"] == "row_count"]
    assert set(counts["table_name"]) == set(GATED) - WRITTEN_LATER and (counts["observed_value"].astype(int) >= 0).all()


WRITTEN_LATER = {"gold_scores"}  # written by ml/score.py (issue 6), not by cdp_daily's stages yet
BAD = [
    ("silver_orders", lambda df: df.withColumn("amount", F.lit(-5).cast("decimal(12,2)")), "expect_column_values_to_be_between(amount)", "-5"),
    ("silver_orders", lambda df: df.withColumn("phone", F.lit("13912345678")), "expect_column_values_to_match_regex(phone)", "13912345678"),
    ("silver_contacts", lambda df: df.withColumn("email", F.lit("Ann@Shop.CN")), "expect_column_values_to_match_regex(email)", "Ann@Shop.CN"),
    ("silver_contacts", lambda df: df.withColumn("tier", F.lit("diamond")), "expect_column_values_to_be_in_set(tier)", "diamond"),
    ("silver_events", lambda df: df.withColumn("event_name", F.lit("hack")), "expect_column_values_to_be_in_set(event_name)", "hack"),
    ("silver_events", lambda df: df.unionByName(df), "expect_compound_columns_to_be_unique(channel,event_id)", ""),
    ("bronze_app_events", lambda df: df.withColumn("event_id", F.lit(None).cast("string")), "expect_column_values_to_not_be_null(event_id)", ""),
    ("silver_identifiers", lambda df: df.withColumn("id_value", F.when(F.col("id_type") == "phone", F.lit("139-1234-5678")).otherwise(F.col("id_value"))),
     "identifiers_canonical", "False"),
    ("silver_id_links", lambda df: df.select(*[F.col(c.replace("src", "tmp").replace("dst", "src").replace("tmp", "dst")).alias(c) for c in df.columns]),
     "links_ordered_src_before_dst", "False"),
    ("gold_id_map", lambda df: df.withColumn("person_id", F.concat(F.lit("x"), "person_id")), "expect_column_values_to_match_regex(person_id)", "xp_"),
    ("gold_id_changes", lambda df: df.withColumn("change", F.lit("renamed")), "expect_column_values_to_be_in_set(change)", "renamed"),
    ("gold_id_dropped", lambda df: df.withColumn("rule", F.lit("because")), "expect_column_values_to_match_regex(rule)", "because"),
    ("ops_ingest_files", lambda df: df.withColumn("loaded", F.col("loaded") + 1),
     "records_equal_loaded_plus_quarantined_plus_duplicates_plus_suppressed", "False"),
    # A record rule ingest applies per record (quarantine) is critical on the table, as a guard.
    ("bronze_app_events", lambda df: df.withColumn("event_name", F.lit("hack")), "expect_column_values_to_be_in_set(event_name)", "hack"),
    ("ops_ingest_files", lambda df: df.withColumn("lines", F.col("records") - 1), "records_not_more_than_lines", "False"),
    ("bronze_quarantine", lambda df: df.withColumn("channel", F.lit("fax")), "expect_column_values_to_be_in_set(channel)", "fax"),
    ("gold_profiles", lambda df: df.withColumn("phone", F.when(F.col("phone").isNotNull(), F.lit("13912345678"))),
     "expect_column_values_to_match_regex(phone)", "13912345678"),
    ("gold_profiles", lambda df: df.withColumn("city_source", F.lit(None).cast("string")), "city_has_its_source", "False"),
    ("gold_tags", lambda df: df.withColumn("value_type", F.lit("string")), "value_type_is_the_declared_type", "False"),
    ("gold_profile_tags", lambda df: df.withColumn("rfm_recency", F.lit(7).cast("long")),
     "expect_column_values_to_be_between(rfm_recency)", "7"),
    ("gold_segment_members", lambda df: df.withColumn("status", F.lit("left")), "left_on_iff_left", "False"),
]


def _personal(table: str, expectation: str) -> bool:
    from spark_jobs.privacy.classes import column_class

    inside = expectation[expectation.find("(") + 1 : expectation.rfind(")")] if "(" in expectation else ""
    return any(column_class(table, c) != "none" for c in inside.split(",") if c)


def test_personal_examples_become_keyed_tokens_when_a_key_is_set(monkeypatch):
    from expectations.gate import _withhold_personal
    from spark_jobs.privacy.tokens import token

    monkeypatch.setenv("CDP_TOKEN_KEY", "k" * 32)
    res = {"partial_unexpected_list": ["13912345678", None], "partial_unexpected_index_list": [3, 9],
           "partial_unexpected_counts": [{"value": "13912345678", "count": 1}]}
    _withhold_personal(res, "silver_orders", {"column": "phone"})
    tok = "tok:" + token("13912345678", "k" * 32)[:16]
    assert res == {"partial_unexpected_list": [tok, None], "partial_unexpected_counts": [{"value": tok, "count": 1}]}
    amounts = {"partial_unexpected_list": ["-5"]}
    _withhold_personal(amounts, "silver_orders", {"column": "amount"})
    assert amounts == {"partial_unexpected_list": ["-5"]}  # not personal: shown as it is


@pytest.mark.parametrize(("table", "spoil", "expectation", "example"), BAD, ids=[f"{t}:{e}" for t, _, e, _ in BAD])
def test_a_crafted_bad_frame_fails_its_critical_expectation_with_examples(good, sail, table, spoil, expectation, example,
                                                                        monkeypatch):
    monkeypatch.delenv("CDP_TOKEN_KEY", raising=False)  # no key: personal examples are withheld, not tokenised
    cfg, _ = good
    lh, gate = _gate(sail, cfg, f"bad-{table}-{expectation}")
    df = lh.read(table, _partition(table))
    assert df.count() > 0, f"the generated day has rows in {table}"
    with pytest.raises(QualityGateError) as err:
        gate.check(table, spoil(df), _partition(table))
    message = str(err.value)
    assert table in message and expectation in message
    failed = [r for r in gate.results if not r["success"]]
    if _personal(table, expectation) and example:
        # a personal value never reaches the message, ops_dq_results or the result files: a count or a token
        stored = next(r["unexpected_examples"] for r in failed if r["expectation"] == expectation)
        assert example not in message and example not in stored and "withheld" in message and "withheld" in stored
    else:
        assert example in message
    assert [r["expectation"] for r in failed if r["level"] == "critical"] == [expectation]


def test_largest_person_is_a_critical_identity_health_check(good, sail):
    cfg, _ = good
    lh, gate = _gate(sail, cfg, "bad-largest", max_person_identifiers=5)
    df = lh.read("gold_id_map", {"as_of": DAY})
    with pytest.raises(QualityGateError, match="largest_person"):
        gate.check("gold_id_map", df.withColumn("person_id", F.lit("p_" + "0" * 20)), {"as_of": DAY})


def test_warnings_are_recorded_and_do_not_stop_the_write(good, sail):
    cfg, _ = good
    lh, gate = _gate(sail, cfg, "warn")
    orders = lh.read("silver_orders", {"_batch_date": DAY})
    late = orders.withColumn("paid_time", F.col("paid_time") - F.expr("INTERVAL 3 DAYS")).withColumn("member_id", F.lit("M_NOBODY"))
    rows = gate.check("silver_orders", late, {"_batch_date": DAY})
    failed = {r["expectation"]: r["level"] for r in rows if not r["success"]}
    assert failed == {"in_batch_window(paid_time)": "warning", "freshness(paid_time)": "warning",
                      "orders_reference_known_members": "warning"}


def test_volume_is_checked_against_the_trailing_median(good, sail):
    cfg, _ = good
    lh, gate = _gate(sail, cfg, "volume", volume_min_history=3, volume_min_rows=10)
    events = lh.read("silver_events", {"_batch_date": DAY})
    n = events.count()
    gate._history = lambda table, scope: (n * 10, n * 10, n * 9, n * 11)  # earlier batches were ten times larger
    rows = gate.check("silver_events", events, {"_batch_date": DAY})
    volume = next(r for r in rows if r["expectation"] == "volume")
    assert (volume["success"], volume["level"], int(volume["observed_value"])) == (False, "warning", n)
    gate._history = lambda table, scope: (n, n, n)
    assert next(r for r in gate.check("silver_events", events, {"_batch_date": DAY}) if r["expectation"] == "volume")["success"]


def test_a_history_load_is_not_a_volume_baseline_and_has_none():
    """After `cdp load-history` (one batch of many days), a daily batch's volume is compared with earlier
    daily batches only: not with the history batch, which holds many days of rows. The history batch
    itself has no volume check."""
    import pandas as pd

    from spark_jobs.config import load_config
    from spark_jobs.runs import history_run_id

    cfg = load_config()
    history = history_run_id(DAY - dt.timedelta(days=40), DAY - dt.timedelta(days=5))
    rows = [(history, DAY - dt.timedelta(days=5), 70_000)] + [
        (f"manual__{d}", d, 10_000 + k) for k, d in enumerate(DAY - dt.timedelta(days=n) for n in (4, 3, 2, 1))]
    counts = pd.DataFrame([{"run_id": r, "table_name": "silver_events", "batch_date": d, "scope": "",
                            "observed_value": str(n), "checked_at": dt.datetime(2026, 1, 1) + dt.timedelta(days=i)}
                           for i, (r, d, n) in enumerate(rows)])
    daily = QualityGate(None, cfg, "manual__today", DAY)
    daily._row_counts = counts
    assert daily._history("silver_events", "") == (10_000, 10_001, 10_002, 10_003)
    later = QualityGate(None, cfg, history_run_id(DAY, DAY + dt.timedelta(days=6)), DAY)
    later._row_counts = counts
    assert later._history("silver_events", "") == ()


def test_a_bad_value_quarantines_its_record_but_a_bad_batch_stops_the_stage(good, tmp_path):
    """Row level: day 2's negative amount is quarantined by ingest, named as the expectation, and the
    day goes on (silver_orders is published). Table level: a day-3 delivery whose times are all a
    month off stops the ingest stage: bronze_orders keeps its Delta version, ops_dq_results records why."""
    cfg, _ = good
    header = "order_id,member_id,phone,items,amount,paid_time,category\n"
    day2, day3 = DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2)
    landing = Path(cfg.paths.landing)
    for day, rows in ((day2, [f"O1,,13912345678,SKU100001:1,-99.00,{day2}T10:00:00.000+08:00,shoes",
                              f"O2,,13912345679,SKU100001:1,19.00,{day2}T11:00:00.000+08:00,shoes"]),
                      (day3, [f"O3,,13912345678,SKU100001:1,9.00,{DAY - dt.timedelta(days=30)}T10:00:00.000+08:00,shoes",
                              f"O4,,13912345679,SKU100001:1,19.00,{DAY - dt.timedelta(days=30)}T11:00:00.000+08:00,shoes"])):
        (landing / "orders" / day.isoformat()).mkdir(parents=True, exist_ok=True)
        (landing / "orders" / day.isoformat() / "part-00000.csv").write_text(header + "\n".join(rows) + "\n")
    lh_root = cfg.paths.lakehouse_uri()
    from deltalake import DeltaTable

    figures = run_stage("ingest", day2, "bad-value", channel="orders", cfg=cfg)
    assert (figures["loaded"], figures["quarantined"]) == (1, 1)
    assert figures["quarantine_reasons"] == {"expect_column_values_to_be_between": 1}
    run_stage("standardise", day2, "bad-value", cfg=cfg)  # the day goes on
    silver = read_pandas(lh_root, "silver_orders", partition={"_batch_date": day2})
    assert silver["order_id"].tolist() == ["O2"]

    before = DeltaTable(f"{lh_root}/bronze/bronze_orders").version()
    with pytest.raises(QualityGateError) as err:
        run_stage("ingest", day3, "bad-batch", channel="orders", cfg=cfg)
    assert "bronze_orders" in str(err.value) and "mostly_in_batch_window(paid_time)" in str(err.value)
    assert DeltaTable(f"{lh_root}/bronze/bronze_orders").version() == before
    dq = read_pandas(lh_root, DQ_TABLE)
    failed = dq[(dq["run_id"] == "bad-batch") & ~dq["success"] & (dq["level"] == "critical")]
    assert failed[["table_name", "expectation"]].values.tolist() == [["bronze_orders", "mostly_in_batch_window(paid_time)"]]


def test_data_docs_list_the_suites_and_their_results_in_chromium(good):
    cfg, _ = good
    index = build_docs(cfg)
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make test` installs it (scripts/system-deps.sh)"
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "data_docs.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--allow-file-access-from-files"]
    dom = subprocess.run([chromium, *flags, "--virtual-time-budget=5000", "--dump-dom", index.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    subprocess.run([chromium, *flags, "--window-size=1400,1000", f"--screenshot={shot}", index.as_uri()],
                   capture_output=True, timeout=120, check=True)
    # The rendered tables (built by bootstrap-table from the page's data; served from static/vendor):
    # one row per validation result and one per suite, each a link to its page.
    rows = re.findall(r'<tr[^>]*data-index="\d+"[^>]*>(.*?)</tr>', dom, flags=re.S)
    assert rows, "the Data Docs index rendered no table rows"
    rendered = " ".join(rows)
    runs = set(read_pandas(cfg.paths.lakehouse_uri(), DQ_TABLE, ["run_id"])["run_id"])
    assert any(f">{run}<" in rendered for run in runs) and ">bronze_app_events<" in rendered  # run and suite cells
    validations = len(list((index.parents[4] / "results").glob("*/*/meta.json")))
    totals = [int(n) for n in re.findall(r"Showing 1 to \d+ of (\d+) rows", dom)]
    assert totals == [validations, len(set(GATED) - WRITTEN_LATER)]  # paged tables: every validation result, every suite
    assert "code.jquery.com" not in index.read_text()  # assets are local: the page works offline
    assert shot.exists() and shot.stat().st_size > 10_000


def test_a_critical_failure_fails_the_airflow_task_and_publishes_nothing(tmp_path):
    """`airflow dags test` on a day whose orders were all paid a month before it (a delivery in the
    wrong folder): the orders ingest task fails with the gate's message, bronze_orders is never
    published, ops_dq_results keeps the failure, the run is recorded failed in ops_runs (no reader
    pins it) and the lakehouse claim is released."""
    import os
    import sys

    from deltalake import DeltaTable

    landing, lh = tmp_path / "landing", tmp_path / "lh"
    generate(landing, people=300, days=1, seed=5, start=DAY)
    orders = next((landing / "orders" / DAY.isoformat()).glob("*.csv"))
    month_before = (DAY - dt.timedelta(days=30)).isoformat()
    orders.write_text(orders.read_text().replace(DAY.isoformat(), month_before))
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "CDP_LANDING": str(landing), "CDP_LAKEHOUSE": str(lh)}
    env.pop("SPARK_CONNECT_MODE_ENABLED", None)
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    out = subprocess.run([airflow, "dags", "test", "cdp_daily", (DAY + dt.timedelta(days=1)).isoformat()],
                         env=env, capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert "QualityGateError" in log and "bronze_orders was not published" in log, log[-3000:]
    assert "mostly_in_batch_window(paid_time)" in log and "state=failed" in log
    assert DeltaTable.is_deltatable(str(lh / "bronze" / "bronze_app_events"))  # the other sources' tasks ran
    assert not DeltaTable.is_deltatable(str(lh / "bronze" / "bronze_orders"))  # never published
    dq = read_pandas(str(lh), DQ_TABLE)
    bad = dq[(dq["table_name"] == "bronze_orders") & ~dq["success"] & (dq["level"] == "critical")]
    assert bad["expectation"].tolist() == ["mostly_in_batch_window(paid_time)"]
    assert "up_for_retry" not in log.lower()  # failed at once: a retry cannot fix the data
    summary = json.loads((lh / "_runs" / "latest.json").read_text())  # the summary still runs
    assert summary["quality"]["failed"]["critical"] == 1
    assert summary["quality"]["failures"][0]["table_name"] == "bronze_orders"
    runs = read_pandas(str(lh), "ops_runs")
    assert runs["status"].tolist() == ["failed"] and "ingest" in runs["note"].iloc[0]
    assert not (lh / "_runs" / "claim.json").exists()


def test_a_daily_delivery_mostly_off_its_day_stops_the_write_but_a_history_load_only_warns(good, sail):
    from spark_jobs.pipeline import history_config

    cfg, _ = good
    part = {"_batch_date": DAY, "_source": "orders"}
    lh, gate = _gate(sail, cfg, "window-daily")
    late = lh.read("bronze_orders", part).withColumn("paid_time", F.col("paid_time") - F.expr("INTERVAL 3 DAYS"))
    with pytest.raises(QualityGateError, match=r"mostly_in_batch_window\(paid_time\)"):
        gate.check("bronze_orders", late, part)
    history = QualityGate(lh, history_config(cfg), "window-history", DAY)
    failed = {r["expectation"]: r["level"] for r in history.check("bronze_orders", late, part) if not r["success"]}
    assert failed == {"in_batch_window(paid_time)": "warning", "freshness(paid_time)": "warning"}


@pytest.mark.parametrize(("table", "source", "expectation"), [
    ("bronze_orders", "orders", "record_key_unique_over_all_batches(order_id)"),
    ("bronze_crm", "crm", "record_key_unique_over_all_batches(member_id,updated_at)"),
    ("silver_orders", None, "record_key_unique_over_all_batches(channel,order_id)"),
])
def test_a_record_key_loaded_by_an_earlier_batch_fails_the_next_batch(good, sail, table, source, expectation):
    """The record key is unique over the whole table, not only the batch: the day's rows written again
    as the next day's (a redelivery loaded twice) fail, naming the key."""
    cfg, _ = good
    nxt = DAY + dt.timedelta(days=1)
    lh = Lakehouse(sail, cfg.paths.lakehouse_uri())
    gate = QualityGate(lh, cfg, f"again-{table}", nxt)
    part = {"_batch_date": DAY, **({"_source": source} if source else {})}
    again = lh.read(table, part).withColumn("_batch_date", F.lit(nxt))
    with pytest.raises(QualityGateError, match=re.escape(expectation)):
        gate.check(table, again, {**part, "_batch_date": nxt})
    failed = [r["expectation"] for r in gate.results if not r["success"] and r["level"] == "critical"]
    assert failed == [expectation]
