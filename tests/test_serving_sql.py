"""The BI SQL endpoint through the real ADBC Flight SQL driver (the Go driver BI tools and pandas use), over
gRPC on loopback, against the pipeline's own two-day lakehouse (tests/test_pipeline.py's world): keys and
scopes, the catalog a BI tool lists, typical questions answered as pandas answers them from the same Delta
tables, and every kind of write refused with nothing on disk changed."""

import datetime as dt
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pandas as pd
import pyarrow as pa
import pytest

from serving.access import KeyRing, add_key, mask
from serving.sql.catalog import MASKED, PII_TABLES, Catalog
from serving.sql.query import QueryEngine, QueryError, ReadOnlyError, check_read_only
from serving.sql.server import SqlServer
from spark_jobs.tables import read_pandas
from tests.pipeline_world import START  # the `world` fixture: the pipeline's own lakehouse, shared

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
DAY2 = START + dt.timedelta(days=1)
BI, NO_PII, API_ONLY = "bi", "bi_no_pii", "api_only"


@pytest.fixture(scope="module")
def endpoint(world, tmp_path_factory):
    """The endpoint in this process on a free loopback port, with a key per scope set."""
    _, cfg, _, _ = world
    keys_path = tmp_path_factory.mktemp("sql") / "api_keys.json"
    keys = {BI: add_key(keys_path, BI, ["sql:read", "pii:read"]),
            NO_PII: add_key(keys_path, NO_PII, ["sql:read"]),
            API_ONLY: add_key(keys_path, API_ONLY, ["profiles:read", "audiences:read", "pii:read"])}
    server = SqlServer(Catalog(cfg.paths.lakehouse_uri()), KeyRing(keys_path))
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield {"uri": f"grpc://127.0.0.1:{server.port}", "keys": keys, "root": cfg.paths.lakehouse_uri()}
    server.shutdown()


def _connect(endpoint, who: str = BI, **db_kwargs):
    if who:
        db_kwargs.setdefault("adbc.flight.sql.authorization_header", f"Bearer {endpoint['keys'][who]}")
    return flight_sql.connect(endpoint["uri"], db_kwargs=db_kwargs, autocommit=True)


def _query(conn, sql: str) -> pd.DataFrame:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table().to_pandas()


@pytest.fixture(scope="module")
def conn(endpoint):
    with _connect(endpoint) as c:
        yield c


# --- authentication ----------------------------------------------------------------------------------

@pytest.mark.parametrize("db_kwargs", [{}, {"adbc.flight.sql.authorization_header": "Bearer cdp_not_a_key"},
                                       {"username": "bi", "password": "cdp_not_a_key"}],
                         ids=["no_key", "wrong_bearer", "wrong_basic"])
def test_sql_endpoint_refuses_a_missing_or_wrong_key(endpoint, db_kwargs):
    with pytest.raises(adbc_driver_manager.Error, match="UNAUTHENTICATED") as refused:
        with flight_sql.connect(endpoint["uri"], db_kwargs=db_kwargs, autocommit=True) as c:
            _query(c, "SELECT 1")
    assert "cdp api-key add" in str(refused.value)


def test_sql_endpoint_refuses_a_key_without_the_sql_scope(endpoint):
    with _connect(endpoint, API_ONLY) as c, pytest.raises(adbc_driver_manager.Error, match="sql:read"):
        _query(c, "SELECT 1")


def test_sql_endpoint_takes_the_key_as_bearer_or_as_basic_password(endpoint):
    with _connect(endpoint, None, username="dbeaver", password=endpoint["keys"][BI]) as c:
        assert _query(c, "SELECT 42 AS answer")["answer"].tolist() == [42]


# --- the catalog a BI tool lists ---------------------------------------------------------------------

def test_get_objects_lists_the_gold_and_ops_tables_with_their_columns(conn, endpoint):
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    assert [c["catalog_name"] for c in objects] == ["cdp"]
    schemas = {s["db_schema_name"]: s for s in objects[0]["catalog_db_schemas"]}
    assert set(schemas) == {"gold", "ops"}
    gold = {t["table_name"]: t for t in schemas["gold"]["db_schema_tables"]}
    assert {"gold_profiles", "gold_profile_tags", "gold_segment_members", "gold_tags", "gold_id_map"} <= set(gold)
    assert all(n.startswith("gold_") for n in gold) and "ops_ingest_files" in {t["table_name"] for t in schemas["ops"]["db_schema_tables"]}
    columns = [c["column_name"] for c in gold["gold_segment_members"]["table_columns"]]
    assert set(columns) == set(read_pandas(endpoint["root"], "gold_segment_members").columns)
    assert conn.adbc_get_table_types() == ["TABLE"]


