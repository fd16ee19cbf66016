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


def _contract_partitions(batches):
    """mapInArrow: union-find (scipy) over the edges of one partition; each node becomes an edge to its
    partition-local smallest node. Connectivity is unchanged and components are stars already, so the
    distributed rounds only join the pieces that span partitions."""
    import numpy as np
    import pyarrow as pa
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as local_components

    batches = [b for b in batches if b.num_rows]
    if not batches:
        return
    table = pa.Table.from_batches(batches)
    src = table.column("src").to_numpy()
    dst = table.column("dst").to_numpy()
    nodes, index = np.unique(np.concatenate([src, dst]), return_inverse=True)
    n, e = len(nodes), len(src)
    graph = coo_matrix((np.ones(e, dtype=np.int8), (index[:e], index[e:])), shape=(n, n))
    _, label = local_components(graph, directed=False)
    smallest = np.full(label.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(smallest, label, nodes)
    root = smallest[label]
    leaf = nodes != root
    yield pa.RecordBatch.from_arrays([pa.array(root[leaf]), pa.array(nodes[leaf])], names=["src", "dst"])


def _stars_left(edges: DataFrame) -> int:
    """How many nodes still break the end state: with edges kept as src < dst, the components are
    settled when every component is one star around its smallest node, i.e. no node is both a root
    (src) and a leaf (dst) and no leaf has two roots. 0 means done."""
    ends = edges.select(F.col("src").alias("n"), F.lit(1).alias("root"), F.lit(0).alias("leaf")).unionByName(
        edges.select(F.col("dst").alias("n"), F.lit(0).alias("root"), F.lit(1).alias("leaf")))
    per_node = ends.groupBy("n").agg(F.max("root").alias("root"), F.sum("leaf").alias("leaf"))
    return per_node.where((F.col("leaf") > 1) | ((F.col("leaf") == 1) & (F.col("root") == 1))).count()


def connected_components(
    nodes: DataFrame, edges: DataFrame, lh: Lakehouse, key: str, max_rounds: int = 100,
    local_edges: int | None = 10_000_000,
) -> Components:
    """Label every node (column `node`, long) with the smallest node id of its component.
    `edges` has long columns src, dst. With `local_edges`, the edges are first split into partitions of
    at most that many (by src) and each partition is reduced to stars by a local union-find (a
    pre-pass that leaves connectivity unchanged; a graph within one partition is settled by it); then rounds
    of large-star and small-star, each staged as Parquet under `key` so the plan does not grow, until
    every component is a star around its smallest node (the algorithm's fixed point, detected without
    the extra round that would change nothing)."""
    if local_edges:
        edges = lh.stage(f"{key}/input", edges.select("src", "dst"))
        parts = -(-edges.count() // local_edges)
        split = edges.coalesce(1) if parts <= 1 else edges.repartition(parts, "src")
        edges = split.mapInArrow(_contract_partitions, "src long, dst long")
    current = lh.stage(f"{key}/round-0", _undirected(edges))
    for round_no in range(0, max_rounds + 1):
        if round_no:
            current = lh.stage(f"{key}/round-{round_no}", small_star(large_star(current)))
            lh.unstage(f"{key}/round-{round_no - 1}")
        unsettled = _stars_left(current)
        log.info("connected components round %d: %d nodes not yet in a star around their smallest node", round_no, unsettled)
        if unsettled == 0:
            # Every non-root node (dst) has one edge, to its component's smallest node (src).
            labels = current.select(F.col("dst").alias("node"), F.col("src").alias("component"))
            roots = current.select(F.col("src").alias("node")).distinct().withColumn("component", F.col("node"))
            labelled = labels.unionByName(roots)
            assignment = (
                nodes.select("node").distinct().join(labelled, "node", "left")
                .select("node", F.coalesce("component", "node").alias("component"))
            )
            lh.unstage(f"{key}/input")
            return Components(assignment, round_no)
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
    spark.sparkContext.setCheckpointDir(f"{lh.staging}/graphframes-checkpoints")
    try:
        graph = GraphFrame(nodes.select(F.col("node").alias("id")).distinct(), edges.select("src", "dst"))
        result = graph.connectedComponents()
    except Exception as e:  # a missing JAR surfaces as a py4j error at the first JVM call
        raise GraphFramesUnavailable(f"GraphFrames connectedComponents failed (is the JAR on the classpath?): {e}") from e
    return Components(result.select(F.col("id").alias("node"), "component"), 0)
