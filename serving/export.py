"""Bulk tag pulls: reads gold_profile_tags (wide, the newest as-of date) or gold_tags (long, any as-of date)
through delta-rs, with no copy, and streams them as Parquet or Arrow IPC."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from spark_jobs.tables import TableNotFoundError, latest_partition, table_path

FORMATS = {"parquet": "application/vnd.apache.parquet", "arrow": "application/vnd.apache.arrow.stream"}
SHAPES = ("wide", "long")


class ExportError(ValueError):
    """The export asked for cannot be made (no such as-of date, unknown format); the message says why."""


def _table(root: str, name: str, version: int | None = None):
    from deltalake import DeltaTable

    path = table_path(root, name)
    if not DeltaTable.is_deltatable(path):
        raise TableNotFoundError(f"table {name} does not exist at {path}: run the tags stage first")
    return DeltaTable(path, version=version)


def tag_dataset(root: str, as_of: dt.date | None = None, shape: str = "wide", pinned: dict[str, int] | None = None):
    """(as_of, pyarrow dataset) of the tags of `as_of` (default: the newest). Wide is one row per person
    and a column per tag, kept for the newest as-of date only; long (person_id, tag, value, value_type)
    is kept for every date."""
    pinned = pinned or {}
    if shape not in SHAPES:
        raise ExportError(f"unknown shape {shape!r}: one of {', '.join(SHAPES)}")
    if shape == "long":
        newest = latest_partition(root, "gold_tags", "as_of", version=pinned.get("gold_tags"))
        day = as_of.isoformat() if as_of else newest
        table = _table(root, "gold_tags", pinned.get("gold_tags"))
        if day is None or not any(p.get("as_of") == day for p in table.partitions()):
            raise ExportError(f"gold_tags has no as-of date {day}")
        return day, table.to_pyarrow_dataset(partitions=[("as_of", "=", day)])
    table = _table(root, "gold_profile_tags", pinned.get("gold_profile_tags"))
    dataset = table.to_pyarrow_dataset()
    # The whole (one-date) column, not head(1): a scan stopped early leaves Arrow's read-ahead threads running,
    # and a CLI process that exits then aborts ("terminate called without an active exception", apache/arrow#34314).
    newest = pc.max(dataset.to_table(columns=["as_of"]).column("as_of")).as_py()
    if as_of is not None and as_of != newest:
        raise ExportError(f"the wide tag table holds {newest} only; for {as_of} ask for shape=long (gold_tags)")
    return (newest.isoformat() if newest else None), dataset


class _Chunks(io.RawIOBase):
    """A write-only file whose bytes are taken out as they come (for streaming a writer's output)."""

    def __init__(self):
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.parts.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def stream(dataset, fmt: str, batch_rows: int = 65_536) -> Iterator[bytes]:
    """The dataset's rows as `fmt` (parquet: one row group per batch; arrow: an IPC stream), in chunks."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    sink = _Chunks()
    schema = dataset.schema
    writer = pq.ParquetWriter(sink, schema) if fmt == "parquet" else pa.ipc.new_stream(sink, schema)
    for batch in dataset.to_batches(batch_size=batch_rows):
        writer.write_batch(batch)
        chunk = sink.take()
        if chunk:
            yield chunk
    writer.close()
    yield sink.take()


def export_tags(cfg, out, as_of: dt.date | None = None, fmt: str = "parquet", shape: str = "wide") -> tuple[str, int]:
    """Write the tag table of `as_of` to the file `out` at the versions of the last complete run; returns
    (as_of, bytes written)."""
    from pathlib import Path

    from spark_jobs.runs import pinned_versions

    day, dataset = tag_dataset(cfg.paths.lakehouse_uri(), as_of, shape, pinned_versions(cfg))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with path.open("wb") as f:
        for chunk in stream(dataset, fmt):
            size += f.write(chunk)
    return day, size
