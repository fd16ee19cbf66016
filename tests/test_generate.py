"""Tests for spark_jobs.generate: files follow docs/channels.md, noise and truth are exact."""

from __future__ import annotations

import csv
import datetime as dt
import functools
import hashlib
import io
import json
import math
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import phonenumbers
import pydantic
import pytest
import yaml

from spark_jobs import generate as gen
from spark_jobs.contracts import CHANNEL_FIELDS
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
from spark_jobs.sources.presets import PRESETS

START = dt.date(2026, 11, 1)
NOISY = NoiseRates(
    phone_format_variant=0.5, email_format_variant=0.5, name_typo=0.2, missing_field=0.1,
    junk_identifier=0.05, shared_family_device=0.8, clerk_phone=0.2, corrupt_line=0.06,
)
CLEAN = NoiseRates(
    phone_format_variant=0, email_format_variant=0, name_typo=0, missing_field=0,
    junk_identifier=0, shared_family_device=0, clerk_phone=0, corrupt_line=0,
    duplicate_file=False, late_arrival=0,
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
    """...except the late arrivals each file's stats count: records of the day before, at its end."""
    _, manifest, files = noisy
    stats = {f.path: f for c in manifest.channels.values() for f in c.per_file}
    checked = late = 0
    for path, f in files.items():
        day = original_day(manifest, path)
        arrived = stats[path].late_arrivals
        n = len(f.records)
        for i, rec in enumerate(f.records):
            if i >= n - arrived:
                assert rec.time.date() == day - dt.timedelta(days=1), (path, rec.time)
                late += 1
            else:
                assert rec.time.date() == day, (path, rec.time)
            assert rec.time.utcoffset() == dt.timedelta(hours=8)
            checked += 1
    assert checked > 5000 and late > 0


def test_generate_late_arrivals_are_good_records_of_the_day_before_at_the_rate(tmp_path: Path) -> None:
    noise = CLEAN.model_copy(update={"late_arrival": 0.2})
    manifest = generate(tmp_path, people=800, days=3, seed=4, start=START, noise=noise)
    files = read_landing(tmp_path)
    for channel in gen.CHANNELS:
        per_file = manifest.channels[channel].per_file
        arrived = sum(f.late_arrivals for f in per_file)
        if channel not in gen.LATE_ARRIVAL_CHANNELS:
            assert arrived == 0
            continue
        first_day = [f for f in per_file if f.path.split("/")[1] == START.isoformat()]
        assert all(f.late_arrivals == 0 for f in first_day)  # nothing arrives before the window
        held = sum(f.records for f in per_file if f.path.split("/")[1] < (START + dt.timedelta(days=2)).isoformat())
        assert 0.1 * held < arrived < 0.35 * held, (channel, arrived, held)  # of the records of days 1-2
        for f in per_file:
            records = files[f.path].records
            assert all(r.time.date() < dt.date.fromisoformat(f.path.split("/")[1]) for r in records[len(records) - f.late_arrivals:])


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


# ---------------------------------------------------------------- the real-world exports (format "real")

ROOT = Path(__file__).resolve().parents[1]
REAL_NOISE = NOISY.model_copy(update={"corrupt_line": 0.08, "fullwidth_email": 0.25,
                                      "fullwidth_phone": 0.25, "crm_remark": 0.4})
REAL_FILE = re.compile(r"([a-z_]+)/(\d{4}-\d{2}-\d{2})/part-(\d{5})(-resend|-reexport)?\.(jsonl|csv)")
KIND_OF_TYPE = {"timestamp": "bad_timestamp", "date": "other"}


@functools.cache
def declared(source: str) -> tuple[dict, dict[str, dict], frozenset[str]]:
    """A source of conf/sources.yaml: its entry, the mapping of every model field and its identifier
    fields (its preset's, then its own)."""
    entry = yaml.safe_load((ROOT / "conf" / "sources.yaml").read_text())["sources"][source]
    preset = PRESETS[entry["preset"]] if "preset" in entry else {}
    fields = {k: dict(v) for k, v in preset.get("fields", {}).items()}
    for name, m in (entry.get("fields") or {}).items():
        fields[name] = fields.get(name, {}) | ({"from": m} if isinstance(m, str) else m)
    for c in CHANNEL_FIELDS[entry.get("model", source)]:
        m = fields.setdefault(c.name, {})
        if "expr" not in m:
            m.setdefault("from", c.name)
    return entry, fields, frozenset(preset.get("identifiers", {})) | set(entry.get("identifiers") or {})


@functools.cache
def local_zone() -> ZoneInfo:
    """Timestamps written without an offset are read in standardise.timezone (conf/cdp.yaml)."""
    return ZoneInfo(yaml.safe_load((ROOT / "conf" / "cdp.yaml").read_text())["standardise"]["timezone"])


def as_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)  # JSON scalars as written: 1761959702123, true


# The Segment spec's semantic event names the preset reads as the model's.
SEGMENT_SPEC = {"Application Opened": "app_start", "Products Searched": "search", "Product Viewed": "view_item",
                "Product Added": "add_cart", "Order Completed": "pay_order", "Signed In": "login",
                "Signed Up": "register", "Product Shared": "share"}
SEGMENT_EVENT = ("CASE WHEN type = 'page' THEN 'page_view' WHEN type = 'track' THEN CASE event "
                 + " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in SEGMENT_SPEC.items()) + " ELSE event END END")
# The three Spark SQL expressions of the presets, in Python (a changed expression fails here).
EXPRESSIONS = {
    "concat_ws('-', distinct_id, `time`, `_track_id`)":
        lambda get: "-".join(as_text(get(k)) for k in ("distinct_id", "time", "_track_id") if get(k) is not None),
    "coalesce(`context.device.id`, anonymousId)":
        lambda get: get("context.device.id") if get("context.device.id") is not None else get("anonymousId"),
    SEGMENT_EVENT:
        lambda get: {"page": "page_view", "track": SEGMENT_SPEC.get(get("event"), get("event"))}.get(get("type")),
}
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
_ISO_LOCAL = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?")
_PATTERN_PARTS = {"yyyy": r"(?P<year>\d{4})", "MM": r"(?P<month>\d{2})", "dd": r"(?P<day>\d{2})",
                  "HH": r"(?P<hour>\d{2})", "mm": r"(?P<minute>\d{2})", "ss": r"(?P<second>\d{2})",
                  "SSS": r"(?P<ms>\d{3})", "M": r"(?P<month>\d{1,2})", "d": r"(?P<day>\d{1,2})"}


def parse_pattern(text: str, pattern: str) -> dt.datetime:
    """A Java-style pattern (yyyy/MM/dd HH:mm:ss.SSS), strictly."""
    regex = re.sub("|".join(_PATTERN_PARTS), lambda m: _PATTERN_PARTS[m.group()],
                   re.sub(r"([^A-Za-z])", lambda m: re.escape(m.group()), pattern))
    match = re.fullmatch(regex, text)
    if not match:
        raise ValueError(text)
    g = {k: int(v) for k, v in match.groupdict().items()}
    return dt.datetime(g["year"], g["month"], g["day"], g.get("hour", 0), g.get("minute", 0),
                       g.get("second", 0), g.get("ms", 0) * 1000)


def parse_time(text: str, formats: list[str]) -> dt.datetime:
    for f in formats:
        try:
            if f == "iso" and _ISO.fullmatch(text):
                return dt.datetime.fromisoformat(text)
            if f == "iso_local" and _ISO_LOCAL.fullmatch(text):
                return dt.datetime.fromisoformat(text).replace(tzinfo=local_zone())
            if f == "epoch_ms" and re.fullmatch(r"-?\d+", text):
                return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=int(text))
            if f not in ("iso", "iso_local", "epoch_ms"):
                return parse_pattern(text, f).replace(tzinfo=local_zone())
        except ValueError:
            continue
    raise Invalid("bad_timestamp")


