"""spark_jobs.identity.explain and `cdp whois --explain / --graph / --on`: pure functions on hand-made
frames, then the CLI on a lakehouse the real pipeline built from generated data (marked e2e, slow)."""

import datetime as dt
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from spark_jobs.identity.explain import (
    STRENGTHS,
    ExplainError,
    draw,
    explain_person,
    holders,
    owner_row,
    person_pairs,
    render,
    shortest_paths,
)

SVG = "{http://www.w3.org/2000/svg}"
T = pd.Timestamp
LINK_COLUMNS = ["link_id", "src_type", "src_value", "dst_type", "dst_value", "source", "records", "first_seen", "strength"]
DROPPED_COLUMNS = ["id_type", "id_value", "other_type", "other_value", "rule", "detail"]
M1, M2, PHONE, LOGIN, DEVICE = ("member_id", "M1"), ("member_id", "M2"), ("phone", "+8613912345678"), ("login_id", "U1"), \
    ("device_id", "D1")
MEMBERS = {M1, PHONE, LOGIN, DEVICE}


def _links(*rows) -> pd.DataFrame:
    return pd.DataFrame([dict(zip(LINK_COLUMNS, r, strict=True)) for r in rows], columns=LINK_COLUMNS)


def _dropped(*rows) -> pd.DataFrame:
    return pd.DataFrame([dict(zip(DROPPED_COLUMNS, r, strict=True)) for r in rows], columns=DROPPED_COLUMNS)


LINKS = _links(
    ("L1", *M1, *PHONE, "crm", 2, T("2026-11-01 10:00"), "verified"),
    ("L2", *PHONE, *M1, "orders", 1, T("2026-10-30 08:00"), "contact"),  # the same pair, the other way round
    ("L3", *DEVICE, *LOGIN, "app_events", 5, T("2026-11-01 09:00"), "binding"),
    ("L4", *LOGIN, *M1, "crm", 1, T("2026-11-01 11:00"), "verified"),
    ("L5", *M2, *PHONE, "crm", 1, T("2026-11-01 12:00"), "verified"),  # M2 is another person's
    ("L6", *DEVICE, *PHONE, "orders", 1, T("2026-11-01 13:00"), "contact"),
)
DROPPED = _dropped(
    (*M2, *PHONE, "limit:member_id>1", "link cut: the person would exceed the limit"),
    (*DEVICE, *PHONE, "link_dropped:hub:>1_strong", None),
    ("login_id", "unknown", None, None, "blocklist_exact:*", None),
)
IDENTIFIERS = pd.DataFrame({"link_id": ["L1", "L1", "L3", "L4"], "source": ["crm", "crm", "app_events", "crm"],
                            "record_ref": ["crm:C9", "crm:C2", "app_events:E1", "crm:C3"]})


def _pair(a, b):
    return tuple(sorted((a, b)))


def test_person_pairs_aggregates_both_orientations_and_shows_the_strongest_evidence():
    pairs = person_pairs(LINKS, MEMBERS, DROPPED)
    got = {_pair((r.a_type, r.a_value), (r.b_type, r.b_value)): r for r in pairs.itertuples()}
    assert set(got) == {_pair(M1, PHONE), _pair(DEVICE, LOGIN), _pair(LOGIN, M1), _pair(DEVICE, PHONE)}  # not M2's
    both = got[_pair(M1, PHONE)]
    assert (both.records, both.first_seen, both.strength) == (3, T("2026-10-30 08:00"), "verified")
    assert (both.source, both.link_id, both.sources) == ("crm", "L1", "crm,orders")  # shown: the strongest evidence
    assert [p for p, r in got.items() if not r.kept] == [_pair(DEVICE, PHONE)]  # gold_id_dropped cut it


def test_person_pairs_without_a_strength_column_show_unknown():
    pairs = person_pairs(LINKS.drop(columns="strength"), MEMBERS, _dropped())
    assert set(pairs["strength"]) == {"?"} and pairs["kept"].all()


