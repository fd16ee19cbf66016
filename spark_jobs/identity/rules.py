"""One-ID rules against over-merging, as DataFrame transforms over silver_identifiers / silver_id_links:
blocked values, hubs and per-person limits; no I/O (the identity stage wires them)."""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from spark_jobs.config import BlocklistConfig, IdentityConfig

_REPEATED_PHONE = r"^\+\d{1,3}(0+|1+|2+|3+|4+|5+|6+|7+|8+|9+)$"  # country code, then one digit repeated


def _matches(id_type: Column, id_value: Column, blocklist: BlocklistConfig) -> Column:
    """The name of the first blocklist rule that `id_value` of `id_type` breaks, or NULL."""
    rules: list[Column] = []
    for t, values in blocklist.exact.items():
        if not values:
            continue
        hit = id_value.isin(list(values)) if t != "*" else F.lower(id_value).isin([v.lower() for v in values])
        rules.append(F.when(hit if t == "*" else (id_type == t) & hit, F.lit(f"blocklist_exact:{t}")))
    for t, patterns in blocklist.regex.items():
        for p in patterns:
            hit = id_value.rlike(p)
            rules.append(F.when(hit if t == "*" else (id_type == t) & hit, F.lit(f"blocklist_regex:{t}:{p}")))
    for t in blocklist.repeated_digits:
        rules.append(F.when((id_type == t) & id_value.rlike(_REPEATED_PHONE), F.lit(f"blocklist_repeated_digits:{t}")))
    return F.coalesce(*rules) if rules else F.lit(None).cast("string")


def blocked_identifiers(identifiers: DataFrame, blocklist: BlocklistConfig) -> DataFrame:
    """Distinct (id_type, id_value, rule) of identifiers the blocklist removes."""
    return (
        identifiers.select("id_type", "id_value").distinct()
        .withColumn("rule", _matches(F.col("id_type"), F.col("id_value"), blocklist))
        .where(F.col("rule").isNotNull())
    )


def per_type_limit(id_type: Column, limits: dict[str, int], default: int | None = None) -> Column:
    """The limit of each row's id type (`default`, or NULL, for types without one)."""
    if not limits:
        return F.lit(default).cast("long")
    col = None
    for t, n in limits.items():  # one flat CASE (Sail plans nested ELSE-CASEs exponentially)
        col = F.when(id_type == t, F.lit(n)) if col is None else col.when(id_type == t, F.lit(n))
    return col.otherwise(F.lit(default).cast("long")).cast("long")


def hub_identifiers(links: DataFrame, cfg: IdentityConfig) -> DataFrame:
    """(id_type, id_value, rule, strong_links) of values linked to more than `hub_max_strong` distinct
    strong identifiers of one type (a clerk's phone on many members' orders, a family tablet two
    accounts sign in on): they link none of them. A person's own login and unionid are two types."""
    both = links.select(
        F.col("src_type").alias("id_type"), F.col("src_value").alias("id_value"),
        F.col("dst_type").alias("nbr_type"), F.col("dst_value").alias("nbr_value"),
    ).unionByName(links.select(
        F.col("dst_type").alias("id_type"), F.col("dst_value").alias("id_value"),
        F.col("src_type").alias("nbr_type"), F.col("src_value").alias("nbr_value"),
    ))
    strong = list(cfg.strong_types)
    limit = per_type_limit(F.col("id_type"), cfg.hub_max_strong_by_type, cfg.hub_max_strong)
    return (
        both.where(F.col("nbr_type").isin(strong))
        .groupBy("id_type", "id_value", "nbr_type")
        .agg(F.countDistinct("nbr_value").alias("n"))
        .groupBy("id_type", "id_value")
        .agg(F.max("n").alias("strong_links"))
        .where(F.col("strong_links") > limit)
        .select("id_type", "id_value", F.concat(F.lit("hub:>"), limit.cast("string"), F.lit("_strong")).alias("rule"),
                "strong_links")
    )