def parse_number(text: str, number: dict | None) -> Decimal:
    number = number or {}
    for symbol in number.get("symbols", ()):
        text = text.removeprefix(symbol).removesuffix(symbol)
    sep = number.get("thousands")
    if sep and re.fullmatch(rf"-?\d{{1,3}}({re.escape(sep)}\d{{3}})+(\.\d+)?", text):
        text = text.replace(sep, "")
    if not re.fullmatch(r"-?\d+(\.\d+)?", text):
        raise Invalid("non_numeric_amount")
    return Decimal(text)


def model_value(column, m: dict, raw: object, identifier: bool) -> object:
    """One model field of a record, read as its mapping declares and typed as bronze types it."""
    if isinstance(raw, dict):  # an object field (props): the SDK's own keys dropped, numbers compared as numbers
        obj = {k: v for k, v in raw.items() if not ("object" in m and k.startswith(m["object"]))}
        return {k: Decimal(str(v)) if k == "amount" else v for k, v in obj.items()}
    text = as_text(raw)
    if text is not None and identifier:
        text = unicodedata.normalize("NFKC", text)
    text = text.strip() if text is not None else None
    if not text:
        if not column.nullable:
            raise Invalid("other")
        return None
    if "values" in m:
        if text in m["values"]:
            text = m["values"][text]
        elif m.get("other") != "keep":
            raise Invalid("other")
    if column.type == "timestamp":
        return parse_time(text, m.get("formats", ["iso", "iso_local"]))
    if column.type == "date":
        try:
            return parse_pattern(text, m.get("formats", ["yyyy-MM-dd"])[0]).date()
        except ValueError:
            raise Invalid("other") from None
    if column.type.startswith("decimal"):
        return parse_number(text, m.get("number"))
    return text


@dataclass
class DeclaredRead:
    rows: list[dict | str]  # a record's model fields, or the corrupt kind of a row
    lines: int  # physical data lines


def read_declared(landing: Path, relative: str) -> DeclaredRead:
    """Read a landing file of any source exactly as conf/sources.yaml declares it."""
    entry, fields, identifiers = declared(relative.split("/")[0])
    model = entry.get("model", relative.split("/")[0])
    encoding = entry.get("encoding", "utf-8")
    text = (landing / relative).read_bytes().decode("utf-8-sig" if encoding == "utf-8" else encoding)
    opts = entry.get("csv", {})
    if entry["format"] == "jsonl":
        records: list[dict | str] = []
        for line in text.split("\n")[:-1]:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = "truncated_json"
            records.append(rec if isinstance(rec, dict) else "truncated_json")
        lines = len(records)

        def getter(rec: dict):
            def get(path: str):
                value = rec
                for key in path.split("."):
                    value = value.get(key) if isinstance(value, dict) else None
                return value
            return get
    else:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=opts.get("delimiter", ","), strict=True))
        header = opts.get("header", True)
        names = rows.pop(0) if header else opts["columns"]
        lines = text.count("\n") - (1 if header else 0)
        records = [dict(zip(names, r, strict=True)) if len(r) == len(names) else "wrong_column_count"
                   for r in rows]

        def getter(rec: dict):
            return lambda column: rec.get(column)  # an optional column a file lacks (consent) reads as empty
    out: list[dict | str] = []
    for rec in records:
        if isinstance(rec, str):
            out.append(rec)
            continue
        get = getter(rec)
        try:
            out.append({c.name: model_value(c, fields[c.name], EXPRESSIONS[fields[c.name]["expr"]](get)
                                            if "expr" in fields[c.name] else get(fields[c.name]["from"]),
                                            c.name in identifiers)
                        for c in CHANNEL_FIELDS[model]})
        except Invalid as bad:
            out.append(bad.args[0])
    return DeclaredRead(out, lines)


def sources_of(channel: str) -> list[str]:
    return [s for s, ch in gen.SOURCES.items() if ch == channel]


def real_path(source: str, default_path: str) -> str:
    _, day, name = default_path.split("/")
    return f"{source}/{day}/{name}"


def sensors_event_id(row: dict) -> str:
    """The event id the sensors preset builds: <distinct_id>-<time>-<_track_id>."""
    ms = (row["event_time"] - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)
    track_id = int(row["event_id"].replace("-", "")[:8], 16) & 0x7FFFFFFF
    return f"{row['login_id'] or row['device_id']}-{ms}-{track_id}"


@pytest.fixture(scope="module")
def real_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest, Path, Manifest]:
    """The same seed in both formats."""
    base = tmp_path_factory.mktemp("real")
    args = {"people": 400, "days": 2, "seed": 21, "start": START, "noise": REAL_NOISE}
    default = generate(base / "default", **args)
    real = generate(base / "real", **args, format="real")
    return base / "default", default, base / "real", real


