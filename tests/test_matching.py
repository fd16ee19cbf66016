"""Tests of spark_jobs.identity.matching: EM recovers known m/u on synthetic members; pair scoring; errors."""

from __future__ import annotations

import datetime as dt
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from pypinyin import lazy_pinyin

from spark_jobs.identity.matching import (
    PAIR_COLUMNS,
    SCORE_COLUMNS,
    MatchingError,
    MatchingWarning,
    pinyin_name,
    score_pairs,
    train,
)

SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹")
GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏辉建国志宏飞鑫浩宇")
CITIES = ["上海", "北京", "广州", "深圳", "杭州", "成都", "武汉", "南京", "西安", "重庆"]  # u(city) = 0.1
# Design m = P(level | match) per comparison; null rates are per record, independent of matching.
M_NAME = {"exact": 0.90, "fuzzy": 0.06, "else": 0.04}
M_BIRTHDAY = {"exact": 0.90, "near": 0.06, "else": 0.04}
M_GENDER = 0.98
M_CITY = 0.95
M_EMAIL = 0.70
NULL_RATE = {"birthday": 0.10, "gender": 0.05, "city": 0.10, "email": 0.20}
N_PEOPLE, N_DUPLICATES = 1800, 200
BIRTHDAY_DAYS = 55 * 365

# Tolerances. m of an "exact" level: within 0.05 absolute of the m measured on the true duplicate pairs
# (that truth itself has a sampling error of ~0.02 on ~150 pairs; a broken EM, e.g. one left at Splink's
# starting values or with the classes swapped, misses by far more). u: within 0.02 absolute where
# u >= 0.05 (gender, city); otherwise within a factor 1.5 (|log2 ratio| <= 0.6 bit of match weight),
# since name and birthday u are ~1e-4..1e-3, where an absolute tolerance would pass anything.
# The u compared is the agreement rate of all pairs, duplicates included: that is what random sampling
# estimates, u + prior * m. It differs from P(agree | non-match) only for birthday here (1.5e-4 against
# 6e-5), because this set is one tenth duplicates (prior 1e-4); in a member table it is ~1e-6 and negligible.
M_TOLERANCE = 0.05
U_ABS_TOLERANCE = 0.02
U_LOG2_TOLERANCE = 0.6


