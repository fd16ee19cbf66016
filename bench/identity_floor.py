"""Benchmark floor: connected components of the bare identity graph (nodes.parquet, edges.parquet) on one
machine without Spark: pyarrow + scipy.sparse.csgraph (the floor) or networkx (the reference the tests
use). Prints a JSON line with the load (read + build) and components times, kept apart."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def _seconds(since: float) -> float:
    return round(time.perf_counter() - since, 2)


def label_sum(labels: np.ndarray) -> int:
    """Sum of int64 labels without overflow (as the Spark jobs compute it in decimal)."""
    return int(np.sum(labels >> 32)) * 2**32 + int(np.sum(labels & 0xFFFFFFFF))


def read(graph: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nodes = pq.read_table(graph / "nodes.parquet", columns=["node"]).column("node").to_numpy()
    edges = pq.read_table(graph / "edges.parquet", columns=["src", "dst"])
    return nodes, edges.column("src").to_numpy(), edges.column("dst").to_numpy()


def with_scipy(graph: Path) -> dict:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    t0 = time.perf_counter()
    nodes, src, dst = read(graph)
    read_s = _seconds(t0)
    t = time.perf_counter()
    # Dense codes 0..n-1: the export guarantees node ids are unique and cover every edge end.
    order = np.argsort(nodes, kind="stable")
    ordered = nodes[order]
    i, j = order[np.searchsorted(ordered, src)], order[np.searchsorted(ordered, dst)]
    n = len(nodes)
    matrix = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n)).tocsr()
    build_s = _seconds(t)
    t = time.perf_counter()
    count, labels = connected_components(matrix, directed=False)
    components_s = _seconds(t)
    smallest = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(smallest, labels, nodes)
    return {"engine": "scipy", "read_s": read_s, "build_s": build_s, "load_s": round(read_s + build_s, 2),
            "components_s": components_s, "total_s": _seconds(t0), "nodes": n, "edges": len(src),
            "components": int(count), "label_sum": label_sum(smallest[labels])}


def with_networkx(graph: Path) -> dict:
    import networkx as nx

    t0 = time.perf_counter()
    nodes, src, dst = read(graph)
    g = nx.Graph()
    g.add_nodes_from(nodes.tolist())
    g.add_edges_from(zip(src.tolist(), dst.tolist(), strict=True))
    load_s = _seconds(t0)
    t = time.perf_counter()
    parts = list(nx.connected_components(g))
    components_s = _seconds(t)
    total = sum(min(p) * len(p) for p in parts)
    return {"engine": "networkx", "load_s": load_s, "components_s": components_s, "total_s": _seconds(t0),
            "nodes": g.number_of_nodes(), "edges": g.number_of_edges(), "components": len(parts), "label_sum": total}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=["scipy", "networkx"], required=True)
    ap.add_argument("--graph", type=Path, required=True, help="folder holding nodes.parquet and edges.parquet")
    a = ap.parse_args()
    print(json.dumps((with_scipy if a.engine == "scipy" else with_networkx)(a.graph)))


if __name__ == "__main__":
    main()
