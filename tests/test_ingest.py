"""Ingest: parsing and quarantine on every engine; bronze, quarantine and accounting on Sail + Delta."""

import datetime as dt
from pathlib import Path

import pytest
from deltalake import DeltaTable

from spark_jobs import ingest
from spark_jobs.contracts import CHANNEL_FIELDS
from tests.conftest import BATCH, INGESTED_AT

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
    2: "bad_number: amount", 3: "wrong_column_count: expected 7, got 2", 4: "bad_timestamp: paid_time",
    5: "missing_required: order_id", 7: "empty_line",
}
EVENT_LINES = [
    '{"event_id":"e1","device_id":"d-1","login_id":null,"platform":"ios","event_name":"app_start",'
    '"event_time":"2026-11-01T09:15:02.123+08:00","props":{"page":"home"}}',
    '{"event_id":"e2","device_id":"d-1"',  # truncated JSON
    '[1, 2]',  # JSON but not an object
    '{"event_id":"e3","device_id":"d-1","event_name":"page_view","event_time":"yesterday"}',
    '{"event_id":"e4","device_id":"d-2","event_name":"page_view","event_time":"2026-11-01T23:59:59.999+08:00","extra":1}',
]
EXPECTED_EVENT_REASONS = {2: "malformed_json", 3: "malformed_json", 4: "bad_timestamp: event_time"}


def _lines_df(spark, lines, rel="f"):
    return spark.createDataFrame([(rel, i + 1, line) for i, line in enumerate(lines)], "_source_file string, _line long, raw string")


def test_parse_lines_quarantines_each_corrupt_csv_kind(spark):
    rows = {r._line: r for r in ingest.parse_lines(_lines_df(spark, ORDER_LINES), "orders").collect()}
    assert {n: r.reason for n, r in rows.items() if r.reason} == EXPECTED_ORDER_REASONS
    good = rows[1]
    assert (good.order_id, good.member_id, str(good.amount), good.items) == ("O1", "M1", "12.50", "s1:2")
    assert good.paid_time == dt.datetime(2026, 11, 1, 1, 15, 2, 123000)  # UTC
    assert rows[6].member_id is None and rows[6].category is None and str(rows[6].amount) == "7.00"


def test_parse_lines_quarantines_each_corrupt_json_kind(spark):
    rows = {r._line: r for r in ingest.parse_lines(_lines_df(spark, EVENT_LINES), "app_events").collect()}
    assert {n: r.reason for n, r in rows.items() if r.reason} == EXPECTED_EVENT_REASONS
    assert rows[1].props == '{"page":"home"}' and rows[1].login_id is None
    assert rows[5].event_time == dt.datetime(2026, 11, 1, 15, 59, 59, 999000)


def _land(landing: Path, channel: str, day: dt.date, name: str, text: str) -> Path:
    folder = landing / channel / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_scan_file_counts_data_lines_and_checksums(tmp_path):
    p = _land(tmp_path, "orders", BATCH, "a.csv", ORDERS_HEADER + "\n" + "\n".join(ORDER_LINES[:3]))  # no final newline
    f = ingest.scan_file(p, tmp_path, "csv")
    assert (f.lines, f.header, f.rel) == (3, ORDERS_HEADER, f"orders/{BATCH}/a.csv")
    q = _land(tmp_path, "orders", BATCH, "b.csv", p.read_text())
    assert ingest.scan_file(q, tmp_path, "csv").checksum == f.checksum


def test_plan_duplicates_loads_first_copy_only():
    files = [ingest.LandedFile(Path(n), n, c, 1, 1, None) for n, c in [("a", "x"), ("b", "y"), ("a-resend", "x")]]
    assert ingest.plan_duplicates(files, {}) == {"a": None, "b": None, "a-resend": "a"}
    assert ingest.plan_duplicates(files, {"y": "old/b"}) == {"a": None, "b": "old/b", "a-resend": "a"}


def _ingest(lakehouse, landing, channel, day=BATCH):
    return ingest.run(lakehouse.spark, lakehouse, landing, channel, day, INGESTED_AT)


def test_run_accounts_for_every_line_and_skips_duplicate_file(lakehouse, tmp_path):
    landing = tmp_path / "landing"
    text = ORDERS_HEADER + "\n" + "\n".join(ORDER_LINES) + "\n"
    _land(landing, "orders", BATCH, "part-00000.csv", text)
    _land(landing, "orders", BATCH, "part-00000-resend.csv", text)
    _land(landing, "orders", BATCH, "part-00001.csv", "order_id;amount\nO9;1\n")  # wrong header
    result = _ingest(lakehouse, landing, "orders")
    assert result["files"] == 3 and result["duplicate_files"] == 1
    assert (result["lines"], result["loaded"], result["quarantined"]) == (8, 2, 6)

    files = {r["file"]: r for r in DeltaTable(lakehouse.path("ops_ingest_files")).to_pyarrow_table().to_pylist()}
    orig, resend, bad = (files[f"orders/{BATCH}/{n}"] for n in ("part-00000.csv", "part-00000-resend.csv", "part-00001.csv"))
    assert (orig["lines"], orig["loaded"], orig["quarantined"], orig["duplicate_of"]) == (7, 2, 5, None)
    assert (resend["loaded"], resend["quarantined"], resend["duplicate_of"]) == (0, 0, orig["file"])
    assert (bad["lines"], bad["loaded"], bad["quarantined"]) == (1, 0, 1)

    q = {(r["_source_file"], r["_line"]): r for r in DeltaTable(lakehouse.path("bronze_quarantine")).to_pyarrow_table().to_pylist()}
    for line, reason in EXPECTED_ORDER_REASONS.items():
        row = q[(orig["file"], line + 1)]  # +1: the header is line 1
        assert row["reason"] == reason and row["raw"] == ORDER_LINES[line - 1] and row["channel"] == "orders"
    assert q[(bad["file"], 2)]["reason"].startswith("bad_header")
    bronze = DeltaTable(lakehouse.path("bronze_orders")).to_pyarrow_table().to_pylist()
    assert sorted((r["order_id"], r["_line"]) for r in bronze) == [("O1", 2), ("O5", 7)]


