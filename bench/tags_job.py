"""Benchmark jobs for the marts (profiles, tags, segments), one per process, each printing a JSON line:
`copy` reads the input tables of a Delta lakehouse (Sail) and writes a Parquet copy laid out as
`Lakehouse(spark, root, fmt="parquet")` reads it (JVM Spark has no Delta JARs here); `marts` runs
spark_jobs.profiles.run, spark_jobs.tags.run and spark_jobs.segments.run for one as-of date in ONE Spark
session, timing each, then (untimed) checksums the tables they wrote so that engines can be compared.
The stages are called directly: no quality gate (spark_jobs.pipeline.run_stage attaches the gates)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from identity_job import engine_config  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from spark_jobs import profiles, segments, tags  # noqa: E402
from spark_jobs.config import load_config  # noqa: E402
from spark_jobs.contracts import contract  # noqa: E402
from spark_jobs.session import spark_session  # noqa: E402
from spark_jobs.tables import Lakehouse  # noqa: E402

INPUTS = ("silver_events", "silver_orders", "silver_contacts", "silver_identifiers", "gold_id_map")
STAGES = {"profiles": profiles.run, "tags": tags.run, "segments": segments.run}
GROUPED = ("rfm_segment", "lifecycle_stage", "value_tier")  # counts per value of these tags


def _seconds(since: float) -> float:
    return round(time.perf_counter() - since, 2)


def copy(a: argparse.Namespace) -> dict:
    """The input tables as Parquet (<root>/<layer>/<table>/<partition>=.../*.parquet), and their rows."""
    out: dict = {"rows": {}}
    with spark_session(engine_config("sail", "1g")) as spark:
        lh, pq = Lakehouse(spark, a.lakehouse), Lakehouse(spark, a.parquet_lakehouse, fmt="parquet")
        t = time.perf_counter()
        for name in INPUTS:
            writer = lh.read(name).write.mode("overwrite")
            if contract(name).partition_by:
                writer = writer.partitionBy(*contract(name).partition_by)
            writer.parquet(pq.path(name))
            out["rows"][name] = lh.read(name).count()
        out["copy_s"] = _seconds(t)
        out["batch_dates"] = sorted(r[0].isoformat() for r in lh.read("silver_events").select("_batch_date").distinct().collect())
        out["id_map_snapshots"] = sorted(r[0].isoformat() for r in lh.read("gold_id_map").select("as_of").distinct().collect())
    return out


def _hash_sum(*cols) -> F.Column:
    """An order-free checksum of rows: the sum of a 64-bit hash of the columns, exact (decimal)."""
    return F.sum(F.xxhash64(*cols).cast("decimal(38,0)")).cast("string")


def checksums(lh: Lakehouse, types: dict[str, str], as_of: dt.date) -> dict:
    """Figures of everything the three stages wrote: `exact` must be equal on every engine; `approx`
    (sums of doubles, whose last bits depend on the order of addition) equal within a relative 1e-9."""
    exact: dict = {}
    approx: dict = {}
    day = {"as_of": as_of}

    prof = lh.read("gold_profiles", day)
    cols = [F.col(f.name).cast("long") if f.dataType.simpleString() == "timestamp" else F.col(f.name)
            for f in prof.schema.fields if f.name != "as_of"]
    row = prof.agg(F.count(F.lit(1)).alias("rows"), _hash_sum(*cols).alias("hash")).first()
    exact["gold_profiles"] = row.asDict()

    wide = lh.read("gold_profile_tags")
    aggs = [F.count(F.lit(1)).alias("rows")]
    for n, t in types.items():
        aggs.append(F.count(n).alias(f"{n}:n"))
        if t == "long":
            aggs.append(F.sum(F.col(n).cast("decimal(38,0)")).cast("string").alias(f"{n}:sum"))
        elif t == "boolean":
            aggs.append(F.count(F.when(F.col(n), 1)).alias(f"{n}:true"))
        elif t == "string":
            aggs.append(_hash_sum(F.col(n)).alias(f"{n}:hash"))
    row = wide.agg(*aggs).first().asDict()
    exact["gold_profile_tags"] = row
    doubles = [n for n, t in types.items() if t == "double"]
    if doubles:
        approx["gold_profile_tags"] = wide.agg(*[F.sum(n).alias(f"{n}:sum") for n in doubles]).first().asDict()
    for n in GROUPED:
        if n in types:
            exact[f"gold_profile_tags.{n}"] = {str(r[0]): r[1] for r in wide.groupBy(n).count().orderBy(n).collect()}

    long_ = lh.read("gold_tags", day)
    not_double = F.col("value_type") != "double"  # a double's text form differs between engines
    row = long_.agg(
        F.count(F.lit(1)).alias("rows"), F.count(F.when(~not_double, 1)).alias("double_rows"),
        _hash_sum(F.when(not_double, F.xxhash64("person_id", "tag", "value"))).alias("hash_not_double"),
    ).first()
    exact["gold_tags"] = row.asDict()

    members = lh.read("gold_segment_members", day)
    exact["gold_segment_members"] = {
        f"{r['segment']}:{r['status']}": [r["n"], r["hash"]]
        for r in members.groupBy("segment", "status").agg(
            F.count(F.lit(1)).alias("n"), _hash_sum("person_id", "entered_on", "left_on").alias("hash")
        ).orderBy("segment", "status").collect()
    }
    return {"exact": exact, "approx": approx}


def marts(a: argparse.Namespace) -> dict:
    cfg = load_config()
    # Scratch exports; the quality gate is off anyway (the stages are called without run_stage).
    cfg = cfg.model_copy(update={
        "paths": cfg.paths.model_copy(update={"exports": str(a.exports)}),
        "quality": cfg.quality.model_copy(update={"enabled": False}),
    })
    t0 = time.perf_counter()
    with spark_session(engine_config(a.engine, a.driver_memory)) as spark:
        out: dict = {"engine": a.engine, "session_start_s": _seconds(t0), "stages": {}}
        lh = Lakehouse(spark, a.lakehouse, fmt="delta" if a.engine == "sail" else "parquet")
        t_all = time.perf_counter()
        for name, run in STAGES.items():
            t = time.perf_counter()
            figures = run(lh, cfg, a.date)
            out["stages"][name] = {"seconds": _seconds(t), "rows_written": figures["tables"]}
            out[f"{name}_s"] = out["stages"][name]["seconds"]
            out["stages"][name]["figures"] = {k: v for k, v in figures.items() if k not in ("tables", "exports")}
        out["marts_s"] = _seconds(t_all)
        if not a.no_checksums:
            t = time.perf_counter()
            out["checksums"] = checksums(lh, cfg.tags.types, a.date)
            out["checksums_s"] = _seconds(t)
    out["total_s"] = _seconds(t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="job", required=True)
    cp = sub.add_parser("copy", help="the Delta input tables -> a Parquet lakehouse for JVM Spark")
    cp.add_argument("--lakehouse", required=True)
    cp.add_argument("--parquet-lakehouse", required=True)
    mt = sub.add_parser("marts", help="profiles.run, tags.run, segments.run in one session")
    mt.add_argument("--engine", choices=["sail", "jvm"], required=True)
    mt.add_argument("--lakehouse", required=True, help="Delta lakehouse (sail) or its Parquet copy (jvm)")
    mt.add_argument("--date", type=dt.date.fromisoformat, required=True, help="the as-of date")
    mt.add_argument("--exports", type=Path, required=True, help="scratch folder for the segment exports")
    mt.add_argument("--driver-memory", default="12g", help="JVM driver heap (jvm engine)")
    mt.add_argument("--no-checksums", action="store_true")
    a = ap.parse_args()
    result = {"copy": copy, "marts": marts}[a.job](a)
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
