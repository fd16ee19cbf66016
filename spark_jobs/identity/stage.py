"""The identity stage: the rules and connected components over silver identifiers and links up to a
batch, stable person ids, and the gold_id_map / gold_id_dropped / gold_id_changes snapshots."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from spark_jobs.config import BlocklistConfig, IdentityConfig
from spark_jobs.identity.evidence import (
    anchors,
    boundary_pairs,
    ownership_boundaries,
    ownership_periods,
    period_window,
    strong_sightings,
    with_epochs,
    with_strength,
)
from spark_jobs.identity.rules import (
    blocked_identifiers,
    conflicted_components,
    enforce_limits,
    hub_identifiers,
    removed_values,
    usable_links,
)
from spark_jobs.identity.tiebreak import Matcher, boundary_decisions, learned_merges, one_per_pair
from spark_jobs.standardise import strength_rank
from spark_jobs.tables import Lakehouse


def _no_staging(name: str, df: DataFrame) -> DataFrame:
    return df


def _identifier_key() -> Column:
    """`type:value`, and `#<period>` for a re-issued value's later ownership periods."""
    key = F.concat("id_type", F.lit(":"), "id_value")
    if_epoch = F.concat(key, F.lit("#"), F.col("epoch").cast("string"))
    return F.when(F.col("epoch") > 0, if_epoch).otherwise(key)


def assign_person_ids(current: DataFrame, previous: DataFrame, as_of,
                      stage: Callable[[str, DataFrame], DataFrame] | None = None) -> tuple[DataFrame, DataFrame]:
    """Stable person ids. `current`: id_type, id_value, component (this run's components);
    `previous`: id_type, id_value, person_id (the last published map). A component keeps the previous
    person id it shares most identifiers with, when it is also that person's largest part (so on a
    merge the larger person's id survives, on a split the largest part keeps it); any other
    component gets a new opaque id derived from its smallest identifier and the batch date.
    Returns (map: id_type, id_value, component, person_id) and (changes: change, person_id,
    other_person_id, identifiers)."""
    if "epoch" not in current.columns:  # callers without ownership periods
        current = current.withColumn("epoch", F.lit(0))
    overlap = (
        current.join(previous.select("id_type", "id_value", "person_id"), ["id_type", "id_value"])
        .groupBy("component", "person_id").agg(F.count(F.lit(1)).alias("n"))
    )
    by_component = Window.partitionBy("component").orderBy(F.col("n").desc(), F.col("person_id"))
    by_person = Window.partitionBy("person_id").orderBy(F.col("n").desc(), F.col("component"))
    ranked = overlap.withColumn("rc", F.row_number().over(by_component)).withColumn("rp", F.row_number().over(by_person))
    ranked = (stage or _no_staging)("ranked", ranked)  # read by both outputs
    kept = ranked.where((F.col("rc") == 1) & (F.col("rp") == 1)).select("component", F.col("person_id").alias("kept_id"))
    components = current.groupBy("component").agg(
        F.min(_identifier_key()).alias("anchor"), F.count(F.lit(1)).alias("size")
    )
    new_id = F.concat(F.lit("p_"), F.substring(F.sha2(F.concat(F.lit(str(as_of)), F.lit("|"), F.col("anchor")), 256), 1, 20))
    ids = components.join(kept, "component", "left").select(
        "component", "size", F.coalesce("kept_id", new_id).alias("new_person_id"), F.col("kept_id").isNull().alias("is_new")
    )
    id_map = current.join(ids.select("component", F.col("new_person_id").alias("person_id")), "component")

    moved = ranked.join(ids.select("component", "new_person_id"), "component").where(F.col("person_id") != F.col("new_person_id"))
    merges = moved.where(F.col("rp") == 1).select(
        F.lit("merge").alias("change"), F.col("new_person_id").alias("person_id"), F.col("person_id").alias("other_person_id"),
        F.col("n").alias("identifiers"),
    )
    splits = moved.where(F.col("rp") > 1).select(
        F.lit("split").alias("change"), F.col("new_person_id").alias("person_id"), F.col("person_id").alias("other_person_id"),
        F.col("n").alias("identifiers"),
    )
    fresh = ids.join(ranked.select("component").distinct(), "component", "left_anti").select(
        F.lit("new").alias("change"), F.col("new_person_id").alias("person_id"),
        F.lit(None).cast("string").alias("other_person_id"), F.col("size").alias("identifiers"),
    )
    return id_map, merges.unionByName(splits).unionByName(fresh)