def test_generate_real_records_read_back_as_the_default_records(real_pair) -> None:
    default_landing, default, real_landing, real = real_pair
    late = {d.file: d.records for s in real.channels.values() for d in s.late_duplicates}
    assert late  # a real file starts with the late duplicates of the day before: not compared here
    compared = Counter()
    for channel in CHANNELS:
        for f in default.channels[channel].per_file:
            if "resend" in f.path:
                continue
            want = read_declared(default_landing, f.path).rows
            good = [r for r in want if isinstance(r, dict)]
            got = {s: read_declared(real_landing, real_path(s, f.path)).rows[late.get(real_path(s, f.path), 0):]
                   for s in sources_of(channel)}
            assert Counter(r for r in want if isinstance(r, str)) == sum(
                (Counter(r for r in rows if isinstance(r, str)) for rows in got.values()), Counter()), f.path
            assert "other" not in want and not any("other" in rows for rows in got.values()), f.path
            for source, rows in got.items():
                expected = good
                if channel == "app_events":
                    expected = [r for r in good if (r["platform"] == "web") == (source == "segment_web")]
                if source == "sensors_app":
                    expected = [r | {"event_id": sensors_event_id(r)} for r in expected]
                assert [r for r in rows if isinstance(r, dict)] == expected, (source, f.path)
                compared[source] += len(expected)
    assert set(compared) == set(gen.SOURCES) and min(compared.values()) > 0, compared
    assert compared["sensors_app"] > 200 and compared["crm_excel"] > 100


def test_generate_real_manifest_counts_records_lines_and_corrupt_rows_per_file(real_pair) -> None:
    _, default, real_landing, real = real_pair
    assert real.format == "real" and default.format == "default"
    assert list(real.channels) == list(gen.SOURCES)
    for source, stats in real.channels.items():
        assert stats.files == len(stats.per_file) == len(list((real_landing / source).rglob("*.*")))
        for f in stats.per_file:
            read = read_declared(real_landing, f.path)
            assert (f.lines, f.records) == (read.lines, len(read.rows)), f.path
            assert set(f.corrupt_lines) == set(CORRUPT_KINDS[gen.SOURCES[source]])
            assert {k: v for k, v in f.corrupt_lines.items() if v} == Counter(
                r for r in read.rows if isinstance(r, str)), f.path
        assert (stats.lines, stats.records) == (sum(f.lines for f in stats.per_file),
                                                sum(f.records for f in stats.per_file))
    assert real.total_lines == sum(s.lines for s in real.channels.values())
    crm = real.channels["crm_excel"]
    assert crm.records < crm.lines  # remarks with a line break
    reexports = {r.reexport for s in real.channels.values() for r in s.reexported_files}
    assert reexports  # they repeat their originals' corrupt rows, which the default format has not
    for kind in ("truncated_json", "wrong_column_count", "bad_timestamp", "non_numeric_amount"):
        got = sum(f.corrupt_lines.get(kind, 0) for s in real.channels.values() for f in s.per_file
                  if f.path not in reexports)
        assert got == sum(s.corrupt_lines.get(kind, 0) for s in default.channels.values()) > 0, kind
    assert real.identities == default.identities


def test_generate_real_replaces_channel_folders_with_source_folders(real_pair) -> None:
    default_landing, _, real_landing, real = real_pair
    assert {p.name for p in real_landing.iterdir()} == {*gen.SOURCES, "_truth"}
    days = {(START + dt.timedelta(days=d)).isoformat() for d in range(2)}
    for source in gen.SOURCES:
        assert {p.name for p in (real_landing / source).iterdir()} == days
        for p in (real_landing / source).rglob("*.*"):
            match = REAL_FILE.fullmatch(p.relative_to(real_landing).as_posix())
            assert match and match.group(5) == gen.EXTENSIONS[gen.SOURCES[source]], p
    for name in ("identities.csv", "people.csv"):
        assert (real_landing / "_truth" / name).read_bytes() == (default_landing / "_truth" / name).read_bytes()
    assert Manifest.model_validate_json((real_landing / "_truth" / "manifest.json").read_text()) == real


def test_generate_real_resends_the_converted_file_of_the_default_duplicate(real_pair) -> None:
    _, default, real_landing, real = real_pair
    (want,) = [d for s in default.channels.values() for d in s.duplicate_files]
    (got,) = [d for s in real.channels.values() for d in s.duplicate_files]
    assert (real_landing / got.original).read_bytes() == (real_landing / got.duplicate).read_bytes()
    channel = want.original.split("/")[0]
    assert got.original.split("/")[0] in sources_of(channel)
    assert got.original == real_path(got.original.split("/")[0], want.original)
    assert got.duplicate == real_path(got.original.split("/")[0], want.duplicate)
    assert len(list(real_landing.rglob("*resend*"))) == 1


def test_generate_real_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    args = {"people": 200, "days": 2, "seed": 8, "start": START, "noise": REAL_NOISE, "format": "real"}
    generate(tmp_path / "a", **args)
    generate(tmp_path / "b", **args)
    assert file_hashes(tmp_path / "a") == file_hashes(tmp_path / "b")
    generate(tmp_path / "a", **(args | {"format": "default"}))  # a rerun in the other format cleans up
    assert {p.name for p in (tmp_path / "a").iterdir()} == {*CHANNELS, "_truth"}


def test_generate_real_sensors_and_segment_follow_their_specs(real_pair) -> None:
    _, _, landing, _ = real_pair
    sensors = [json.loads(line) for p in sorted((landing / "sensors_app").rglob("*.jsonl"))
               for line in p.read_text().splitlines() if line.endswith("}}") and line.startswith('{"_track_id"')]
    good = [r for r in sensors if isinstance(r["time"], int)]
    assert len(good) > 200
    assert {r["event"] for r in good} >= {"$AppStart", "$AppViewScreen"}
    assert not {r["event"] for r in good} & {"app_start", "page_view"}
    for r in good:
        assert 0 < r["_track_id"] < 2**31 and r["type"] == "track"
        assert r["anonymous_id"] == r["properties"]["$device_id"]
        assert r["distinct_id"] == r["identities"].get("$identity_login_id", r["anonymous_id"])
        assert r["properties"]["$is_login_id"] == ("$identity_login_id" in r["identities"])
        assert set(r["identities"]) <= {"$identity_login_id", "$identity_mobile", "$identity_mp_unionid"}
        assert r["properties"].get("$os") in (None, "iOS", "Android")
        assert not isinstance(r["properties"].get("amount", 0.0), str)
    assert any(isinstance(r["properties"].get("amount"), float) for r in good)
    assert any(isinstance(r["time"], str) for r in sensors)  # a bad timestamp, written as text
    segment = [json.loads(line) for p in sorted((landing / "segment_web").rglob("*.jsonl"))
               for line in p.read_text().splitlines() if line.startswith('{"messageId"') and line.endswith("}}")]
    assert {r["type"] for r in segment} == {"page", "track"}
    for r in segment:
        assert ("event" in r) == (r["type"] == "track") and "device" not in r["context"]
        assert r["context"]["library"]["name"] == "analytics.js"
        if "sentAt" in r:
            assert r["timestamp"].endswith("Z") and r["timestamp"] < r["sentAt"] < r["receivedAt"]
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", r["timestamp"])


