"""Benchmark job: ingest every channel-day of a landing folder, then standardise each day, in ONE
Spark session on the chosen engine (sail -> Delta, jvm -> Parquet). Prints a JSON line of timings."""

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
from spark_jobs.config import CHANNELS, EngineConfig, StandardiseConfig  # noqa: E402
from spark_jobs.session import spark_session  # noqa: E402
from spark_jobs.tables import Lakehouse  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=["sail", "jvm"], required=True)
    ap.add_argument("--landing", type=Path, required=True)
    ap.add_argument("--lakehouse", required=True)
    ap.add_argument("--start", type=dt.date.fromisoformat, required=True)
    ap.add_argument("--days", type=int, required=True)
    ap.add_argument("--channels", nargs="*", default=list(CHANNELS))
    ap.add_argument("--skip-standardise", action="store_true")
    a = ap.parse_args()
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
                r = ingest.run(spark, lh, a.landing, ch, batch, dt.datetime(2026, 1, 1))
                took = time.perf_counter() - t
                timings["ingest"] += took
                per_channel[ch] = per_channel.get(ch, 0.0) + took
                lines, loaded, quarantined = lines + r["lines"], loaded + r["loaded"], quarantined + r["quarantined"]
            if not a.skip_standardise:
                t = time.perf_counter()
                standardise.run(lh, StandardiseConfig(), batch)
                timings["standardise"] += time.perf_counter() - t
    print(json.dumps({
        "engine": a.engine, "session_start_s": round(started, 2), "total_s": round(time.perf_counter() - t0, 2),
        "ingest_s": round(timings["ingest"], 2), "standardise_s": round(timings["standardise"], 2),
        "per_channel_ingest_s": {k: round(v, 2) for k, v in per_channel.items()},
        "lines": lines, "loaded": loaded, "quarantined": quarantined,
    }))


if __name__ == "__main__":
    main()