def _open_or(agg, col: str) -> Column:
    """`agg` of a window end over rows, NULL (open) when any row's is open."""
    return F.when(F.max(F.col(col).isNull().cast("int")) == 1, F.lit(None).cast("timestamp")).otherwise(agg(col))


def owner_windows(id_map: DataFrame) -> DataFrame:
    """gold_id_map rows from the person of every ownership period: one row per identifier and person,
    its window the union of that person's periods (NULL ends are open)."""
    return id_map.groupBy("id_type", "id_value", "person_id").agg(
        F.min("first_seen").alias("first_seen"), F.max("last_seen").alias("last_seen"),
        _open_or(F.min, "valid_from").alias("valid_from"), _open_or(F.max, "valid_to").alias("valid_to"),
    )


def decisions_or_empty(lh: Lakehouse, decisions: DataFrame | None) -> DataFrame:
    """The tie-break's decisions, or an empty frame of the contract's columns."""
    if decisions is not None:
        return decisions
    from spark_jobs.identity.tiebreak import DECISION_COLUMNS

    return lh.read_or_empty("gold_id_decisions").where(F.lit(False)).select(*DECISION_COLUMNS)


def canonical_identifier(id_type: str, raw: str, phone_region: str = "CN") -> str | None:
    """The canonical form the pipeline stores for `raw` of `id_type` (for look-ups by any identifier)."""
    from spark_jobs.normalise import canonical_device_id, canonical_email, canonical_phone

    if id_type == "phone":
        return canonical_phone(raw, phone_region)
    if id_type == "email":
        return canonical_email(raw)
    if id_type == "device_id":
        return canonical_device_id(raw)
    return raw.strip() or None


class IdentityError(RuntimeError):
    """The identity stage cannot resolve the graph safely (the message says why)."""


def _node_id(id_type: Column, id_value: Column, epoch: Column | None = None) -> Column:
    """A node's long id: the identifier's hash, and for a re-issued value's later ownership periods
    the hash with the period."""
    if epoch is None:
        return F.xxhash64(id_type, id_value)
    return F.when(epoch == 0, F.xxhash64(id_type, id_value)).otherwise(F.xxhash64(id_type, id_value, epoch))


def _periods(links: DataFrame, cfg: IdentityConfig, stage: Callable[[str, DataFrame], DataFrame],
             matcher: Matcher | None) -> tuple[DataFrame | None, DataFrame | None]:
    """(periods, decisions): the ownership periods of re-issued values (evidence.ownership_periods),
    without the boundaries the tie-break finds one person's two memberships across, and its
    decisions on them; (None, None) when time-aware ownership is off."""
    if not cfg.time_aware_ownership:
        return None, None
    sightings = stage("sightings", strong_sightings(links, cfg))
    boundaries = stage("boundaries", ownership_boundaries(sightings))
    decided = boundary_decisions(matcher, boundary_pairs(sightings, boundaries), stage)
    if decided is not None:
        same = decided.where(F.col("decision") == "merge").select(
            F.col("value_type").alias("id_type"), F.col("value").alias("id_value"), "boundary")
        boundaries = boundaries.join(same, ["id_type", "id_value", "boundary"], "left_anti")
        decided = one_per_pair(decided)
    return stage("periods", ownership_periods(boundaries)), decided


