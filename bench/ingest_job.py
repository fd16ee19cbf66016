"""Benchmark job: ingest every source-day of a landing folder (each source of conf/sources.yaml with
a landing folder), then standardise each day, in ONE Spark session on the chosen engine (sail -> Delta,
jvm -> Parquet). With --parse-only: only the source readers (decode, CSV/JSON parse, mapping) over every
file, in this one Python process: the parser's own CPU cost. Prints a JSON line of timings."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spark_jobs import ingest, standardise  # noqa: E402
from spark_jobs.config import PROJECT_ROOT, EngineConfig, StandardiseConfig  # noqa: E402
from spark_jobs.session import spark_session  # noqa: E402
from spark_jobs.sources.config import load_sources  # noqa: E402
from spark_jobs.tables import Lakehouse  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=["sail", "jvm"], required=True)
    ap.add_argument("--landing", type=Path, required=True)
    ap.add_argument("--lakehouse", required=True)
    ap.add_argument("--start", type=dt.date.fromisoformat, required=True)
    ap.add_argument("--days", type=int, required=True)
    ap.add_argument("--channels", nargs="*", default=None, help="sources (default: those with a landing folder)")
    ap.add_argument("--skip-standardise", action="store_true")
    ap.add_argument("--parse-only", action="store_true")
    a = ap.parse_args()
    sources = load_sources(PROJECT_ROOT / "conf" / "sources.yaml")
    a.channels = a.channels or [n for n in sources.sources if (a.landing / n).is_dir()]
    if a.parse_only:
        return parse_only(a, sources)
    id_columns = standardise.declared_id_columns(sources)
    strengths = standardise.declared_strengths(sources) if hasattr(standardise, "declared_strengths") else None
    cfg = EngineConfig(kind="local") if a.engine == "sail" else EngineConfig(
        kind="classic", classic_master=f"local[{os.cpu_count()}]", classic_delta=False, classic_driver_memory="8g"
    )
    t0 = time.perf_counter()
    timings = {"ingest": 0.0, "standardise": 0.0}
    per_channel: dict[str, float] = {}
    lines = loaded = quarantined = 0
    with spark_session(cfg) as spark:
        if a.engine == "jvm":
            spark.conf.set("spark.sql.sources.partitionOverwriteMode", "dynamic")
        lh = Lakehouse(spark, a.lakehouse, fmt="delta" if a.engine == "sail" else "parquet")
        started = time.perf_counter() - t0
        for d in range(a.days):
            batch = a.start + dt.timedelta(days=d)
            for ch in a.channels:
                t = time.perf_counter()
                r = ingest.run(spark, lh, a.landing, sources.get(ch), batch, dt.datetime(2026, 1, 1), sources=sources)
                took = time.perf_counter() - t
                timings["ingest"] += took
                per_channel[ch] = per_channel.get(ch, 0.0) + took
                lines, loaded, quarantined = lines + r["lines"], loaded + r["loaded"], quarantined + r["quarantined"]
            if not a.skip_standardise:
                t = time.perf_counter()
                standardise.run(lh, StandardiseConfig(), batch, id_columns, *([strengths] if strengths else []))
                timings["standardise"] += time.perf_counter() - t
    print(json.dumps({
        "engine": a.engine, "session_start_s": round(started, 2), "total_s": round(time.perf_counter() - t0, 2),
        "ingest_s": round(timings["ingest"], 2), "standardise_s": round(timings["standardise"], 2),
        "per_channel_ingest_s": {k: round(v, 2) for k, v in per_channel.items()},
        "lines": lines, "loaded": loaded, "quarantined": quarantined, "sources": a.channels,
    }))


def parse_only(a, sources) -> None:
    """The readers alone (no engine): wall and CPU seconds over every file of the window."""
    from spark_jobs.sources.readers import read_file, read_plan

    t0, c0 = time.perf_counter(), time.process_time()
    records = 0
    for d in range(a.days):
        batch = a.start + dt.timedelta(days=d)
        for ch in a.channels:
            src = sources.get(ch)
            plan = read_plan(src)
            for f in ingest.list_batch(a.landing, src, batch):
                for b in read_file(plan, str(f.path), f.rel, f.names, f.header_lines, f.reason):
                    records += b.num_rows
    print(json.dumps({"parse_s": round(time.perf_counter() - t0, 2), "parse_cpu_s": round(time.process_time() - c0, 2),
                      "records": records, "sources": a.channels}))


if __name__ == "__main__":
    main()