def _osa(a: str, b: str) -> int:
    """Damerau-Levenshtein (optimal string alignment) distance, for rejection sampling of names."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def _given_name(rng: np.random.Generator) -> str:
    return "".join(rng.choice(GIVEN, size=1 if rng.random() < 0.85 else 2))


def _as_pinyin(surname: str, given: str, rng: np.random.Generator) -> str:
    text = " ".join(["".join(lazy_pinyin(surname)), "".join(lazy_pinyin(given))])
    return text.title() if rng.random() < 0.5 else text  # "Zhang Wei" or "zhang wei"


def _typo(surname: str, given: str, rng: np.random.Generator) -> str:
    """The name written in pinyin with one letter of the given name changed (one edit away)."""
    key = pinyin_name(surname + given)
    while True:
        g = list("".join(lazy_pinyin(given)))
        g[rng.integers(len(g))] = "aeioungh"[rng.integers(8)]
        written = "".join(lazy_pinyin(surname)) + " " + "".join(g)
        if pinyin_name(written) != key:
            return written


def _random_birthday(rng: np.random.Generator) -> dt.date:
    return dt.date(1950, 1, 1) + dt.timedelta(days=int(rng.integers(0, BIRTHDAY_DAYS)))


def _synthetic_members(seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Members of N_PEOPLE people, N_DUPLICATES of whom have a second membership; and the true pairs."""
    rng = np.random.default_rng(seed)
    people = []
    for p in range(N_PEOPLE):
        people.append(
            {
                "surname": str(rng.choice(SURNAMES)),
                "given": _given_name(rng),
                "birthday": _random_birthday(rng),
                "gender": str(rng.choice(["M", "F"])),
                "city": str(rng.choice(CITIES)),
                "email": f"user{p}@example.com",
            }
        )
    rows = [{"member_id": f"M{p:05d}", **person, "name": person["surname"] + person["given"]} for p, person in enumerate(people)]
    pairs = []
    for k, p in enumerate(rng.choice(N_PEOPLE, size=N_DUPLICATES, replace=False)):
        person = people[p]
        dup = {"member_id": f"D{k:05d}", **person}
        level = rng.choice(list(M_NAME), p=list(M_NAME.values()))
        if level == "exact":
            hanzi = person["surname"] + person["given"]
            dup["name"] = _as_pinyin(person["surname"], person["given"], rng) if rng.random() < 0.3 else hanzi
        elif level == "fuzzy":
            dup["name"] = _typo(person["surname"], person["given"], rng)
        else:
            key = pinyin_name(person["surname"] + person["given"])
            while True:
                name = person["surname"] + _given_name(rng)
                if _osa(pinyin_name(name), key) > 1:
                    dup["name"] = name
                    break
        level = rng.choice(list(M_BIRTHDAY), p=list(M_BIRTHDAY.values()))
        b = person["birthday"]
        if level == "near":
            swap = b.day <= 12 and b.day != b.month and rng.random() < 0.5
            shift = int(rng.integers(1, 360)) * int(rng.choice([-1, 1]))
            dup["birthday"] = b.replace(month=b.day, day=b.month) if swap else b + dt.timedelta(days=shift)
        elif level == "else":
            while abs(((nb := _random_birthday(rng)) - b).days) <= 366 or (nb.month, nb.day) == (b.day, b.month):
                pass
            dup["birthday"] = nb
        if rng.random() > M_GENDER:
            dup["gender"] = "F" if person["gender"] == "M" else "M"
        if rng.random() > M_CITY:
            dup["city"] = str(rng.choice([c for c in CITIES if c != person["city"]]))
        if rng.random() > M_EMAIL:
            dup["email"] = f"user{p}.alt@example.com"
        rows.append(dup)
        pairs.append((f"M{p:05d}", dup["member_id"]))
    records = pd.DataFrame(rows)[["member_id", "name", "birthday", "gender", "city", "email"]]
    for col, rate in NULL_RATE.items():
        records[col] = records[col].astype(object).where(rng.random(len(records)) >= rate, None)
    return records, pd.DataFrame(pairs, columns=list(PAIR_COLUMNS))