def build_graph(identifiers: DataFrame, links: DataFrame, cfg: IdentityConfig,
                stage: Callable[[str, DataFrame], DataFrame] = _no_staging,
                matcher: Matcher | None = None) -> tuple[DataFrame, DataFrame, DataFrame, DataFrame | None]:
    """(nodes, usable links, dropped audit, tie-break decisions on ownership boundaries) from all
    silver identifiers and links up to the batch.
    nodes: id_type, id_value, epoch, first_seen, last_seen, verified, valid_from, valid_to (one node
    per ownership period of a re-issued value, else epoch 0 with an open window); links: the
    gold-side pairs src_/dst_ type, value, epoch with records, first_seen and rank (the strongest
    evidence seen: 0 contact, 1 binding, 2 verified); dropped: the gold_id_dropped columns but as_of.
    `stage(name, df)` materialises what several outputs read (Lakehouse.stage in the stage)."""
    identifiers, links = with_strength(identifiers), with_strength(links)
    if "last_seen" not in links.columns:  # hand-made links: one sighting each
        links = links.withColumn("last_seen", F.col("first_seen"))
    periods, decisions = _periods(links, cfg, stage, matcher)
    if periods is not None:
        identifiers = with_epochs(identifiers, periods, "id_type", "id_value", "first_seen", "epoch")
        links = with_epochs(links, periods, "src_type", "src_value", "first_seen", "src_epoch")
        links = with_epochs(links, periods, "dst_type", "dst_value", "first_seen", "dst_epoch")
    else:
        identifiers = identifiers.withColumn("epoch", F.lit(0))
        links = links.withColumn("src_epoch", F.lit(0)).withColumn("dst_epoch", F.lit(0))
    nodes = identifiers.groupBy("id_type", "id_value", "epoch").agg(
        F.min("first_seen").alias("first_seen"), F.max("last_seen").alias("last_seen"),
        F.max((F.col("strength") == "verified").cast("int")).alias("verified"))
    if periods is not None:
        windowed = nodes.join(F.broadcast(periods), ["id_type", "id_value"], "left")
        valid_from, valid_to = period_window(F.col("epoch"))
        nodes = windowed.select(*nodes.columns, valid_from.alias("valid_from"), valid_to.alias("valid_to"))
    else:
        nodes = nodes.select("*", F.lit(None).cast("timestamp").alias("valid_from"),
                             F.lit(None).cast("timestamp").alias("valid_to"))
    nodes = nodes.withColumn("verified", F.col("verified") == 1)
    pairs = stage("pairs", links.groupBy("src_type", "src_value", "src_epoch", "dst_type", "dst_value", "dst_epoch").agg(
        F.sum("records").alias("records"), F.min("first_seen").alias("first_seen"),
        F.max(strength_rank(F.col("strength"))).alias("rank")))
    blocked = blocked_identifiers(nodes, cfg.blocklist)
    # Hubs are counted without blocked values: a device whose owner once sent login "unknown" is no hub.
    hubs = hub_identifiers(usable_links(pairs, blocked), cfg)
    removed = stage("removed", removed_values(blocked, hubs))
    kept_nodes = nodes.join(removed.select("id_type", "id_value"), ["id_type", "id_value"], "left_anti")
    value_audit = removed.select(
        "id_type", "id_value", F.lit(None).cast("string").alias("other_type"), F.lit(None).cast("string").alias("other_value"),
        "rule", F.lit(None).cast("string").alias("detail"),
    )
    link_audit = []
    for side, other in (("src", "dst"), ("dst", "src")):
        link_audit.append(
            pairs.join(removed.withColumnRenamed("id_type", f"{side}_type").withColumnRenamed("id_value", f"{side}_value"),
                       [f"{side}_type", f"{side}_value"])
            .select(F.col(f"{side}_type").alias("id_type"), F.col(f"{side}_value").alias("id_value"),
                    F.col(f"{other}_type").alias("other_type"), F.col(f"{other}_value").alias("other_value"),
                    F.concat(F.lit("link_dropped:"), F.col("rule")).alias("rule"), F.lit(None).cast("string").alias("detail"))
            .distinct()  # one row per pair, over its ownership periods
        )
    dropped = reduce(DataFrame.unionByName, [value_audit, *link_audit])
    return kept_nodes, usable_links(pairs, removed), dropped, decisions


@dataclass(frozen=True)
class Resolution:
    """What the rules and the graph make of every identifier up to a batch (nothing published)."""

    members: DataFrame  # id_type, id_value, epoch, component, first_seen, last_seen, valid_from, valid_to (staged)
    dropped: DataFrame  # gold_id_dropped columns but as_of
    decisions: DataFrame | None  # gold_id_decisions columns but as_of (None: no learned tie-break ran)
    rounds: int
    limit_cuts: int


def _components(nodes: DataFrame, edges: DataFrame, lh: Lakehouse, key: str, cfg: IdentityConfig):
    from spark_jobs.identity.graph import connected_components, graphframes_components

    if cfg.algorithm == "graphframes":
        return graphframes_components(nodes, edges, lh)
    return connected_components(nodes, edges, lh, key, max_rounds=cfg.max_rounds, local_edges=cfg.local_union_find_edges)


def _cut_detail() -> Column:
    return F.when(F.col("rule").startswith("contact_only"),
                  F.lit("link cut: a contact-only link would join two people who each hold a verified identifier")
                  ).otherwise(F.lit("link cut: the person would exceed the limit"))


