"""Ingest: typing and quarantine on every engine; bronze, quarantine and accounting on Sail + Delta."""

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
from deltalake import DeltaTable

from spark_jobs import ingest
from spark_jobs.config import load_config
from spark_jobs.contracts import CHANNEL_FIELDS, RECORD_RULES
from spark_jobs.sources.config import SourceConfig
from tests.conftest import BATCH, INGESTED_AT

SOURCES = load_config(env={}).sources
ORDERS_HEADER = ",".join(c.name for c in CHANNEL_FIELDS["orders"])
GOOD_ORDER = "O1,M1,139 1234 5678,s1:2,12.50,2026-11-01T09:15:02.123+08:00,shoes"
ORDER_LINES = [
    GOOD_ORDER,
    "O2,,13912345679,s1:1,abc,2026-11-01T09:15:02.123+08:00,shoes",  # non-numeric amount
    "O3,M2",  # wrong column count
    "O4,M3,,s:1,3.00,2026-13-45T25:61:00+08:00,x",  # bad timestamp
    ",M3,,s:1,3.00,2026-11-01T10:00:00+08:00,x",  # missing key
    "O5,,,s:1,7,2026-11-01T10:00:00+08:00,",  # good: optional fields empty, no millis
    "",  # empty line
]
EXPECTED_ORDER_REASONS = {
    3: "bad_number: amount", 4: "wrong_column_count: expected 7, got 2", 5: "bad_timestamp: paid_time",
    6: "missing_required: order_id", 8: "empty_line",
}  # physical lines: the header is line 1
EVENT_LINES = [
    '{"event_id":"e1","device_id":"d-1","login_id":null,"platform":"ios","event_name":"app_start",'
    '"event_time":"2026-11-01T09:15:02.123+08:00","props":{"page":"home"}}',
    '{"event_id":"e2","device_id":"d-1"',  # truncated JSON
    '[1, 2]',  # JSON but not an object
    '{"event_id":"e3","device_id":"d-1","event_name":"page_view","event_time":"yesterday"}',
    '{"event_id":"e4","device_id":"d-2","event_name":"page_view","event_time":"2026-11-01T23:59:59.999+08:00","extra":1}',
]
EXPECTED_EVENT_REASONS = {2: "malformed_json", 3: "malformed_json", 4: "bad_timestamp: event_time"}


def _land(landing: Path, source: str, day: dt.date, name: str, data: str | bytes) -> Path:
    folder = landing / source / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _parse(spark, tmp_path, source: SourceConfig, data: str | bytes, name="f"):
    """The typed records of one file of `source`, by physical line."""
    f = ingest.scan_file(_land(tmp_path, source.name, BATCH, name, data), tmp_path, source)
    rows = ingest.parse_records(ingest.read_records(spark, [f], source), source).collect()
    return {r._line: r for r in rows}


def _source(**kw) -> SourceConfig:
    return SourceConfig.model_validate({"name": "s"} | kw)


def test_parse_records_quarantines_each_corrupt_csv_kind(spark, tmp_path):
    rows = _parse(spark, tmp_path, SOURCES.get("orders"), ORDERS_HEADER + "\n" + "\n".join(ORDER_LINES) + "\n")
    assert {n: r.reason for n, r in rows.items() if r.reason} == EXPECTED_ORDER_REASONS
    good = rows[2]
    assert (good.order_id, good.member_id, str(good.amount), good.items) == ("O1", "M1", "12.50", "s1:2")
    assert good.paid_time == dt.datetime(2026, 11, 1, 1, 15, 2, 123000)  # UTC
    assert rows[7].member_id is None and rows[7].category is None and str(rows[7].amount) == "7.00"


def test_parse_records_quarantines_each_corrupt_json_kind(spark, tmp_path):
    rows = _parse(spark, tmp_path, SOURCES.get("app_events"), "\n".join(EVENT_LINES) + "\n")
    assert {n: r.reason for n, r in rows.items() if r.reason} == EXPECTED_EVENT_REASONS
    assert rows[1].props == '{"page":"home"}' and rows[1].login_id is None and rows[1]._extra is None
    assert rows[5].event_time == dt.datetime(2026, 11, 1, 15, 59, 59, 999000)
    assert json.loads(rows[5]._extra) == {"extra": 1}  # an unknown key is kept, not dropped


