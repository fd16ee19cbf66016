"""Fellegi–Sunter matching of candidate member pairs (pandas, Splink on in-process DuckDB); reads and writes no table."""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import unicodedata
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import splink.comparison_level_library as cll
import splink.comparison_library as cl
from pypinyin import lazy_pinyin
from splink import DuckDBAPI, Linker, SettingsCreator, block_on
from splink.internals.exceptions import EMTrainingException  # Splink 4 exports no public exceptions module

RECORD_COLUMNS = ("member_id", "name", "birthday", "gender", "city", "email")
PAIR_COLUMNS = ("member_id_l", "member_id_r")
SCORE_COLUMNS = (*PAIR_COLUMNS, "match_weight", "match_probability", "decision", "comparisons")
MIN_TRAINING_RECORDS = 50
MIN_EM_PAIRS = 100  # Splink's guidance: EM needs "at least a few hundred" blocked pairs to be reliable
# Merge only at 9:1 posterior odds: a false merge (two customers' data in one profile) is taken to cost
# nine times a missed one (two profiles, which is what the deterministic rule gives anyway). The prior is
# that of two random members; the shared phone that made the pair a candidate is not counted as evidence,
# since it is not independent of the comparisons (families sharing a phone also share surname and city).
DEFAULT_THRESHOLD = 0.9
MAX_EM_ITERATIONS = 100
EM_CONVERGENCE = 1e-4
# EM training blocks: each trains every comparison but the one it blocks on.
EM_BLOCKS = {"birthday": "birthday", "name": "name_pinyin"}
_SPLINK_COLUMNS = ["member_id", "name_pinyin", "name_syllables", "birthday", "gender", "city", "email"]
_PAIR_KEYS = "pair_keys"


class MatchingError(ValueError):
    """Records or pairs unfit for matching (the message names the columns, ids or counts to fix)."""


class MatchingWarning(UserWarning):
    """The model trained, but some estimate is weak (EM did not converge, a level was never observed)."""


@dataclass(frozen=True)
class MatchModel:
    """A trained Fellegi–Sunter model: Splink settings (JSON), its m/u per level, and the merge threshold."""

    settings: dict[str, Any]
    m_u: dict[str, dict[str, dict[str, float | None]]]
    n_records: int
    n_pairs_u: int
    n_pairs_em: dict[str, int]
    threshold: float = DEFAULT_THRESHOLD

    @property
    def probability_two_random_records_match(self) -> float:
        """The prior (lambda) of the model."""
        return float(self.settings["probability_two_random_records_match"])


def pinyin_name(name: object) -> str | None:
    """Canonical name form: toneless pinyin, lowercase, letters only (张伟, 'Zhang Wei' -> 'zhangwei')."""
    if name is None or (not isinstance(name, str) and pd.isna(name)):
        return None
    text = unicodedata.normalize("NFKC", str(name))
    key = "".join(lazy_pinyin(text)).lower().replace("ü", "v")  # pypinyin writes ü as v (吕 -> lv)
    return re.sub(r"[^a-z]", "", key) or None


def name_syllables(name: object) -> str | None:
    """One character per syllable of a name (张伟明 and 'Zhang Wei Ming' give the same three), so an
    edit distance counts syllables: a wrong character in a hanzi name changes one syllable, which the
    letter distance of the pinyin form sees as several edits."""
    if name is None or (not isinstance(name, str) and pd.isna(name)):
        return None
    text = unicodedata.normalize("NFKC", str(name)).strip()
    parts = [p for p in re.split(r"[^a-zü]+", " ".join(lazy_pinyin(text)).lower()) if p]
    # A stable code point per syllable in the private-use area (about 400 toneless syllables exist).
    return "".join(chr(0xE000 + zlib.crc32(p.encode()) % 6400) for p in parts) or None


