"""Benchmark jobs for the One-ID stage, one per process, each printing a JSON line of timings and figures:
`export` reads silver_identifiers / silver_id_links of a Delta lakehouse (Sail) and writes the bare
identity graph (nodes.parquet, edges.parquet: xxhash64 long ids, no rules) plus a Parquet copy of the
two silver tables for JVM Spark; `components` runs spark_jobs.identity.graph.connected_components over
the exported graph (by default with its local union-find pre-pass, --local-edges per partition; with
--rounds-only, large-star/small-star rounds alone, the pure GraphFrames algorithm); `stage` runs the
whole identity stage (spark_jobs.identity.stage.run)."""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyspark.sql import DataFrame  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from spark_jobs.config import EngineConfig, load_config  # noqa: E402
from spark_jobs.identity import stage as identity  # noqa: E402
from spark_jobs.identity.graph import connected_components  # noqa: E402
from spark_jobs.session import spark_session  # noqa: E402
from spark_jobs.tables import Lakehouse  # noqa: E402

SILVER = ("silver_identifiers", "silver_id_links")
LOCAL_EDGES = inspect.signature(connected_components).parameters["local_edges"].default  # the function's default


def engine_config(engine: str, driver_memory: str) -> EngineConfig:
    if engine == "sail":
        return EngineConfig(kind="local")
    return EngineConfig(kind="classic", classic_master=f"local[{os.cpu_count()}]", classic_delta=False,
                        classic_driver_memory=driver_memory)


def _seconds(since: float) -> float:
    return round(time.perf_counter() - since, 2)


def _node(id_type: str, id_value: str):
    # The same node id as the identity stage (spark_jobs.identity.stage._node_id).
    return F.xxhash64(F.col(id_type), F.col(id_value))