@pytest.mark.parametrize("model", sorted(CHANNEL_FIELDS))
def test_parse_records_every_model_accepts_a_well_formed_record(sail, tmp_path, model):
    fields = CHANNEL_FIELDS[model]
    sample = {"timestamp": "2026-11-01T08:00:00.000+08:00", "date": "1990-05-17", "decimal(12,2)": "9.90", "string": "x"}
    # Fields with a record rule take a value the rule allows.
    allowed = {r.column: r.in_set[0] for r in RECORD_RULES[model] if r.in_set}
    values = [allowed.get(c.name, sample[c.type]) for c in fields]
    src = SOURCES.get(model)
    if src.format == "csv":
        text = ",".join(c.name for c in fields) + "\n" + ",".join(values) + "\n"
    else:
        text = json.dumps(dict(zip([c.name for c in fields], values, strict=True))) + "\n"
    (row,) = _parse(sail, tmp_path, src, text).values()
    assert row.reason is None, row.reason


INSTANT = dt.datetime(2026, 11, 1, 1, 15, 2, 123000)  # UTC, as Spark returns it (session zone UTC)


@pytest.mark.parametrize(("fmt", "text", "zone"), [
    ("iso", "2026-11-01T09:15:02.123+08:00", None),
    ("iso", "2026-11-01T01:15:02.123Z", None),
    ("iso", "2026-10-31T21:15:02.123-04:00", None),
    ("epoch_ms", str(int(INSTANT.replace(tzinfo=dt.UTC).timestamp() * 1000)), None),
    ("iso_local", "2026-11-01 09:15:02.123", None),  # naive: the default zone, Asia/Shanghai
    ("iso_local", "2026-11-01T09:15:02.123", None),
    ("iso_local", "2026-11-01 01:15:02.123", "UTC"),
    ("iso_local", "2026-10-31 21:15:02.123", "America/New_York"),
    ("yyyy/MM/dd HH:mm:ss.SSS", "2026/11/01 09:15:02.123", None),
])
def test_timestamp_col_reads_the_same_instant_in_every_declared_format(spark, tmp_path, fmt, text, zone):
    src = _source(model="pos", format="csv", timezone=zone, fields={"txn_time": {"formats": [fmt]}})
    (row,) = _parse(spark, tmp_path, src, f"txn_id,store_id,amount,txn_time\nT1,S1,1.00,{text}\n").values()
    assert (row.reason, row.txn_time) == (None, INSTANT)


@pytest.mark.parametrize(("formats", "text"), [
    (["iso"], "2026-11-01 09:15:02.123"),  # no offset: not ISO-with-offset, and never read as UTC
    (["iso"], "2026-11-01T09:15:02.123456789+08:00"),  # nanoseconds would be cut to microseconds
    (["iso_local"], "2026-11-01T09:15:02.123+08:00"),
    (["epoch_ms"], "1761959702.5"),
    (["epoch_s"], "17619597021234567"),
    (["yyyy-MM-dd HH:mm"], "2026-11-01 09:15:02"),
])
def test_timestamp_col_refuses_text_outside_the_declared_formats(spark, tmp_path, formats, text):
    src = _source(model="pos", format="csv", fields={"txn_time": {"formats": formats}})
    (row,) = _parse(spark, tmp_path, src, f"txn_id,store_id,amount,txn_time\nT1,S1,1.00,{text}\n").values()
    assert row.reason == "bad_timestamp: txn_time"