def comparisons() -> list[cl.CustomComparison]:
    """The comparisons and levels (labels: null, exact, fuzzy/near, else), most to least similar."""

    def levels(col: str, *middle: cll.ComparisonLevelCreator) -> list[cll.ComparisonLevelCreator]:
        return [
            cll.NullLevel(col).configure(label_for_charts="null"),
            cll.ExactMatchLevel(col).configure(label_for_charts="exact"),
            *middle,
            cll.ElseLevel().configure(label_for_charts="else"),
        ]

    # Damerau-Levenshtein <= 1, not Jaro-Winkler: JW rewards the shared prefix, which in a pinyin name is
    # the surname, so family members (zhangwei / zhangli: JW 0.92) would score as typos of each other.
    # Or one syllable of three or more: a wrong hanzi (崔畅霞 / 崔畅利). Not of two: 张伟 / 张敏 are siblings as often.
    name_typo = cll.Or(
        cll.DamerauLevenshteinLevel("name_pinyin", 1),
        cll.And(cll.DamerauLevenshteinLevel("name_syllables", 1),
                cll.CustomLevel("length(name_syllables_l) >= 3 and length(name_syllables_r) >= 3")),
    ).configure(label_for_charts="fuzzy")
    birthday_near = cll.Or(
        cll.AbsoluteDateDifferenceLevel("birthday", input_is_string=False, threshold=1, metric="year"),
        cll.CustomLevel(
            "year(birthday_l) = year(birthday_r) and month(birthday_l) = day(birthday_r) "
            "and day(birthday_l) = month(birthday_r)"
        ),
    ).configure(label_for_charts="near")
    return [
        cl.CustomComparison(output_column_name="name", comparison_levels=levels("name_pinyin", name_typo)),
        cl.CustomComparison(output_column_name="birthday", comparison_levels=levels("birthday", birthday_near)),
        cl.CustomComparison(output_column_name="gender", comparison_levels=levels("gender")),
        cl.CustomComparison(output_column_name="city", comparison_levels=levels("city")),
        cl.CustomComparison(output_column_name="email", comparison_levels=levels("email")),
    ]


