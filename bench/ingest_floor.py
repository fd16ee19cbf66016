"""Benchmark floor: the app_events bronze load done single-node with pyarrow + deltalake (delta-rs),
no Spark. Corrupt lines are removed beforehand (untimed): pyarrow's JSON reader stops at the first
bad line, so this floor does less work than the real ingest. Prints a JSON line."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
from deltalake import write_deltalake


def clean_copy(src: Path, dst: Path) -> int:
    """Copy the lines a strict reader accepts (valid JSON objects with a valid event_time)."""
    kept = 0
    with src.open() as fin, dst.open("w") as fout:
        for line in fin:
            try:
                dt.datetime.fromisoformat(json.loads(line)["event_time"])
            except (ValueError, KeyError, TypeError):
                continue
            fout.write(line)
            kept += 1
    return kept


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--landing", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    files = sorted((a.landing / "app_events").glob("*/*.jsonl"))
    clean_dir = a.out / "_clean"
    clean_dir.mkdir(parents=True, exist_ok=True)
    clean = []
    for f in files:
        dst = clean_dir / f"{f.parent.name}-{f.name}"
        clean_copy(f, dst)
        clean.append((f.parent.name, dst))
    schema = pa.schema([(n, pa.string()) for n in ("event_id", "device_id", "login_id", "platform", "event_name", "event_time")])
    t0 = time.perf_counter()
    rows = 0
    for day, path in clean:
        t = pj.read_json(path, parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"))
        ts = pc.strptime(pc.utf8_slice_codeunits(t["event_time"], 0, 19), format="%Y-%m-%dT%H:%M:%S", unit="ms", error_is_null=True)
        t = t.set_column(t.schema.get_field_index("event_time"), "event_time", ts)
        t = t.append_column("_batch_date", pa.array([day] * t.num_rows, pa.string()))
        write_deltalake(str(a.out / "bronze_app_events"), t, mode="append", partition_by=["_batch_date"])
        rows += t.num_rows
    print(json.dumps({"engine": "pyarrow+deltalake", "bronze_app_events_s": round(time.perf_counter() - t0, 2), "rows": rows}))


if __name__ == "__main__":
    main()