def test_shortest_paths_take_fewest_hops_then_stronger_evidence_over_kept_links_only():
    pairs = person_pairs(LINKS, MEMBERS, DROPPED)
    paths = shortest_paths(pairs, PHONE, MEMBERS)
    assert paths == {DEVICE: [PHONE, M1, LOGIN, DEVICE], LOGIN: [PHONE, M1, LOGIN], M1: [PHONE, M1]}  # not via the cut D1-phone
    # Two 2-hop routes from A to C: over B (verified, verified) and over D (contact, verified): B wins.
    a, b, c, d = ("login_id", "A"), ("member_id", "B"), ("unionid", "C"), ("phone", "D")
    diamond = person_pairs(_links(("1", *a, *d, "s", 1, T("2026-11-01"), "contact"),
                                  ("2", *d, *c, "s", 1, T("2026-11-01"), "verified"),
                                  ("3", *a, *b, "s", 1, T("2026-11-01"), "verified"),
                                  ("4", *b, *c, "s", 1, T("2026-11-01"), "verified")), {a, b, c, d}, _dropped())
    assert shortest_paths(diamond, a)[c] == [a, b, c]


def test_shortest_paths_say_none_for_a_member_no_kept_link_reaches():
    pairs = person_pairs(LINKS, MEMBERS | {("email", "x@y.cn")}, DROPPED)
    assert shortest_paths(pairs, PHONE, MEMBERS | {("email", "x@y.cn")})[("email", "x@y.cn")] is None


def test_owner_row_takes_the_window_that_contains_the_day():
    recycled = pd.DataFrame({
        "id_type": ["phone", "phone"], "id_value": ["+8613912345678"] * 2, "person_id": ["p_old", "p_new"],
        "valid_from": [None, T("2026-11-02 12:00")], "valid_to": [T("2026-11-02 12:00"), None],
    })
    assert owner_row(recycled, dt.date(2026, 11, 1))["person_id"] == "p_old"
    assert owner_row(recycled, dt.date(2026, 11, 2))["person_id"] == "p_new"  # both held it that day: the later one
    assert owner_row(recycled, dt.date(2026, 11, 3))["person_id"] == "p_new"
    assert owner_row(recycled)["person_id"] == "p_new"  # the open window: the current owner
    assert owner_row(recycled.iloc[:1], dt.date(2026, 11, 5)) is None
    assert owner_row(recycled.drop(columns=["valid_from", "valid_to"]).iloc[:1], dt.date(2020, 1, 1))["person_id"] == "p_old"
    assert owner_row(recycled.iloc[:0]) is None
    assert list(holders(recycled, dt.date(2026, 11, 2))["person_id"]) == ["p_old", "p_new"]  # changed hands that day
    seen = recycled.assign(first_seen=[T("2026-10-15"), T("2026-11-02 12:00")])  # NULL valid_from: since first seen
    assert owner_row(seen, dt.date(2026, 10, 1)) is None and owner_row(seen, dt.date(2026, 10, 20))["person_id"] == "p_old"
    # 2026-11-01 20:00 UTC is 04:00 on 11-02 in Shanghai: on the Shanghai day 2026-11-01 p_new did not hold it yet.
    early = recycled.assign(valid_from=[None, T("2026-11-01 20:00")], valid_to=[T("2026-11-01 20:00"), None])
    assert owner_row(early, dt.date(2026, 11, 1))["person_id"] == "p_new"
    assert owner_row(early, dt.date(2026, 11, 1), "Asia/Shanghai")["person_id"] == "p_old"


def test_render_prints_each_hop_with_its_evidence_the_cut_and_skipped_decisions():
    lines = render(explain_person(PHONE, "p_1", "2026-11-02", MEMBERS, LINKS, IDENTIFIERS, DROPPED))
    text = "\n".join(lines)
    assert ("    phone:+8613912345678 -> member_id:M1  via crm  record crm:C2  first seen 2026-10-30  strength verified"
            "  records 3  sources crm,orders") in lines
    assert "    login_id:U1 -> device_id:D1  via app_events  record app_events:E1  first seen 2026-11-01  strength binding  records 5" in lines
    assert "  device_id:D1 (3 hops):" in lines and "  member_id:M1 (1 hop):" in lines
    assert "  member_id:M2 -- phone:+8613912345678  rule limit:member_id>1  (link cut: the person would exceed the limit)" in lines
    assert "  device_id:D1 -- phone:+8613912345678  rule link_dropped:hub:>1_strong" in lines
    assert "unknown" not in text  # a dropped value touching no member is not this person's
    assert lines[-1] == "decisions: skipped (no gold_id_decisions table)"


