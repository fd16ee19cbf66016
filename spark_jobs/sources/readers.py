"""Reads landing files of one source into records of text: decodes by the declared encoding, parses with
real parsers (Python's csv module, RFC-4180; orjson for JSON lines; pyarrow for Parquet), maps fields by
header name or JSON path, and keeps unknown columns in `_extra`. Runs inside the engine (mapInArrow);
reads files, writes nothing. Typing (timestamps, numbers) is the engine's job (spark_jobs.ingest).

Why Python's csv and not pyarrow.csv: accounting needs, for every record, its physical line span and its
raw text (for quarantine), and one bad record must not fail the file; pyarrow's reader gives neither
for good rows. Python's reader is C code and strict RFC-4180 with `strict=True`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from spark_jobs.contracts import CHANNEL_FIELDS
from spark_jobs.sources.config import SourceConfig
from spark_jobs.sources.expressions import expression_columns
from spark_jobs.storage import read_bytes

BATCH_RECORDS = 50_000
UNMAPPED_SEP = "\u0001"  # joins the names of fields whose value is outside their `values` map


@dataclass(frozen=True)
class FieldPlan:
    name: str
    path: tuple[str, ...] | None  # None: the field is an expression over staged columns
    identifier: bool
    values: dict[str, str] | None
    keep_other: bool
    object_prefix: str | None


@dataclass(frozen=True)
class ReadPlan:
    """What the reader extracts from each record of a source: picklable, built once on the driver."""

    source: str
    format: str
    encoding: str
    delimiter: str
    quote: str
    escape: str | None
    header: bool
    columns: tuple[str, ...] | None
    fields: tuple[FieldPlan, ...]
    staged: tuple[tuple[str, tuple[str, ...]], ...]  # (staged column, source path) read by expressions
    used_roots: frozenset[str] = field(default_factory=frozenset)

    def output_columns(self) -> list[str]:
        return ["_source_file", "_line", "_lines", "raw", "reason", *(f.name for f in self.fields if f.path is not None),
                *(s for s, _ in self.staged), "_unmapped", "_extra"]

    def ddl(self) -> str:
        types = {"_line": "long", "_lines": "long"}
        return ", ".join(f"`{c}` {types.get(c, 'string')}" for c in self.output_columns())


def staged_name(i: int) -> str:
    return f"__x{i}"


def read_plan(source: SourceConfig) -> ReadPlan:
    ids = set(source.identifier_fields())
    fields, staged_paths = [], {}
    for name, m in source.mapping().items():
        if m.expr is not None:
            for p in expression_columns(m.expr, f"{source.name}.fields.{name}"):
                staged_paths.setdefault(p, staged_name(len(staged_paths)))
            fields.append(FieldPlan(name, None, name in ids, m.values, m.other == "keep", m.object))
        else:
            path = (m.from_,) if source.format == "csv" else tuple(m.from_.split("."))
            fields.append(FieldPlan(name, path, name in ids, m.values, m.other == "keep", m.object))
    staged = tuple((s, (p,) if source.format == "csv" else tuple(p.split("."))) for p, s in staged_paths.items())
    roots = frozenset([f.path[0] for f in fields if f.path] + [p[0] for _, p in staged])
    return ReadPlan(
        source.name, source.format, source.encoding, source.csv.delimiter, source.csv.quote, source.csv.escape,
        source.csv.header, source.csv.columns, tuple(fields), staged, roots,
    )


def required_columns(source: SourceConfig) -> set[str]:
    """CSV columns the file must have: those the source's required fields (and their expressions) read."""
    required = {c.name for c in CHANNEL_FIELDS[source.model] if not c.nullable}
    out = set()
    for name, m in source.mapping().items():
        if name in required:
            out.update(expression_columns(m.expr) if m.expr else (m.from_,))
    return out


# --- decoding ------------------------------------------------------------------------------------

class DecodeError(ValueError):
    def __init__(self, message: str, start: int | None = None, byte: int | None = None):
        super().__init__(message)
        self.start, self.byte = start, byte


def _codec(encoding: str) -> str:
    return "utf-8-sig" if encoding in ("utf-8", "utf-8-sig") else encoding