def test_generate_real_crm_excel_is_gb18030_with_crlf_remarks_and_fullwidth_ids(real_pair) -> None:
    _, _, landing, _ = real_pair
    entry, fields, identifiers = declared("crm_excel")
    assert {"phone", "email"} <= identifiers  # read NFKC-normalised, so full-width variants resolve
    rows, bare_newlines = [], 0
    for p in sorted((landing / "crm_excel").rglob("*.csv")):
        data = p.read_bytes()
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")  # Chinese text in GB18030, not UTF-8
        text = data.decode("gb18030")
        assert text.endswith("\r\n")
        bare_newlines += text.replace("\r\n", "").count("\n")
        rows += list(csv.reader(io.StringIO(text, newline="")))[1:]
        header = text.split("\r\n", 1)[0].split(",")
        # (the consent columns are written only when consent is generated; this world has none)
        assert set(header) == {m["from"] for f, m in fields.items() if f not in gen.CONSENT_COLUMNS["crm"]} | {"备注"}
        assert header != list(CSV_HEADERS["crm"])
    remarks = [r[-1] for r in rows if len(r) == 13 and r[-1]]
    assert set(remarks) <= set(gen._CRM_REMARKS)
    assert bare_newlines == sum(v.count("\n") for r in rows for v in r) > 0  # line breaks only in quotes
    assert any("," in r and '"' in r for r in remarks)
    phones = [r[4] for r in rows if len(r) == 13 and r[4]]
    emails = [r[5] for r in rows if len(r) == 13 and r[5]]
    assert sum("＠" in e for e in emails) > 5 and sum(re.search("[０-９]", p) is not None for p in phones) > 5
    assert {r[2] for r in rows if len(r) == 13} <= {"男", "女", ""}
    assert {r[7] for r in rows if len(r) == 13} <= set(entry["fields"]["tier"]["values"])


def test_generate_real_csv_exports_use_their_encodings_quoting_and_delimiters(real_pair) -> None:
    _, _, landing, _ = real_pair
    shop = b"".join(p.read_bytes() for p in sorted((landing / "shop_orders").rglob("*.csv")))
    assert shop.startswith(b"\xef\xbb\xbf\"order_id\",\"pay_time\"")
    for line in shop.decode("utf-8").replace("\ufeff", "").split("\r\n")[:-1]:
        assert re.fullmatch(r'"[^"]*"(,"[^"]*")*', line), line  # every field quoted
    assert re.search(r'"\d{1,3}(,\d{3})+\.\d{2}"', shop.decode("utf-8"))  # thousands separators
    pos = b"".join(p.read_bytes() for p in sorted((landing / "pos_export").rglob("*.csv")))
    assert pos.startswith(b"\xff\xfe")
    for p in sorted((landing / "pos_export").rglob("*.csv")):
        lines = p.read_bytes().decode("utf-16").split("\r\n")
        assert lines[0] == "txn_id\tstore_id\tmember_phone\tamount\ttxn_time" and lines[-1] == ""
        good = [line.split("\t") for line in lines[1:-1] if line.count("\t") == 4]
        assert all(re.fullmatch(r"\d{13}", c[4]) for c in good if c[3].startswith("¥"))
    leads = [p.read_text() for p in sorted((landing / "leads_export").rglob("*.csv"))]
    assert all(t == "" or t.startswith("L20") for t in leads)  # no header row
    assert any(re.search(r"^L\d{16};\d{13};", t, re.M) for t in leads)


def test_generate_real_without_noise_reads_back_without_corrupt_rows(tmp_path: Path) -> None:
    clean = CLEAN.model_copy(update={"fullwidth_email": 0, "fullwidth_phone": 0, "crm_remark": 0,
                                     "reexport_file": 0, "late_duplicate": 0})
    manifest = generate(tmp_path, people=200, days=2, seed=3, start=START, noise=clean, format="real")
    for stats in manifest.channels.values():
        assert stats.lines == stats.records and not stats.duplicate_files
        assert not stats.reexported_files and not stats.late_duplicates
        assert not any(f.duplicates for f in stats.per_file)
        for f in stats.per_file:
            assert all(isinstance(r, dict) for r in read_declared(tmp_path, f.path).rows), f.path
    text = "".join(p.read_bytes().decode("gb18030") for p in (tmp_path / "crm_excel").rglob("*.csv"))
    assert not re.search("[＠０-９]", text)


# ---------------------------------------------------------------- redeliveries (format "real")

REDELIVERY_NOISE = REAL_NOISE.model_copy(update={"reexport_file": 1.0, "late_duplicate": 0.01})
BOMS = {"shop_orders": b"\xef\xbb\xbf", "pos_export": b"\xff\xfe"}  # UTF-8 and UTF-16 LE byte-order marks
KEY_FIELDS = {"app_events": ("event_id",), "wechat": ("event_id",), "crm": ("member_id", "updated_at"),
              "orders": ("order_id",), "pos": ("txn_id",), "ad_leads": ("lead_id",)}


@pytest.fixture(scope="module")
def redelivered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    """Every file of the days before the last re-exported, and 1% late duplicates."""
    landing = tmp_path_factory.mktemp("redelivered") / "landing"
    return landing, generate(landing, people=300, days=3, seed=31, start=START, noise=REDELIVERY_NOISE,
                             format="real")


def raw_records(landing: Path, relative: str) -> list[str]:
    """Each record's text as ingest's reader cuts it (its `raw`, whose hash is the record's content): a
    JSON line, or the physical lines of one CSV record; the final CR dropped, the header excluded."""
    entry, _, _ = declared(relative.split("/")[0])
    encoding = entry.get("encoding", "utf-8")
    text = (landing / relative).read_bytes().decode("utf-8-sig" if encoding.startswith("utf-8") else encoding)
    lines = text.split("\n")[:-1]
    if entry["format"] == "jsonl":
        return [line.removesuffix("\r") for line in lines]
    opts = entry.get("csv", {})
    reader, records, done = csv.reader((line + "\n" for line in lines), delimiter=opts.get("delimiter", ",")), [], 0
    for _ in reader:
        records.append("\n".join(lines[done:reader.line_num]).removesuffix("\r"))
        done = reader.line_num
    return records[1:] if opts.get("header", True) else records


def key_of(source: str, row: dict) -> tuple[str, ...]:
    """A read record's key as the manifest lists it: text, a timestamp as the CRM's naive local time."""
    model = declared(source)[0].get("model", source)
    return tuple(v.astimezone(local_zone()).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if isinstance(v, dt.datetime)
                 else v for v in (row[k] for k in KEY_FIELDS[model]))