def train(records: pd.DataFrame, *, seed: int = 42, max_pairs: float = 1e6) -> MatchModel:
    """Estimate u by random sampling of pairs, then m and the prior by EM on a birthday and a name block.

    Raises MatchingError on unusable input; warns (MatchingWarning) on weak estimates.
    """
    df = _prepared(records)
    n = len(df)
    if n < MIN_TRAINING_RECORDS:
        raise MatchingError(
            f"{n} member records are too few to train the matcher (at least {MIN_TRAINING_RECORDS}); "
            "keep the deterministic one-member-per-person rule for this run"
        )
    n_pairs_em = {name: _pairs_agreeing(df[col]) for name, col in EM_BLOCKS.items()}
    for name, pairs in n_pairs_em.items():
        if pairs == 0:
            raise MatchingError(
                f"no two of the {n} records share a {name}, so EM blocked on {name} has no pairs to learn "
                "from; train on more records"
            )
        if pairs < MIN_EM_PAIRS:
            warnings.warn(
                f"EM blocked on {name} sees only {pairs} record pairs (fewer than {MIN_EM_PAIRS}); "
                "its m estimates are unreliable, train on more records",
                MatchingWarning,
                stacklevel=2,
            )
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="member_id",
        comparisons=comparisons(),
        blocking_rules_to_generate_predictions=[],
        max_iterations=MAX_EM_ITERATIONS,
        em_convergence=EM_CONVERGENCE,
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )
    with _duckdb_linker(df, settings) as linker:
        linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=seed)
        for name, col in EM_BLOCKS.items():
            try:
                session = linker.training.estimate_parameters_using_expectation_maximisation(
                    block_on(col), populate_probability_two_random_records_match_from_trained_values=True
                )
            except EMTrainingException as e:
                raise MatchingError(f"EM blocked on {name} failed: {e}") from e
            # Splink logs "EM converged" even when it stopped at max_iterations; the history says which.
            iterations = len(session._core_model_settings_history) - 1
            if iterations >= MAX_EM_ITERATIONS:
                warnings.warn(
                    f"EM blocked on {name} did not converge in {MAX_EM_ITERATIONS} iterations "
                    f"(tolerance {EM_CONVERGENCE}); check the m estimates before using the model",
                    MatchingWarning,
                    stacklevel=2,
                )
        trained = linker.misc.save_model_to_json()
    m_u = _m_u(trained)
    untrained = [
        f"{c}.{level}:{p}" for c, lv in m_u.items() for level, mu in lv.items() for p in ("m", "u") if mu[p] is None
    ]
    if untrained:
        warnings.warn(
            f"levels never observed in training (Splink uses 1e-6 for them): {', '.join(untrained)}; "
            "train on more records",
            MatchingWarning,
            stacklevel=2,
        )
    prior = trained.get("probability_two_random_records_match")
    if not isinstance(prior, (int, float)) or not math.isfinite(prior) or not 0 < prior < 1:
        # EM on very few or all-alike pairs can leave the prior at NaN; Splink then writes `nan` into
        # its scoring SQL, which fails. Not a model to score with.
        raise MatchingError(
            f"EM left the prior (probability that two random records match) at {prior!r} on {n} records: "
            "train on more records"
        )
    return MatchModel(
        settings=trained,
        m_u=m_u,
        n_records=n,
        n_pairs_u=int(min(max_pairs, n * (n - 1) // 2)),
        n_pairs_em=n_pairs_em,
    )


def score_pairs(model: MatchModel, records: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Score exactly the given (member_id_l, member_id_r) pairs: weight, probability, decision, levels (JSON)."""
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise MatchingError(f"pairs lack column(s) {missing}; pass member_id_l, member_id_r")
    asked = pairs[list(PAIR_COLUMNS)].reset_index(drop=True)
    if asked.isna().any().any():
        raise MatchingError("pairs have a null member_id_l or member_id_r; drop those rows")
    left, right = asked["member_id_l"].astype(str), asked["member_id_r"].astype(str)
    if (left == right).any():
        raise MatchingError(f"pairs compare a member with itself: {sorted(set(left[left == right]))[:5]}")
    if asked.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SCORE_COLUMNS}).astype(
            {"match_weight": float, "match_probability": float}
        )
    key = [_pair_key(a, b) for a, b in zip(left, right, strict=True)]
    _check_columns(records)
    wanted = set(left) | set(right)
    df = _prepared(records[records["member_id"].astype(str).isin(wanted)])
    unknown = sorted(wanted - set(df["member_id"]))
    if unknown:
        raise MatchingError(f"{len(unknown)} member id(s) in pairs are not in records, e.g. {unknown[:5]}")
    # Exactly the asked pairs: each pair gets a key, each record lists its pairs' keys, and Splink blocks
    # on equal keys after exploding the lists (one comparison per pair, none else).
    keys_of: dict[str, list[str]] = {}
    for i, pair in enumerate(dict.fromkeys(key)):
        for member in pair:
            keys_of.setdefault(member, []).append(f"p{i}")
    df[_PAIR_KEYS] = df["member_id"].map(keys_of)
    settings = copy.deepcopy(model.settings)
    settings["blocking_rules_to_generate_predictions"] = [block_on(_PAIR_KEYS, arrays_to_explode=[_PAIR_KEYS])]
    settings["retain_matching_columns"] = True  # Splink drops the gamma_ (level) columns without it
    settings["retain_intermediate_calculation_columns"] = False
    with _duckdb_linker(df, settings) as linker:
        predicted = linker.inference.predict().as_pandas_dataframe()
    labels = _level_labels(model.settings)
    gammas = [f"gamma_{c}" for c in labels]
    predicted["comparisons"] = [
        json.dumps(
            {c: labels[c][int(g)] for c, g in zip(labels, row, strict=True)}, ensure_ascii=False, separators=(",", ":")
        )
        for row in predicted[gammas].itertuples(index=False)
    ]
    predicted["key"] = [
        _pair_key(a, b) for a, b in zip(predicted["member_id_l"], predicted["member_id_r"], strict=True)
    ]
    scored = predicted[["key", "match_weight", "match_probability", "comparisons"]]
    out = asked.assign(key=key).merge(scored, on="key", how="left", validate="many_to_one")
    if out["match_probability"].isna().any():
        raise MatchingError("Splink scored fewer pairs than asked; report this as a bug in matching.py")
    out["decision"] = np.where(out["match_probability"] >= model.threshold, "merge", "keep_apart")
    return out[list(SCORE_COLUMNS)]


def _check_columns(records: pd.DataFrame) -> None:
    missing = [c for c in RECORD_COLUMNS if c not in records.columns]
    if missing:
        raise MatchingError(f"records lack column(s) {missing}; pass one row per member with {list(RECORD_COLUMNS)}")


def _prepared(records: pd.DataFrame) -> pd.DataFrame:
    """The Splink input: member_id as text, name as pinyin, birthday as a date, blanks and odd genders null."""
    _check_columns(records)
    if records["member_id"].isna().any():
        raise MatchingError("records have a null member_id; drop those rows")
    member_id = records["member_id"].astype(str)
    dup = member_id[member_id.duplicated()]
    if not dup.empty:
        raise MatchingError(
            f"records repeat member_id(s) {sorted(set(dup))[:5]}; pass one latest row per member"
        )
    try:
        birthday = pd.to_datetime(records["birthday"], errors="raise").dt.normalize()
    except (ValueError, TypeError) as e:
        raise MatchingError(f"records have a birthday that is not a date ({e}); clean or null it") from e

    def text(col: str, fold: str | None = None) -> pd.Series:
        s = records[col].astype("string").str.strip()
        s = getattr(s.str, fold)() if fold else s
        s = s.mask(s == "")
        return s.astype(object).where(s.notna(), None)

    gender = text("gender", "upper")
    return pd.DataFrame(
        {
            "member_id": member_id.to_numpy(),
            "name_pinyin": [pinyin_name(v) for v in records["name"]],
            "name_syllables": [name_syllables(v) for v in records["name"]],
            "birthday": birthday.to_numpy(),
            "gender": gender.where(gender.isin(["M", "F"]), None).to_numpy(),
            "city": text("city").to_numpy(),
            "email": text("email", "lower").to_numpy(),
        },
        columns=_SPLINK_COLUMNS,
    )


def _pair_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def _pairs_agreeing(values: pd.Series) -> int:
    counts = values.dropna().value_counts()
    return int((counts * (counts - 1) // 2).sum())


@contextmanager
def _duckdb_linker(df: pd.DataFrame, settings: SettingsCreator | dict[str, Any]) -> Iterator[Linker]:
    """A Linker on its own in-memory DuckDB, with Splink's INFO chatter silenced, closed afterwards."""
    logger = logging.getLogger("splink")
    level = logger.level
    logger.setLevel(logging.ERROR)
    con = duckdb.connect(":memory:")
    try:
        # set_up_basic_logging=False: Splink would otherwise call logging.basicConfig on the root logger.
        yield Linker(df, settings, db_api=DuckDBAPI(connection=con), set_up_basic_logging=False)
    finally:
        con.close()
        logger.setLevel(level)


def _levels(settings: dict[str, Any]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(comparison, gamma value, level) per level; Splink numbers non-null levels n-1 .. 0, null is -1."""
    for comparison in settings["comparisons"]:
        levels = comparison["comparison_levels"]
        gamma = sum(not lv.get("is_null_level") for lv in levels)
        for lv in levels:
            if lv.get("is_null_level"):
                yield comparison["output_column_name"], -1, lv
            else:
                gamma -= 1
                yield comparison["output_column_name"], gamma, lv


def _level_labels(settings: dict[str, Any]) -> dict[str, dict[int, str]]:
    labels: dict[str, dict[int, str]] = {}
    for name, gamma, lv in _levels(settings):
        labels.setdefault(name, {})[gamma] = lv["label_for_charts"]
    return labels


def _m_u(settings: dict[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    def probability(value: object) -> float | None:
        return float(value) if isinstance(value, int | float) else None  # absent or "level not observed"

    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for name, _, lv in _levels(settings):
        if not lv.get("is_null_level"):
            out.setdefault(name, {})[lv["label_for_charts"]] = {
                "m": probability(lv.get("m_probability")),
                "u": probability(lv.get("u_probability")),
            }
    return out
