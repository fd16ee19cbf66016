"""The source readers (plain Python, as they run inside mapInArrow): RFC-4180 CSV by header name, JSON
paths, encodings, accounting of physical lines per record. Property tests: whatever a standard CSV
writer writes, in any column order with any extra columns, reads back equal."""

import csv
import io
import json
import re
import string

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_jobs.ingest import scan_file
from spark_jobs.sources.config import SourceConfig
from spark_jobs.sources.readers import DecodeError, decode, read_file, read_plan

LEADS = ("lead_id", "phone", "campaign", "ad_platform", "booking_store", "created_at")


def _records(tmp_path, source: SourceConfig, data: bytes, name="part-00000.csv") -> tuple[list[dict], int]:
    folder = tmp_path / source.name / "2026-11-01"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    f = scan_file(path, tmp_path, source)
    batches = list(read_file(read_plan(source), str(path), f.rel, f.names, f.header_lines, f.reason))
    rows = pa.Table.from_batches(batches).to_pylist() if batches else []
    return rows, f.lines


def _leads(**kw) -> SourceConfig:
    return SourceConfig.model_validate({"name": "leads", "model": "ad_leads", "format": "csv", **kw})


# Text a real export may hold in a field: commas, quotes, line breaks inside the field, CJK, full-width.
# (A lone CR is left out: Python's writer leaves it unquoted when its line terminator is LF, which makes
# a file no RFC-4180 reader can read; ours quarantines such a record as malformed_csv.)
_PIECES = [*(string.ascii_letters + string.digits + ' ,;"\'\n\t李明＠１-'), "\r\n"]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=12).map("".join)
_FIELD = _TEXT.map(str.strip).filter(bool)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(st.fixed_dictionaries({c: _FIELD for c in LEADS}), min_size=1, max_size=8),
    order=st.permutations(LEADS),
    extra=st.lists(st.sampled_from(["remark", "备注", "utm_source"]), unique=True, max_size=2),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    newline=st.sampled_from(["\n", "\r\n"]),
    delimiter=st.sampled_from([",", ";", "\t"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "gb18030", "utf-16"]),
)
def test_read_file_reads_back_any_csv_a_standard_writer_writes(tmp_path_factory, rows, order, extra, quoting, newline,
                                                                delimiter, encoding):
    tmp_path = tmp_path_factory.mktemp("csv")
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, quoting=quoting, lineterminator=newline)
    w.writerow([*order, *extra])
    for i, r in enumerate(rows):
        w.writerow([r[c] for c in order] + [f"x{i}" for _ in extra])
    source = _leads(encoding=encoding, csv={"delimiter": delimiter})
    data = buf.getvalue().encode(encoding)
    if encoding == "gb18030" and not data.isascii():
        data = buf.getvalue().encode("gb18030")
        try:
            data.decode("utf-8")
            return  # GB18030 bytes that are also valid UTF-8 are refused on purpose (tested below)
        except UnicodeDecodeError:
            pass
    got, lines = _records(tmp_path, source, data)
    assert [{c: r[c] for c in LEADS} for r in got] == [{c: r[c] for c in LEADS} for r in rows]
    assert all(r["reason"] is None for r in got)
    assert sum(r["_lines"] for r in got) == lines  # every physical line belongs to one record
    assert [json.loads(r["_extra"]) if r["_extra"] else {} for r in got] == [{e: f"x{i}" for e in extra} for i in range(len(rows))]


def test_read_file_spans_records_over_lines_and_keeps_their_raw_text(tmp_path):
    data = b'lead_id,phone,created_at\nL1,139,"a\nb"\n\nL2,"x""y",t\nL3,1\n"L4,unterminated\n'
    got, lines = _records(tmp_path, _leads(), data)
    assert [(r["_line"], r["_lines"], r["reason"]) for r in got] == [
        (2, 2, None), (4, 1, "empty_line"), (5, 1, None), (6, 1, "wrong_column_count: expected 3, got 2"),
        (7, 1, "malformed_csv: unexpected end of data"),
    ]
    assert got[0]["raw"] == 'L1,139,"a\nb"' and got[0]["created_at"] == "a\nb" and got[2]["phone"] == 'x"y'
    assert lines == 6 == sum(r["_lines"] for r in got)
    assert got[0]["campaign"] is None  # a column the file does not have is NULL, not an error