def resolve(lh: Lakehouse, cfg: IdentityConfig, identifiers: DataFrame, links: DataFrame, key: str,
            contacts: DataFrame | None = None) -> Resolution:
    """Apply the rules (blocklist, hubs, ownership periods, evidence, per-person limits, the learned
    tie-break over `contacts`, silver_contacts) and connected components to silver identifiers and
    links; stage the result under `key` (the caller unstages it)."""
    matcher = Matcher(lh, cfg, contacts) if cfg.matching.enabled and contacts is not None else None
    nodes, edges, dropped, decided = build_graph(identifiers, links, cfg, lambda name, df: lh.stage(f"{key}/{name}", df),
                                                 matcher)
    nodes = lh.stage(f"{key}/nodes", nodes.withColumn("node", _node_id(F.col("id_type"), F.col("id_value"), F.col("epoch")))
                     .withColumn("anchor", anchors(cfg)))
    distinct = nodes.agg(F.count(F.lit(1)).alias("n"), F.countDistinct("node").alias("d")).collect()[0]
    if distinct["n"] != distinct["d"]:
        raise IdentityError(f"{distinct['n'] - distinct['d']} node id collisions in xxhash64: cannot resolve safely")
    typed = lh.stage(f"{key}/edges", edges.select(
        _node_id(F.col("src_type"), F.col("src_value"), F.col("src_epoch")).alias("src"),
        _node_id(F.col("dst_type"), F.col("dst_value"), F.col("dst_epoch")).alias("dst"),
        "src_type", "dst_type", "records", "first_seen", "rank",
    ))
    cc = _components(nodes, typed.select("src", "dst"), lh, f"{key}/cc", cfg)
    member_cols = ["node", "id_type", "id_value", "epoch", "component", "anchor", "first_seen", "last_seen",
                   "valid_from", "valid_to"]
    conflicted = None
    if cfg.contact_joins_verified:
        members = lh.stage(f"{key}/members", nodes.join(cc.assignment, "node").select(*member_cols))
    else:
        # Cores: the parts verified and binding links make; contact links may attach to one anchored core only.
        cores = _components(nodes, typed.where(F.col("rank") > 0).select("src", "dst"), lh, f"{key}/cores", cfg)
        members = lh.stage(f"{key}/members", nodes.join(cc.assignment, "node")
                           .join(cores.assignment.withColumnRenamed("component", "core"), "node").select(*member_cols, "core"))
        conflicted = conflicted_components(members)
    decisions, merges = learned_merges(matcher, cfg, members, typed, f"{key}/matching")
    if decided is not None or decisions is not None:
        decisions = one_per_pair(reduce(DataFrame.unionByName, [d for d in (decided, decisions) if d is not None]))
    limited = enforce_limits(members, typed, cfg, conflicted, merges, lambda name, df: lh.stage(f"{key}/{name}", df))
    cut_count = 0
    if limited is not None:
        parts, cuts = limited
        cuts = lh.stage(f"{key}/cuts", cuts)
        parts = lh.stage(f"{key}/parts", parts)
        cut_count = cuts.count()
        members = lh.stage(f"{key}/limited", members.join(parts.withColumnRenamed("component", "part"), "node", "left")
                           .withColumn("component", F.coalesce("part", "component")).drop("part"))
        ends = nodes.select("node", "id_type", "id_value")
        audit = (
            cuts.join(ends.withColumnRenamed("node", "src"), "src")
            .join(ends.select(F.col("node").alias("dst"), F.col("id_type").alias("other_type"),
                              F.col("id_value").alias("other_value")), "dst")
            .select("id_type", "id_value", "other_type", "other_value", "rule", _cut_detail().alias("detail"))
            .dropDuplicates(["id_type", "id_value", "other_type", "other_value"])
        )
        dropped = dropped.unionByName(audit)
    out = members.select("id_type", "id_value", "epoch", "component", "first_seen", "last_seen", "valid_from", "valid_to")
    return Resolution(out, dropped, decisions, cc.rounds, cut_count)


ABLATIONS = ("all_rules", "no_blocklist", "no_hubs", "no_ownership_periods", "no_evidence", "no_limits",
             "no_tiebreak", "no_rules")