@pytest.mark.parametrize(("number", "text", "expected"), [
    (None, "1299.00", "1299.00"), (None, "7", "7.00"), (None, "-3.5", "-3.50"),
    (None, "\"1,299.00\"", None), (None, "12.345", None), (None, "¥12.34", None), (None, "1e3", None),
    ({"thousands": ","}, '"1,299.00"', "1299.00"), ({"thousands": ","}, '"12,345,678.9"', "12345678.90"),
    ({"thousands": ","}, '"1,2,3"', None), ({"thousands": ","}, '"1299,00"', None), ({"thousands": ","}, "12.34.5", None),
    ({"symbols": ["¥", "￥"]}, "¥12.34", "12.34"), ({"symbols": ["¥", "￥"]}, "￥ 12.34", "12.34"),
    ({"symbols": ["¥"]}, "-¥12.34", "-12.34"), ({"symbols": ["¥"]}, "12¥34", None), ({"symbols": ["¥"]}, "$12.34", None),
])
def test_number_text_reads_declared_formats_exactly_and_never_rounds(spark, tmp_path, number, text, expected):
    src = _source(model="pos", format="csv", fields={"amount": {"number": number}} if number else {})
    (row,) = _parse(spark, tmp_path, src, f"txn_id,store_id,amount,txn_time\nT1,S1,{text},2026-11-01T09:00:00+08:00\n").values()
    if expected is None:
        assert row.reason == "bad_number: amount"
    elif expected.startswith("-"):  # read exactly, then quarantined by the amount's record rule
        assert (row.reason, str(row.amount)) == ("expect_column_values_to_be_between: amount", expected)
    else:
        assert (row.reason, str(row.amount)) == (None, expected)


def test_parse_records_maps_csv_columns_by_header_name_with_renames_values_and_expressions(spark, tmp_path):
    src = _source(model="crm", format="csv", fields={
        "member_id": "会员编号", "gender": {"from": "性别", "values": {"男": "M", "女": "F"}},
        "updated_at": {"from": "更新时间", "formats": ["yyyy-MM-dd HH:mm:ss"]},
        "name": {"expr": "concat(`姓`, `名`)"},
    }, identifiers={"phone": {"type": "phone", "strength": "verified"}})
    text = ("备注,更新时间,性别,名,姓,会员编号,phone\n"
            '"a, ""b""",2026-11-01 09:00:00,男,明,李,M1,１３９１２３４５６７８\n'
            ",2026-11-01 09:00:00,未知,,王,M2,\n")
    rows = _parse(spark, tmp_path, src, text)
    assert (rows[2].member_id, rows[2].gender, rows[2].name, rows[2].phone) == ("M1", "M", "李明", "13912345678")
    assert rows[2].updated_at == dt.datetime(2026, 11, 1, 1, 0) and rows[2].reason is None
    assert json.loads(rows[2]._extra) == {"备注": 'a, "b"'}  # RFC-4180: "" inside quotes is one quote
    assert rows[3].reason == "bad_value: gender" and rows[3]._extra is None


def test_run_accounts_for_every_record_and_skips_duplicate_file(lakehouse, tmp_path):
    landing = tmp_path / "landing"
    text = ORDERS_HEADER + "\n" + "\n".join(ORDER_LINES) + "\n"
    _land(landing, "orders", BATCH, "part-00000.csv", text)
    _land(landing, "orders", BATCH, "part-00000-resend.csv", text)
    _land(landing, "orders", BATCH, "part-00001.csv", "order_id;amount\nO9;1\n")  # no column for the required fields
    result = ingest.run(lakehouse.spark, lakehouse, landing, "orders", BATCH, INGESTED_AT)
    assert result["files"] == 3 and result["duplicate_files"] == 1
    assert (result["lines"], result["records"], result["loaded"], result["quarantined"]) == (8, 8, 2, 6)

    files = {r["file"]: r for r in DeltaTable(lakehouse.path("ops_ingest_files")).to_pyarrow_table().to_pylist()}
    orig, resend, bad = (files[f"orders/{BATCH}/{n}"] for n in ("part-00000.csv", "part-00000-resend.csv", "part-00001.csv"))
    assert (orig["lines"], orig["records"], orig["loaded"], orig["quarantined"], orig["duplicate_of"]) == (7, 7, 2, 5, None)
    assert (resend["loaded"], resend["quarantined"], resend["duplicate_of"]) == (0, 0, orig["file"])
    assert (bad["lines"], bad["loaded"], bad["quarantined"]) == (1, 0, 1)

    q = {(r["_source_file"], r["_line"]): r for r in DeltaTable(lakehouse.path("bronze_quarantine")).to_pyarrow_table().to_pylist()}
    for line, reason in EXPECTED_ORDER_REASONS.items():
        row = q[(orig["file"], line)]
        assert row["reason"] == reason and row["raw"] == ORDER_LINES[line - 2] and row["channel"] == "orders"
    assert q[(bad["file"], 2)]["reason"].startswith("bad_header: no column")
    bronze = DeltaTable(lakehouse.path("bronze_orders")).to_pyarrow_table().to_pylist()
    assert sorted((r["order_id"], r["_line"], r["_source"]) for r in bronze) == [("O1", 2, "orders"), ("O5", 7, "orders")]