def test_read_file_nfkc_normalises_identifiers_only(tmp_path):
    src = _leads(identifiers={"phone": {"type": "phone", "strength": "contact"}})
    got, _ = _records(tmp_path, src, "lead_id,phone,campaign,created_at\nL1,１３９１２３４５６７８,Ｘ１１,t\n".encode())
    assert (got[0]["phone"], got[0]["campaign"]) == ("13912345678", "Ｘ１１")


def test_read_file_maps_json_paths_and_keeps_unknown_keys(tmp_path):
    src = SourceConfig.model_validate({"name": "sa", "model": "app_events", "format": "jsonl", "preset": "sensors"})
    line = {"distinct_id": "U1", "time": 1793495702123, "_track_id": 7, "event": "$AppStart", "type": "track",
            "identities": {"$identity_login_id": "U1", "$identity_mobile": "１３９１２３４５６７８"},
            "properties": {"$os": "iOS", "$device_id": "d-1", "page": "home", "amount": 12.5}, "lib": {"$lib": "iOS"}}
    got, _ = _records(tmp_path, src, (json.dumps(line, ensure_ascii=False) + "\n").encode(), "p.jsonl")
    (r,) = got
    assert (r["device_id"], r["login_id"], r["phone"], r["platform"], r["event_name"]) == ("d-1", "U1", "13912345678", "ios", "app_start")
    assert json.loads(r["props"]) == {"page": "home", "amount": 12.5}  # the SDK's $-keys are not event properties
    assert json.loads(r["_extra"]) == {"type": "track", "lib": {"$lib": "iOS"}}
    assert (r["__x0"], r["__x1"], r["__x2"]) == ("U1", "1793495702123", "7")  # the event id expression's inputs


@pytest.mark.parametrize(("data", "encoding", "message"), [
    ("会员".encode(), "gb18030", "declared gb18030 but the file is valid UTF-8"),
    ("会员".encode("gbk"), "utf-8", "not valid utf-8: byte 0xbb at offset 0 (line 1)"),
    (b"\xff\xfe\x00\xd8", "utf-16", "not valid utf-16"),
])
def test_decode_refuses_what_would_become_mojibake(data, encoding, message):
    with pytest.raises(DecodeError, match=re.escape(message)):
        decode(data, encoding)


def test_read_file_quarantines_every_line_of_a_file_in_another_encoding(tmp_path):
    src = _leads(encoding="gb18030")
    got, lines = _records(tmp_path, src, "lead_id,phone,created_at\nL1,李明,t\nL2,x,t\n".encode())
    assert lines == 2 and [r["_line"] for r in got] == [2, 3]
    assert all(r["reason"].startswith("bad_encoding: declared gb18030") for r in got)
    assert got[0]["raw"] == "L1,李明,t"  # the raw text as it is, never decoded as GB18030


def test_read_file_whole_file_bad_header_is_quarantined_line_by_line(tmp_path):
    got, lines = _records(tmp_path, _leads(), b"lead_id,phone,phone\nL1,1,2\n")
    assert lines == 1 and [r["reason"] for r in got] == ["bad_header: repeated column(s) ['phone']"]


def test_read_file_honours_a_backslash_escape_and_a_header_less_layout(tmp_path):
    src = _leads(csv={"delimiter": ";", "escape": "\\", "header": False, "columns": ["lead_id", "phone", "campaign"]})
    got, lines = _records(tmp_path, src, b'L1;139;"a \\"big\\" sale; today"\nL2;138;x\\;y\n')
    assert lines == 2 and [(r["_line"], r["campaign"], r["reason"]) for r in got] == [
        (1, 'a "big" sale; today', None), (2, "x;y", None)]
