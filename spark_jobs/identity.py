"""One-ID rules against over-merging, as DataFrame transforms over silver_identifiers / silver_id_links
(blocked values, hubs) and the edges they leave; no I/O (the identity stage wires them)."""

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


def hub_identifiers(links: DataFrame, cfg: IdentityConfig) -> DataFrame:
    """(id_type, id_value, rule, strong_links) of values linked to more than `hub_max_strong` distinct
    strong identifiers (e.g. a clerk's phone on many members' orders): they link none of them."""
    both = links.select(
        F.col("src_type").alias("id_type"), F.col("src_value").alias("id_value"),
        F.col("dst_type").alias("nbr_type"), F.col("dst_value").alias("nbr_value"),
    ).unionByName(links.select(
        F.col("dst_type").alias("id_type"), F.col("dst_value").alias("id_value"),
        F.col("src_type").alias("nbr_type"), F.col("src_value").alias("nbr_value"),
    ))
    strong = list(cfg.strong_types)
    return (
        both.where(F.col("nbr_type").isin(strong))
        .groupBy("id_type", "id_value")
        .agg(F.countDistinct("nbr_type", "nbr_value").alias("strong_links"))
        .where(F.col("strong_links") > cfg.hub_max_strong)
        .select("id_type", "id_value", F.lit(f"hub:>{cfg.hub_max_strong}_strong").alias("rule"), "strong_links")
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