def decode(data: bytes, encoding: str) -> str:
    """The file's text, decoded strictly by its declared encoding. A file declared GB18030/GBK that is
    valid UTF-8 with non-ASCII text is refused: GB18030 would decode UTF-8 bytes into mojibake."""
    if encoding in ("gb18030", "gbk") and not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            raise DecodeError(f"declared {encoding} but the file is valid UTF-8 (mislabelled?)")
    try:
        return data.decode(_codec(encoding))
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DecodeError(f"not valid {encoding}: byte 0x{data[e.start]:02x} at offset {e.start} (line {line})",
                          e.start, data[e.start]) from None


def count_lines(path: Path, encoding: str) -> tuple[int, str]:
    """Physical lines of a file (a last line without newline counts) and its sha256, in one pass."""
    sha = hashlib.sha256()
    newlines = size = 0
    last = ""
    utf16 = encoding == "utf-16"
    dec = codecs.getincrementaldecoder("utf-16")("replace") if utf16 else None
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            sha.update(chunk)
            size += len(chunk)
            if utf16:
                text = dec.decode(chunk)
                newlines += text.count("\n")
                last = text[-1:] or last
            else:
                newlines += chunk.count(b"\n")
                last = chunk[-1:].decode("latin-1")
    if utf16:
        tail = dec.decode(b"", final=True)
        last = tail[-1:] or last
    return newlines + (1 if size and last != "\n" else 0), sha.hexdigest()


def _decoded_lines(head: bytes, encoding: str):
    """The head's lines, each decoded when the CSV reader asks for it (a bad line after the header is
    never decoded here)."""
    for b in head.split(b"\n"):
        yield decode(b, encoding) + "\n"


def header_of(path: Path, source: SourceConfig) -> tuple[tuple[str, ...] | None, int, str | None]:
    """A CSV source file's column names, the physical lines its header takes, and the reason the file
    cannot be read at all (bad_encoding / bad_header), from its first bytes."""
    if source.format != "csv":
        return None, 0, None
    if not source.csv.header:
        return source.csv.columns, 0, None
    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    if not head:
        return None, 0, None
    try:
        if source.encoding == "utf-16":  # no byte-wise line split: decode the head incrementally
            try:
                text = codecs.getincrementaldecoder("utf-16")("strict").decode(head)
            except UnicodeDecodeError:
                decode(head, source.encoding)  # raises DecodeError saying where
                raise
        else:
            if source.encoding in ("gb18030", "gbk"):
                decode(head[: head.rfind(b"\n") + 1] or head, source.encoding)  # mislabelled UTF-8?
            text = None
        # Only the header's own lines are decoded here: a bad data line is that line's problem.
        reader = csv.reader(_decoded_lines(head, source.encoding) if text is None
                            else (ln + "\n" for ln in text.split("\n")), **_dialect(read_plan(source)))
        names = tuple(n.strip() for n in next(reader))
    except (UnicodeDecodeError, DecodeError) as e:
        return None, 1, f"bad_encoding: {e}"  # line 1 is the header, by declaration
    except (csv.Error, StopIteration) as e:
        return None, 0, f"bad_header: the header row does not parse ({e})"
    span = reader.line_num
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        return names, span, f"bad_header: repeated column(s) {dupes}"
    missing = sorted(required_columns(source) - set(names))
    if missing:
        return names, span, f"bad_header: no column {missing} (required fields read them); the header is {list(names)}"
    return names, span, None


# --- values --------------------------------------------------------------------------------------

def as_text(v) -> str | None:
    """A parsed value as the text the engine types: JSON scalars as written, objects as compact JSON."""
    import orjson

    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return orjson.dumps(v).decode()
    if hasattr(v, "isoformat"):  # Parquet dates and timestamps: ISO-8601, with the offset when it has one
        return v.isoformat()
    if isinstance(v, dict | list | tuple):
        return orjson.dumps(v, default=str).decode()
    return str(v)  # Decimal and other scalars: their exact text


def _clean(text: str | None, identifier: bool) -> str | None:
    if text is None:
        return None
    if identifier:
        text = unicodedata.normalize("NFKC", text)
    text = text.strip()
    return text or None


def _dig(obj, path: tuple[str, ...]):
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