def test_run_twice_gives_identical_tables(lakehouse, tmp_path):
    landing = tmp_path / "landing"
    _land(landing, "app_events", BATCH, "part-00000.jsonl", "\n".join(EVENT_LINES) + "\n")

    def snapshot():
        return {t: sorted(map(tuple, lakehouse.read(t).collect())) for t in ("bronze_app_events", "bronze_quarantine", "ops_ingest_files")}

    first = _ingest(lakehouse, landing, "app_events")
    before = snapshot()
    second = _ingest(lakehouse, landing, "app_events")
    assert first == second
    assert snapshot() == before
    assert len(before["bronze_app_events"]) == 2 and len(before["bronze_quarantine"]) == 3


def test_run_recognises_a_file_redelivered_on_a_later_day(lakehouse, tmp_path):
    landing = tmp_path / "landing"
    text = ORDERS_HEADER + "\n" + GOOD_ORDER + "\n"
    day2 = BATCH + dt.timedelta(days=1)
    _land(landing, "orders", BATCH, "part-00000.csv", text)
    _land(landing, "orders", day2, "part-00007.csv", text)
    _ingest(lakehouse, landing, "orders")
    result = _ingest(lakehouse, landing, "orders", day2)
    assert (result["duplicate_files"], result["loaded"]) == (1, 0)
    assert lakehouse.read("bronze_orders").count() == 1
    dup = lakehouse.read("ops_ingest_files", {"batch_date": day2, "channel": "orders"}).collect()[0]
    assert dup.duplicate_of == f"orders/{BATCH}/part-00000.csv"


def test_run_without_landing_folder_publishes_an_empty_batch(lakehouse, tmp_path):
    result = _ingest(lakehouse, tmp_path / "landing", "pos")
    assert (result["files"], result["loaded"], result["quarantined"]) == (0, 0, 0)
    assert lakehouse.exists("bronze_pos") and lakehouse.read("bronze_pos").count() == 0


@pytest.mark.parametrize("channel", sorted(CHANNEL_FIELDS))
def test_parse_lines_every_channel_accepts_a_well_formed_line(sail, channel):
    fields = CHANNEL_FIELDS[channel]
    sample = {"timestamp": "2026-11-01T08:00:00.000+08:00", "date": "1990-05-17", "decimal(12,2)": "9.90", "string": "x"}
    values = [sample[c.type] for c in fields]
    if ingest.CHANNEL_FORMAT[channel] == "csv":
        line = ",".join(values)
    else:
        import json

        line = json.dumps(dict(zip([c.name for c in fields], values, strict=True)))
    (row,) = ingest.parse_lines(_lines_df(sail, [line]), channel).collect()
    assert row.reason is None, row.reason


def test_read_lines_numbers_every_line_exactly_even_in_large_files(spark, tmp_path):
    big = [f'{{"event_id":"e{i}","pad":"{"x" * (i % 50)}"}}' for i in range(120_000)]  # ~7 MB: engines split such files
    big[70_000] = ""
    p1 = _land(tmp_path, "app_events", BATCH, "big.jsonl", "\n".join(big) + "\n")
    p2 = _land(tmp_path, "orders", BATCH, "small.csv", "h1,h2\r\na,1\r\n\r\nb,2")  # CRLF, blank line, no final newline
    files = [ingest.scan_file(p1, tmp_path, "jsonl")]
    rows = ingest.read_lines(spark, files, "jsonl").select("_line", "raw").collect()
    assert len(rows) == files[0].lines == 120_000
    assert sorted(r._line for r in rows) == list(range(1, 120_001))
    assert all(r.raw == big[r._line - 1] for r in rows)
    small = ingest.scan_file(p2, tmp_path, "csv")
    got = sorted((r._line, r.raw) for r in ingest.read_lines(spark, [small], "csv").collect())
    assert small.lines == 3 and got == [(2, "a,1"), (3, ""), (4, "b,2")]


def test_audit_refuses_to_publish_when_a_line_is_unaccounted_for(sail):
    f = ingest.LandedFile(Path("x"), "orders/x.csv", "c", 1, 3, None)
    staged = sail.createDataFrame([("orders/x.csv", None), ("orders/x.csv", "bad_number: amount")], "_source_file string, reason string")
    with pytest.raises(ingest.IngestError, match="has 3 lines but ingest produced 1 rows and 1 quarantined"):
        ingest._audit(staged, [f], {"orders/x.csv": None})
    assert ingest._audit(staged, [f], {"orders/x.csv": "orders/y.csv"})[0] == {"orders/x.csv": 1}  # duplicates are not audited


def test_run_keeps_lines_that_are_not_utf8(lakehouse, tmp_path):
    landing = tmp_path / "landing"
    folder = landing / "orders" / BATCH.isoformat()
    folder.mkdir(parents=True)
    (folder / "part-00000.csv").write_bytes((ORDERS_HEADER + "\n" + GOOD_ORDER + "\n").encode() + b"O7,M\xff\xfe,,s:1,1.00,2026-11-01T10:00:00+08:00,x\n")
    result = _ingest(lakehouse, landing, "orders")
    assert (result["lines"], result["loaded"]) == (2, 2)
    assert {r.member_id for r in lakehouse.read("bronze_orders").collect()} == {"M1", "M\ufffd\ufffd"}