def _true_m_u(records: pd.DataFrame, pairs: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per "exact" level, measured on the data: m on the true pairs; u on the other pairs and on all pairs."""
    values = records.assign(name=records["name"].map(pinyin_name)).set_index("member_id")
    truth = {}
    for col in ["name", "birthday", "gender", "city", "email"]:
        left = values.loc[pairs["member_id_l"], col].to_numpy()
        right = values.loc[pairs["member_id_r"], col].to_numpy()
        both = pd.notna(left) & pd.notna(right)
        match_agree, match_both = int((left[both] == right[both]).sum()), int(both.sum())
        counts = values[col].dropna().value_counts()
        agree, compared = int((counts * (counts - 1) // 2).sum()), int(counts.sum() * (counts.sum() - 1) // 2)
        truth[col] = {
            "m": match_agree / match_both,
            "u": (agree - match_agree) / (compared - match_both),
            "u_all_pairs": agree / compared,
        }
    return truth


@pytest.fixture(scope="module")
def synthetic() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _synthetic_members()


@pytest.fixture(scope="module")
def model(synthetic):
    records, _ = synthetic
    with warnings.catch_warnings():
        warnings.simplefilter("error", MatchingWarning)  # a clean synthetic set must train without warnings
        return train(records)


def _member(member_id: str, name: str | None, birthday: str | None, gender: str | None, city: str | None, email: str | None = None) -> dict:
    return {
        "member_id": member_id,
        "name": name,
        "birthday": dt.date.fromisoformat(birthday) if birthday else None,
        "gender": gender,
        "city": city,
        "email": email,
    }


CASES = pd.DataFrame(
    [
        _member("A1", "张伟", "1985-03-14", "M", "上海"),
        _member("A2", "Zhang Wei", "1985-03-14", "M", "上海"),  # the same person's second membership
        _member("A3", "Zhang Wie", "1985-03-14", "M", "上海"),  # ... typed with a typo
        _member("B1", "李娜", "1992-11-02", "F", "成都"),  # a stranger who got the recycled number
        _member("C1", "张丽", "1960-07-21", "F", "上海"),  # a family member sharing the phone
        _member("N1", "zhang wei", None, None, None),  # all but the name unknown
    ]
)


@pytest.fixture(scope="module")
def scored(model) -> pd.DataFrame:
    pairs = pd.DataFrame(
        [("A1", "A2"), ("A3", "A1"), ("A1", "B1"), ("A1", "C1"), ("N1", "A1")], columns=list(PAIR_COLUMNS)
    )
    return score_pairs(model, CASES, pairs).set_index(list(PAIR_COLUMNS))


def test_pinyin_name_folds_hanzi_and_pinyin_spellings():
    assert pinyin_name("张伟") == pinyin_name("Zhang Wei") == pinyin_name("zhang  wei") == "zhangwei"
    assert pinyin_name("吕布") == pinyin_name("Lü Bu") == "lvbu"
    assert pinyin_name("张丽") == "zhangli"
    assert pinyin_name(None) is None and pinyin_name(" ") is None and pinyin_name(float("nan")) is None


def test_train_recovers_known_m_and_u(synthetic, model):
    truth = _true_m_u(*synthetic)
    for col, true in truth.items():
        got = model.m_u[col]["exact"]
        assert abs(got["m"] - true["m"]) <= M_TOLERANCE, (col, got, true)
        if true["u_all_pairs"] >= 0.05:
            assert abs(got["u"] - true["u_all_pairs"]) <= U_ABS_TOLERANCE, (col, got, true)
        else:
            assert abs(math.log2(got["u"] / true["u_all_pairs"])) <= U_LOG2_TOLERANCE, (col, got, true)


def test_train_estimates_the_prior_and_records_its_sizes(synthetic, model):
    records, pairs = synthetic
    n = len(records)
    true_prior = len(pairs) / (n * (n - 1) / 2)
    assert abs(math.log2(model.probability_two_random_records_match / true_prior)) <= 1.0
    assert model.n_records == n and model.n_pairs_u == 1_000_000
    assert set(model.n_pairs_em) == {"birthday", "name"} and min(model.n_pairs_em.values()) >= 100
    assert json.loads(json.dumps(model.settings)) == model.settings  # the settings round-trip through JSON


def test_score_pairs_merges_a_duplicate_membership(model, scored):
    dup = scored.loc[("A1", "A2")]
    assert dup["decision"] == "merge" and dup["match_probability"] >= model.threshold
    assert json.loads(dup["comparisons"]) == {
        "name": "exact", "birthday": "exact", "gender": "exact", "city": "exact", "email": "null"
    }
    typo = scored.loc[("A3", "A1")]
    assert json.loads(typo["comparisons"])["name"] == "fuzzy" and typo["decision"] == "merge"


def test_score_pairs_keeps_a_recycled_number_stranger_apart(model, scored):
    stranger = scored.loc[("A1", "B1")]
    assert stranger["decision"] == "keep_apart" and stranger["match_probability"] < 0.01
    assert json.loads(stranger["comparisons"]) == {
        "name": "else", "birthday": "else", "gender": "else", "city": "else", "email": "null"
    }


def test_score_pairs_keeps_a_family_member_apart(model, scored):
    family = scored.loc[("A1", "C1")]
    assert family["decision"] == "keep_apart" and family["match_probability"] < 0.01
    assert json.loads(family["comparisons"])["city"] == "exact"
    assert family["match_weight"] > scored.loc[("A1", "B1"), "match_weight"]  # the shared city counts


def test_score_pairs_nulls_give_no_evidence(model, scored):
    only_name = scored.loc[("N1", "A1")]
    levels = json.loads(only_name["comparisons"])
    assert levels == {"name": "exact", "birthday": "null", "gender": "null", "city": "null", "email": "null"}
    name = model.m_u["name"]["exact"]
    prior = model.probability_two_random_records_match
    expected = math.log2(prior / (1 - prior)) + math.log2(name["m"] / name["u"])
    assert only_name["match_weight"] == pytest.approx(expected, abs=1e-6)
    assert scored.loc[("A1", "B1"), "match_weight"] < only_name["match_weight"] < scored.loc[("A1", "A2"), "match_weight"]


def test_score_pairs_returns_exactly_the_requested_pairs(model, synthetic):
    records, true_pairs = synthetic
    ids = records["member_id"]
    asked = pd.concat(
        [
            true_pairs.head(30),
            pd.DataFrame({"member_id_l": ids.iloc[:20].to_numpy(), "member_id_r": ids.iloc[20:40].to_numpy()}),
            true_pairs.head(3).rename(columns={"member_id_l": "member_id_r", "member_id_r": "member_id_l"}),
        ],
        ignore_index=True,
    )  # one member in several pairs, non-matches, and the same pair asked both ways round
    out = score_pairs(model, records, asked)
    assert list(out.columns) == list(SCORE_COLUMNS)
    assert list(zip(out["member_id_l"], out["member_id_r"], strict=True)) == list(
        zip(asked["member_id_l"], asked["member_id_r"], strict=True)
    )
    assert out["match_probability"].between(0, 1).all()
    assert (out["decision"] == np.where(out["match_probability"] >= model.threshold, "merge", "keep_apart")).all()
    assert out.iloc[-3:, 2:].reset_index(drop=True).equals(out.iloc[:3, 2:].reset_index(drop=True))


def test_score_pairs_separates_duplicates_from_random_pairs(model, synthetic):
    records, true_pairs = synthetic
    rng = np.random.default_rng(0)
    ids = records["member_id"].to_numpy()
    random_pairs = pd.DataFrame({"member_id_l": rng.choice(ids, 3000), "member_id_r": rng.choice(ids, 3000)})
    random_pairs = random_pairs[random_pairs["member_id_l"] != random_pairs["member_id_r"]]
    recall = (score_pairs(model, records, true_pairs)["decision"] == "merge").mean()
    false_merges = (score_pairs(model, records, random_pairs)["decision"] == "merge").sum()
    # ~80% measured: the misses are mostly duplicates with no birthday (name, city, gender alone stay < 0.9)
    assert recall >= 0.7 and false_merges <= 1


def test_score_pairs_with_no_pairs_returns_an_empty_frame(model):
    out = score_pairs(model, CASES, pd.DataFrame(columns=list(PAIR_COLUMNS)))
    assert out.empty and list(out.columns) == list(SCORE_COLUMNS)


def test_score_pairs_rejects_unknown_members_and_self_pairs(model):
    with pytest.raises(MatchingError, match=r"not in records, e\.g\. \['ZZ'\]"):
        score_pairs(model, CASES, pd.DataFrame({"member_id_l": ["A1"], "member_id_r": ["ZZ"]}))
    with pytest.raises(MatchingError, match="with itself"):
        score_pairs(model, CASES, pd.DataFrame({"member_id_l": ["A1"], "member_id_r": ["A1"]}))
    with pytest.raises(MatchingError, match="member_id_r"):
        score_pairs(model, CASES, pd.DataFrame({"member_id_l": ["A1"]}))


def test_train_rejects_records_missing_columns():
    with pytest.raises(MatchingError, match=r"lack column\(s\) \['birthday', 'email'\]"):
        train(CASES.drop(columns=["birthday", "email"]))


def test_train_rejects_too_few_records():
    with pytest.raises(MatchingError, match="6 member records are too few"):
        train(CASES)


def test_train_rejects_repeated_member_ids(synthetic):
    records, _ = synthetic
    with pytest.raises(MatchingError, match=r"repeat member_id\(s\) \['M00000'\]"):
        train(pd.concat([records.head(60), records.head(1)]))


def _distinct_members(n: int, prefix: str = "X") -> list[dict]:
    """n members with different names (one surname, two given characters) and birthdays."""
    return [
        _member(
            f"{prefix}{i}",
            f"{SURNAMES[i % len(SURNAMES)]}{GIVEN[i % len(GIVEN)]}{GIVEN[(i * 7 + 3) % len(GIVEN)]}",
            (dt.date(1970, 1, 1) + dt.timedelta(days=400 * i)).isoformat(),
            "MF"[i % 2],
            CITIES[i % len(CITIES)],
        )
        for i in range(n)
    ]


def test_train_rejects_an_em_block_without_pairs():
    records = pd.DataFrame(_distinct_members(60))  # no two share a birthday
    with pytest.raises(MatchingError, match="no two of the 60 records share a birthday"):
        train(records)


def test_train_warns_on_weak_estimates():
    members = _distinct_members(50)
    records = pd.DataFrame(members + [{**m, "member_id": f"D{i}"} for i, m in enumerate(members[:10])])
    # 10 exact duplicates: EM sees 10 pairs per block, and never a name typo among matches. The warnings
    # come first; then the model is refused, because EM leaves its prior undefined on so few pairs.
    with pytest.warns(MatchingWarning) as caught, pytest.raises(MatchingError, match="prior"):
        train(records, max_pairs=1e4)
    messages = " | ".join(str(w.message) for w in caught)
    assert "EM blocked on birthday sees only 10 record pairs" in messages
    assert "levels never observed in training" in messages and "name.fuzzy:m" in messages


def test_name_syllables_count_a_wrong_hanzi_as_one_edit():
    from spark_jobs.identity.matching import name_syllables

    assert name_syllables("张伟明") == name_syllables("Zhang Wei Ming") == name_syllables("zhang  wei ming")
    assert len(name_syllables("崔畅霞")) == 3
    a, b = name_syllables("崔畅霞"), name_syllables("崔畅利")
    assert sum(x != y for x, y in zip(a, b, strict=True)) == 1  # one syllable differs
    assert name_syllables(None) is None and name_syllables("  ") is None


def test_comparisons_fuzzy_name_takes_one_wrong_syllable_of_three_not_of_two():
    import duckdb

    from spark_jobs.identity.matching import _prepared, comparisons  # noqa: F401

    recs = _prepared(pd.DataFrame({
        "member_id": ["a", "b", "c", "d"], "name": ["崔畅霞", "崔畅利", "张伟", "张敏"],
        "birthday": [None] * 4, "gender": [None] * 4, "city": [None] * 4, "email": [None] * 4}))
    fuzzy = comparisons()[0].get_comparison("duckdb").comparison_levels[2]
    sql = fuzzy.sql_condition
    con = duckdb.connect()
    con.register("r", recs)
    cols = ", ".join(f"l.{c} as {c}_l, r2.{c} as {c}_r" for c in recs.columns)
    got = con.sql(f"select member_id_l || member_id_r as p, ({sql}) as hit from (select {cols} from r as l, r as r2 "
                  "where l.member_id < r2.member_id)").fetchall()
    con.close()
    hits = {p for p, hit in got if hit}
    assert "ab" in hits and "cd" not in hits


def test_train_refuses_a_model_whose_prior_em_left_undefined():
    """180 members of a real run (the 300-people retail world, seed 11, tests/data): EM ends with the
    prior at NaN, which Splink writes into its scoring SQL as `nan` and DuckDB fails on. Training says
    so, and the tie-break then leaves its pairs to the rules (logged) instead of failing the run."""
    from pathlib import Path

    records = pd.read_csv(Path(__file__).parent / "data" / "matching-nan-prior.csv", dtype=str, keep_default_na=False)
    records = records.replace("", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MatchingWarning)
        with pytest.raises(MatchingError, match=r"prior .* at nan on 180 records"):
            train(records, max_pairs=2e5)
