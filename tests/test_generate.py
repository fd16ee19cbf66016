"""Tests for spark_jobs.generate: files follow docs/channels.md, noise and truth are exact."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers
import pydantic
import pytest

from spark_jobs import generate as gen
from spark_jobs.generate import (
    CHANNELS,
    CORRUPT_KINDS,
    CSV_HEADERS,
    JUNK_IDENTIFIERS,
    GenerateError,
    Manifest,
    NoiseRates,
    generate,
)

START = dt.date(2026, 11, 1)
NOISY = NoiseRates(
    phone_format_variant=0.5, email_format_variant=0.5, name_typo=0.2, missing_field=0.1,
    junk_identifier=0.05, shared_family_device=0.8, clerk_phone=0.2, corrupt_line=0.06,
)
CLEAN = NoiseRates(
    phone_format_variant=0, email_format_variant=0, name_typo=0, missing_field=0,
    junk_identifier=0, shared_family_device=0, clerk_phone=0, corrupt_line=0,
    duplicate_file=False,
)

# ---------------------------------------------------------------- a strict reader of the contract

TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+08:00")
AMOUNT = re.compile(r"\d+\.\d{2}")
ITEMS = re.compile(r"SKU\d+:[1-9]\d*(\|SKU\d+:[1-9]\d*)*")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
JSON_KEYS = {
    "app_events": ("event_id", "device_id", "login_id", "phone", "unionid", "platform", "event_name",
                   "event_time", "props"),
    "wechat": ("event_id", "appid", "openid", "unionid", "phone", "event_name", "event_time",
               "props"),
}
JSON_REQUIRED = {
    "app_events": {"event_id", "device_id", "event_name", "event_time"},
    "wechat": {"event_id", "appid", "openid", "event_name", "event_time"},
}
EVENT_NAMES = {
    "app_events": {"app_start", "page_view", "search", "view_item", "add_cart", "pay_order",
                   "login", "register", "share"},
    "wechat": {"mp_open", "mp_view_item", "mp_add_cart", "mp_pay", "oa_follow", "oa_click",
               "phone_auth"},
}
PROPS_KEYS = {"page", "category", "sku", "amount", "keyword"}
EVENT_TIME_COLUMN = {"crm": "updated_at", "orders": "paid_time", "pos": "txn_time",
                     "ad_leads": "created_at"}


class Invalid(Exception):
    """A line a strict reader rejects; args[0] is the corruption kind (or 'other')."""


@dataclass
class Record:
    channel: str
    time: dt.datetime
    ids: list[tuple[str, str]]  # (id_type, canonical value)
    raw: dict[str, str | None] = field(default_factory=dict)


def canonical_phone(raw: str) -> str:
    number = phonenumbers.parse(raw, "CN")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def parse_timestamp(value: object) -> dt.datetime:
    if not isinstance(value, str) or not TIMESTAMP.fullmatch(value):
        raise Invalid("bad_timestamp")
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise Invalid("bad_timestamp") from None


def parse_json(channel: str, line: str) -> Record:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        raise Invalid("truncated_json") from None
    if not isinstance(rec, dict):
        raise Invalid("other")
    keys = list(rec)
    order = JSON_KEYS[channel]
    if not set(keys) <= set(order) or keys != sorted(keys, key=order.index):
        raise Invalid("other")
    if not JSON_REQUIRED[channel] <= set(keys) or rec["event_name"] not in EVENT_NAMES[channel]:
        raise Invalid("other")
    for key, value in rec.items():
        if key == "props":
            if not isinstance(value, dict) or not set(value) <= PROPS_KEYS or not all(
                    isinstance(v, str) for v in value.values()):
                raise Invalid("other")
        elif not (value is None or isinstance(value, str)) or (
                value is None and key in JSON_REQUIRED[channel]):
            raise Invalid("other")
    if rec.get("platform") not in (None, "ios", "android", "web"):
        raise Invalid("other")
    time = parse_timestamp(rec["event_time"])
    ids = []
    if channel == "app_events":
        ids.append(("device_id", rec["device_id"].upper()))
        if rec.get("login_id") is not None:
            ids.append(("login_id", rec["login_id"]))
        elif rec["event_name"] in ("login", "register"):
            raise Invalid("other")  # logging in always names the login id
        signing_in = rec["event_name"] in ("login", "register")
        reports_account = signing_in or (rec["event_name"] == "app_start" and rec.get("login_id") is not None)
        for key in ("phone", "unionid"):  # only sign-ins and signed-in launches name the account
            if rec.get(key) is not None and not reports_account:
                raise Invalid("other")
        if signing_in and "phone" in rec and rec.get("phone") is None:
            raise Invalid("other")  # the SMS code went to a phone
        if rec.get("phone") is not None:
            ids.append(("phone", canonical_phone(rec["phone"])))
        if rec.get("unionid") is not None:
            ids.append(("unionid", rec["unionid"]))
    else:
        if rec["appid"] not in ("wx_mp_shop", "wx_oa_brand"):
            raise Invalid("other")
        ids.append(("openid", rec["openid"]))
        if rec.get("unionid") is not None:
            ids.append(("unionid", rec["unionid"]))
        if rec.get("phone") is not None:
            ids.append(("phone", canonical_phone(rec["phone"])))
        if (rec.get("phone") is not None) != (rec["event_name"] == "phone_auth" and "phone" in rec):
            raise Invalid("other")
    return Record(channel, time, ids, rec)


def parse_csv(channel: str, values: list[str]) -> Record:
    header = CSV_HEADERS[channel]
    if len(values) != len(header):
        raise Invalid("wrong_column_count")
    row = dict(zip(header, values, strict=True))
    for col in ("amount",):
        if col in row and not AMOUNT.fullmatch(row[col]):
            raise Invalid("non_numeric_amount")
    time = parse_timestamp(row[EVENT_TIME_COLUMN[channel]])
    ids = []
    if channel == "crm":
        parse_timestamp(row["registered_at"]) if row["registered_at"] else None
        if not row["member_id"] or row["gender"] not in ("", "M", "F") or row["tier"] not in (
                "normal", "silver", "gold", "platinum"):
            raise Invalid("other")
        if row["birthday"]:
            if not DATE.fullmatch(row["birthday"]):
                raise Invalid("other")
            dt.date.fromisoformat(row["birthday"])
        ids.append(("member_id", row["member_id"]))
        for key in ("login_id", "unionid"):
            if row[key]:
                ids.append((key, row[key]))
        if row["email"]:
            ids.append(("email", row["email"].strip().lower()))
    if channel == "orders":
        if not ITEMS.fullmatch(row["items"]) or not (row["member_id"] or row["phone"]):
            raise Invalid("other")
        if row["member_id"]:
            ids.append(("member_id", row["member_id"]))
    if channel in ("pos", "ad_leads") and not row[header[1]]:
        raise Invalid("other")  # store_id / phone are required
    phone = row.get("phone") or row.get("member_phone")
    if phone:
        ids.append(("phone", canonical_phone(phone)))
    return Record(channel, time, ids, row)


@dataclass
class FileRead:
    path: str
    lines: int
    corrupt: Counter
    records: list[Record]


def read_file(landing: Path, relative: str) -> FileRead:
    channel = relative.split("/")[0]
    text = (landing / relative).read_bytes().decode("utf-8")
    assert text == "" or text.endswith("\n")
    lines = text.split("\n")[:-1]
    if channel in CSV_HEADERS:
        assert lines[0] == ",".join(CSV_HEADERS[channel])
        lines = lines[1:]
    corrupt: Counter = Counter()
    records = []
    for line in lines:
        try:
            if channel in CSV_HEADERS:
                assert '"' not in line
                records.append(parse_csv(channel, next(csv.reader([line]))))
            else:
                records.append(parse_json(channel, line))
        except Invalid as bad:
            corrupt[bad.args[0]] += 1
    return FileRead(relative, len(lines), corrupt, records)


def read_landing(landing: Path) -> dict[str, FileRead]:
    return {p.relative_to(landing).as_posix(): read_file(landing, p.relative_to(landing).as_posix())
            for ch in CHANNELS for p in sorted((landing / ch).rglob("*")) if p.is_file()}


def read_truth(landing: Path) -> tuple[dict[tuple[str, str], dict], dict[str, dict]]:
    with open(landing / "_truth" / "identities.csv", newline="") as f:
        identities = {(r["id_type"], r["id_value"]): r for r in csv.DictReader(f)}
    with open(landing / "_truth" / "people.csv", newline="") as f:
        people = {r["person_key"]: r for r in csv.DictReader(f)}
    return identities, people


def file_hashes(landing: Path) -> dict[str, str]:
    return {p.relative_to(landing).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(landing.rglob("*")) if p.is_file()}


def original_day(manifest: Manifest, relative: str) -> dt.date:
    """The day a file's records belong to (a resent file keeps its original's day)."""
    for stats in manifest.channels.values():
        for dup in stats.duplicate_files:
            if dup.duplicate == relative:
                relative = dup.original
    return dt.date.fromisoformat(relative.split("/")[1])


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest, dict[str, FileRead]]:
    landing = tmp_path_factory.mktemp("noisy") / "landing"
    manifest = generate(landing, people=1500, days=6, seed=11, start=START, noise=NOISY)
    return landing, manifest, read_landing(landing)


# ---------------------------------------------------------------- determinism


def test_generate_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", people=300, days=4, seed=5, start=START, noise=NOISY)
    generate(tmp_path / "b", people=300, days=4, seed=5, start=START, noise=NOISY)
    assert file_hashes(tmp_path / "a") == file_hashes(tmp_path / "b")
    assert sum(c.lines for c in first.channels.values()) > 1000


def test_generate_rerun_cleans_stale_files_and_repeats_bytes(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    generate(landing, people=200, days=3, seed=5, start=START)
    before = file_hashes(landing)
    (landing / "crm" / "2026-11-02" / "part-00009.csv").write_text("stale\n")
    (landing / "app_events" / "2026-12-25").mkdir()
    (landing / "other_team").mkdir()
    (landing / "other_team" / "keep.txt").write_text("not ours\n")
    generate(landing, people=200, days=3, seed=5, start=START)
    after = file_hashes(landing)
    assert after.pop("other_team/keep.txt")
    assert after == before


def test_generate_different_seed_gives_different_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a", people=300, days=3, seed=1, start=START)
    generate(tmp_path / "b", people=300, days=3, seed=2, start=START)
    a, b = file_hashes(tmp_path / "a"), file_hashes(tmp_path / "b")
    shared = set(a) & set(b)
    assert all(a[p] != b[p] for p in shared if p.endswith(("jsonl", "identities.csv")))


# ---------------------------------------------------------------- the contract


def test_generate_writes_contract_paths_for_every_channel_day(noisy) -> None:
    landing, manifest, files = noisy
    pattern = re.compile(r"([a-z_]+)/(\d{4}-\d{2}-\d{2})/part-\d{5}(-resend)?\.(jsonl|csv)")
    days = {(START + dt.timedelta(days=d)).isoformat() for d in range(6)}
    for channel in CHANNELS:
        folders = {p.name for p in (landing / channel).iterdir()}
        assert folders == days
    for path in files:
        match = pattern.fullmatch(path)
        assert match, path
        assert match.group(4) == gen.EXTENSIONS[match.group(1)]
    assert {p.name for p in (landing / "_truth").iterdir()} == {
        "identities.csv", "people.csv", "manifest.json"}
    assert Manifest.model_validate_json((landing / "_truth" / "manifest.json").read_text()) == manifest


def test_generate_only_manifest_counted_lines_are_corrupt(noisy) -> None:
    _, manifest, files = noisy
    for channel, stats in manifest.channels.items():
        assert stats.files == len(stats.per_file)
        for expected in stats.per_file:
            got = files[expected.path]
            assert got.lines == expected.lines, expected.path
            assert "other" not in got.corrupt, (expected.path, got.corrupt)
            assert dict(got.corrupt) == {k: v for k, v in expected.corrupt_lines.items() if v}
            assert set(expected.corrupt_lines) == set(CORRUPT_KINDS[channel])
        assert stats.lines == sum(f.lines for f in files.values() if f.path.startswith(channel + "/"))
        assert sum(stats.corrupt_lines.values()) > 0, channel
    for kind in ("truncated_json", "wrong_column_count", "bad_timestamp", "non_numeric_amount"):
        assert sum(s.corrupt_lines.get(kind, 0) for s in manifest.channels.values()) > 5, kind


def test_generate_without_noise_writes_only_clean_canonical_lines(tmp_path: Path) -> None:
    manifest = generate(tmp_path, people=300, days=4, seed=3, start=START, noise=CLEAN)
    files = read_landing(tmp_path)
    identities, _ = read_truth(tmp_path)
    assert all(not f.corrupt for f in files.values())
    assert not any("resend" in p for p in files)
    assert all(sum(s.corrupt_lines.values()) == 0 for s in manifest.channels.values())
    assert {r["kind"] for r in identities.values()} == {"personal"}
    for f in files.values():
        for rec in f.records:
            for col in ("phone", "member_phone"):
                value = rec.raw.get(col)
                assert value is None or value == "" or re.fullmatch(r"1\d{10}", value), value
            if rec.channel == "crm":
                assert rec.raw["email"] == rec.raw["email"].strip().lower()
                assert all(rec.raw[c] for c in ("name", "phone", "gender", "birthday", "city"))


def test_generate_splits_days_into_parts_at_max_lines(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gen, "MAX_LINES_PER_FILE", 40)
    manifest = generate(tmp_path, people=300, days=2, seed=3, start=START, noise=CLEAN)
    parts = sorted((tmp_path / "app_events" / "2026-11-01").iterdir())
    assert len(parts) > 2
    assert [p.name for p in parts] == [f"part-{i:05d}.jsonl" for i in range(len(parts))]
    counts = [len(p.read_text().splitlines()) for p in parts]
    assert all(c == 40 for c in counts[:-1]) and 0 < counts[-1] <= 40
    assert manifest.channels["app_events"].files == len(list((tmp_path / "app_events").rglob("*.jsonl")))


# ---------------------------------------------------------------- timestamps, churn, volume


def test_generate_good_lines_fall_on_their_files_day(noisy) -> None:
    _, manifest, files = noisy
    checked = 0
    for path, f in files.items():
        day = original_day(manifest, path)
        for rec in f.records:
            assert rec.time.date() == day, (path, rec.time)
            assert rec.time.utcoffset() == dt.timedelta(hours=8)
            checked += 1
    assert checked > 5000


def test_generate_people_act_only_between_signup_and_churn(tmp_path: Path) -> None:
    generate(tmp_path, people=600, days=20, seed=9, start=START)
    identities, people = read_truth(tmp_path)
    files = read_landing(tmp_path)
    churned = {k for k, p in people.items() if p["churn_date"]}
    active_after_churn = set()
    for f in files.values():
        for rec in f.records:
            owners = {identities[i]["person_key"] for i in rec.ids
                      if identities[i]["kind"] == "personal"}
            for key in owners:
                p = people[key]
                assert rec.time.date() >= dt.date.fromisoformat(p["signup_date"])
                if p["churn_date"]:
                    assert rec.time.date() <= dt.date.fromisoformat(p["churn_date"]), (key, rec)
                    active_after_churn.add(key)
    assert 0.05 * len(people) < len(churned) < 0.4 * len(people)
    assert active_after_churn  # churners were seen before they churned


def test_generate_writes_about_twenty_lines_per_person_in_thirty_days(tmp_path: Path) -> None:
    manifest = generate(tmp_path, people=1500, days=30, seed=4, start=START)
    lines = {ch: s.lines for ch, s in manifest.channels.items()}
    assert 17 * 1500 < sum(lines.values()) < 23 * 1500
    assert lines["app_events"] > lines["wechat"] > lines["orders"] > lines["ad_leads"] > 0
    assert lines["crm"] > 0 and lines["pos"] > 0


def test_generate_people_truth_has_latent_traits(noisy) -> None:
    landing, manifest, _ = noisy
    _, people = read_truth(landing)
    assert len(people) == manifest.people
    for p in people.values():
        assert float(p["activity"]) > 0 and 0 < float(p["propensity"]) < 1
        if p["churn_date"]:
            assert manifest.start <= dt.date.fromisoformat(p["churn_date"]) <= manifest.end
        assert dt.date.fromisoformat(p["signup_date"]) <= manifest.end
    sizes = Counter(p["household_key"] for p in people.values())
    assert max(sizes.values()) <= 4 and len(sizes) < len(people)


# ---------------------------------------------------------------- identifiers and ground truth


def test_generate_every_identifier_in_files_is_in_truth(noisy) -> None:
    landing, _, files = noisy
    identities, _ = read_truth(landing)
    seen = {i for f in files.values() for rec in f.records for i in rec.ids}
    missing = seen - set(identities)
    assert not missing, sorted(missing)[:5]
    assert {t for t, _ in seen} == {"phone", "email", "device_id", "login_id", "member_id",
                                    "openid", "unionid"}


def test_generate_truth_lists_only_identifiers_found_in_files(noisy) -> None:
    landing, _, _ = noisy
    identities, _ = read_truth(landing)
    text = "".join(p.read_text() for ch in CHANNELS for p in (landing / ch).rglob("part-*"))
    compact = text.replace(" ", "").replace("-", "")  # undo phone formatting variants
    lowered = text.lower()
    for id_type, value in identities:
        if id_type == "phone":
            assert value.removeprefix("+86") in compact, value
        else:
            assert value.lower() in lowered, (id_type, value)


def test_generate_truth_lists_unique_canonical_values(noisy) -> None:
    landing, _, _ = noisy
    with open(landing / "_truth" / "identities.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len({(r["id_type"], r["id_value"]) for r in rows}) == len(rows)
    for r in rows:
        value = r["id_value"]
        if r["id_type"] == "phone":
            assert re.fullmatch(r"\+861[3-9]\d{9}", value)
            if r["kind"] != "junk":
                assert phonenumbers.is_valid_number(phonenumbers.parse(value))
        elif r["id_type"] == "email":
            assert value == value.strip().lower() and "@" in value
        elif r["id_type"] == "device_id":
            assert re.fullmatch(r"[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}", value)
        assert (r["person_key"] == "") == (r["kind"] == "junk")


def test_generate_junk_values_are_kind_junk(noisy) -> None:
    landing, _, files = noisy
    identities, _ = read_truth(landing)
    junk = {(t, v) for t, values in JUNK_IDENTIFIERS.items() for v in values}
    used = {i for f in files.values() for rec in f.records for i in rec.ids} & junk
    assert {t for t, _ in used} == set(JUNK_IDENTIFIERS)  # every junk type is injected
    for key in used:
        assert identities[key]["kind"] == "junk" and identities[key]["person_key"] == ""
    assert {k for k, r in identities.items() if r["kind"] == "junk"} <= junk


def test_generate_links_identifiers_of_one_person(noisy) -> None:
    landing, _, files = noisy
    identities, _ = read_truth(landing)
    linked = 0
    for f in files.values():
        for rec in f.records:
            owners = {identities[i]["person_key"] for i in rec.ids
                      if identities[i]["kind"] == "personal"}
            assert len(owners) <= 1, rec
            linked += len(rec.ids) > 1
    assert linked > 1000


def test_generate_shared_identifiers_are_family_devices_and_clerk_phones(noisy) -> None:
    landing, _, files = noisy
    identities, people = read_truth(landing)
    household_size = Counter(p["household_key"] for p in people.values())
    shared = {k: r for k, r in identities.items() if r["kind"] == "shared"}
    assert {t for t, _ in shared} == {"device_id", "phone"}
    for (id_type, _), r in shared.items():
        if id_type == "device_id":
            assert household_size[people[r["person_key"]]["household_key"]] >= 2
    pos_phones = Counter(i for f in files.values() for rec in f.records if rec.channel == "pos"
                         for i in rec.ids)
    for key in shared:
        if key[0] == "phone":
            assert pos_phones[key] >= 1
    # a shared device is seen with the logins of more than one person
    users = defaultdict(set)
    for f in files.values():
        for rec in f.records:
            ids = dict(rec.ids)
            if rec.channel == "app_events" and ("login_id", ids.get("login_id")) in identities:
                login = identities[("login_id", ids["login_id"])]
                if login["kind"] == "personal":
                    users[ids["device_id"]].add(login["person_key"])
    assert any(len(users[v]) > 1 for t, v in shared if t == "device_id")


def test_generate_wechat_phone_only_on_phone_auth(noisy) -> None:
    _, _, files = noisy
    names = Counter()
    for f in files.values():
        for rec in f.records:
            if rec.channel == "wechat" and rec.raw.get("phone") is not None:
                names[rec.raw["event_name"]] += 1
    assert set(names) == {"phone_auth"}


# ---------------------------------------------------------------- the duplicate file


def test_generate_duplicate_file_has_identical_bytes_on_a_later_day(noisy) -> None:
    landing, manifest, _ = noisy
    dups = [d for s in manifest.channels.values() for d in s.duplicate_files]
    assert len(dups) == 1
    original, copy = dups[0].original, dups[0].duplicate
    assert (landing / original).read_bytes() == (landing / copy).read_bytes()
    assert original.split("/")[0] == copy.split("/")[0]
    assert copy.split("/")[1] > original.split("/")[1]
    assert copy.rsplit("/", 1)[1] == original.rsplit("/", 1)[1].replace(".", "-resend.")
    assert len([p for p in landing.rglob("*resend*")]) == 1


def test_generate_duplicate_stays_on_the_only_day(tmp_path: Path) -> None:
    manifest = generate(tmp_path, people=100, days=1, seed=2, start=START)
    (dup,) = [d for s in manifest.channels.values() for d in s.duplicate_files]
    assert dup.original.split("/")[1] == dup.duplicate.split("/")[1] == START.isoformat()
    assert (tmp_path / dup.original).read_bytes() == (tmp_path / dup.duplicate).read_bytes()


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize("kwargs, message", [
    ({"people": 0}, "people"),
    ({"people": -5}, "people"),
    ({"people": 2.5}, "people"),
    ({"days": 0}, "days"),
    ({"seed": -1}, "seed"),
    ({"start": dt.datetime(2026, 11, 1, 8)}, "start"),
    ({"start": "2026-11-01"}, "start"),
    ({"noise": {"corrupt_line": 0.1}}, "noise"),
])
def test_generate_rejects_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"people": 10, "days": 2, "seed": 1, "start": START, **kwargs}
    with pytest.raises(GenerateError, match=message):
        generate(tmp_path, **args)
    assert not any(tmp_path.iterdir())  # nothing written


def test_generate_rejects_landing_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "landing"
    target.write_text("x")
    with pytest.raises(GenerateError, match="directory"):
        generate(target, people=10, days=1, seed=1, start=START)


@pytest.mark.parametrize("kwargs", [{"corrupt_line": 1.5}, {"junk_identifier": -0.1},
                                    {"name_typo": float("nan")}, {"typo": 0.1}])
def test_noise_rates_rejects_out_of_range_or_unknown_fields(kwargs: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        NoiseRates(**kwargs)