def test_get_table_schema_is_the_delta_tables_schema(conn, endpoint):
    from deltalake import DeltaTable

    schema = conn.adbc_get_table_schema("gold_segment_members", db_schema_filter="gold")
    delta = DeltaTable(f"{endpoint['root']}/gold/gold_segment_members").to_pyarrow_dataset().schema
    assert [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in delta]


def test_a_key_without_pii_read_reads_the_pii_tables_masked_as_the_api_masks(endpoint):
    with _connect(endpoint, NO_PII) as c:
        listed = {t["table_name"] for s in c.adbc_get_objects(depth="tables").read_all().to_pylist()[0]["catalog_db_schemas"]
                  for t in s["db_schema_tables"]}
        assert "gold_segment_members" in listed and PII_TABLES <= listed
        got = _query(c, f"SELECT person_id, name, phone, email, birthday, city FROM gold_profiles "
                        f"WHERE as_of = DATE '{DAY2}' ORDER BY person_id")
        ids = _query(c, f"SELECT id_type, id_value, person_id FROM gold_id_map WHERE as_of = DATE '{DAY2}' "
                        "ORDER BY id_type, id_value, person_id")
        checks = _query(c, "SELECT observed_value, unexpected_examples, unexpected_count FROM ops_dq_results")
        schema = c.adbc_get_table_schema("gold_profiles", db_schema_filter="gold")
        assert _query(c, "SELECT count(*) AS n FROM gold_profile_tags")["n"][0] > 0  # not a PII table: as it is
    plain = read_pandas(endpoint["root"], "gold_profiles", ["person_id", "name", "phone", "email", "birthday", "city"],
                        {"as_of": DAY2.isoformat()}).sort_values("person_id", ignore_index=True)
    assert len(got) == len(plain) > 100 and plain["phone"].notna().sum() > 100
    for col in ("name", "phone", "email", "birthday"):
        want = [mask(col, None if pd.isna(v) else (v.isoformat() if col == "birthday" else v)) for v in plain[col]]
        assert [None if pd.isna(v) else v for v in got[col]] == want, col
    assert (got["phone"].dropna() != plain["phone"].dropna()).all() and got["city"].equals(plain["city"])
    id_map = read_pandas(endpoint["root"], "gold_id_map", ["id_type", "id_value", "person_id"], {"as_of": DAY2.isoformat()})
    id_map = id_map.sort_values(["id_type", "id_value", "person_id"], ignore_index=True)
    want = [mask(t, v) if t in ("phone", "email") else v for t, v in zip(id_map["id_type"], id_map["id_value"], strict=True)]
    assert list(ids["id_value"]) != list(id_map["id_value"]) and sorted(map(str, ids["id_value"])) == sorted(map(str, want))
    assert set(ids["id_type"]) >= {"phone", "device_id"}
    free_text = pd.concat([checks["observed_value"], checks["unexpected_examples"]]).dropna()
    assert len(free_text) > 10 and set(free_text) == {MASKED}  # a failed check's values are the bad values
    assert checks["unexpected_count"].notna().any()  # the other columns as they are
    assert schema.field("birthday").type == pa.string() and schema.field("phone").type == pa.string()
    with _connect(endpoint, BI) as c:  # pii:read: the same columns in plaintext, birthday a date
        full = _query(c, f"SELECT phone FROM gold_profiles WHERE as_of = DATE '{DAY2}' ORDER BY person_id")
        assert list(full["phone"].dropna()) == list(plain["phone"].dropna())


# --- typical questions, answered as pandas answers them -------------------------------------------------