def without(cfg: IdentityConfig, variant: str) -> IdentityConfig:
    """`cfg` with one rule (or all of them) switched off, for the ablation in `cdp eval identity`."""
    if variant not in ABLATIONS:
        raise ValueError(f"unknown ablation {variant!r}; one of {list(ABLATIONS)}")
    off = {
        "blocklist": {"blocklist": BlocklistConfig(exact={}, regex={}, repeated_digits=())},
        "hubs": {"hub_max_strong": 2**31 - 1, "hub_max_strong_by_type": {}},
        "ownership_periods": {"time_aware_ownership": False},
        "evidence": {"contact_joins_verified": True},
        "limits": {"limits": {}},
        "tiebreak": {"matching": cfg.matching.model_copy(update={"enabled": False})},
    }
    update: dict = {}
    for rule, changes in off.items():
        if variant in (f"no_{rule}", "no_rules"):
            update |= changes
    return cfg.model_copy(update=update)


def ablation(lh: Lakehouse, cfg: IdentityConfig, batch_date: dt.date, variants=ABLATIONS):
    """Yield (variant, pandas mapping id_type, id_value, person_id) for each rule switched off in turn,
    resolved from silver up to `batch_date`; publishes nothing."""
    upto = F.col("_batch_date") <= F.lit(batch_date)
    identifiers = lh.read("silver_identifiers").where(upto)
    links = lh.read("silver_id_links").where(upto)
    contacts = lh.read_or_empty("silver_contacts").where(upto)
    for variant in variants:
        key = f"ablation/{batch_date.isoformat()}/{variant}"
        try:
            res = resolve(lh, without(cfg, variant), identifiers, links, key, contacts)
            current = res.members.where(F.col("valid_to").isNull())  # a re-issued value: its current owner
            yield variant, current.select("id_type", "id_value", F.col("component").cast("string").alias("person_id")).toPandas()
        finally:
            lh.unstage(key)


def run(lh: Lakehouse, cfg: IdentityConfig, batch_date: dt.date) -> dict:
    """Resolve every identifier seen up to `batch_date` into a person; publish gold_id_map (snapshot
    as of the batch), gold_id_dropped and gold_id_changes; return the stage's figures."""
    upto = F.col("_batch_date") <= F.lit(batch_date)
    identifiers = lh.read_or_empty("silver_identifiers").where(upto)
    links = lh.read_or_empty("silver_id_links").where(upto)
    contacts = lh.read_or_empty("silver_contacts").where(upto)
    key = f"identity/{batch_date.isoformat()}"
    part = {"as_of": batch_date}
    try:
        res = resolve(lh, cfg, identifiers, links, key, contacts)
        current = res.members
        previous_as_of = None
        if lh.exists("gold_id_map"):
            row = lh.read("gold_id_map").where(F.col("as_of") < F.lit(batch_date)).agg(F.max("as_of").alias("m")).collect()[0]
            previous_as_of = row["m"]
        previous = (lh.read("gold_id_map", {"as_of": previous_as_of}) if previous_as_of
                    else lh.read_or_empty("gold_id_map").where(F.lit(False)))
        id_map, changes = assign_person_ids(current, previous, batch_date, lambda name, df: lh.stage(f"{key}/{name}", df))
        id_map = lh.stage(f"{key}/map", id_map)
        lh.write_partition("gold_id_map", owner_windows(id_map).withColumn("as_of", F.lit(batch_date)), part)
        lh.write_partition("gold_id_dropped", res.dropped.withColumn("as_of", F.lit(batch_date)), part)
        lh.write_partition("gold_id_decisions", decisions_or_empty(lh, res.decisions).withColumn("as_of", F.lit(batch_date)),
                           part)
        lh.write_partition("gold_id_changes", changes.select(F.lit(batch_date).alias("as_of"), "*"), part)
    finally:
        lh.unstage(key)
    sizes = lh.read("gold_id_map", part).groupBy("person_id").count()
    stats = sizes.agg(F.count(F.lit(1)).alias("people"), F.max("count").alias("largest"),
                      F.sum(F.when(F.col("count") == 1, 1).otherwise(0)).alias("singletons")).collect()[0]
    rules = lh.read("gold_id_dropped", part).groupBy("rule").count().collect()
    kinds = lh.read("gold_id_changes", part).groupBy("change").count().collect()
    return {
        "identifiers": lh.read("gold_id_map", part).count(),
        "people": stats["people"], "largest_person": stats["largest"] or 0, "singletons": stats["singletons"] or 0,
        "rounds": res.rounds, "limit_cuts": res.limit_cuts,
        "previous_as_of": previous_as_of.isoformat() if previous_as_of else None,
        "dropped": {r["rule"]: r["count"] for r in sorted(rules, key=lambda r: r["rule"])},
        "changes": {r["change"]: r["count"] for r in kinds},
    }
