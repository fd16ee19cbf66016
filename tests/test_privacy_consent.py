"""Marketing consent: gold_consent's latest statement per person and channel (inline rows), and end to end on
a small generated world: gold_consent equals the generator's ground truth, unreadable consent is quarantined
with a reason, and a marketing segment's hashed exports hold exactly its members who opted in."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from spark_jobs.config import CdpConfig, EngineConfig, PathsConfig
from spark_jobs.contracts import CONTRACTS
from spark_jobs.privacy.consent import (
    ConsentError,
    build_consent,
    build_statements,
    purpose_channel,
    with_consent,
)
from tests.conftest import contract_frame

START = dt.date(2026, 11, 1)
T0 = dt.datetime(2026, 11, 1, 2)


def _contact(member: str, when: dt.datetime, **consent) -> dict:
    return {"contact_id": member, "source": "crm", "member_id": member, "updated_at": when, "_batch_date": START,
            **consent}


def test_build_consent_keeps_the_latest_statement_per_person_and_channel(sail):
    h = dt.timedelta(hours=1)
    contacts = contract_frame(sail, "silver_contacts", [
        _contact("M1", T0, sms_consent="opt_in", ads_consent="opt_in", consent_time=T0 - h, consent_source="store"),
        _contact("M1", T0 + h, sms_consent="opt_out", ads_consent="opt_in", consent_time=T0 + h, consent_source="app"),
        _contact("M2", T0, email_consent="opt_in"),  # no consent_time: dated by the record
        _contact("M3", T0),  # never asked: no statement
    ]).withColumn("person_id", F.concat(F.lit("p_"), F.col("member_id")))
    events = sail.createDataFrame(
        [("p_M1", "e1", T0 + 2 * h, "opt_in"), ("p_M2", "e2", T0, None)],
        "person_id string, event_id string, ts timestamp, wechat_consent string")
    got = {(r["person_id"], r["channel"]): r.asDict() for r in build_consent(build_statements(contacts, events), START).collect()}
    assert {k: v["status"] for k, v in got.items()} == {
        ("p_M1", "sms"): "opt_out", ("p_M1", "ads"): "opt_in", ("p_M1", "wechat"): "opt_in", ("p_M2", "email"): "opt_in"}
    assert got[("p_M1", "sms")]["consent_source"] == "app" and got[("p_M1", "wechat")]["source"] == "wechat"
    assert got[("p_M2", "email")]["consent_time"] == T0 and got[("p_M1", "ads")]["record_ref"] == "crm:M1"


def test_an_opt_out_wins_a_tie_and_no_statement_is_no_consent(sail):
    statements = sail.createDataFrame(
        [("p1", "ads", "opt_in", T0, "crm", "store", "crm:a"), ("p1", "ads", "opt_out", T0, "wechat", None, "wechat:b")],
        "person_id string, channel string, status string, consent_time timestamp, source string, "
        "consent_source string, record_ref string")
    consent = build_consent(statements, START)
    assert [r["status"] for r in consent.collect()] == ["opt_out"]
    members = sail.createDataFrame([("p1",), ("p2",)], "person_id string")
    flagged = {r["person_id"]: r["consented"] for r in with_consent(members, consent, "ads").collect()}
    assert flagged == {"p1": False, "p2": False}


def test_purpose_channel_names_the_purposes_for_an_unknown_one():
    assert purpose_channel("marketing_sms") == "sms" and purpose_channel("analysis") is None
    with pytest.raises(ConsentError, match="marketing_ads"):
        purpose_channel("marketing_fax")


# --- end to end -------------------------------------------------------------------------------------------
BAD_CONSENT = "yes please"


@pytest.fixture(scope="module")
def consent_world(tmp_path_factory):
    from spark_jobs.generate import ConsentRates, NoiseRates, generate
    from spark_jobs.pipeline import run_stage

    base = tmp_path_factory.mktemp("consent")
    rates = ConsentRates(asked=0.9, ads=0.5, change=0.3, wechat_prompt=0.5)
    # No junk identifiers: a junk unionid on a record can end an openid's ownership at that record (a One-ID
    # matter, found here), and this test is about consent.
    manifest = generate(base / "landing", people=400, days=2, seed=3, start=START, consent=rates,
                        noise=NoiseRates(junk_identifier=0.0))
    # One CRM row whose consent does not read: it must be quarantined, not read as "no answer".
    crm = base / "landing" / "crm" / "2026-11-02" / "part-00000.csv"
    lines = crm.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    row = lines[1].rstrip("\n").split(",")
    row[0], row[header.index("sms_consent")] = "M999999999", BAD_CONSENT
    row[header.index("updated_at")] = "2026-11-02T12:00:00.000+08:00"
    crm.write_text("".join(lines) + ",".join(row) + "\n")
    cfg = CdpConfig(engine=EngineConfig(kind="local"), paths=PathsConfig(
        landing=str(base / "landing"), lakehouse=str(base / "lh"), exports=str(base / "exports")))
    figures = {}
    for i in range(2):
        batch = START + dt.timedelta(days=i)
        for ch in cfg.ingest_sources():
            run_stage("ingest", batch, f"t{i}", channel=ch, cfg=cfg)
        for stage in ("standardise", "identity", "profiles", "tags", "segments"):
            figures[stage] = run_stage(stage, batch, f"t{i}", cfg=cfg)
    return base, cfg, manifest, figures


def _rows(cfg, name, **where):
    t = DeltaTable(f"{cfg.paths.lakehouse_uri()}/{CONTRACTS[name].layer}/{name}").to_pyarrow_table().to_pylist()
    return [r for r in t if all(str(r[k]) == str(v) for k, v in where.items())]


def _truth_people(base: Path, cfg) -> dict[str, str]:
    """person_key -> person_id, for the people One-ID resolved whole (every identifier to one person id):
    consent is checked here, not One-ID (a person split in two has two latest statements)."""
    owner = {(r["id_type"], r["id_value"]): r["person_id"] for r in _rows(cfg, "gold_id_map", as_of=START + dt.timedelta(days=1))}
    votes: dict[str, Counter] = {}
    with open(base / "landing" / "_truth" / "identities.csv") as f:
        for r in csv.DictReader(f):
            if (r["id_type"], r["id_value"]) in owner:
                votes.setdefault(r["person_key"], Counter())[owner[(r["id_type"], r["id_value"])]] += 1
    return {k: next(iter(v)) for k, v in votes.items() if len(v) == 1}


@pytest.mark.slow
@pytest.mark.e2e
def test_gold_consent_equals_the_generated_ground_truth(consent_world):
    base, cfg, manifest, _ = consent_world
    assert manifest.consent is not None
    person = _truth_people(base, cfg)
    with open(base / "landing" / "_truth" / "consent.csv") as f:
        truth = {(person[r["person_key"]], r["channel"]): r["status"] for r in csv.DictReader(f) if r["person_key"] in person}
    gold = {(r["person_id"], r["channel"]): r["status"] for r in _rows(cfg, "gold_consent", as_of=START + dt.timedelta(days=1))}
    with open(base / "landing" / "_truth" / "consent.csv") as f:
        assert len(truth) > 0.7 * sum(1 for _ in f)  # most people are resolved whole after two days
    assert len(truth) > 300 and {"opt_in", "opt_out"} == set(truth.values())
    assert {k[1] for k in gold} == {"sms", "wechat", "email", "ads"}
    wrong = {k: (gold.get(k), v) for k, v in truth.items() if gold.get(k) != v}
    assert not wrong, f"{len(wrong)} of {len(truth)} differ, e.g. {list(wrong.items())[:5]}"
    whole = set(person.values())
    assert {k for k in gold if k[0] in whole} == set(truth)


@pytest.mark.slow
@pytest.mark.e2e
def test_an_unreadable_consent_is_quarantined_with_its_reason(consent_world):
    _, cfg, _, _ = consent_world
    bad = [r for r in _rows(cfg, "bronze_quarantine") if BAD_CONSENT in (r["raw"] or "")]
    assert [r["reason"] for r in bad] == ["expect_column_values_to_be_in_set: sms_consent"]
    assert not _rows(cfg, "bronze_crm", member_id="M999999999")


@pytest.mark.slow
@pytest.mark.e2e
def test_marketing_exports_hold_exactly_the_members_who_opted_in_hashed_per_platform(consent_world):
    base, cfg, _, figures = consent_world
    day = START + dt.timedelta(days=1)
    seg = figures["segments"]
    members = {r["person_id"] for r in _rows(cfg, "gold_segment_members", as_of=day, segment="cart_abandoners")
               if r["status"] != "left"}
    ads_in = {r["person_id"] for r in _rows(cfg, "gold_consent", as_of=day, channel="ads") if r["status"] == "opt_in"}
    kept = members & ads_in
    assert members and kept and members - kept  # the world has both kinds
    c = seg["consent"]["cart_abandoners"]
    assert (c["members"], c["consented"], c["excluded_no_consent"]) == (len(members), len(kept), len(members - kept))
    profile = {r["person_id"]: r for r in _rows(cfg, "gold_profiles", as_of=day)}
    phones = sorted({profile[p]["phone"] for p in kept if profile[p]["phone"]})
    emails = sorted({profile[p]["email"] for p in kept if profile[p]["email"]})

    def sha(s: str) -> str:
        return hashlib.sha256(s.encode()).hexdigest()

    folder = base / "exports" / "cart_abandoners"
    tencent = (folder / "tencent_ads" / f"{day}.csv").read_text().split()  # no header, one hash a line
    assert sorted(tencent) == sorted(sha(p.removeprefix("+86")) for p in phones)
    ocean = (folder / "ocean_engine" / f"{day}.csv").read_text().split()
    assert sorted(ocean) == sorted(tencent)
    with open(folder / "meta" / f"{day}.csv") as f:
        meta = list(csv.DictReader(f))
    assert set(meta[0]) == {"phone_sha256", "email_sha256"}
    assert sorted(r["phone_sha256"] for r in meta if r["phone_sha256"]) == sorted(sha(p.removeprefix("+")) for p in phones)
    assert sorted(r["email_sha256"] for r in meta if r["email_sha256"]) == sorted(sha(e.strip().lower()) for e in emails)
    with open(folder / "google_ads" / f"{day}.csv") as f:
        google = list(csv.DictReader(f))
    assert sorted(r["phone_sha256"] for r in google if r["phone_sha256"]) == sorted(sha(p) for p in phones)
    text = "".join(p.read_text() for p in folder.rglob("*.csv"))
    assert not any(p in text or p.removeprefix("+86") in text for p in phones)  # no plaintext phone anywhere
    assert not list(folder.rglob("part-*"))  # named files, not Spark part files
    manifest = json.loads((folder / str(day) / "_manifest.json").read_text())
    assert manifest["purpose"] == "marketing_ads" and manifest["consent"]["excluded_no_consent"] == len(members - kept)
    assert manifest["destinations"]["tencent_ads"]["rows"] == len(tencent)


@pytest.mark.slow
@pytest.mark.e2e
def test_real_exports_give_the_same_consent_as_the_default_format(tmp_path):
    """crm_excel's 短信营销/授权时间/授权渠道 columns and wechat_export's answers read as the default format's."""
    from spark_jobs.generate import ConsentRates, generate
    from spark_jobs.pipeline import run_stage

    got = {}
    for fmt in ("default", "real"):
        base = tmp_path / fmt
        generate(base / "landing", people=150, days=1, seed=8, start=START, consent=ConsentRates(), format=fmt)
        cfg = CdpConfig(engine=EngineConfig(kind="local"), paths=PathsConfig(
            landing=str(base / "landing"), lakehouse=str(base / "lh"), exports=str(base / "exports")))
        sources = [s for s in cfg.ingest_sources() if s in ("crm", "wechat", "crm_excel", "wechat_export")]
        for ch in sources:
            run_stage("ingest", START, "t", channel=ch, cfg=cfg)
        run_stage("standardise", START, "t", cfg=cfg)
        cols = ("sms_consent", "wechat_consent", "email_consent", "ads_consent", "consent_time", "consent_source")
        got[fmt] = (sorted((r["contact_id"], str(r["updated_at"]), *(str(r[c]) for c in cols))
                           for r in _rows(cfg, "silver_contacts")),
                    sorted((r["event_id"], r["wechat_consent"]) for r in _rows(cfg, "silver_events") if r["wechat_consent"]),
                    [r["reason"] for r in _rows(cfg, "bronze_quarantine") if "consent" in r["reason"]])
    assert got["real"] == got["default"]
    contacts, answers, reasons = got["real"]
    assert any(c[2] == "opt_in" for c in contacts) and any(c[2] == "opt_out" for c in contacts) and answers
    assert not reasons