def test_segment_size_per_day_matches_pandas(conn, endpoint):
    got = _query(conn, """
        SELECT as_of, segment, count(*) AS members
        FROM cdp.gold.gold_segment_members
        WHERE status IN ('entered', 'stayed')
        GROUP BY as_of, segment ORDER BY as_of, segment""")
    members = read_pandas(endpoint["root"], "gold_segment_members")
    want = (members[members["status"].isin(["entered", "stayed"])].groupby(["as_of", "segment"]).size()
            .rename("members").reset_index().sort_values(["as_of", "segment"], ignore_index=True))
    assert sorted(got["as_of"].unique()) == [START, DAY2]
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_rfm_distribution_matches_pandas(conn, endpoint):
    got = _query(conn, """
        SELECT coalesce(rfm_segment, '(none)') AS rfm_segment, count(*) AS people,
               round(avg(spend_all), 2) AS mean_spend
        FROM gold_profile_tags GROUP BY 1 ORDER BY 1""")
    tags = read_pandas(endpoint["root"], "gold_profile_tags")
    tags["rfm_segment"] = tags["rfm_segment"].fillna("(none)")
    want = (tags.groupby("rfm_segment").agg(people=("person_id", "size"), mean_spend=("spend_all", "mean"))
            .reset_index().sort_values("rfm_segment", ignore_index=True))
    want["mean_spend"] = want["mean_spend"].round(2)
    assert got["people"].sum() == len(tags) and len(got) > 2
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_at_risk_members_match_pandas(conn, endpoint):
    """High-value members at risk: the tag, their value tier and days since the last order, joined to the profile."""
    got = _query(conn, """
        WITH at_risk AS (SELECT person_id, value_tier, days_since_last_order FROM gold_profile_tags
                         WHERE high_value_at_risk OR (value_tier = 'high' AND days_since_last_order >= 1))
        SELECT a.person_id, a.value_tier, a.days_since_last_order, p.city
        FROM at_risk a JOIN gold.gold_profiles p ON p.person_id = a.person_id AND p.as_of = DATE '2026-11-02'
        ORDER BY a.person_id""")
    tags = read_pandas(endpoint["root"], "gold_profile_tags")
    profiles = read_pandas(endpoint["root"], "gold_profiles", ["person_id", "city"], {"as_of": DAY2.isoformat()})
    at_risk = tags[tags["high_value_at_risk"].eq(True)
                   | ((tags["value_tier"] == "high") & (tags["days_since_last_order"] >= 1))]
    want = (at_risk[["person_id", "value_tier", "days_since_last_order"]].merge(profiles, on="person_id")
            .sort_values("person_id", ignore_index=True))
    assert len(want) > 0
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_funnel_conversion_by_channel_last_week_matches_pandas(conn, endpoint):
    """The analyst's question on the analysis marts: purchase-funnel conversion by channel over the entry
    cohorts of the last seven days, people summed over cohorts, as of the newest as-of date."""
    got = _query(conn, """
        WITH latest AS (SELECT max(as_of) AS as_of FROM gold_funnels),
             week AS (SELECT f.* FROM gold_funnels f JOIN latest l ON f.as_of = l.as_of
                      WHERE f.funnel = 'purchase' AND f.dimension = 'channel'
                        AND f.cohort_date > l.as_of - INTERVAL 7 DAY),
             steps AS (SELECT dimension_value AS channel, step, step_name, sum(people) AS people
                       FROM week GROUP BY 1, 2, 3)
        SELECT s.channel, s.step, s.step_name, s.people,
               s.people / first.people AS conversion
        FROM steps s JOIN steps first ON first.channel = s.channel AND first.step = 1
        ORDER BY s.channel, s.step""")
    f = read_pandas(endpoint["root"], "gold_funnels")
    latest = f["as_of"].max()
    week = f[(f["as_of"] == latest) & (f["funnel"] == "purchase") & (f["dimension"] == "channel")
             & (f["cohort_date"] > latest - dt.timedelta(days=7))]
    want = (week.groupby(["dimension_value", "step", "step_name"], as_index=False)["people"].sum()
            .rename(columns={"dimension_value": "channel"}).sort_values(["channel", "step"], ignore_index=True))
    want["conversion"] = want["people"] / want.groupby("channel")["people"].transform("first")
    assert latest == DAY2 and set(want["step_name"]) == {"view_item", "add_cart", "pay_order"}
    assert (want[want["step"] == 1]["people"] > 0).all() and want["conversion"].between(0, 1).all()
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_prepared_statements_run_as_bi_tools_send_them(conn):
    with conn.cursor() as cur:
        cur.adbc_prepare("SELECT count(DISTINCT person_id) AS n FROM gold_segment_members")
        first = cur.adbc_execute_schema("SELECT count(DISTINCT person_id) AS n FROM gold_segment_members")
        cur.execute("SELECT count(DISTINCT person_id) AS n FROM gold_segment_members")
        assert first.names == ["n"] and cur.fetchone()[0] > 0


# --- read-only -----------------------------------------------------------------------------------------

WRITES = {
    "create_table_as": "CREATE TABLE cdp.gold.copy AS SELECT * FROM gold_profiles",
    "create_view": "CREATE VIEW v AS SELECT 1",
    "insert": "INSERT INTO gold_segment_members SELECT * FROM gold_segment_members",
    "update": "UPDATE gold_profiles SET name = 'x'",
    "delete": "DELETE FROM gold_segment_members",
    "drop": "DROP TABLE gold_profiles",
    "copy_out": "COPY gold_profiles TO '/tmp/cdp_sql_leak.csv'",
    "copy_in": "COPY gold_profiles FROM '/etc/passwd'",
    "attach": "ATTACH '/tmp/cdp_sql_attach.duckdb' AS x",
    "multiple": "SELECT 1; DROP TABLE gold_profiles",
    "pragma": "PRAGMA enable_profiling",
    "set": "SET enable_external_access = true",
    "install": "INSTALL delta",
    "load": "LOAD delta",
    "call": "CALL pragma_version()",
    "explain_analyze": "EXPLAIN ANALYZE SELECT 1",
    "export": "EXPORT DATABASE '/tmp/cdp_sql_export'",
    "transaction": "BEGIN TRANSACTION",
}