def _write_files(table, folder: Path, files: int) -> None:
    """Write an Arrow table as `files` Parquet files (so every engine can read it in parallel)."""
    import shutil

    import pyarrow.parquet as pq

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    step = -(-table.num_rows // files) or 1
    for i, start in enumerate(range(0, max(table.num_rows, 1), step)):
        pq.write_table(table.slice(start, step), folder / f"part-{i:04d}.parquet")


def export(a: argparse.Namespace) -> dict:
    """The bare identity graph of everything in silver (all batch dates, no blocklist or hub rules)."""
    import pyarrow.compute as pc

    out = {}
    with spark_session(engine_config("sail", a.driver_memory)) as spark:
        lh = Lakehouse(spark, a.lakehouse)
        ids, links = lh.read("silver_identifiers"), lh.read("silver_id_links")
        t = time.perf_counter()
        values = (
            ids.select("id_type", "id_value")
            .unionByName(links.select(F.col("src_type").alias("id_type"), F.col("src_value").alias("id_value")))
            .unionByName(links.select(F.col("dst_type").alias("id_type"), F.col("dst_value").alias("id_value")))
            .distinct()
        )
        nodes = values.select(_node("id_type", "id_value").alias("node")).toArrow()
        edges = (
            links.select(_node("src_type", "src_value").alias("a"), _node("dst_type", "dst_value").alias("b"))
            .select(F.least("a", "b").alias("src"), F.greatest("a", "b").alias("dst"))
            .where(F.col("src") != F.col("dst"))
            .distinct()
            .toArrow()
        )
        distinct_nodes = len(pc.unique(nodes.column("node")))
        if distinct_nodes != nodes.num_rows:
            raise SystemExit(f"{nodes.num_rows - distinct_nodes} xxhash64 collisions among node ids: cannot benchmark")
        out["graph_s"] = _seconds(t)
        _write_files(nodes, a.graph / "nodes.parquet", a.files)
        _write_files(edges, a.graph / "edges.parquet", a.files)
        out.update(nodes=nodes.num_rows, edges=edges.num_rows, graph_write_s=_seconds(t))
        if a.parquet_lakehouse:
            # JVM Spark has no Delta here: the same silver tables, laid out as the Lakehouse's
            # fmt="parquet" reads them (<root>/<layer>/<table>/_batch_date=.../*.parquet).
            t = time.perf_counter()
            copy = Lakehouse(spark, a.parquet_lakehouse, fmt="parquet")
            for name in SILVER:
                lh.read(name).write.mode("overwrite").partitionBy("_batch_date").parquet(copy.path(name))
            out["parquet_copy_s"] = _seconds(t)
        out["silver_rows"] = {name: lh.read(name).count() for name in SILVER}
        out["batch_dates"] = sorted(r[0].isoformat() for r in ids.select("_batch_date").distinct().collect())
    return out


def _summary(assignment: DataFrame) -> dict:
    """Nodes, components and the sum of component labels (the smallest node id of each node's
    component): equal sums mean the same partition of the nodes, not only the same count."""
    row = assignment.agg(
        F.count(F.lit(1)).alias("nodes"), F.countDistinct("component").alias("components"),
        F.sum(F.col("component").cast("decimal(38,0)")).alias("label_sum"),
    ).collect()[0]
    return {"nodes": int(row["nodes"]), "components": int(row["components"]), "label_sum": int(row["label_sum"] or 0)}


def components(a: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    with spark_session(engine_config(a.engine, a.driver_memory)) as spark:
        local_edges = None if a.rounds_only else a.local_edges or None  # the function reads 0 as None too
        # local_edges null: large-star/small-star rounds alone; a number: the union-find pre-pass, then rounds.
        out: dict = {"engine": a.engine, "local_edges": local_edges, "session_start_s": _seconds(t0)}
        lh = Lakehouse(spark, a.scratch, fmt="delta" if a.engine == "sail" else "parquet")  # staging is Parquet on both
        nodes_path, edges_path = str(a.graph / "nodes.parquet"), str(a.graph / "edges.parquet")
        # Spark is lazy: reading the Parquet is part of the first round, so it is inside components_s.
        t = time.perf_counter()
        cc = connected_components(spark.read.parquet(nodes_path), spark.read.parquet(edges_path), lh, "bench-cc",
                                  max_rounds=a.max_rounds, local_edges=local_edges)
        out.update(_summary(cc.assignment), rounds=cc.rounds, components_s=_seconds(t))
        lh.unstage("bench-cc")
        # Afterwards (so it warms nothing up for the timed run): one scan of both files, what reading
        # them alone costs on this engine.
        t = time.perf_counter()
        for path, cols in ((nodes_path, ("node",)), (edges_path, ("src", "dst"))):
            spark.read.parquet(path).agg(*[F.sum(F.col(c).cast("decimal(38,0)")) for c in cols]).collect()
        out["scan_s"] = _seconds(t)
    out["total_s"] = _seconds(t0)
    return out


def stage(a: argparse.Namespace) -> dict:
    cfg = load_config().identity
    t0 = time.perf_counter()
    with spark_session(engine_config(a.engine, a.driver_memory)) as spark:
        out: dict = {"engine": a.engine, "session_start_s": _seconds(t0)}
        lh = Lakehouse(spark, a.lakehouse, fmt="delta" if a.engine == "sail" else "parquet")
        t = time.perf_counter()
        figures = identity.run(lh, cfg, a.date)
        out.update(stage_s=_seconds(t), figures=figures)
    out["total_s"] = _seconds(t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="job", required=True)
    ex = sub.add_parser("export", help="silver (Delta) -> bare graph Parquet (+ Parquet copy of silver)")
    ex.add_argument("--lakehouse", required=True)
    ex.add_argument("--graph", type=Path, required=True, help="folder for nodes.parquet and edges.parquet")
    ex.add_argument("--parquet-lakehouse", help="root for a Parquet-format copy of the silver identity tables")
    ex.add_argument("--files", type=int, default=os.cpu_count() or 2, help="Parquet files per table")
    cc = sub.add_parser("components", help="spark_jobs.identity.graph.connected_components over the graph")
    cc.add_argument("--engine", choices=["sail", "jvm"], required=True)
    cc.add_argument("--graph", type=Path, required=True)
    cc.add_argument("--scratch", required=True, help="lakehouse root whose _staging/ holds the rounds")
    cc.add_argument("--max-rounds", type=int, default=100)
    mode = cc.add_mutually_exclusive_group()
    mode.add_argument("--local-edges", type=int, default=LOCAL_EDGES,
                      help=f"edges per partition of the local union-find pre-pass (default {LOCAL_EDGES}; 0: none)")
    mode.add_argument("--rounds-only", action="store_true",
                      help="no pre-pass: large-star/small-star rounds alone (local_edges=None)")
    st = sub.add_parser("stage", help="the whole identity stage, spark_jobs.identity.stage.run")
    st.add_argument("--engine", choices=["sail", "jvm"], required=True)
    st.add_argument("--lakehouse", required=True, help="Delta lakehouse (sail) or its Parquet copy (jvm)")
    st.add_argument("--date", type=dt.date.fromisoformat, required=True)
    for p in (ex, cc, st):
        p.add_argument("--driver-memory", default="8g", help="JVM driver heap (jvm engine)")
    a = ap.parse_args()
    result = {"export": export, "components": components, "stage": stage}[a.job](a)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