def test_run_counts_records_and_lines_apart_when_a_quoted_field_spans_lines(lakehouse, tmp_path):
    landing = tmp_path / "landing"
    _land(landing, "orders", BATCH, "part-00000.csv",
          ORDERS_HEADER + '\r\nO1,M1,,s1:2,12.50,2026-11-01T09:15:02+08:00,"two\r\nlines"\r\n' + GOOD_ORDER.replace("O1", "O2") + "\r\n")
    result = ingest.run(lakehouse.spark, lakehouse, landing, "orders", BATCH, INGESTED_AT)
    (f,) = lakehouse.read("ops_ingest_files").collect()
    assert (f.lines, f.records, f.loaded, f.quarantined) == (3, 2, 2, 0) and result["records"] == 2
    rows = {r.order_id: r for r in lakehouse.read("bronze_orders").collect()}
    assert rows["O1"].category == "two\r\nlines" and (rows["O1"]._line, rows["O2"]._line) == (2, 4)


def test_run_twice_gives_identical_tables(lakehouse, tmp_path):
    landing = tmp_path / "landing"
    _land(landing, "app_events", BATCH, "part-00000.jsonl", "\n".join(EVENT_LINES) + "\n")

    def snapshot():
        return {t: sorted(map(tuple, lakehouse.read(t).collect())) for t in ("bronze_app_events", "bronze_quarantine", "ops_ingest_files")}

    first = ingest.run(lakehouse.spark, lakehouse, landing, "app_events", BATCH, INGESTED_AT)
    before = snapshot()
    second = ingest.run(lakehouse.spark, lakehouse, landing, "app_events", BATCH, INGESTED_AT)
    assert first == second
    assert snapshot() == before
    assert len(before["bronze_app_events"]) == 2 and len(before["bronze_quarantine"]) == 3


def test_run_keeps_each_source_of_a_model_apart(lakehouse, tmp_path):
    landing = tmp_path / "landing"
    _land(landing, "orders", BATCH, "part-00000.csv", ORDERS_HEADER + "\n" + GOOD_ORDER + "\n")
    _land(landing, "shop_orders", BATCH, "part-00000.csv",
          '\ufefforder_id,pay_time,member_id,phone,order_amount,items,category,shop_name\n'
          '"O7","2026-11-01T01:15:02.123Z","M1","","1,299.00","s1:2","shoes","旗舰店"\n')
    for name in ("orders", "shop_orders", "orders"):  # re-running one source leaves the other's rows alone
        ingest.run(lakehouse.spark, lakehouse, landing, name, BATCH, INGESTED_AT)
    rows = sorted((r.order_id, str(r.amount), r._source, r._extra) for r in lakehouse.read("bronze_orders").collect())
    assert rows == [("O1", "12.50", "orders", None), ("O7", "1299.00", "shop_orders", '{"shop_name":"旗舰店"}')]