class _Out:
    """Column lists of one batch of records."""

    def __init__(self, plan: ReadPlan, rel: str):
        self.plan, self.rel = plan, rel
        self.cols: dict[str, list] = {c: [] for c in plan.output_columns()}
        self.direct = [f for f in plan.fields if f.path is not None]

    def __len__(self) -> int:
        return len(self.cols["_line"])

    def _record(self, line: int, span: int, raw: str, reason: str | None) -> dict[str, list]:
        c = self.cols
        for name, value in (("_source_file", self.rel), ("_line", line), ("_lines", span), ("raw", raw), ("reason", reason)):
            c[name].append(value)
        return c

    def bad(self, line: int, span: int, raw: str, reason: str) -> None:
        c = self._record(line, span, raw, reason)
        for name in (*(f.name for f in self.direct), *(s for s, _ in self.plan.staged), "_unmapped", "_extra"):
            c[name].append(None)

    def good(self, line: int, span: int, raw: str, get, extra: dict | None) -> None:
        import orjson

        c = self._record(line, span, raw, None)
        unmapped = []
        for f in self.direct:
            value = get(f.path)
            if f.object_prefix is not None and isinstance(value, dict):
                value = {k: v for k, v in value.items() if not k.startswith(f.object_prefix)}
            text = _clean(as_text(value), f.identifier)
            if f.values is not None and text is not None:
                if text in f.values:
                    text = f.values[text]
                elif not f.keep_other:
                    unmapped.append(f.name)
            c[f.name].append(text)
        for s, path in self.plan.staged:
            c[s].append(_clean(as_text(get(path)), False))
        c["_unmapped"].append(UNMAPPED_SEP.join(unmapped) if unmapped else None)
        c["_extra"].append(orjson.dumps(extra).decode() if extra else None)

    def batch(self):
        import pyarrow as pa

        types = {"_line": pa.int64(), "_lines": pa.int64()}
        names = self.plan.output_columns()
        out = pa.record_batch([pa.array(self.cols[n], types.get(n, pa.string())) for n in names], names=names)
        self.cols = {c: [] for c in names}
        return out


# --- formats -------------------------------------------------------------------------------------

def _dialect(plan: ReadPlan) -> dict:
    return {"delimiter": plan.delimiter, "quotechar": plan.quote, "escapechar": plan.escape,
            "doublequote": plan.escape is None, "strict": True, "skipinitialspace": False}


def _csv(plan: ReadPlan, out: _Out, lines: list[str], bad: dict[int, str], names: tuple[str, ...], skip: int):
    """Records of a CSV file's lines after its header: runs of decodable lines are parsed by one RFC-4180
    reader each (a quoted field may span lines); undecodable lines are records of their own."""
    index = {n: i for i, n in enumerate(names)}
    extra_cols = [(n, i) for n, i in index.items() if n not in plan.used_roots]
    width = len(names)
    pos = skip
    while pos < len(lines):
        if pos in bad:
            out.bad(pos + 1, 1, lines[pos], bad[pos])
            pos += 1
            continue
        end = pos
        while end < len(lines) and end not in bad:
            end += 1
        reader = csv.reader((ln + "\n" for ln in lines[pos:end]), **_dialect(plan))
        done = 0
        while True:
            start = done
            try:
                row, reason = next(reader), None
            except StopIteration:
                break
            except csv.Error as e:
                row, reason = None, f"malformed_csv: {e}"
            done = reader.line_num
            raw = "\n".join(lines[pos + start: pos + done]).removesuffix("\r")
            line, span = pos + start + 1, done - start
            if not raw.strip():
                out.bad(line, span, raw, "empty_line")
            elif reason:
                out.bad(line, span, raw, reason)
            elif len(row) != width:
                out.bad(line, span, raw, f"wrong_column_count: expected {width}, got {len(row)}")
            else:
                extra = {n: row[i] for n, i in extra_cols if row[i].strip()}
                out.good(line, span, raw, lambda p, row=row: row[index[p[0]]] if p[0] in index else None, extra)
            if len(out) >= BATCH_RECORDS:
                yield out.batch()
        pos = end