def _disk(root: str) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(root).rglob("*") if p.is_file()}


def test_writes_are_refused_and_nothing_on_disk_changes(conn, endpoint):
    before = _disk(endpoint["root"])
    for name, sql in WRITES.items():
        with pytest.raises(adbc_driver_manager.Error, match="read-only|one statement per request") as refused:
            _query(conn, sql)
        assert "UNAUTHORIZED" in str(refused.value), name
    with pytest.raises(adbc_driver_manager.Error, match="read-only"), conn.cursor() as cur:
        cur.adbc_ingest("gold_uploaded", pa.table({"x": [1]}), mode="create")
    for leaked in ("/tmp/cdp_sql_leak.csv", "/tmp/cdp_sql_attach.duckdb", "/tmp/cdp_sql_export"):
        assert not os.path.exists(leaked)
    assert _disk(endpoint["root"]) == before
    assert _query(conn, "SELECT count(*) AS n FROM gold_segment_members")["n"][0] == len(
        read_pandas(endpoint["root"], "gold_segment_members"))


def test_files_outside_the_catalog_cannot_be_read(conn):
    for sql in ("SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM '/etc/hostname'",
                "SELECT * FROM read_text('/etc/hostname')", "SELECT * FROM glob('/etc/*')"):
        with pytest.raises(adbc_driver_manager.Error, match="disabled by configuration|does not exist"):
            _query(conn, sql)


def test_check_read_only_lets_selects_through():
    for sql in ("SELECT 1", "WITH x AS (SELECT 1 AS a) SELECT a FROM x", "FROM gold_tags", "VALUES (1)",
                "DESCRIBE gold_tags", "(SELECT 1) UNION ALL (SELECT 2)"):
        check_read_only(sql)
    with pytest.raises(ReadOnlyError, match="PIVOT|MULTI|one SELECT"):
        check_read_only("PIVOT gold_tags ON tag USING count(*)")


def test_a_query_error_is_a_clear_error_and_the_connection_goes_on(conn):
    with pytest.raises(adbc_driver_manager.ProgrammingError, match='column "no_such_column" not found'):
        _query(conn, "SELECT no_such_column FROM gold_segment_members")
    with pytest.raises(adbc_driver_manager.ProgrammingError, match="no_such_table does not exist"):
        _query(conn, "SELECT * FROM no_such_table")
    with pytest.raises(adbc_driver_manager.ProgrammingError, match="syntax error"):
        _query(conn, "SELEC 1")
    with pytest.raises(adbc_driver_manager.Error, match="Conversion Error|Could not convert"):
        _query(conn, "SELECT CAST(segment AS INTEGER) FROM gold_segment_members")
    assert _query(conn, "SELECT 1 AS ok")["ok"].tolist() == [1]


def test_query_engine_stops_a_query_past_its_timeout(endpoint):
    catalog = Catalog(endpoint["root"])
    snapshot = catalog.snapshot()
    started = time.monotonic()
    with pytest.raises(QueryError, match="longer than 1 s"):
        result = QueryEngine(timeout_seconds=1).run("SELECT count(*) FROM range(100000000000)", snapshot,
                                                     list(snapshot.tables.values()))
        list(result.batches())
    assert time.monotonic() - started < 10


# --- the command line ----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cdp_sql_serve_on_loopback(world):
    """`cdp api-key add … --scope sql:read`, then `cdp sql serve` as its own process, queried by the driver."""
    _, cfg, _, _ = world
    env = {**os.environ, "CDP_LAKEHOUSE": cfg.paths.lakehouse_uri(), "CDP_LANDING": str(cfg.paths.landing_path())}
    cdp = [str(Path(sys.executable).parent / "cdp")]
    added = subprocess.run([*cdp, "api-key", "add", "sql_loopback", "--scope", "sql:read"], env=env,
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert added.returncode == 0, added.stderr[-2000:]
    key = added.stdout.strip().splitlines()[-1]
    port = _free_port()
    server = subprocess.Popen([*cdp, "sql", "serve", "--port", str(port)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert f"grpc://127.0.0.1:{port}" in server.stdout.readline()
        deadline = time.monotonic() + 30
        with flight_sql.connect(f"grpc://127.0.0.1:{port}", autocommit=True,
                                db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {key}"}) as c:
            while True:
                try:
                    got = _query(c, "SELECT count(*) AS n FROM gold_profile_tags")
                    break
                except adbc_driver_manager.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        assert got["n"][0] == len(read_pandas(cfg.paths.lakehouse_uri(), "gold_profile_tags"))
    finally:
        server.terminate()
        assert server.wait(30) is not None
