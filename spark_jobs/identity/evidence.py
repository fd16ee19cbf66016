"""Evidence for One-ID: how strong each link is (from the sources' declarations, carried by silver),
which identifiers anchor a person, and time-aware ownership: an identifier seen with strong
identities in disjoint periods (a phone number re-issued by the carrier) is split into one node per
owner's period. DataFrame transforms only; the identity stage wires them."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from spark_jobs.config import IdentityConfig

# Ownership periods an identifier may be split into (boundaries kept per value); a value re-issued more
# often than this keeps its later owners in the last period (and the hub rule usually removes it first).
MAX_BOUNDARIES = 3


def with_strength(frame: DataFrame) -> DataFrame:
    """`frame` with a `strength` column (tables written before strength was recorded count as verified)."""
    return frame if "strength" in frame.columns else frame.withColumn("strength", F.lit("verified"))


def _ends(links: DataFrame) -> DataFrame:
    """Both orientations of every silver link row: id_type, id_value, nbr_type, nbr_value, strength, first/last seen."""
    cols = ("strength", "first_seen", "last_seen")
    return links.select(
        F.col("src_type").alias("id_type"), F.col("src_value").alias("id_value"),
        F.col("dst_type").alias("nbr_type"), F.col("dst_value").alias("nbr_value"), *cols,
    ).unionByName(links.select(
        F.col("dst_type").alias("id_type"), F.col("dst_value").alias("id_value"),
        F.col("src_type").alias("nbr_type"), F.col("src_value").alias("nbr_value"), *cols,
    ))


def strong_sightings(links: DataFrame, cfg: IdentityConfig) -> DataFrame:
    """(id_type, id_value, nbr_type, nbr_value, start, end): when each identifier of a non-strong type
    was seen with each strong identity (cfg.strong_types) by verified or binding evidence, for the
    values seen with two strong identities of one type (the only ones that can have been re-issued)."""
    strong = list(cfg.strong_types)
    ends = (
        _ends(with_strength(links))
        .where(~F.col("id_type").isin(strong) & F.col("nbr_type").isin(strong) & (F.col("strength") != "contact"))
        .groupBy("id_type", "id_value", "nbr_type", "nbr_value")
        .agg(F.min("first_seen").alias("start"), F.max("last_seen").alias("end"))
    )
    many = ends.groupBy("id_type", "id_value", "nbr_type").agg(F.count(F.lit(1)).alias("n")).where(F.col("n") > 1)
    return ends.join(many.select("id_type", "id_value").distinct(), ["id_type", "id_value"])


def ownership_boundaries(sightings: DataFrame) -> DataFrame:
    """(id_type, id_value, boundary): the times from which a value belongs to a new owner. A boundary
    is a time t at which a strong identity is first seen with the value while no strong identity seen
    before t is seen at or after t (nobody kept the number across t: a person's app account spanning
    two memberships makes them one owner), and some type of strong identity occurs on both sides (a
    membership before and another after, not one person's account replacing their membership).
    `sightings`: strong_sightings."""
    order = Window.partitionBy("id_type", "id_value").orderBy("start", "nbr_type", "nbr_value")
    before = order.rowsBetween(Window.unboundedPreceding, -1)
    after = order.rowsBetween(Window.currentRow, Window.unboundedFollowing)
    gaps = (
        sightings.withColumn("prev_end", F.max("end").over(before))
        .withColumn("types_before", F.collect_set("nbr_type").over(before))
        .withColumn("types_after", F.collect_set("nbr_type").over(after))
    )
    return gaps.where(
        F.col("prev_end").isNotNull() & (F.col("start") > F.col("prev_end"))
        & (F.size(F.array_intersect("types_before", "types_after")) > 0)
    ).select("id_type", "id_value", F.col("start").alias("boundary")).distinct()


def boundary_pairs(sightings: DataFrame, boundaries: DataFrame, id_type: str = "member_id") -> DataFrame:
    """(id_type, id_value, boundary, left_value, right_value): per boundary, the last identity of
    `id_type` seen before it and the first seen after (candidates for the learned tie-break: two
    memberships of one person look like a re-issued number)."""
    s = sightings.where(F.col("nbr_type") == id_type).join(boundaries, ["id_type", "id_value"])
    last_before = Window.partitionBy("id_type", "id_value", "boundary").orderBy(F.col("end").desc(), "nbr_value")
    first_after = Window.partitionBy("id_type", "id_value", "boundary").orderBy("start", "nbr_value")
    left = (s.where(F.col("end") < F.col("boundary")).withColumn("r", F.row_number().over(last_before))
            .where("r = 1").select("id_type", "id_value", "boundary", F.col("nbr_value").alias("left_value")))
    right = (s.where(F.col("start") >= F.col("boundary")).withColumn("r", F.row_number().over(first_after))
             .where("r = 1").select("id_type", "id_value", "boundary", F.col("nbr_value").alias("right_value")))
    return left.join(right, ["id_type", "id_value", "boundary"])


def ownership_periods(boundaries: DataFrame) -> DataFrame:
    """(id_type, id_value, b1, b2, b3): each split value's first MAX_BOUNDARIES boundaries in time order
    (NULL past the last)."""
    by_value = Window.partitionBy("id_type", "id_value").orderBy("boundary")
    ranked = boundaries.select("id_type", "id_value", "boundary").distinct().withColumn("k", F.row_number().over(by_value))
    return ranked.where(F.col("k") <= MAX_BOUNDARIES).groupBy("id_type", "id_value").agg(
        *[F.max(F.when(F.col("k") == k, F.col("boundary"))).alias(f"b{k}") for k in range(1, MAX_BOUNDARIES + 1)]
    )


def epoch_of(ts: Column, prefix: str = "") -> Column:
    """The ownership period (0 = the first owner's) of a sighting at `ts`, given joined columns b1..bK."""
    return sum((F.coalesce((ts >= F.col(f"{prefix}b{k}")).cast("int"), F.lit(0))
                for k in range(1, MAX_BOUNDARIES + 1)), F.lit(0))


def period_window(epoch: Column, prefix: str = "") -> tuple[Column, Column]:
    """(valid_from, valid_to) of ownership period `epoch` from columns b1..bK (NULL = open)."""
    start = F.lit(None).cast("timestamp")
    end = F.lit(None).cast("timestamp")
    for k in range(1, MAX_BOUNDARIES + 1):
        start = F.when(epoch == k, F.col(f"{prefix}b{k}")).otherwise(start)
        end = F.when(epoch == k - 1, F.col(f"{prefix}b{k}")).otherwise(end)
    return start, end


def with_epochs(frame: DataFrame, periods: DataFrame, type_col: str, value_col: str, ts_col: str,
                epoch_col: str) -> DataFrame:
    """`frame` with `epoch_col`: the ownership period of the identifier in (type_col, value_col) when
    it was seen at `ts_col` (0 for identifiers never re-issued)."""
    p = periods.select(F.col("id_type").alias("__t"), F.col("id_value").alias("__v"),
                       *[F.col(f"b{k}").alias(f"__b{k}") for k in range(1, MAX_BOUNDARIES + 1)])
    joined = frame.join(F.broadcast(p), (F.col(type_col) == F.col("__t")) & (F.col(value_col) == F.col("__v")), "left")
    return joined.withColumn(epoch_col, epoch_of(F.col(ts_col), "__")).drop("__t", "__v", *[f"__b{k}" for k in range(1, MAX_BOUNDARIES + 1)])


def anchors(cfg: IdentityConfig) -> Column:
    """Whether a node is an anchor: a strong identifier (cfg.strong_types) seen with verified evidence.
    Two anchored parts are two people unless strong links join them."""
    return F.col("id_type").isin(list(cfg.strong_types)) & F.col("verified")