def _jsonl(plan: ReadPlan, out: _Out, lines: list[str], bad: dict[int, str]):
    import orjson

    for i, line in enumerate(lines):
        raw = line.removesuffix("\r")
        if i in bad:
            out.bad(i + 1, 1, raw, bad[i])
        elif not raw.strip():
            out.bad(i + 1, 1, raw, "empty_line")
        else:
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                obj = None
            if not isinstance(obj, dict) or not plan.used_roots.intersection(obj):
                out.bad(i + 1, 1, raw, "malformed_json")
            else:
                extra = {k: v for k, v in obj.items() if k not in plan.used_roots}
                out.good(i + 1, 1, raw, lambda p, obj=obj: _dig(obj, p), extra)
        if len(out) >= BATCH_RECORDS:
            yield out.batch()


def _parquet(plan: ReadPlan, out: _Out, path: str):
    import orjson
    import pyarrow.parquet as pq

    for n, row in enumerate(pq.read_table(path).to_pylist(), 1):
        raw = orjson.dumps(row, default=str).decode()
        extra = {k: as_text(v) for k, v in row.items() if k not in plan.used_roots and v is not None}
        out.good(n, 1, raw, lambda p, row=row: _dig(row, p), extra)
        if len(out) >= BATCH_RECORDS:
            yield out.batch()


def _split(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the split after a final newline is not a line
    return lines


def file_lines(data: bytes, encoding: str, file_reason: str | None) -> tuple[list[str], dict[int, str]]:
    """A file's physical lines as text, and the lines that cannot be read (0-based index -> reason).
    Text is decoded strictly by the declared encoding. Where the whole file does not decode, UTF-8 and
    GB18030 files are decoded line by line (a newline byte is never part of a character in either), so
    only the lines that do not decode are quarantined; a UTF-16 file, or UTF-8 mislabelled as GB18030,
    is refused whole. Undecodable bytes are shown as \\xNN escapes, never replaced, never mojibake."""
    if file_reason is None:
        try:
            return _split(decode(data, encoding)), {}
        except DecodeError as e:
            file_reason = f"bad_encoding: {e}"
            whole = encoding == "utf-16" or "mislabelled" in str(e)
    else:
        whole = True
    if encoding == "utf-16":
        lines = _split(data.decode("utf-16", errors="backslashreplace"))
        return lines, dict.fromkeys(range(len(lines)), file_reason)
    lines, bad = [], {}
    for i, b in enumerate(_split_bytes(data)):
        try:
            lines.append(decode(b, encoding))
            if whole:
                bad[i] = file_reason
        except DecodeError as e:
            lines.append(b.decode("utf-8", errors="backslashreplace"))
            bad[i] = file_reason if whole else f"bad_encoding: not valid {encoding}: byte 0x{e.byte:02x} at column {e.start + 1}"
    if "mislabelled" in file_reason:  # the text as it really is: UTF-8
        lines = [b.decode("utf-8", errors="backslashreplace") for b in _split_bytes(data)]
    return [ln.removesuffix("\r") for ln in lines] if whole else lines, bad


def _split_bytes(data: bytes) -> list[bytes]:
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    return parts


def read_file(plan: ReadPlan, path: str, rel: str, names: tuple[str, ...] | None, skip: int, file_reason: str | None):
    """Arrow batches of one file's records (plan.output_columns()). Every physical line after the
    header belongs to exactly one record; a file whose header is unusable is quarantined line by line
    with its reason, and so is every line that does not decode (file_lines)."""
    out = _Out(plan, rel)
    if plan.format == "parquet":
        yield from _parquet(plan, out, path)
    else:
        lines, bad = file_lines(read_bytes(path), plan.encoding, file_reason)
        if plan.format == "csv":
            yield from _csv(plan, out, lines, bad, names or (), skip)
        else:
            yield from _jsonl(plan, out, lines, bad)
    if len(out):
        yield out.batch()


def records_udf(plan: ReadPlan):
    """mapInArrow body: rows (path, rel, names, skip, file_reason) -> the files' records."""

    def body(batches):
        for batch in batches:
            cols = [batch.column(c).to_pylist() for c in ("path", "rel", "names", "skip", "file_reason")]
            for path, rel, names, skip, reason in zip(*cols, strict=True):
                yield from read_file(plan, path, rel, tuple(names) if names is not None else None, skip, reason)

    return body