def test_run_recognises_a_file_redelivered_on_a_later_day(lakehouse, tmp_path):
    landing = tmp_path / "landing"
    text = ORDERS_HEADER + "\n" + GOOD_ORDER + "\n"
    day2 = BATCH + dt.timedelta(days=1)
    _land(landing, "orders", BATCH, "part-00000.csv", text)
    _land(landing, "orders", day2, "part-00007.csv", text)
    ingest.run(lakehouse.spark, lakehouse, landing, "orders", BATCH, INGESTED_AT)
    result = ingest.run(lakehouse.spark, lakehouse, landing, "orders", day2, INGESTED_AT)
    assert (result["duplicate_files"], result["loaded"]) == (1, 0)
    assert lakehouse.read("bronze_orders").count() == 1
    dup = lakehouse.read("ops_ingest_files", {"batch_date": day2, "channel": "orders"}).collect()[0]
    assert dup.duplicate_of == f"orders/{BATCH}/part-00000.csv"


def test_run_without_landing_folder_publishes_an_empty_batch(lakehouse, tmp_path):
    result = ingest.run(lakehouse.spark, lakehouse, tmp_path / "landing", "pos", BATCH, INGESTED_AT)
    assert (result["files"], result["loaded"], result["quarantined"]) == (0, 0, 0)
    assert lakehouse.exists("bronze_pos") and lakehouse.read("bronze_pos").count() == 0


def test_list_batch_lists_hidden_names_folders_and_symlinks_as_not_read_with_the_reason(tmp_path):
    landing = tmp_path / "landing"
    _land(landing, "orders", BATCH, "part-00000.csv", ORDERS_HEADER + "\n")
    _land(landing, "orders", BATCH, "..%2f..", ORDERS_HEADER + "\n" + GOOD_ORDER + "\n")
    secret = tmp_path / "secret.env"
    secret.write_text("SECRET_API_KEY=abc\n")
    folder = landing / "orders" / BATCH.isoformat()
    (folder / "link.csv").symlink_to(secret)
    (folder / "sub").mkdir()
    got = {f.rel.rsplit("/", 1)[1]: (f.status, f.note, f.lines) for f in ingest.list_batch(landing, SOURCES.get("orders"), BATCH)}
    assert got["part-00000.csv"] == ("loaded", None, 0)
    assert got["..%2f.."][0] == "skipped" and "hidden name" in got["..%2f.."][1]
    assert got["link.csv"][0] == "refused" and "symbolic link" in got["link.csv"][1] and got["link.csv"][2] == 0
    assert got["sub"][0] == "skipped" and "a folder" in got["sub"][1]


def test_read_records_numbers_every_line_exactly_even_in_large_files(spark, tmp_path):
    big = [f'{{"event_id":"e{i}","pad":"{"x" * (i % 50)}"}}' for i in range(120_000)]  # ~7 MB: engines split such files
    big[70_000] = ""
    src = SOURCES.get("app_events")
    f = ingest.scan_file(_land(tmp_path, "app_events", BATCH, "big.jsonl", "\n".join(big) + "\n"), tmp_path, src)
    rows = ingest.read_records(spark, [f], src).select("_line", "_lines", "raw", "reason").collect()
    assert len(rows) == f.lines == 120_000 and all(r._lines == 1 for r in rows)
    assert sorted(r._line for r in rows) == list(range(1, 120_001))
    assert all(r.raw == big[r._line - 1] for r in rows)
    assert [r.reason for r in rows if r.reason] == ["empty_line"]
    small_src = _source(model="pos", format="csv")
    small = ingest.scan_file(_land(tmp_path, "pos", BATCH, "small.csv", "txn_id,store_id\r\na,1\r\n\r\nb,2"), tmp_path, small_src)
    got = sorted((r._line, r.raw) for r in ingest.read_records(spark, [small], small_src).collect())
    assert small.lines == 3 and got == [(2, "a,1"), (3, ""), (4, "b,2")]  # CRLF, blank line, no final newline