@pytest.mark.e2e
def test_a_marketing_export_without_any_consent_holds_nobody_and_counts_everyone_out(lakehouse, tmp_path):
    """No gold_consent rows at all (a world without consent): nobody is exported, everyone is counted."""
    from spark_jobs import segments
    from spark_jobs.tag_config import SegmentsConfig
    from tests.test_segments import D1, _world

    cfg = _world(lakehouse, tmp_path)
    cfg = cfg.model_copy(update={"segments": SegmentsConfig(
        destinations={"sms_gateway": {"platform": "plaintext", "identifiers": ["phone"], "plaintext": True}},
        segments=[{"name": "vips", "rule": "vip", "purpose": "marketing_sms",
                   "export": {"destinations": ["sms_gateway"], "formats": ["csv"], "identifiers": ["phone"]}}])})
    out = segments.run(lakehouse, cfg, D1)
    assert out["consent"]["vips"] | {"destinations": None} == {
        "purpose": "marketing_sms", "channel": "sms", "members": 2, "consented": 0, "excluded_no_consent": 2,
        "destinations": None}
    assert (tmp_path / "exports" / "vips" / "sms_gateway" / f"{D1}.csv").read_text() == "person_id,phone\n"
    legacy = "".join(p.read_text() for p in (tmp_path / "exports" / "vips" / str(D1) / "csv").glob("*.csv"))
    assert "+86" not in legacy  # the internal plaintext files are filtered by consent too
