"""The learned tie-break inside the identity stage: member ids that the graph joins through one
verified identifier, beyond the per-person limit, are scored by the Fellegi-Sunter matcher
(spark_jobs/identity/matching.py) on their CRM attributes; the pairs above the threshold merge
(two memberships of one person), the others are left to the deterministic limit. Every score is
audited in gold_id_decisions."""

from __future__ import annotations

import logging
import warnings

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from spark_jobs.config import IdentityConfig
from spark_jobs.tables import Lakehouse

log = logging.getLogger(__name__)

MATCH_TYPE = "member_id"
RECORD_COLUMNS = ("member_id", "name", "birthday", "gender", "city", "email")
DECISION_COLUMNS = ("id_type", "id_value", "other_type", "other_value", "match_weight", "match_probability",
                    "decision", "comparisons", "reason")


def candidate_pairs(members: DataFrame, edges: DataFrame, cfg: IdentityConfig) -> DataFrame:
    """(src, dst) member-id node pairs (src < dst) in one component over the member-id limit that
    share a neighbour through verified or binding links (the same phone proven by both memberships).
    `members`: node, id_type, component; `edges`: src, dst, rank."""
    limit = cfg.limits.get(MATCH_TYPE)
    mem = members.where(F.col("id_type") == MATCH_TYPE)
    if limit is not None:
        over = mem.groupBy("component").agg(F.count(F.lit(1)).alias("n")).where(F.col("n") > limit).select("component")
        mem = mem.join(over, "component")
    mem = mem.select("node")
    strong = edges.where(F.col("rank") > 0)
    both = strong.select(F.col("src").alias("m"), F.col("dst").alias("v")).unionByName(
        strong.select(F.col("dst").alias("m"), F.col("src").alias("v")))
    touching = both.join(mem.withColumnRenamed("node", "m"), "m")
    a, b = touching.alias("a"), touching.alias("b")
    return (a.join(b, F.col("a.v") == F.col("b.v")).where(F.col("a.m") < F.col("b.m"))
            .select(F.col("a.m").alias("src"), F.col("b.m").alias("dst")).distinct())


def _latest_members(contacts: DataFrame) -> DataFrame:
    """One CRM record per member id: its newest version."""
    crm = contacts.where(F.col("member_id").isNotNull())
    order = [F.col("updated_at").desc(), *(F.col(c).asc_nulls_last() for c in RECORD_COLUMNS[1:])]
    newest = Window.partitionBy("member_id").orderBy(*order)
    return crm.withColumn("__rn", F.row_number().over(newest)).where("__rn = 1").select(*RECORD_COLUMNS)


def one_per_pair(decisions: DataFrame) -> DataFrame:
    """One decision per unordered pair of identifiers (the smaller value first): a pair can be a
    candidate at several boundaries, or both at a boundary and over the limit. Which row is kept is
    fixed (by reason, then decision and weight), so every engine keeps the same one."""
    lo = F.least("id_value", "other_value")
    hi = F.greatest("id_value", "other_value")
    pair = Window.partitionBy("id_type", "other_type", "__lo", "__hi").orderBy(
        "reason", "decision", F.col("match_weight").desc_nulls_last(), "comparisons")
    return (decisions.withColumn("__lo", lo).withColumn("__hi", hi)
            .withColumn("__rn", F.row_number().over(pair)).where("__rn = 1")
            .withColumn("id_value", F.col("__lo")).withColumn("other_value", F.col("__hi"))
            .select(*DECISION_COLUMNS))