def test_generate_real_reexport_holds_its_originals_records_newest_first_in_other_bytes(redelivered) -> None:
    landing, manifest = redelivered
    pairs = {source: stats.reexported_files for source, stats in manifest.channels.items()}
    assert all(pairs.values()), pairs  # every source, so every encoding
    for source, reexports in pairs.items():
        entry, _, _ = declared(source)
        header = entry["format"] == "csv" and entry.get("csv", {}).get("header", True)
        stats = {f.path: f for f in manifest.channels[source].per_file}
        for pair in reexports:
            original, reexport = (landing / pair.original).read_bytes(), (landing / pair.reexport).read_bytes()
            assert reexport != original
            assert pair.reexport.split("/")[1] > pair.original.split("/")[1]
            assert pair.reexport.rsplit("/", 1)[1] == pair.original.rsplit("/", 1)[1].replace(".", "-reexport.")
            raw = raw_records(landing, pair.original)
            assert len(raw) >= 2 and raw_records(landing, pair.reexport) == raw[::-1]  # same texts, newest first
            want, got = read_declared(landing, pair.original), read_declared(landing, pair.reexport)
            assert got.lines == want.lines and sorted(map(repr, got.rows)) == sorted(map(repr, want.rows))
            # Re-encoded in the source's own encoding, byte-order mark included; CRLF after every record.
            bom = BOMS.get(source, b"")
            assert reexport.startswith(bom) and original.startswith(bom)
            text = reexport.removeprefix(bom).decode(gen._EXPORTS[source].encoding)
            assert text.endswith("\r\n") and text.count("\r\n") == len(raw) + header
            if header:
                first = original.removeprefix(bom).decode(gen._EXPORTS[source].encoding)
                assert text.split("\r\n", 1)[0] == first.split("\r\n", 1)[0]
            f = stats[pair.reexport]
            assert (f.lines, f.records, f.corrupt_lines) == (want.lines, len(want.rows),
                                                              stats[pair.original].corrupt_lines)
            assert f.duplicates == sum(isinstance(r, dict) for r in want.rows) > 0
    with pytest.raises(UnicodeDecodeError):
        (landing / pairs["crm_excel"][0].reexport).read_bytes().decode("utf-8")  # still GB18030


def test_generate_real_reexports_the_configured_share_of_files_on_later_days(real_pair) -> None:
    _, _, landing, real = real_pair
    pairs = [r for s in real.channels.values() for r in s.reexported_files]
    later = {d.duplicate for s in real.channels.values() for d in s.duplicate_files} | {r.reexport for r in pairs}
    eligible = [f.path for s in real.channels.values() for f in s.per_file
                if f.path not in later and f.records >= 2 and f.path.split("/")[1] < real.end.isoformat()]
    assert len(pairs) == math.ceil(REAL_NOISE.reexport_file * len(eligible)) > 0
    assert {r.original for r in pairs} <= set(eligible) and len({r.original for r in pairs}) == len(pairs)
    assert sorted(p.relative_to(landing).as_posix() for p in landing.rglob("*-reexport.*")) == sorted(
        r.reexport for r in pairs)


def test_generate_real_late_duplicates_repeat_the_last_good_records_of_the_day_before(redelivered) -> None:
    landing, manifest = redelivered
    rate, checked = REDELIVERY_NOISE.late_duplicate, Counter()
    for source, stats in manifest.channels.items():
        regular = [f for f in stats.per_file if re.search(r"/part-\d{5}\.", f.path)]
        late = {d.file: d for d in stats.late_duplicates}
        for f in regular:  # only the late duplicates of a regular file repeat an earlier file's records
            assert f.duplicates == (late[f.path].records if f.path in late else 0), f.path
        for d in range(manifest.days - 1):
            day, next_day = (START + dt.timedelta(days=d)).isoformat(), (START + dt.timedelta(days=d + 1)).isoformat()
            files = [f for f in regular if f.path.split("/")[1] == day]
            last, first = files[-1], next(f for f in regular if f.path.split("/")[1] == next_day)
            rows = read_declared(landing, last.path).rows
            good = [raw for raw, row in zip(raw_records(landing, last.path), rows, strict=True)
                    if isinstance(row, dict)][last.duplicates:]  # the day's own good records
            want = min(len(good), math.ceil(rate * sum(f.records - f.duplicates for f in files) - 1e-9))
            if not want:  # a day without good records re-sends none
                assert first.path not in late, first.path
                continue
            dup = late.pop(first.path)
            assert (dup.original, dup.records, len(dup.keys)) == (last.path, want, want), first.path
            # The same texts (for ingest: the same key and content) as the original's last good records.
            assert raw_records(landing, first.path)[:want] == good[-want:], first.path
            head = read_declared(landing, first.path).rows[:want]
            assert [key_of(source, r) for r in head] == dup.keys
            checked[source] += want
        assert not late, late  # no other file repeats records
    assert set(checked) == set(gen.SOURCES), checked


def test_generate_real_one_day_redelivers_only_the_resend(tmp_path: Path) -> None:
    manifest = generate(tmp_path, people=100, days=1, seed=2, start=START, format="real")
    assert not any(s.reexported_files or s.late_duplicates for s in manifest.channels.values())
    assert sum(len(s.duplicate_files) for s in manifest.channels.values()) == 1
    assert not list(tmp_path.rglob("*-reexport.*"))


def test_generate_rejects_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(GenerateError, match="format"):
        generate(tmp_path, people=10, days=1, seed=1, start=START, format="xml")
    assert not any(tmp_path.iterdir())


def test_generate_cli_format_real_writes_source_folders(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from spark_jobs.cli import app

    result = CliRunner().invoke(app, ["generate", "--format", "real", "--people", "40", "--days", "1",
                                      "--seed", "1", "--landing", str(tmp_path / "landing")])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "landing").iterdir()} == {*gen.SOURCES, "_truth"}
    bad = CliRunner().invoke(app, ["generate", "--format", "xml", "--landing", str(tmp_path / "other")])
    assert bad.exit_code == 2 and "format" in bad.output and not (tmp_path / "other").exists()


# ---------------------------------------------------------------- the default format stays as it was


def digest(landing: Path) -> str:
    """One hash of every data and truth file, the manifest excepted (its schema grows)."""
    return hashlib.sha256("".join(f"{path}:{h}\n" for path, h in file_hashes(landing).items()
                                  if not path.endswith("manifest.json")).encode()).hexdigest()


