// Benchmark job: GraphX connectedComponents over the bare identity graph (nodes.parquet, edges.parquet,
// long ids), run by the pyspark wheel's spark-shell with -i. Reads BENCH_NODES and BENCH_EDGES; prints one
// JSON line of timings and figures, then exits (a failure exits 1 instead of dropping into the REPL).
import org.apache.spark.graphx.{Edge, Graph}

try {
  val t0 = System.nanoTime()
  def secs(from: Long): Double = math.round((System.nanoTime() - from) / 1e7) / 100.0
  val vertices = spark.read.parquet(sys.env("BENCH_NODES")).select("node").rdd.map(r => (r.getLong(0), 0L))
  val edges = spark.read.parquet(sys.env("BENCH_EDGES")).select("src", "dst").rdd.map(r => Edge(r.getLong(0), r.getLong(1), 0))
  // Graph() caches its vertex and edge RDDs: counting them materialises the load.
  val graph = Graph(vertices, edges, 0L)
  val nodeCount = graph.vertices.count()
  val edgeCount = graph.edges.count()
  val loadS = secs(t0)
  val t1 = System.nanoTime()
  // Label = the smallest vertex id of the component; the label sum (as hi/lo halves, no overflow)
  // checks that every engine found the same partition, not only the same number of parts.
  val labels = graph.connectedComponents().vertices.map(_._2).cache()
  val components = labels.distinct().count()
  val (hi, lo) = labels.map(l => (l >> 32, l & 0xffffffffL)).fold((0L, 0L))((a, b) => (a._1 + b._1, a._2 + b._2))
  val componentsS = secs(t1)
  val labelSum = BigInt(hi) * (BigInt(1) << 32) + BigInt(lo)
  println(s"""{"engine": "graphx", "load_s": $loadS, "components_s": $componentsS, "total_s": ${secs(t0)}, """ +
    s""""nodes": $nodeCount, "edges": $edgeCount, "components": $components, "label_sum": $labelSum}""")
  System.exit(0)
} catch {
  case e: Throwable =>
    e.printStackTrace()
    System.exit(1)
}