class Matcher:
    """The Fellegi-Sunter matcher over the CRM members of one resolution, trained on first use (a
    sample of cfg.matching.train_sample members plus every member it is asked about)."""

    def __init__(self, lh: Lakehouse, cfg: IdentityConfig, contacts: DataFrame):
        self.lh, self.cfg = lh, cfg
        self.latest = _latest_members(contacts)
        self.model = None
        self.failed: str | None = None

    def _train(self, wanted: list[str]):
        import pandas as pd

        from spark_jobs.identity import matching

        total = self.latest.count()
        # A sample by a hash of the member id, rows in member-id order: the same members and the same
        # model on every engine and every re-run (Spark's sample() and row order are not).
        per_mille = min(1000, -(-self.cfg.matching.train_sample * 1000 // max(total, 1)))
        sample = self.latest.where(F.abs(F.xxhash64("member_id")) % 1000 < per_mille)
        involved = self.latest.where(F.col("member_id").isin(wanted))
        training = (pd.concat([sample.toPandas(), involved.toPandas()]).drop_duplicates("member_id")
                    .sort_values("member_id").reset_index(drop=True))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", matching.MatchingWarning)
                self.model = matching.train(training, max_pairs=2e5)  # u from 200k random pairs: 2 s less than 1M, same m (measured)
            self.trained_on = len(training)
        except matching.MatchingError as e:
            self.failed = str(e)

    def score(self, named, reason: str):
        """`named`: pandas member_id_l, member_id_r (+ any columns kept); returns it with the
        gold_id_decisions columns, or None when the matcher cannot train (the reason is logged)."""
        import pandas as pd

        from spark_jobs.identity import matching

        named = named.drop_duplicates().sort_values(["member_id_l", "member_id_r"]).reset_index(drop=True)
        wanted = sorted(set(named["member_id_l"]) | set(named["member_id_r"]))
        if self.model is None and self.failed is None:
            self._train(wanted)
        if self.model is None:
            log.warning("identity tie-break skipped: %s; %d member pairs are left to the rules", self.failed, len(named))
            return None
        records = self.latest.where(F.col("member_id").isin(wanted)).toPandas().sort_values("member_id")
        known = set(records["member_id"])
        named = named[named["member_id_l"].isin(known) & named["member_id_r"].isin(known)]
        if named.empty:
            return None
        threshold = self.cfg.matching.threshold or self.model.threshold
        scored = matching.score_pairs(self.model, records, named[["member_id_l", "member_id_r"]])
        scored["decision"] = ["merge" if p >= threshold else "keep_apart" for p in scored["match_probability"]]
        scored = scored.merge(named, on=["member_id_l", "member_id_r"])
        log.info("identity tie-break (%s): %d of %d member pairs merged (threshold %.3f, trained on %d members)", reason,
                 int((scored["decision"] == "merge").sum()), len(scored), threshold, self.trained_on)
        return pd.DataFrame({
            "id_type": MATCH_TYPE, "id_value": scored["member_id_l"], "other_type": MATCH_TYPE,
            "other_value": scored["member_id_r"], "match_weight": scored["match_weight"].astype(float),
            "match_probability": scored["match_probability"].astype(float), "decision": scored["decision"],
            "comparisons": scored["comparisons"], "reason": reason,
            **{c: scored[c] for c in named.columns if c not in ("member_id_l", "member_id_r")},
        })


_SCHEMA = ("id_type string, id_value string, other_type string, other_value string, match_weight double, "
           "match_probability double, decision string, comparisons string, reason string")


def boundary_decisions(matcher: Matcher | None, pairs: DataFrame, stage) -> DataFrame | None:
    """The tie-break's decisions on the memberships either side of each ownership boundary
    (evidence.boundary_pairs), staged by `stage(name, df)`: `merge` means one person kept the number across two memberships,
    so the boundary goes. Returns the decisions with the boundary's id_type/id_value/boundary as
    `value_type`, `value`, `boundary`, or None."""
    if matcher is None:
        return None
    named = pairs.select(F.col("left_value").alias("member_id_l"), F.col("right_value").alias("member_id_r"),
                         F.col("id_type").alias("value_type"), F.col("id_value").alias("value"), "boundary").toPandas()
    if named.empty:
        return None
    out = matcher.score(named, "memberships either side of an ownership boundary of one verified identifier")
    if out is None:
        return None
    return stage("boundary_decisions", matcher.lh.spark.createDataFrame(
        out, _SCHEMA + ", value_type string, value string, boundary timestamp"))


def learned_merges(matcher: Matcher | None, cfg: IdentityConfig, members: DataFrame, edges: DataFrame,
                   key: str) -> tuple[DataFrame | None, DataFrame | None]:
    """(decisions, merges): the gold_id_decisions rows (but as_of) of every candidate pair, and the
    (src, dst) node pairs to merge; (None, None) when the tie-break is off, cannot train or has no
    candidates."""
    if matcher is None:
        return None, None
    pairs = matcher.lh.stage(f"{key}/pairs", candidate_pairs(members, edges, cfg))
    if pairs.limit(1).count() == 0:
        return None, None
    values = members.select("node", F.col("id_value").alias("member_id"))
    named = (pairs.join(values.withColumnRenamed("node", "src").withColumnRenamed("member_id", "member_id_l"), "src")
             .join(values.withColumnRenamed("node", "dst").withColumnRenamed("member_id", "member_id_r"), "dst"))
    out = matcher.score(named.select("member_id_l", "member_id_r", "src", "dst").toPandas(),
                        "two memberships linked through one verified identifier, over the member_id limit")
    if out is None:
        return None, None
    out = out.astype({"src": "int64", "dst": "int64"})
    frame = matcher.lh.stage(f"{key}/decisions", matcher.lh.spark.createDataFrame(out, _SCHEMA + ", src long, dst long"))
    merges = frame.where(F.col("decision") == "merge").select("src", "dst")
    return frame.select(*DECISION_COLUMNS), merges