def test_audit_refuses_to_publish_when_a_line_is_unaccounted_for(sail):
    f = ingest.LandedFile(Path("x"), "orders/x.csv", "c", 1, 3)
    staged = sail.createDataFrame([("orders/x.csv", 1, None, False, False), ("orders/x.csv", 1, "bad_number: amount", False, False)],
                                  "_source_file string, _lines long, reason string, _duplicate boolean, _suppressed boolean")
    with pytest.raises(ingest.IngestError, match="has 3 data lines but ingest read 2 records spanning 2 lines"):
        ingest._audit(staged, [f], {"orders/x.csv": None})
    counts, _ = ingest._audit(staged, [f], {"orders/x.csv": "orders/y.csv"})  # duplicates are not audited
    assert counts["orders/x.csv"].loaded == 1


def test_run_quarantines_the_lines_that_are_not_in_the_declared_encoding(lakehouse, tmp_path):
    landing = tmp_path / "landing"
    _land(landing, "orders", BATCH, "part-00000.csv",
          (ORDERS_HEADER + "\n" + GOOD_ORDER + "\n").encode() + "O7,M1,,s:1,1.00,2026-11-01T10:00:00+08:00,李明\n".encode("gbk"))
    result = ingest.run(lakehouse.spark, lakehouse, landing, "orders", BATCH, INGESTED_AT)
    assert (result["lines"], result["loaded"], result["quarantined"]) == (2, 1, 1)  # never U+FFFD or mojibake
    (q,) = lakehouse.read("bronze_quarantine").collect()
    assert q._line == 3 and q.reason == "bad_encoding: not valid utf-8: byte 0xc0 at column 43"
    assert q.raw.endswith(",\\xc0\\xee\\xc3\\xf7")  # the bytes as they are, escaped
    assert [r.order_id for r in lakehouse.read("bronze_orders").collect()] == ["O1"]