def test_render_lists_tie_break_decisions_when_the_table_exists():
    decisions = pd.DataFrame([{"id_type": "member_id", "id_value": "M1", "other_type": "member_id", "other_value": "M2",
                               "match_weight": -3.25, "match_probability": 0.096, "decision": "kept_apart",
                               "comparisons": '{"name": "exact", "birthday": "differs"}'}])
    lines = render(explain_person(PHONE, "p_1", "2026-11-02", MEMBERS, LINKS, IDENTIFIERS, DROPPED, decisions))
    assert lines[-2:] == ["decisions (gold_id_decisions as of 2026-11-02):",
                          "  member_id:M1 -- member_id:M2  kept_apart  weight -3.25  probability 0.096  birthday=differs, name=exact"]


def test_draw_writes_an_svg_with_a_solid_edge_per_kept_link_and_dashed_cut_links(tmp_path):
    e = explain_person(PHONE, "p_1", "2026-11-02", MEMBERS, LINKS, IDENTIFIERS, DROPPED)
    root = ET.parse(draw(e, tmp_path / "person.svg")).getroot()
    groups = {g.get("id"): g for g in root.iter(f"{SVG}g") if g.get("id")}
    assert len(groups["kept_links"].findall(f"{SVG}path")) == int(e.pairs["kept"].sum()) == 3
    cut = groups["cut_links"].findall(f"{SVG}path")
    assert len(cut) == 2 and all("stroke-dasharray" in p.get("style", "") for p in cut)  # D1-phone and M2-phone
    labels = {"".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")}
    assert {"phone:+8613912345678", "member_id:M1", "login_id:U1", "device_id:D1", "member_id:M2"} <= labels


def test_draw_refuses_a_missing_folder_or_another_format(tmp_path):
    e = explain_person(PHONE, "p_1", "2026-11-02", MEMBERS, LINKS, IDENTIFIERS, DROPPED)
    with pytest.raises(ExplainError, match="does not exist"):
        draw(e, tmp_path / "nowhere" / "person.svg")
    with pytest.raises(ExplainError, match="SVG"):
        draw(e, tmp_path / "person.png")


def test_strengths_are_standardises_weakest_first():
    from spark_jobs.standardise import STRENGTHS as standardised

    assert STRENGTHS == standardised


# --- the CLI on hand-written Delta tables (delta-rs, no Spark) ---------------------------------------


def _write(root: Path, name: str, frame: pd.DataFrame, partition: str) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    from spark_jobs.tables import table_path

    write_deltalake(table_path(str(root), name), pa.Table.from_pandas(frame, preserve_index=False), mode="append",
                    partition_by=[partition])


def _cli(monkeypatch, root: Path, *args: str, pii: bool = True):
    """`cdp whois args` on the lakehouse `root`; pii: with --show-pii and a pii:read key in CDP_API_KEY (the
    tests of what whois finds compare plaintext values; test_cdp_whois_masks_... checks the default)."""
    from typer.testing import CliRunner

    from serving.access import add_key
    from serving.store import serving_dir
    from spark_jobs.cli import app

    monkeypatch.setenv("CDP_LAKEHOUSE", str(root))
    if pii:
        monkeypatch.setenv("CDP_API_KEY", add_key(serving_dir(str(root)) / "api_keys.json", "auditor", ["pii:read"]))
        args = (*args, "--show-pii")
    return CliRunner().invoke(app, ["whois", *args])


def test_cdp_whois_on_a_day_names_the_owner_of_a_recycled_phone(tmp_path, monkeypatch):
    t = [T("2026-10-01"), T("2026-11-02 12:00"), T("2026-11-03")]
    _write(tmp_path, "gold_id_map", pd.DataFrame({
        "id_type": ["phone", "phone", "member_id", "member_id"],
        "id_value": ["+8613912345678", "+8613912345678", "M_OLD", "M_NEW"],
        "person_id": ["p_old", "p_new", "p_old", "p_new"],
        "first_seen": [t[0], t[1], t[0], t[1]], "last_seen": [t[1], t[2], t[2], t[2]],
        "valid_from": [None, t[1], None, None], "valid_to": [t[1], None, None, None],
        "as_of": ["2026-11-03"] * 4,
    }), "as_of")
    before = _cli(monkeypatch, tmp_path, "phone", "139 1234 5678", "--on", "2026-11-01")
    assert before.exit_code == 0, before.output
    assert "-> person p_old (as of 2026-11-03 on 2026-11-01)" in before.output and "M_OLD" in before.output
    assert "M_NEW" not in before.output
    handover = _cli(monkeypatch, tmp_path, "phone", "13912345678", "--on", "2026-11-02")
    assert "-> person p_new (as of 2026-11-03 on 2026-11-02)" in handover.output
    assert "(earlier that day: person p_old)" in handover.output
    now = _cli(monkeypatch, tmp_path, "phone", "13912345678")
    assert "-> person p_new" in now.output and "valid 2026-11-02 12:00:00 to open" in now.output
    assert _cli(monkeypatch, tmp_path, "phone", "13912345678", "--on", "11/01").exit_code == 2


# --- the CLI on a lakehouse the pipeline built ------------------------------------------------------

START = dt.date(2026, 11, 1)
AS_OF = "2026-11-02"
HOP = re.compile(r"^    (\w+):(\S+) -> (\w+):(\S+)  via (\S+)  record (\S+)  first seen (\S+)  strength (\S+)  records (\d+)")
TARGET = re.compile(r"^  (\w+):(\S+) \((\d+) hops?\):$")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """300 generated people over 2 days, ingested, standardised and resolved by the real stages."""
    from spark_jobs.config import CdpConfig, EngineConfig, PathsConfig
    from spark_jobs.generate import generate
    from spark_jobs.pipeline import run_stage
    from spark_jobs.tables import read_pandas

    base = tmp_path_factory.mktemp("explain")
    generate(base / "landing", people=300, days=2, seed=5, start=START)
    cfg = CdpConfig(engine=EngineConfig(kind="local"), paths=PathsConfig(
        landing=str(base / "landing"), lakehouse=str(base / "lh"), exports=str(base / "exports")))
    for i in range(2):
        batch = START + dt.timedelta(days=i)
        for ch in cfg.ingest_sources():
            run_stage("ingest", batch, f"explain_{batch}", channel=ch, cfg=cfg)
        for stage in ("standardise", "identity"):
            run_stage(stage, batch, f"explain_{batch}", cfg=cfg)
    root = cfg.paths.lakehouse_uri()
    tables = {
        "map": read_pandas(root, "gold_id_map", None, {"as_of": AS_OF}),
        "map_day1": read_pandas(root, "gold_id_map", None, {"as_of": START.isoformat()}),
        "links": read_pandas(root, "silver_id_links").pipe(lambda t: t[t["_batch_date"] <= dt.date.fromisoformat(AS_OF)]),
        "identifiers": read_pandas(root, "silver_identifiers"),
        "dropped": read_pandas(root, "gold_id_dropped", None, {"as_of": AS_OF}),
    }
    return base, root, tables


def _person_with_a_cut_link(tables) -> tuple[str, set]:
    members: dict[str, set] = {}
    for r in tables["map"].itertuples():
        members.setdefault(r.person_id, set()).add((r.id_type, r.id_value))
    cut = tables["dropped"][tables["dropped"]["other_type"].notna()]
    touched = set(zip(cut["id_type"], cut["id_value"], strict=True)) | set(zip(cut["other_type"], cut["other_value"], strict=True))
    person = next(p for p in sorted(members) if len(members[p]) >= 3 and members[p] & touched)
    return person, members[person]


def _real_pairs(tables, members: set) -> dict:
    """(sorted pair) -> the silver_id_links rows joining two of `members`, read straight from the table."""
    out: dict = {}
    for r in tables["links"].itertuples():
        a, b = (r.src_type, r.src_value), (r.dst_type, r.dst_value)
        if a in members and b in members:
            out.setdefault(_pair(a, b), []).append(r)
    return out


@pytest.mark.e2e
@pytest.mark.slow
def test_cdp_whois_explain_prints_real_links_on_a_path_to_every_identifier(world, monkeypatch):
    _, root, tables = world
    person, members = _person_with_a_cut_link(tables)
    start = sorted(members)[0]
    result = _cli(monkeypatch, Path(root), start[0], start[1], "--explain")
    assert result.exit_code == 0, result.output
    assert f"-> person {person} (as of {AS_OF})" in result.output
    real = _real_pairs(tables, members)
    refs = set(zip(tables["identifiers"]["link_id"], tables["identifiers"]["source"], tables["identifiers"]["record_ref"],
                   strict=True))
    paths: dict = {}
    hops_said: dict = {}
    for line in result.output.splitlines():
        if m := TARGET.match(line):
            target = (m[1], m[2])
            paths[target], hops_said[target] = [], int(m[3])
        elif m := HOP.match(line):
            a, b, source, ref, first, strength, records = (m[1], m[2]), (m[3], m[4]), m[5], m[6], m[7], m[8], int(m[9])
            rows = real[_pair(a, b)]  # the hop is a link of silver_id_links, in either orientation
            shown = [r for r in rows if r.source == source]
            assert shown, (a, b, source)
            assert any((r.link_id, source, ref) in refs for r in shown)  # a record that carried both
            assert first == min(r.first_seen for r in rows).date().isoformat()
            assert records == sum(r.records for r in rows)
            if "strength" in tables["links"].columns:
                assert strength == max((r.strength for r in rows), key=STRENGTHS.index)
            paths[target].append((a, b))
    assert set(paths) == members - {start}  # a path to each of the person's other identifiers
    for target, hops in paths.items():
        assert len(hops) == hops_said[target] and hops[0][0] == start and hops[-1][1] == target
        assert all(x[1] == y[0] for x, y in zip(hops, hops[1:], strict=False))  # the hops chain


@pytest.mark.e2e
@pytest.mark.slow
def test_cdp_whois_explain_lists_each_dropped_link_under_cut_with_its_rule(world, monkeypatch):
    _, root, tables = world
    _, members = _person_with_a_cut_link(tables)
    start = sorted(members)[0]
    output = _cli(monkeypatch, Path(root), start[0], start[1], "--explain").output
    cut_section = output.split(f"cut (gold_id_dropped as of {AS_OF}):\n", 1)[1]
    dropped = tables["dropped"]
    touching = dropped[[(t, v) in members or (ot, ov) in members for t, v, ot, ov in zip(
        dropped["id_type"], dropped["id_value"], dropped["other_type"], dropped["other_value"], strict=True)]]
    assert not touching.empty
    for r in touching.itertuples():
        other = f" -- {r.other_type}:{r.other_value}" if isinstance(r.other_type, str) else ""
        assert f"  {r.id_type}:{r.id_value}{other}  rule {r.rule}" in cut_section


@pytest.mark.e2e
@pytest.mark.slow
def test_cdp_whois_graph_writes_an_svg_with_an_edge_per_kept_link(world, monkeypatch):
    base, root, tables = world
    _, members = _person_with_a_cut_link(tables)
    start = sorted(members)[0]
    out = base / "person.svg"
    result = _cli(monkeypatch, Path(root), start[0], start[1], "--graph", str(out))
    assert result.exit_code == 0, result.output
    dropped = tables["dropped"][tables["dropped"]["other_type"].notna()]
    cut = {_pair((r.id_type, r.id_value), (r.other_type, r.other_value)) for r in dropped.itertuples()}
    kept = set(_real_pairs(tables, members)) - cut
    svg = ET.parse(out).getroot()
    groups = {g.get("id"): g for g in svg.iter(f"{SVG}g") if g.get("id")}
    assert len(groups["kept_links"].findall(f"{SVG}path")) == len(kept)
    labels = {"".join(t.itertext()).strip() for t in svg.iter(f"{SVG}text")}
    assert {f"{t}:{v}" for t, v in members} <= labels
    missing = _cli(monkeypatch, Path(root), start[0], start[1], "--graph", str(base / "nowhere" / "p.svg"))
    assert missing.exit_code == 2 and "does not exist" in missing.output


@pytest.mark.e2e
@pytest.mark.slow
def test_cdp_whois_keeps_its_output_and_exit_codes(world, monkeypatch):
    _, root, tables = world
    person, members = _person_with_a_cut_link(tables)
    start = sorted(members)[0]
    plain = _cli(monkeypatch, Path(root), start[0], start[1])
    assert plain.exit_code == 0 and "why:" not in plain.output
    assert all(v in plain.output for _, v in members) and f"person {person}" in plain.output
    newest = tables["map"]
    if {"valid_from", "valid_to"} <= set(newest.columns):  # windows: the newest snapshot knows every owner
        day = pd.Timestamp("2026-11-01", tz="Asia/Shanghai")
        since = pd.to_datetime(newest["valid_from"], utc=True).fillna(pd.to_datetime(newest["first_seen"], utc=True))
        until = pd.to_datetime(newest["valid_to"], utc=True)
        held = newest[(since < day + pd.Timedelta(days=1)) & (until.isna() | (until > day))]
        snapshot, before_any = AS_OF, 1  # a day before it was first seen: nobody held it
    else:  # no windows: --on reads that day's snapshot
        held, snapshot, before_any = tables["map_day1"], "2026-11-01", 2  # no snapshot that early
    once = held.groupby(["id_type", "id_value"]).filter(lambda g: len(g) == 1).sort_values(["id_type", "id_value"])
    row = once[once["id_value"].isin(set(tables["map_day1"]["id_value"]))].iloc[0]
    first_day = _cli(monkeypatch, Path(root), row["id_type"], row["id_value"], "--on", "2026-11-01")
    assert first_day.exit_code == 0, first_day.output
    assert f"-> person {row['person_id']} (as of {snapshot} on 2026-11-01)" in first_day.output
    assert _cli(monkeypatch, Path(root), start[0], start[1], "--on", "2026-10-01").exit_code == before_any
    junk = _cli(monkeypatch, Path(root), "phone", "13800000000", "--explain")
    assert junk.exit_code == 1 and "rule blocklist_exact:phone" in junk.output  # removed: the rule says why
    assert _cli(monkeypatch, Path(root), "fax", "1").exit_code == 2
    assert _cli(monkeypatch, Path(root), "phone", "139").exit_code == 2


@pytest.mark.e2e
@pytest.mark.slow
def test_cdp_whois_masks_phones_and_emails_unless_show_pii_is_allowed(world, monkeypatch, tmp_path):
    from serving.access import add_key, mask
    from serving.store import serving_dir

    _, root, tables = world
    person, members = _person_with_a_cut_link(tables)
    start = sorted(members)[0]
    masked = _cli(monkeypatch, Path(root), start[0], start[1], "--explain", "--graph", str(tmp_path / "m.svg"), pii=False)
    assert masked.exit_code == 0, masked.output
    svg = (tmp_path / "m.svg").read_text()
    personal = [(t, v) for t, v in members if t in ("phone", "email")]
    assert personal, members
    for t, v in members:
        if t in ("phone", "email"):
            assert v not in masked.output and v not in svg and mask(t, v) in masked.output
        else:
            assert v in masked.output  # device ids, member ids, openids: as the API shows them
    keys = serving_dir(str(root)) / "api_keys.json"
    monkeypatch.delenv("CDP_API_KEY", raising=False)
    refused = _cli(monkeypatch, Path(root), start[0], start[1], "--show-pii", pii=False)
    assert refused.exit_code == 2 and "CDP_API_KEY" in refused.output and "is not set" in refused.output
    monkeypatch.setenv("CDP_API_KEY", add_key(keys, "bi_only", ["sql:read"]))
    refused = _cli(monkeypatch, Path(root), start[0], start[1], "--show-pii", pii=False)
    assert refused.exit_code == 2 and "lacks pii:read" in refused.output
    log = serving_dir(str(root)) / "access.log"
    before = log.read_text().splitlines() if log.exists() else []
    shown = _cli(monkeypatch, Path(root), start[0], start[1])
    assert shown.exit_code == 0 and all(v in shown.output for _, v in personal)
    entry = json.loads(log.read_text().splitlines()[len(before)])
    assert entry["key"] == "auditor" and entry["person_id"] == person and entry["request"].startswith("cdp whois --show-pii")
