"""Connected components of an identity graph with DataFrames only (alternating large-star / small-star,
Kiveris et al., SoCC 2014, as in GraphFrames), each round's edges materialised to cut the plan.
Reads and writes nothing itself: staging goes through the Lakehouse it is given."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs.tables import Lakehouse

log = logging.getLogger(__name__)


class ComponentsDidNotConverge(RuntimeError):
    """Connected components ran out of rounds; raise max_rounds (the graph may have a very long path)."""


@dataclass(frozen=True)
class Components:
    assignment: DataFrame  # node (long), component (long): the smallest node id of its component
    rounds: int


def _undirected(edges: DataFrame) -> DataFrame:
    """Edges as (src < dst) pairs, self-loops and duplicates dropped."""
    return (
        edges.select(F.least("src", "dst").alias("src"), F.greatest("src", "dst").alias("dst"))
        .where(F.col("src") != F.col("dst"))
        .distinct()
    )


def large_star(edges: DataFrame) -> DataFrame:
    """Connect every larger neighbour of u to the smallest node of u's closed neighbourhood."""
    both = edges.select("src", "dst").unionByName(edges.select(F.col("dst").alias("src"), F.col("src").alias("dst")))
    smallest = both.groupBy("src").agg(F.least(F.min("dst"), F.col("src")).alias("m"))
    return (
        both.join(smallest, "src")
        .where(F.col("dst") > F.col("src"))
        .select(F.col("dst").alias("src"), F.col("m").alias("dst"))
        .transform(_undirected)
    )


def small_star(edges: DataFrame) -> DataFrame:
    """Connect u and every smaller neighbour of u to the smallest of them."""
    # For edge (src < dst): dst's smaller neighbours include src.
    down = edges.select(F.col("dst").alias("u"), F.col("src").alias("v"))
    smallest = down.groupBy("u").agg(F.min("v").alias("m"))
    joined = down.join(smallest, "u")
    return (
        joined.select(F.col("v").alias("src"), F.col("m").alias("dst"))
        .unionByName(joined.select(F.col("u").alias("src"), F.col("m").alias("dst")))
        .transform(_undirected)
    )


def _fingerprint(edges: DataFrame) -> tuple[int, int]:
    row = edges.agg(F.count(F.lit(1)).alias("n"), F.sum(F.xxhash64("src", "dst").cast("decimal(38,0)")).alias("h")).collect()[0]
    return int(row["n"]), int(row["h"] or 0)


def connected_components(
    nodes: DataFrame, edges: DataFrame, lh: Lakehouse, key: str, max_rounds: int = 100
) -> Components:
    """Label every node (column `node`, long) with the smallest node id of its component.
    `edges` has long columns src, dst. Each round (large-star then small-star) is staged as Parquet
    under `key` so the plan does not grow; stops when a round changes nothing."""
    current = lh.stage(f"{key}/round-0", _undirected(edges))
    previous = _fingerprint(current)
    for round_no in range(1, max_rounds + 1):
        current = lh.stage(f"{key}/round-{round_no}", small_star(large_star(current)))
        lh.unstage(f"{key}/round-{round_no - 1}")
        fingerprint = _fingerprint(current)
        log.info("connected components round %d: %d edges", round_no, fingerprint[0])
        if fingerprint == previous:
            # At the fixed point every non-root node (dst) has one edge, to its component's smallest
            # node (src: edges are kept as src < dst).
            labels = current.select(F.col("dst").alias("node"), F.col("src").alias("component"))
            roots = current.select(F.col("src").alias("node")).distinct().withColumn("component", F.col("node"))
            labelled = labels.unionByName(roots)
            assignment = (
                nodes.select("node").distinct().join(labelled, "node", "left")
                .select("node", F.coalesce("component", "node").alias("component"))
            )
            return Components(assignment, round_no)
        previous = fingerprint
    raise ComponentsDidNotConverge(f"connected components did not converge in {max_rounds} rounds")


class GraphFramesUnavailable(RuntimeError):
    """identity.algorithm is graphframes but this session cannot run GraphFrames (the message says why)."""


def graphframes_components(nodes: DataFrame, edges: DataFrame, lh: Lakehouse) -> Components:
    """GraphFrames' own `connectedComponents()` (needs a classic Spark session with the GraphFrames JAR
    and the `graphframes-py` package); labels are the smallest node id, as above. `rounds` is 0:
    GraphFrames does not report its iterations."""
    spark = nodes.sparkSession
    if type(spark).__module__.startswith("pyspark.sql.connect"):
        raise GraphFramesUnavailable(
            "identity.algorithm: graphframes needs a classic (JVM) Spark session with the GraphFrames JAR; "
            "this is a Spark Connect session (Sail or a remote server): use identity.algorithm: dataframe"
        )
    try:
        from graphframes import GraphFrame
    except ImportError:
        raise GraphFramesUnavailable(
            "identity.algorithm: graphframes needs the graphframes-py package and the GraphFrames JAR "
            "(spark.jars.packages io.graphframes:graphframes-spark4_2.13)"
        ) from None
    spark.sparkContext.setCheckpointDir(f"{lh.root}/_staging/graphframes-checkpoints")
    try:
        graph = GraphFrame(nodes.select(F.col("node").alias("id")).distinct(), edges.select("src", "dst"))
        result = graph.connectedComponents()
    except Exception as e:  # a missing JAR surfaces as a py4j error at the first JVM call
        raise GraphFramesUnavailable(f"GraphFrames connectedComponents failed (is the JAR on the classpath?): {e}") from e
    return Components(result.select(F.col("id").alias("node"), "component"), 0)