def test_run_reads_a_parquet_source_by_column_name_with_typed_values(lakehouse, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    landing = tmp_path / "landing"
    folder = landing / "pos_parquet" / BATCH.isoformat()
    folder.mkdir(parents=True)
    t = pa.table({
        "store_id": ["S1", "S2"], "txn_id": ["T1", "T2"], "amount": pa.array([Decimal("12.50"), Decimal("3.00")], pa.decimal128(12, 2)),
        "txn_time": pa.array([dt.datetime(2026, 11, 1, 1, 15, 2, 123000, tzinfo=dt.UTC)] * 2, pa.timestamp("us", tz="UTC")),
        "cashier": ["c1", None],
    })
    pq.write_table(t, folder / "part-00000.parquet")
    src = _source(name="pos_parquet", model="pos", format="parquet", fields={"txn_time": {"formats": ["iso"]}})
    result = ingest.run(lakehouse.spark, lakehouse, landing, src, BATCH, INGESTED_AT)
    assert (result["records"], result["loaded"], result["quarantined"]) == (2, 2, 0)
    rows = {r.txn_id: r for r in lakehouse.read("bronze_pos").collect()}
    assert (str(rows["T1"].amount), rows["T1"].txn_time, rows["T1"].store_id) == ("12.50", INSTANT, "S1")
    assert json.loads(rows["T1"]._extra) == {"cashier": "c1"} and rows["T2"]._extra is None


# --- run safety (issue 14): redeliveries, changed and deleted files, entries not read -----------------

DAY2 = BATCH + dt.timedelta(days=1)


def _files(lakehouse, day):
    return {r.file.rsplit("/", 1)[1]: r for r in lakehouse.read("ops_ingest_files", {"batch_date": day, "channel": "orders"}).collect()}


def test_run_counts_a_resend_in_other_bytes_as_duplicates_never_loading_it_twice(lakehouse, tmp_path):
    landing = tmp_path / "landing"
    lines = [GOOD_ORDER, GOOD_ORDER.replace("O1", "O2")]
    _land(landing, "orders", BATCH, "part-00000.csv", ORDERS_HEADER + "\n" + "\n".join(lines) + "\n")
    # Day 2: the same two records re-exported with CRLF endings, next to one new order.
    _land(landing, "orders", DAY2, "part-00000.csv", ORDERS_HEADER + "\r\n" + GOOD_ORDER.replace("O1", "O3") + "\r\n")
    _land(landing, "orders", DAY2, "part-00000-reexport.csv", ORDERS_HEADER + "\r\n" + "\r\n".join(lines) + "\r\n")
    ingest.run(lakehouse.spark, lakehouse, landing, "orders", BATCH, INGESTED_AT)
    result = ingest.run(lakehouse.spark, lakehouse, landing, "orders", DAY2, INGESTED_AT)
    assert (result["records"], result["loaded"], result["duplicates"], result["quarantined"]) == (3, 1, 2, 0)
    assert sorted(r.order_id for r in lakehouse.read("bronze_orders").collect()) == ["O1", "O2", "O3"]
    f = _files(lakehouse, DAY2)["part-00000-reexport.csv"]
    assert (f.status, f.records, f.loaded, f.duplicates, f.duplicate_of) == ("loaded", 2, 0, 2, None)


def test_run_quarantines_a_redelivered_key_with_other_values_and_a_repeat_within_the_batch(lakehouse, tmp_path):
    landing = tmp_path / "landing"
    _land(landing, "orders", BATCH, "part-00000.csv", ORDERS_HEADER + "\n" + GOOD_ORDER + "\n")
    changed = GOOD_ORDER.replace("12.50", "99.00")  # O1 again, another amount: which one is right?
    o4 = GOOD_ORDER.replace("O1", "O4")
    _land(landing, "orders", DAY2, "part-00000.csv", ORDERS_HEADER + "\n" + "\n".join([changed, o4, o4]) + "\n")
    ingest.run(lakehouse.spark, lakehouse, landing, "orders", BATCH, INGESTED_AT)
    result = ingest.run(lakehouse.spark, lakehouse, landing, "orders", DAY2, INGESTED_AT)
    assert (result["loaded"], result["duplicates"], result["quarantined"]) == (1, 1, 1)
    (q,) = lakehouse.read("bronze_quarantine").collect()
    assert q.raw == changed and q.reason == (
        f"conflicting_duplicate: order_id loaded with other values by batch {BATCH} (orders/{BATCH}/part-00000.csv)")
    amounts = sorted((r.order_id, str(r.amount)) for r in lakehouse.read("bronze_orders").collect())
    assert amounts == [("O1", "12.50"), ("O4", "12.50")]  # the first delivery stands, unchanged


def test_run_keys_crm_versions_by_member_and_update_time(lakehouse, tmp_path):
    landing = tmp_path / "landing"
    header = ",".join(c.name for c in CHANNEL_FIELDS["crm"] if "consent" not in c.name)  # consent columns are optional
    v1 = "M1,李明,13912345678,,,,M,1990-01-01,上海,gold,2026-01-01T00:00:00+08:00,2026-11-01T09:00:00+08:00"
    v2 = v1.replace("gold", "platinum").replace("2026-11-01T09", "2026-11-02T09")  # a newer version: not a duplicate
    _land(landing, "crm", BATCH, "part-00000.csv", f"{header}\n{v1}\n")
    _land(landing, "crm", DAY2, "part-00000.csv", f"{header}\r\n{v1}\r\n{v2}\r\n")
    ingest.run(lakehouse.spark, lakehouse, landing, "crm", BATCH, INGESTED_AT)
    result = ingest.run(lakehouse.spark, lakehouse, landing, "crm", DAY2, INGESTED_AT)
    assert (result["loaded"], result["duplicates"]) == (1, 1)
    assert sorted(r.tier for r in lakehouse.read("bronze_crm").collect()) == ["gold", "platinum"]


def test_run_stops_when_an_ingested_file_changed_or_disappeared_unless_accepted(lakehouse, tmp_path):
    landing = tmp_path / "landing"
    first = _land(landing, "orders", BATCH, "part-00000.csv", ORDERS_HEADER + "\n" + GOOD_ORDER + "\n")
    gone = _land(landing, "orders", BATCH, "part-00001.csv", ORDERS_HEADER + "\n" + GOOD_ORDER.replace("O1", "O2") + "\n")
    ingest.run(lakehouse.spark, lakehouse, landing, "orders", BATCH, INGESTED_AT)
    before = sorted(map(tuple, lakehouse.read("bronze_orders").collect()))
    first.write_text(ORDERS_HEADER + "\n" + GOOD_ORDER.replace("12.50", "13.50") + "\n")
    gone.unlink()
    with pytest.raises(ingest.LandingError, match=r"part-00000.csv changed .*part-00001.csv deleted .*--accept-changed-files"):
        ingest.run(lakehouse.spark, lakehouse, landing, "orders", BATCH, INGESTED_AT)
    assert sorted(map(tuple, lakehouse.read("bronze_orders").collect())) == before  # nothing published
    result = ingest.run(lakehouse.spark, lakehouse, landing, "orders", BATCH, INGESTED_AT, accept_changed_files=True)
    assert result["changed_files"] == [f"orders/{BATCH}/part-00000.csv: changed", f"orders/{BATCH}/part-00001.csv: deleted"]
    assert [(r.order_id, str(r.amount)) for r in lakehouse.read("bronze_orders").collect()] == [("O1", "13.50")]
    files = _files(lakehouse, BATCH)
    assert files["part-00000.csv"].previous_checksum is not None and "accepted" in files["part-00000.csv"].note
    assert (files["part-00001.csv"].status, files["part-00001.csv"].records) == ("deleted", 0)
    # Accepted once, the new content is the batch's: a plain re-run goes through again.
    ingest.run(lakehouse.spark, lakehouse, landing, "orders", BATCH, INGESTED_AT)


def test_run_lists_hidden_files_and_refuses_symlinks_without_reading_them(lakehouse, tmp_path):
    landing = tmp_path / "landing"
    _land(landing, "orders", BATCH, "part-00000.csv", ORDERS_HEADER + "\n" + GOOD_ORDER + "\n")
    _land(landing, "orders", BATCH, "..%2f..", ORDERS_HEADER + "\n" + GOOD_ORDER.replace("O1", "O2") + "\n")
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\nSECRET_API_KEY=abc\n")
    (landing / "orders" / BATCH.isoformat() / "part-00009.csv").symlink_to(secret)
    result = ingest.run(lakehouse.spark, lakehouse, landing, "orders", BATCH, INGESTED_AT)
    assert result["skipped_files"] == [f"orders/{BATCH}/..%2f..: a hidden name (starts with '.' or '_'): rename it to load it"]
    assert len(result["refused_files"]) == 1 and "symbolic link" in result["refused_files"][0]
    files = _files(lakehouse, BATCH)
    assert (files["..%2f.."].status, files["part-00009.csv"].status) == ("skipped", "refused")
    assert lakehouse.read("bronze_quarantine").count() == 0  # not a line of the linked file was read
    assert [r.order_id for r in lakehouse.read("bronze_orders").collect()] == ["O1"]


def test_run_quarantines_a_record_that_breaks_a_row_rule_and_loads_the_rest(lakehouse, tmp_path):
    landing = tmp_path / "landing"
    long_name = EVENT_LINES[0].replace('"app_start"', '"' + "x" * 10_000 + '"').replace('"e1"', '"e9"')
    _land(landing, "app_events", BATCH, "part-00000.jsonl", EVENT_LINES[0] + "\n" + long_name + "\n")
    result = ingest.run(lakehouse.spark, lakehouse, landing, "app_events", BATCH, INGESTED_AT)
    assert (result["loaded"], result["quarantined"]) == (1, 1)
    assert result["quarantine_reasons"] == {"expect_column_values_to_be_in_set": 1}
    (q,) = lakehouse.read("bronze_quarantine").collect()
    assert q.reason == "expect_column_values_to_be_in_set: event_name" and q._line == 2