# digest() of generate(people=300, days=3, seed=5, start=START) before format "real" existed (default
# noise draws no non-numeric amount there). Update it only for an intended change of the default format.
GOLDEN_DEFAULT_DIGEST = "4749dcf1f8c8b8c2a3aa3f5f24b346506eb9fe247063ceaf39b7b1f0a8ba0ba8"


def test_generate_default_format_bytes_are_unchanged(tmp_path: Path) -> None:
    generate(tmp_path, people=300, days=3, seed=5, start=START)
    assert digest(tmp_path) == GOLDEN_DEFAULT_DIGEST


def test_generate_non_numeric_amounts_never_carry_a_currency_sign(noisy) -> None:
    landing, _, _ = noisy
    bad = Counter()
    for channel in ("orders", "pos"):
        for p in (landing / channel).rglob("*.csv"):
            for row in csv.DictReader(p.read_text().splitlines()):
                amount = row.get("amount") or ""
                if not AMOUNT.fullmatch(amount):
                    bad[re.sub(r"\d+", "9", amount)] += 1
    assert "¥" not in "".join(bad)
    assert {"9.9.9", "abc", "9..9", "--"} <= set(bad)


# ---------------------------------------------------------------- identity patterns (population "retail")

# Readable records (no corrupt line, no resend) with the retail population's patterns at their rates.
RETAIL_NOISE = NoiseRates(corrupt_line=0, duplicate_file=False)
PINYIN_NAME = re.compile(r"[A-Z][a-z]+ [A-Z][a-z]+")
CHINA = dt.timezone(dt.timedelta(hours=8))  # the generator's local time


@pytest.fixture(scope="module")
def retail(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest, list[Record]]:
    landing = tmp_path_factory.mktemp("retail") / "landing"
    manifest = generate(landing, people=2000, days=3, seed=7, start=START, noise=RETAIL_NOISE, population="retail")
    return landing, manifest, [r for f in read_landing(landing).values() for r in f.records]


