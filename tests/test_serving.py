"""Data services on real data: the pipeline's lakehouse (tests/test_pipeline.py's world: 1,500 generated
people over two days) published to the embedded SQLite store and to a real redis-server, then queried
through the HTTP app. Every API test runs on both backends."""

import concurrent.futures
import csv
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from serving.access import AccessLog, KeyRing, add_key
from serving.api import create_app
from serving.publish import build_snapshot, current_owners, publish
from serving.store import RedisStore, SqliteStore, open_store
from spark_jobs.config import ID_TYPES
from spark_jobs.tables import read_pandas
from tests.pipeline_world import START  # the `world` fixture: the pipeline's own lakehouse, shared

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # one xdist worker with the shared `world` (conftest: pipeline_world)
ROOT = Path(__file__).resolve().parent.parent
DAY2 = (START + dt.timedelta(days=1)).isoformat()
FULL, NO_PII, AUDIENCES, PROFILES = "full", "no_pii", "audiences_only", "profiles_only"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A real redis-server (Debian's, scripts/system-deps.sh) on a free loopback port, no persistence."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: run `make system-deps` (scripts/system-deps.sh)")
    import redis

    base = tmp_path_factory.mktemp("redis")
    for _ in range(5):  # a port taken between _free_port and the bind: try another
        port = _free_port()
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                 "--dir", str(base)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
        else:
            proc.kill()
            continue
        if proc.poll() is None:
            break
    else:
        pytest.fail("redis-server did not start on a loopback port")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def gold(world):
    """The gold tables of the newest day, as the pipeline wrote them (read with delta-rs)."""
    _, cfg, _, _ = world
    root = cfg.paths.lakehouse_uri()
    on = {"as_of": DAY2}
    return {"root": root, "cfg": cfg, "profiles": read_pandas(root, "gold_profiles", None, on),
            "id_map": current_owners(read_pandas(root, "gold_id_map", None, on)),
            "members": read_pandas(root, "gold_segment_members", None, on)}


def _new_store(kind: str, tmp: Path, redis_url: str, name: str):
    return SqliteStore(tmp / f"{name}.sqlite") if kind == "sqlite" else RedisStore(redis_url, prefix=name)


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def api(request, gold, redis_url, tmp_path_factory):
    """The API over a store the newest day was published to, with one key per scope set."""
    tmp = tmp_path_factory.mktemp(f"serving_{request.param}")
    store = _new_store(request.param, tmp, redis_url, f"api_{request.param}")
    cfg = gold["cfg"]
    publish(store, gold["root"], segments=[s.name for s in cfg.segments.segments])
    keys_path = tmp / "api_keys.json"
    keys = {FULL: add_key(keys_path, FULL, ["profiles:read", "audiences:read", "pii:read"]),
            NO_PII: add_key(keys_path, NO_PII, ["profiles:read", "audiences:read"]),
            AUDIENCES: add_key(keys_path, AUDIENCES, ["audiences:read"]),
            PROFILES: add_key(keys_path, PROFILES, ["profiles:read"])}
    log_path = tmp / "access.log"
    app = create_app(store, KeyRing(keys_path), AccessLog(log_path), cfg.standardise.phone_region,
                     tags=[t.model_dump(mode="json") for t in cfg.tags.tags],
                     segments=[s.model_dump(mode="json") for s in cfg.segments.segments], lakehouse=gold["root"])
    yield {"client": TestClient(app), "app": app, "keys": keys, "log": log_path, "store": store, "kind": request.param}
    store.close()


def _get(api, path: str, who: str = FULL, **params):
    return api["client"].get(path, headers={"X-API-Key": api["keys"][who]}, params=params or None)


def test_publish_holds_the_newest_day_of_the_gold_tables(api, gold):
    meta = api["store"].current()
    current = gold["members"][gold["members"]["status"].isin(["entered", "stayed"])]
    assert meta["as_of"] == DAY2 and meta["people"] == len(gold["profiles"])
    assert meta["identifiers"] == gold["id_map"]["person_id"].isin(set(gold["profiles"]["person_id"])).sum() + meta["people"]
    assert {s: n for s, n in meta["segments"].items() if n} == current.groupby("segment").size().to_dict()


def test_profile_by_every_identifier_type(api, gold):
    """Each identifier type of gold_id_map finds its current owner, with the golden record and its sources."""
    profiles = gold["profiles"].set_index("person_id")
    seen = set()
    for id_type, rows in gold["id_map"].groupby("id_type"):
        for r in rows.head(5).itertuples():
            body = _get(api, f"/v1/profiles/{id_type}:{r.id_value}").json()
            doc = body["profile"]
            assert doc["person_id"] == r.person_id and body["as_of"] == DAY2, (id_type, r.id_value)
            assert {"type": id_type, "value": r.id_value} in doc["identifiers"]
            want = profiles.loc[r.person_id]
            assert doc["profile"]["city"] == {"value": want["city"], "source": want["city_source"]}
            assert doc["profile"]["phone"]["value"] == want["phone"]
            assert doc["tags"] and doc["tags"]["lifecycle_stage"]
            seen.add(id_type)
    assert seen == set(gold["id_map"]["id_type"]) == set(ID_TYPES)
    pid = gold["profiles"]["person_id"].iloc[0]
    assert _get(api, f"/v1/profiles/person_id:{pid}").json()["profile"]["person_id"] == pid


def test_profile_by_raw_identifiers_as_the_channels_send_them(api, gold, world):
    """Phones as the CRM export writes them (`189-8080-1044`, `86-178...`, `+86 131 4942 1879`) find the
    person the same record's member id belongs to: normalised as the pipeline normalises them."""
    _, cfg, _, _ = world
    rows = [r for path in sorted((Path(cfg.paths.landing_path()) / "crm").glob("*/*.csv"))
            for r in csv.DictReader(path.open(encoding="utf-8")) if r["phone"] and r["member_id"]]
    formats, agree, answered = set(), 0, 0
    for r in rows[:150]:
        by_member = _get(api, f"/v1/profiles/member_id:{r['member_id']}")
        by_phone = _get(api, f"/v1/profiles/phone:{r['phone']}")
        if by_member.status_code != 200 or by_phone.status_code != 200:
            continue  # a value a rule removed (blocked, hub), or a member only seen earlier
        answered += 1
        agree += by_phone.json()["profile"]["person_id"] == by_member.json()["profile"]["person_id"]
        formats.add("sep" if "-" in r["phone"] or " " in r["phone"] else "+" if r["phone"].startswith("+") else "plain")
    assert answered >= 50 and agree / answered >= 0.95 and {"sep", "plain"} <= formats
    email = gold["id_map"][gold["id_map"]["id_type"] == "email"].iloc[0]
    device = gold["id_map"][gold["id_map"]["id_type"] == "device_id"].iloc[0]
    assert _get(api, f"/v1/profiles/email:  {email.id_value.upper()} ").json()["profile"]["person_id"] == email.person_id
    assert _get(api, f"/v1/profiles/device_id:{device.id_value.lower()}").json()["profile"]["person_id"] == device.person_id
    phone = gold["id_map"][gold["id_map"]["id_type"] == "phone"].iloc[0]
    national = phone.id_value.removeprefix("+86")
    for raw in (national, f"{national[:3]} {national[3:7]} {national[7:]}", f"+86-{national}", f"0086{national}",
                f"(+86) {national[:3]}-{national[3:7]}-{national[7:]}"):
        assert _get(api, f"/v1/profiles/phone:{raw}").json()["profile"]["person_id"] == phone.person_id, raw


def test_profile_errors_say_why(api):
    bad = _get(api, "/v1/profiles/phone:12ab")
    assert bad.status_code == 400 and "not a valid phone" in bad.json()["detail"]
    assert _get(api, "/v1/profiles/passport:E123").status_code == 400
    assert "<type>:<value>" in _get(api, "/v1/profiles/13912345678").json()["detail"]
    missing = _get(api, "/v1/profiles/phone:13912345678", who=NO_PII)
    assert missing.status_code == 404 and "139****5678" in missing.json()["detail"] and "13912345678" not in missing.text


def test_masking_per_scope_and_pii_reads_logged(api, gold):
    row = gold["profiles"].dropna(subset=["phone", "email", "name", "birthday"]).iloc[0]
    api["log"].write_text("")
    full = _get(api, f"/v1/profiles/person_id:{row.person_id}").json()["profile"]
    assert full["profile"]["phone"]["value"] == row.phone and full["profile"]["email"]["value"] == row.email
    assert full["profile"]["name"]["value"] == row["name"] and full["profile"]["birthday"]["value"] == row.birthday.isoformat()
    logged = [json.loads(line) for line in api["log"].read_text().splitlines()]
    assert [(e["key"], e["person_id"]) for e in logged] == [(FULL, row.person_id)] and logged[0]["at"]

    masked = _get(api, f"/v1/profiles/person_id:{row.person_id}", who=NO_PII)
    doc = masked.json()["profile"]
    assert doc["profile"]["phone"]["value"] == row.phone[:-8] + "****" + row.phone[-4:]
    assert doc["profile"]["email"]["value"] == row.email[0] + "***@" + row.email.split("@")[1]
    assert doc["profile"]["name"]["value"].startswith(row["name"][0]) and "*" in doc["profile"]["name"]["value"]
    assert doc["profile"]["birthday"]["value"] == f"{row.birthday.year}-**-**"
    for secret in (row.phone, row.phone[3:], row.email, row["name"], row.birthday.isoformat()):
        assert secret not in masked.text, secret
    assert doc["profile"]["city"]["value"] == row.city and doc["tags"] == full["tags"]  # not PII: as is
    by_phone = _get(api, f"/v1/profiles/phone:{row.phone}", who=NO_PII)
    assert by_phone.json()["identifier"] == "phone:" + doc["profile"]["phone"]["value"] and row.phone not in by_phone.text
    batch = api["client"].post("/v1/profiles/batch", json={"identifiers": [f"person_id:{row.person_id}"]},
                               headers={"X-API-Key": api["keys"][NO_PII]})
    assert row.phone not in batch.text and batch.json()["results"][0]["status"] == "found"
    assert len(api["log"].read_text().splitlines()) == 1  # masked reads are not PII reads


def test_keys_and_scopes(api, gold):
    pid = gold["profiles"]["person_id"].iloc[0]
    assert api["client"].get(f"/v1/profiles/person_id:{pid}").status_code == 401
    assert api["client"].get(f"/v1/profiles/person_id:{pid}", headers={"X-API-Key": "cdp_forged"}).status_code == 401
    assert _get(api, f"/v1/profiles/person_id:{pid}", who=AUDIENCES).status_code == 403
    assert _get(api, "/v1/audiences", who=PROFILES).status_code == 403
    assert _get(api, "/v1/audiences/champions/members", who=PROFILES).status_code == 403
    assert _get(api, "/v1/audiences", who=AUDIENCES).status_code == 200
    stored = (Path(api["log"]).parent / "api_keys.json").read_text()
    assert all(k not in stored for k in api["keys"].values())  # hashes only


def test_batch_lookup_answers_each_identifier_in_order(api, gold):
    sample = gold["id_map"].head(97)
    wanted = [f"{r.id_type}:{r.id_value}" for r in sample.itertuples()] + ["phone:13912345678", "nonsense", "email:x"]
    body = api["client"].post("/v1/profiles/batch", json={"identifiers": wanted}, headers={"X-API-Key": api["keys"][FULL]}).json()
    assert [r["identifier"] for r in body["results"]] == wanted and body["as_of"] == DAY2
    assert [r["profile"]["person_id"] for r in body["results"][:97]] == list(sample["person_id"])
    assert [r["status"] for r in body["results"][97:]] == ["not_found", "invalid", "invalid"]
    too_many = api["client"].post("/v1/profiles/batch", json={"identifiers": wanted + ["phone:1"]},
                                  headers={"X-API-Key": api["keys"][FULL]})
    assert too_many.status_code == 422


def test_membership_answers_equal_gold_segment_members(api, gold):
    members = gold["members"]
    current = members[members["status"].isin(["entered", "stayed"])]
    assert len(current) > 50
    for r in current.itertuples():
        body = _get(api, f"/v1/audiences/{r.segment}/members/person_id:{r.person_id}", who=AUDIENCES).json()
        assert (body["member"], body["entered_on"], body["as_of"]) == (True, r.entered_on.isoformat(), DAY2), r
    left = members[members["status"] == "left"]
    assert len(left)
    people = set(gold["profiles"]["person_id"])
    for r in left.itertuples():
        answer = _get(api, f"/v1/audiences/{r.segment}/members/person_id:{r.person_id}", who=AUDIENCES)
        if r.person_id in people:
            assert answer.json()["member"] is False, r
        else:  # the person id is gone that day (merged into another): unknown, not "not a member"
            assert answer.status_code == 404, r
    assert left["person_id"].isin(people).sum() > 0
    inside = set(zip(current["segment"], current["person_id"], strict=True))
    owners = gold["id_map"][gold["id_map"]["id_type"] == "phone"].head(60)
    for seg in members["segment"].unique():
        for r in owners.itertuples():  # by another identifier than the person id
            body = _get(api, f"/v1/audiences/{seg}/members/phone:{r.id_value}", who=AUDIENCES).json()
            assert body["member"] == ((seg, r.person_id) in inside) and body["person_id"] == r.person_id
    assert _get(api, "/v1/audiences/no_such_segment/members/phone:13912345678", who=AUDIENCES).status_code == 404
    assert _get(api, f"/v1/audiences/champions/members/phone:{'1' * 11}", who=AUDIENCES).status_code == 400


def test_audience_listing_pages_through_every_member_once(api, gold):
    current = gold["members"][gold["members"]["status"].isin(["entered", "stayed"])]
    seg = current["segment"].value_counts().index[0]
    want = current[current["segment"] == seg].sort_values("person_id")
    got, cursor, pages = [], None, 0
    while True:
        params = {"limit": 37, **({"cursor": cursor} if cursor else {})}
        page = _get(api, f"/v1/audiences/{seg}/members", who=AUDIENCES, **params).json()
        got += [(m["person_id"], m["entered_on"]) for m in page["members"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert got == [(p, e.isoformat()) for p, e in zip(want["person_id"], want["entered_on"], strict=True)]
    assert pages == -(-len(want) // 37)
    assert _get(api, f"/v1/audiences/{seg}/members", who=AUDIENCES, cursor="garbage!").status_code == 400
    listing = _get(api, "/v1/audiences", who=AUDIENCES).json()
    assert {a["name"]: a["members"] for a in listing["audiences"] if a["members"]} == current.groupby("segment").size().to_dict()


def test_recent_events_page_through_the_published_events(api, gold):
    """/v1/profiles/{identifier}/events: the person's gold_recent_events, newest first, page by page."""
    recent = read_pandas(gold["root"], "gold_recent_events", None, {"as_of": DAY2}).sort_values(["events_count", "person_id"])
    row = recent.iloc[-1]  # the person with the most
    want = json.loads(row["events"])
    owned = gold["id_map"][gold["id_map"]["person_id"] == row["person_id"]].iloc[0]
    path = f"/v1/profiles/{owned['id_type']}:{owned['id_value']}/events"
    got, cursor, pages = [], None, 0
    while True:
        page = _get(api, path, who=PROFILES, limit=3, **({"cursor": cursor} if cursor else {})).json()
        assert page["person_id"] == row["person_id"] and page["as_of"] == DAY2
        got += page["events"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(want) > 3 and pages == -(-len(want) // 3)
    assert got == [{**e, "amount": e.get("amount")} for e in want]
    assert [e["time"] for e in got] == sorted((e["time"] for e in got), reverse=True)
    quiet = sorted(set(gold["profiles"]["person_id"]) - set(recent["person_id"]))
    if quiet:  # a person with no event in the window: an empty page, not an error
        empty = _get(api, f"/v1/profiles/person_id:{quiet[0]}/events").json()
        assert empty["events"] == [] and empty["next_cursor"] is None
    assert _get(api, "/v1/profiles/phone:13912345678/events").status_code == 404
    assert _get(api, path, cursor="garbage!").status_code == 400
    assert _get(api, path, who=AUDIENCES).status_code == 403
    assert _get(api, path, limit=101).status_code == 422


def test_tag_export_streams_the_gold_tag_tables(api, gold):
    """Parquet of the wide table (gold_profile_tags) and Arrow IPC of the long one (gold_tags) of day 1,
    row for row as the pipeline wrote them."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    wide = _get(api, "/v1/tags/export", who=PROFILES)
    assert wide.status_code == 200 and wide.headers["content-type"] == "application/vnd.apache.parquet"
    got = pq.read_table(io.BytesIO(wide.content)).to_pandas().sort_values("person_id").reset_index(drop=True)
    want = read_pandas(gold["root"], "gold_profile_tags").sort_values("person_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
    long = _get(api, "/v1/tags/export", who=PROFILES, format="arrow", shape="long", as_of=START.isoformat())
    assert long.headers["content-type"] == "application/vnd.apache.arrow.stream"
    got = pa.ipc.open_stream(long.content).read_all().to_pandas()
    want = read_pandas(gold["root"], "gold_tags", None, {"as_of": START.isoformat()})
    assert len(got) == len(want) and set(got["as_of"].astype(str)) == {START.isoformat()}
    assert sorted(zip(got["person_id"], got["tag"], got["value"], strict=True)) == \
        sorted(zip(want["person_id"], want["tag"], want["value"], strict=True))
    older = _get(api, "/v1/tags/export", who=PROFILES, as_of=START.isoformat())
    assert older.status_code == 404 and "shape=long" in older.json()["detail"]
    assert _get(api, "/v1/tags/export", who=AUDIENCES).status_code == 403


def test_definitions_are_the_config_as_data(api, gold):
    cfg = gold["cfg"]
    segments = _get(api, "/v1/definitions/segments", who=AUDIENCES).json()
    assert [s["name"] for s in segments] == [s.name for s in cfg.segments.segments]
    assert segments[0]["rule"] == cfg.segments.segments[0].rule
    tags = _get(api, "/v1/definitions/tags", who=PROFILES).json()
    assert {t["name"]: t["kind"] for t in tags} == {t.name: t.kind for t in cfg.tags.tags}


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_swap_is_atomic_under_concurrent_reads(kind, gold, redis_url, tmp_path):
    """Readers hammer the store while the two days are published over each other: every read answers
    wholly from one day (every profile, and the audience's members, of the day the read names)."""
    days = {d: build_snapshot(gold["root"], d) for d in (START.isoformat(), DAY2)}
    sample = list(gold["id_map"]["person_id"].drop_duplicates().head(30))
    keys = [f"person_id:{p}" for p in sample]
    expected = {d: {p: doc for p, doc in s.people} for d, s in days.items()}
    members = {d: [p for seg, p, _ in s.members if seg == "new_members"] for d, s in days.items()}
    assert expected[START.isoformat()] != expected[DAY2] and members[START.isoformat()] != members[DAY2]
    store = _new_store(kind, tmp_path, redis_url, f"swap_{kind}")
    store.publish(days[START.isoformat()])
    reader = open_store(store.url) if kind == "sqlite" else RedisStore(redis_url, prefix=f"swap_{kind}")
    stop, seen, bad = threading.Event(), [], []

    def read():
        while not stop.is_set():
            meta, docs = reader.people(keys)
            seen.append(meta["as_of"])
            for p, doc in zip(sample, docs, strict=True):
                want = expected[meta["as_of"]].get(p)
                if (doc is None) != (want is None) or (doc and doc != json.loads(want)):
                    bad.append((meta["as_of"], p))
            meta, rows = reader.members("new_members", None, 100_000)
            if [m.person_id for m in rows] != members[meta["as_of"]]:
                bad.append((meta["as_of"], "members", len(rows)))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(read) for _ in range(4)]
        for i in range(6):
            store.publish(days[DAY2 if i % 2 == 0 else START.isoformat()])
            time.sleep(0.05)
        stop.set()
        for f in futures:
            f.result()
    reader.close()
    store.close()
    assert not bad, bad[:5]
    assert set(seen) == set(days) and len(seen) > 20


def test_redis_keeps_only_the_current_generation(gold, redis_url):
    import redis

    store = RedisStore(redis_url, prefix="gc")
    snap = build_snapshot(gold["root"])
    for _ in range(3):
        meta = store.publish(snap)
    keys = set(redis.Redis.from_url(redis_url, decode_responses=True).scan_iter(match="gc:*"))
    assert {k.split(":")[1] for k in keys} - {"gen", "meta", "nextgen"} == {str(meta["generation"])}


def test_api_fuzzed_from_its_own_openapi_schema(api):
    """schemathesis, from the app's own OpenAPI schema, every operation, with a key holding every scope: no
    server errors, and every answer has a status, content type and body its schema declares."""
    from hypothesis import given

    schema = schemathesis.openapi.from_asgi("/v1/openapi.json", api["app"])
    checks = [schemathesis.checks.not_a_server_error, schemathesis.checks.response_schema_conformance,
              schemathesis.checks.content_type_conformance, schemathesis.checks.status_code_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 10
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            case.call_and_validate(headers={"X-API-Key": api["keys"][FULL]}, checks=checks)

        fuzz()


def test_cdp_publish_and_serve_on_loopback_uvicorn(world, tmp_path):
    """The CLI end to end: `cdp publish`, `cdp api-key add`, `cdp serve` (uvicorn on a loopback port),
    then HTTP from outside the process."""
    _, cfg, _, _ = world
    store = tmp_path / "online.sqlite"
    env = {**os.environ, "CDP_LAKEHOUSE": cfg.paths.lakehouse_uri(), "CDP_LANDING": str(cfg.paths.landing_path()),
           "CDP_ONLINE_STORE": f"sqlite://{store}"}
    cdp = [str(Path(sys.executable).parent / "cdp")]
    out = subprocess.run([*cdp, "publish"], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0 and f"as of {DAY2}" in out.stdout, out.stderr[-2000:]
    key = subprocess.run([*cdp, "api-key", "add", "loopback", "--scope", "profiles:read", "--scope", "audiences:read"],
                         env=env, capture_output=True, text=True, timeout=120, cwd=ROOT).stdout.strip().splitlines()[-1]
    port = _free_port()
    server = subprocess.Popen([*cdp, "serve", "--port", str(port)], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/v1/health", server)
        assert httpx.get(f"{base}/v1/health").json()["as_of"] == DAY2
        owner = read_pandas(cfg.paths.lakehouse_uri(), "gold_id_map", None, {"as_of": DAY2}).query("id_type == 'phone'")
        owner = current_owners(owner).iloc[0]
        r = httpx.get(f"{base}/v1/profiles/phone:{owner.id_value.removeprefix('+86')}", headers={"X-API-Key": key})
        assert r.status_code == 200 and r.json()["profile"]["person_id"] == owner.person_id
        assert owner.id_value not in r.text  # no pii:read
        exported = tmp_path / "tags.arrows"
        done = subprocess.run([*cdp, "export", "tags", str(exported), "--format", "arrow"], env=env, capture_output=True,
                              text=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0 and f"as of {DAY2}" in done.stdout, done.stderr[-2000:]
        import pyarrow as pa

        assert pa.ipc.open_stream(exported.read_bytes()).read_all().num_rows == len(
            read_pandas(cfg.paths.lakehouse_uri(), "gold_profile_tags"))
        spec = httpx.get(f"{base}/v1/openapi.json").json()
        assert spec["openapi"].startswith("3.") and "/v1/audiences/{segment}/members/{identifier}" in spec["paths"]
    finally:
        server.terminate()
        server.wait(30)


def test_publish_reads_the_versions_of_the_last_complete_run(gold, tmp_path):
    """Pinned versions win over newer commits: pinning each table at its version before day 2 publishes day 1."""
    from deltalake import DeltaTable

    from spark_jobs.tables import table_path

    pinned = {t: DeltaTable(table_path(gold["root"], t)).version() - 1
              for t in ("gold_profiles", "gold_tags", "gold_segment_members", "gold_id_map")}
    snap = build_snapshot(gold["root"], pinned=pinned)
    assert snap.as_of == START.isoformat()
    first = read_pandas(gold["root"], "gold_profiles", None, {"as_of": START.isoformat()})
    assert sorted(p for p, _ in snap.people) == sorted(first["person_id"])