def usable_links(links: DataFrame, removed: DataFrame) -> DataFrame:
    """Links whose two ends both survive the rules (`removed`: id_type, id_value)."""
    gone = removed.select("id_type", "id_value").distinct()
    keep = links
    for side in ("src", "dst"):
        keep = keep.join(
            gone.withColumnRenamed("id_type", f"{side}_type").withColumnRenamed("id_value", f"{side}_value"),
            on=[f"{side}_type", f"{side}_value"], how="left_anti",
        )
    return keep


def removed_values(*audits: DataFrame) -> DataFrame:
    """Union of rule outputs as (id_type, id_value, rule), first rule per value kept."""
    frames = [a.select("id_type", "id_value", "rule") for a in audits]
    union = reduce(DataFrame.unionByName, frames)
    return union.groupBy("id_type", "id_value").agg(F.min("rule").alias("rule"))



CONTACT_RULE = "contact_only:joins_two_verified_people"


def _greedy_parts(limits: dict[str, int], rank: dict[str, int], evidence: bool):
    """A pandas function for applyInPandas over one component's edges: re-add links strongest first
    with union-find; a link whose union would hold more identifiers of a type than its limit is cut,
    and (with `evidence`) so is a contact-only link (tier 1) that would join two parts that each hold
    an anchor (a verified strong identifier). Order: learned merges (tier -1, which count their two
    identifiers as one), verified/binding links (0), contact links (1); then the weaker end's type
    rank, more records, older. Returns (node, part, other, rule) rows: part = the smallest node of the
    node's part; cut links as (src, NULL, dst, rule)."""
    import pandas as pd

    def parts(pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = pdf.assign(
            strength=[max(rank[a], rank[b]) for a, b in zip(pdf["src_type"], pdf["dst_type"], strict=True)]
        ).sort_values(["tier", "strength", "records", "first_seen", "src", "dst"],
                      ascending=[True, True, False, True, True, True])
        parent: dict[int, int] = {}
        counts: dict[int, dict[str, int]] = {}
        anchored: dict[int, bool] = {}

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for side in ("src", "dst"):
            for node, t, a in zip(pdf[side], pdf[f"{side}_type"], pdf[f"{side}_anchor"], strict=True):
                if node not in parent:
                    parent[node], counts[node], anchored[node] = node, {t: 1}, bool(a)
        cut_src, cut_dst, cut_rule = [], [], []
        for a, b, tier, t in zip(pdf["src"], pdf["dst"], pdf["tier"], pdf["src_type"], strict=True):
            ra, rb = find(a), find(b)
            if ra == rb:
                continue
            if evidence and tier == 1 and anchored[ra] and anchored[rb]:
                cut_src.append(a), cut_dst.append(b), cut_rule.append(CONTACT_RULE)
                continue
            merged = dict(counts[ra])
            for k, n in counts[rb].items():
                merged[k] = merged.get(k, 0) + n
            if tier == -1:  # a learned merge: two memberships of one person count as one
                merged[t] -= 1
            broken = sorted(k for k, n in merged.items() if k in limits and n > limits[k])
            if broken:
                cut_src.append(a), cut_dst.append(b), cut_rule.append(f"limit:{broken[0]}>{limits[broken[0]]}")
                continue
            root, child = (ra, rb) if ra < rb else (rb, ra)
            parent[child], counts[root] = root, merged
            anchored[root] = anchored[ra] or anchored[rb]
            counts.pop(child)
        nodes = list(parent)
        roots = [find(x) for x in nodes]
        smallest: dict[int, int] = {}
        for x, r in zip(nodes, roots, strict=True):
            smallest[r] = min(smallest.get(r, x), x)
        return pd.concat([
            pd.DataFrame({"node": nodes, "part": [smallest[r] for r in roots], "other": None, "rule": None}),
            pd.DataFrame({"node": cut_src, "part": None, "other": cut_dst, "rule": cut_rule}),
        ]).astype({"node": "int64", "part": "Int64", "other": "Int64", "rule": "object"})

    return parts


def _greedy_partitions(limits: dict[str, int], rank: dict[str, int], evidence: bool):
    """mapInArrow: _greedy_parts over every edge of a partition at once. Components are disjoint and
    the order is per edge, so one union-find over all of them in that order rebuilds each component as
    it would alone, without a pandas call per component (thousands of small groups were most of the
    stage's time)."""
    parts = _greedy_parts(limits, rank, evidence)

    def run(batches):
        import pyarrow as pa

        batches = [b for b in batches if b.num_rows]
        if not batches:
            return
        out = parts(pa.Table.from_batches(batches).to_pandas())
        schema = pa.schema([("node", pa.int64()), ("part", pa.int64()), ("other", pa.int64()), ("rule", pa.string())])
        yield from pa.Table.from_pandas(out, schema=schema, preserve_index=False).to_batches()

    return run


def conflicted_components(members: DataFrame) -> DataFrame:
    """(component) of components holding anchors of two or more cores: people the verified and
    binding links keep apart that contact-only links join. `members`: component, core, anchor."""
    return (
        members.where(F.col("anchor")).groupBy("component").agg(F.countDistinct("core").alias("cores"))
        .where(F.col("cores") > 1).select("component")
    )


def enforce_limits(members: DataFrame, edges: DataFrame, cfg: IdentityConfig, conflicted: DataFrame | None = None,
                   merges: DataFrame | None = None, stage=None) -> tuple[DataFrame, DataFrame] | None:
    """Per-person limits and the evidence rule. `members`: node, id_type, component, anchor; `edges`:
    src, dst (nodes), src_type, dst_type, records, first_seen, rank (0 contact, 1 binding, 2 verified);
    `conflicted`: components contact links join across anchors (conflicted_components); `merges`:
    src, dst node pairs the learned tie-break merges. Components holding more identifiers of a type
    than `cfg.limits` allows, or conflicted, are rebuilt from their links (_greedy_parts). Returns
    (node, component) for the nodes of rebuilt components and the cut links (src, dst, rule), or None
    when no component needs it. `stage(name, df)` materialises the rebuilt parts, which both outputs read."""
    if "rank" not in edges.columns:  # callers without evidence: every link verified
        edges = edges.withColumn("rank", F.lit(2))
    if "anchor" not in members.columns:
        members = members.withColumn("anchor", F.lit(False))
    over = None
    if cfg.limits:
        over = (
            members.groupBy("component", "id_type").agg(F.count(F.lit(1)).alias("n"))
            .where(F.col("n") > per_type_limit(F.col("id_type"), cfg.limits))
            .select("component").distinct()
        )
    if conflicted is not None:
        over = conflicted if over is None else over.unionByName(conflicted).distinct()
    if over is None or over.limit(1).count() == 0:
        return None
    comp = members.select(F.col("node").alias("src"), "component").join(over, "component")
    anchor = members.select("node", "anchor")
    rank = {t: i for i, t in enumerate(cfg.priority)}
    links = edges.select("src", "dst", "src_type", "dst_type", "records", "first_seen",
                         F.when(F.col("rank") == 0, 1).otherwise(0).alias("tier"))
    if merges is not None:
        types = members.select(F.col("node").alias("src"), F.col("id_type").alias("src_type"))
        links = links.unionByName(
            merges.join(types, "src").select("src", "dst", "src_type", F.col("src_type").alias("dst_type"),
                                              F.lit(0).cast("long").alias("records"),
                                              F.lit(None).cast("timestamp").alias("first_seen"), F.lit(-1).alias("tier")))
    result = (
        links.join(comp, "src")
        .join(anchor.select(F.col("node").alias("src"), F.col("anchor").alias("src_anchor")), "src")
        .join(anchor.select(F.col("node").alias("dst"), F.col("anchor").alias("dst_anchor")), "dst")
        .select("component", "src", "dst", "src_type", "dst_type", "records", "tier", "src_anchor", "dst_anchor",
                F.coalesce(F.unix_timestamp("first_seen"), F.lit(0)).alias("first_seen"))
        .repartition(2, "component")  # a component's edges in one partition
        .mapInArrow(_greedy_partitions(dict(cfg.limits), rank, conflicted is not None),
                    "node long, part long, other long, rule string")
    )
    if stage is not None:
        result = stage("rebuilt", result)
    parts = result.where(F.col("part").isNotNull()).select("node", F.col("part").alias("component"))
    cuts = result.where(F.col("rule").isNotNull()).select(F.col("node").alias("src"), F.col("other").alias("dst"), "rule")
    return parts, cuts