def truth_csv(landing: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(landing / "_truth" / name, dtype=str, keep_default_na=False)


def utc(text: str) -> dt.datetime:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", text), text
    return dt.datetime.fromisoformat(text)


def owners(identities: dict, rec: Record, but: tuple[str, str] | None = None) -> set[str]:
    """The people whose personal identifiers a record carries (`but` one left out)."""
    return {identities[i]["person_key"] for i in rec.ids if i != but and identities[i]["kind"] == "personal"}


def test_generate_retail_population_injects_every_pattern(retail) -> None:
    landing, manifest, _ = retail
    assert manifest.population == "retail"
    assert manifest.noise.model_dump(include=set(gen.POPULATIONS["retail"])) == gen.POPULATIONS["retail"]
    assert set(manifest.patterns) == set(gen._PATTERN_COUNTS)
    assert all(v > 0 for v in manifest.patterns.values()), manifest.patterns
    assert {p.name for p in (landing / "_truth").iterdir()} == {
        "identities.csv", "people.csv", "manifest.json", "ownership.csv", "duplicate_members.csv"}
    assert Manifest.model_validate_json((landing / "_truth" / "manifest.json").read_text()) == manifest


def test_generate_recycled_phone_changes_owner_at_the_change_of_phone_record(retail) -> None:
    landing, manifest, records = retail
    identities, people = read_truth(landing)
    own = truth_csv(landing, "ownership.csv")
    assert list(own.columns) == ["id_type", "id_value", "person_key", "valid_from", "valid_to"]
    assert len(own) == 2 * manifest.patterns["recycled_phones"] == 2 * manifest.identities["recycled"]
    for x, rows in own.groupby("id_value"):
        first, new = rows.iloc[0], rows.iloc[1]
        a, b, key = first["person_key"], new["person_key"], ("phone", x)
        assert first["valid_from"] == new["valid_to"] == "" and first["id_type"] == "phone"
        change, registered = utc(first["valid_to"]), utc(new["valid_from"])
        assert dt.datetime.combine(START + dt.timedelta(days=1), dt.time(), CHINA) <= change <= registered
        assert identities[key] == {"id_type": "phone", "id_value": x, "person_key": b, "kind": "recycled"}
        assert people[a]["household_key"] != people[b]["household_key"]
        assert dt.date.fromisoformat(people[a]["signup_date"]) < START
        assert dt.date.fromisoformat(people[b]["signup_date"]) == registered.astimezone(CHINA).date()
        # X is A's before the change, nobody's between the change and B's registration, B's after.
        with_x = [r for r in records if key in r.ids]
        for rec in with_x:
            assert rec.time < change or rec.time >= registered, rec
            assert owners(identities, rec, key) <= ({a} if rec.time < change else {b}), rec
        assert any(r.channel == "crm" and r.time < change for r in with_x)  # A's CRM record of X
        # A's change-of-phone record carries Y, A's own phone; no record of A's carries X afterwards.
        a_records = [r for r in records if owners(identities, r, key) == {a}]
        (changed,) = [r for r in a_records if r.channel == "crm" and r.time == change]
        (y,) = [i for i in changed.ids if i[0] == "phone"]
        assert y != key and identities[y]["person_key"] == a and identities[y]["kind"] == "personal"
        assert not [r for r in a_records if r.time >= change and key in r.ids]
        # B registers with X at valid_from: the CRM record created then, and an app sign-up with it.
        (signup,) = [r for r in with_x if r.channel == "crm" and r.time == registered]
        assert owners(identities, signup, key) == {b} and signup.raw["registered_at"] == signup.raw["updated_at"]
        assert any(r.channel == "app_events" and r.raw["event_name"] == "register" and owners(identities, r, key) == {b}
                   for r in with_x)


def test_generate_retail_people_act_only_between_signup_and_churn(retail) -> None:
    landing, _, records = retail
    identities, people = read_truth(landing)
    for rec in records:  # a partner's phone and a second membership are personal too
        for key in owners(identities, rec):
            p = people[key]
            assert rec.time.date() >= dt.date.fromisoformat(p["signup_date"]), (key, rec)
            assert not p["churn_date"] or rec.time.date() <= dt.date.fromisoformat(p["churn_date"]), (key, rec)


def test_generate_recycled_phone_needs_two_days(tmp_path: Path) -> None:
    manifest = generate(tmp_path, people=300, days=1, seed=3, start=START, population="retail")
    assert manifest.patterns["recycled_phones"] == manifest.identities["recycled"] == 0
    assert (tmp_path / "_truth" / "ownership.csv").read_text() == "id_type,id_value,person_key,valid_from,valid_to\n"
    assert manifest.patterns["duplicate_memberships"] > 0  # the other patterns still occur


def test_generate_partner_phone_is_another_household_members_on_orders(retail) -> None:
    landing, manifest, records = retail
    identities, people = read_truth(landing)
    mixed = []
    for rec in records:
        ids = dict(rec.ids)
        if rec.channel == "orders" and "member_id" in ids and "phone" in ids:
            buyer, phone = identities[("member_id", ids["member_id"])], identities[("phone", ids["phone"])]
            if phone["kind"] == "personal" and phone["person_key"] != buyer["person_key"]:
                mixed.append((buyer["person_key"], phone["person_key"]))
    assert 0 < len(mixed) <= manifest.patterns["partner_phone_orders"]
    for buyer, partner in mixed:
        assert people[buyer]["household_key"] == people[partner]["household_key"]


def test_generate_partner_phone_at_rate_one_stays_in_the_household(tmp_path: Path) -> None:
    noise = NoiseRates(partner_phone=1.0, corrupt_line=0, junk_identifier=0, duplicate_file=False)
    manifest = generate(tmp_path, people=300, days=4, seed=2, start=START, noise=noise)
    identities, people = read_truth(tmp_path)
    sizes = Counter(p["household_key"] for p in people.values())
    partners = Counter()
    for f in read_landing(tmp_path).values():
        for rec in f.records:
            ids = dict(rec.ids)
            if rec.channel == "orders" and "member_id" in ids and "phone" in ids:
                buyer = identities[("member_id", ids["member_id"])]["person_key"]
                phone = identities[("phone", ids["phone"])]["person_key"]
                partners[buyer != phone] += 1
                if buyer != phone:
                    assert people[buyer]["household_key"] == people[phone]["household_key"]
                    assert sizes[people[buyer]["household_key"]] >= 2
    assert partners[True] > 0 and manifest.patterns["partner_phone_orders"] >= partners[True]
    assert {r["kind"] for r in identities.values()} <= {"personal", "shared"}


def test_generate_duplicate_membership_repeats_phone_birthday_city_and_name(retail) -> None:
    from pypinyin import lazy_pinyin

    landing, manifest, records = retail
    identities, _ = read_truth(landing)
    dups = truth_csv(landing, "duplicate_members.csv")
    assert list(dups.columns) == ["person_key", "member_id", "second_member_id"]
    assert len(dups) == manifest.patterns["duplicate_memberships"] > 0
    crm = defaultdict(list)
    for rec in records:
        if rec.channel == "crm":
            crm[rec.raw["member_id"]].append(rec.raw)
    spelled = Counter()
    for row in dups.itertuples():
        assert identities[("member_id", row.second_member_id)]["person_key"] == row.person_key
        assert identities[("member_id", row.second_member_id)]["kind"] == "personal"
        assert identities[("member_id", row.member_id)]["person_key"] == row.person_key
        (second,) = crm[row.second_member_id]  # registered once, never changed in the window
        assert all(second[c] for c in ("phone", "gender", "birthday", "city"))
        phone = ("phone", canonical_phone(second["phone"]))
        assert identities[phone]["person_key"] == row.person_key
        for first in crm[row.member_id]:
            assert first["registered_at"][:10] < second["registered_at"][:10]
            for column in ("gender", "birthday", "city"):
                assert first[column] in ("", second[column]), column
            name, other = first["name"], second["name"]
            if not name or name == other:
                spelled["same"] += 1
            elif PINYIN_NAME.fullmatch(other):
                assert other.replace(" ", "").lower().endswith("".join(lazy_pinyin(name[1:]))), (name, other)
                spelled["pinyin"] += 1
            else:
                assert len(name) == len(other) and sum(x != y for x, y in zip(name, other, strict=True)) == 1, (name, other)
                spelled["typo"] += 1
    assert spelled["pinyin"] and spelled["same"]


def test_generate_duplicate_members_order_with_either_membership(tmp_path: Path) -> None:
    noise = NoiseRates(duplicate_membership=1.0, corrupt_line=0, duplicate_file=False)
    manifest = generate(tmp_path, people=300, days=4, seed=2, start=START, noise=noise)
    dups = truth_csv(tmp_path, "duplicate_members.csv")
    assert manifest.patterns["duplicate_memberships"] == len(dups) > 100
    assert set(dups["second_member_id"]).isdisjoint(dups["member_id"])
    used = Counter()
    for f in read_landing(tmp_path).values():
        for rec in f.records:
            if rec.channel == "orders" and rec.raw["member_id"]:
                used["second" if rec.raw["member_id"] in set(dups["second_member_id"]) else "first"] += 1
    assert 0.15 < used["second"] / (used["first"] + used["second"]) < 0.45, used


def test_generate_store_phone_is_shared_by_walk_ins_of_one_store(retail) -> None:
    landing, manifest, records = retail
    identities, _ = read_truth(landing)
    world = gen._build_world(2000, 3, START, 7, manifest.noise)  # which stores have a phone, and which
    gen._cast_patterns(world, manifest.noise, 7)
    slots = world.patterns.store_slot
    store_phone = {("phone", "+86" + world.phone[int(slots[s])].as_py()): world.store_id[s].as_py()
                   for s in map(int, (slots >= 0).nonzero()[0])}
    assert 0 < len(store_phone) == math.ceil(manifest.noise.store_phone * len(world.store_id))
    at_store = Counter()
    for rec in records:
        for i in rec.ids:
            if i in store_phone:
                assert rec.channel == "pos" and rec.raw["store_id"] == store_phone[i], rec
                at_store[i] += 1
    assert sum(at_store.values()) == manifest.patterns["store_phone_transactions"]
    assert max(at_store.values()) >= 3  # many walk-ins' transactions carry one number
    for i in at_store:
        assert identities[i]["kind"] == "shared"
        assert identities[i]["person_key"] == world.person_key[int(world.store_clerk[
            world.store_id.to_pylist().index(store_phone[i])])].as_py()  # the store's clerk answers it


def test_generate_junk_devices_are_the_well_known_ids_and_kind_junk(tmp_path: Path) -> None:
    noise = NoiseRates(junk_device=0.3, junk_identifier=0, corrupt_line=0, duplicate_file=False)
    manifest = generate(tmp_path, people=200, days=2, seed=4, start=START, noise=noise)
    identities, _ = read_truth(tmp_path)
    events = [r for f in read_landing(tmp_path).values() for r in f.records if r.channel == "app_events"]
    junk = Counter((r.raw["device_id"], r.raw.get("platform")) for r in events
                   if r.raw["device_id"] in ("9774d56d682e549c", "00000000-0000-0000-0000-000000000000"))
    assert sum(junk.values()) == manifest.patterns["junk_device_events"] > 20
    assert {d for d, _ in junk} == {"9774d56d682e549c", "00000000-0000-0000-0000-000000000000"}
    assert ("9774d56d682e549c", "ios") not in junk and not any(p == "web" for _, p in junk)
    for value in ("9774D56D682E549C", "00000000-0000-0000-0000-000000000000"):
        assert identities[("device_id", value)]["kind"] == "junk" and ("device_id", value) in {
            (t, v) for t, values in JUNK_IDENTIFIERS.items() for v in values}
    assert 0.2 < sum(junk.values()) / sum(r.raw.get("platform") != "web" for r in events) < 0.4


def test_generate_retail_junk_devices_are_listed_as_junk(retail) -> None:
    landing, manifest, records = retail
    identities, _ = read_truth(landing)
    junk = {i for r in records if r.channel == "app_events" for i in r.ids if i[0] == "device_id"
            and identities[i]["kind"] == "junk"}
    assert junk and junk <= {("device_id", v) for v in JUNK_IDENTIFIERS["device_id"]}
    assert manifest.patterns["junk_device_events"] > 0


def test_generate_family_tablet_signs_in_two_household_members(retail) -> None:
    landing, _, records = retail
    identities, people = read_truth(landing)
    signed_in = defaultdict(set)
    for rec in records:
        ids = dict(rec.ids)
        if rec.channel == "app_events" and "login_id" in ids:
            login = identities[("login_id", ids["login_id"])]
            if login["kind"] == "personal":
                signed_in[ids["device_id"]].add(login["person_key"])
    tablets = {v: r["person_key"] for (t, v), r in identities.items() if t == "device_id" and r["kind"] == "shared"}
    shared = [v for v in tablets if len(signed_in[v]) >= 2]
    assert len(shared) >= 0.25 * len(tablets) > 0
    for v in shared:  # every account signed in on a family tablet is one of its household's
        assert {people[p]["household_key"] for p in signed_in[v]} == {people[tablets[v]]["household_key"]}


def test_generate_retail_real_format_carries_the_same_patterns(retail, tmp_path: Path) -> None:
    landing, manifest, _ = retail
    real = generate(tmp_path, people=2000, days=3, seed=7, start=START, noise=RETAIL_NOISE, population="retail",
                    format="real")
    assert real.patterns == manifest.patterns and real.identities == manifest.identities
    for name in ("identities.csv", "people.csv", "ownership.csv", "duplicate_members.csv"):
        assert (tmp_path / "_truth" / name).read_bytes() == (landing / "_truth" / name).read_bytes(), name
    crm = [row for p in sorted((tmp_path / "crm_excel").rglob("*.csv"))
           for row in read_declared(tmp_path, p.relative_to(tmp_path).as_posix()).rows]
    identities, _ = read_truth(landing)
    member = {v: r["person_key"] for (t, v), r in identities.items() if t == "member_id"}
    own = truth_csv(landing, "ownership.csv")
    for row in own.itertuples():
        at = utc(row.valid_to or row.valid_from)
        # Once: a re-exported file or late duplicates repeat the record with the same text.
        (phone,) = {canonical_phone(r["phone"]) for r in crm
                    if r["updated_at"] == at and member[r["member_id"]] == row.person_key}
        assert (phone == row.id_value) == bool(row.valid_from)  # B registers with X, A changes to Y
    names = {r["name"] for r in crm if r["name"]}
    assert any(PINYIN_NAME.fullmatch(n) for n in names)
    sensors = "".join(p.read_text() for p in (tmp_path / "sensors_app").rglob("*.jsonl"))
    assert sensors.count('"$device_id":"9774d56d682e549c"') + sensors.count(
        '"$device_id":"00000000-0000-0000-0000-000000000000"') >= manifest.patterns["junk_device_events"]


# ---------------------------------------------------------------- populations


def test_generate_population_default_writes_the_original_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a", people=300, days=3, seed=5, start=START, population="default")
    generate(tmp_path / "b", people=300, days=3, seed=5, start=START, noise=NoiseRates.preset("default"))
    assert digest(tmp_path / "a") == digest(tmp_path / "b") == GOLDEN_DEFAULT_DIGEST
    assert {p.name for p in (tmp_path / "a" / "_truth").iterdir()} == {"identities.csv", "people.csv", "manifest.json"}
    manifest = Manifest.model_validate_json((tmp_path / "a" / "_truth" / "manifest.json").read_text())
    assert manifest.population == "default" and set(manifest.patterns.values()) == {0}


def test_generate_population_rates_yield_to_rates_set_in_noise(tmp_path: Path) -> None:
    noise = NoiseRates(recycled_phone=0.0, store_phone=0.5)
    manifest = generate(tmp_path, people=300, days=3, seed=5, start=START, noise=noise, population="retail")
    assert manifest.noise.recycled_phone == 0 and manifest.noise.store_phone == 0.5
    assert manifest.noise.duplicate_membership == gen.POPULATIONS["retail"]["duplicate_membership"]
    assert manifest.patterns["recycled_phones"] == 0 and manifest.patterns["duplicate_memberships"] > 0
    assert NoiseRates.preset("retail").recycled_phone == gen.POPULATIONS["retail"]["recycled_phone"]


def test_generate_retail_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    for name in ("a", "b"):
        generate(tmp_path / name, people=300, days=3, seed=5, start=START, population="retail")
    assert file_hashes(tmp_path / "a") == file_hashes(tmp_path / "b")
    assert digest(tmp_path / "a") != GOLDEN_DEFAULT_DIGEST


def test_generate_rejects_unknown_population(tmp_path: Path) -> None:
    with pytest.raises(GenerateError, match="population must be one of default, retail, got 'urban'"):
        generate(tmp_path, people=10, days=1, seed=1, start=START, population="urban")
    assert not any(tmp_path.iterdir())
    with pytest.raises(GenerateError, match="default, retail"):
        NoiseRates.preset("urban")


def test_generate_cli_population_retail_writes_ownership_truth(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from spark_jobs.cli import app

    result = CliRunner().invoke(app, ["generate", "--population", "retail", "--people", "300", "--days", "2",
                                      "--seed", "1", "--landing", str(tmp_path / "landing")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "landing" / "_truth" / "manifest.json").read_text())
    assert manifest["population"] == "retail" and (tmp_path / "landing" / "_truth" / "ownership.csv").exists()
    bad = CliRunner().invoke(app, ["generate", "--population", "urban", "--landing", str(tmp_path / "other")])
    assert bad.exit_code == 2 and "default, retail" in bad.output and not (tmp_path / "other").exists()
