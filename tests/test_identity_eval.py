from itertools import combinations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_jobs.identity.eval import (
    IdentityAccuracy,
    IdentityEvalError,
    TruthNotFoundError,
    evaluate,
    read_households,
    read_truth,
)


def _truth(people: dict[str, list[str]], extra: list[tuple[str, str, str]] = ()) -> pd.DataFrame:
    """Personal phones per person, plus (id_value, person_key, kind) rows for shared/junk."""
    rows = [("phone", v, p, "personal") for p, values in people.items() for v in values]
    rows += [("phone", v, p, kind) for v, p, kind in extra]
    return pd.DataFrame(rows, columns=["id_type", "id_value", "person_key", "kind"])


def _mapping(persons: dict[str, list[str]]) -> pd.DataFrame:
    rows = [("phone", v, pid) for pid, values in persons.items() for v in values]
    return pd.DataFrame(rows, columns=["id_type", "id_value", "person_id"])


def test_evaluate_perfect_mapping_scores_one():
    truth = _truth({"A": ["a1", "a2", "a3"], "B": ["b1", "b2"]})
    acc = evaluate(_mapping({"X": ["a1", "a2", "a3"], "Y": ["b1", "b2"]}), truth)
    assert acc == IdentityAccuracy(
        pairwise_precision=1.0, pairwise_recall=1.0, f1=1.0, true_people=2, predicted_people=2,
        people_split=0, false_merges=0, largest_component=3, largest_true_household=0,
        junk_linked=0, shared_linked=0,
    )
    assert acc.as_dict()["people_split"] == 0 and len(acc.as_dict()) == 11


def test_evaluate_split_person_lowers_recall_exactly():
    truth = _truth({"A": ["a1", "a2", "a3", "a4"], "B": ["b1", "b2"]})
    acc = evaluate(_mapping({"X": ["a1", "a2"], "Y": ["a3", "a4"], "Z": ["b1", "b2"]}), truth)
    # true pairs: C(4,2) + C(2,2) = 7; kept together: 1 + 1 + 1 = 3
    assert acc.pairwise_recall == 3 / 7
    assert acc.pairwise_precision == 1.0
    assert acc.f1 == pytest.approx(0.6)
    assert (acc.people_split, acc.false_merges, acc.predicted_people) == (1, 0, 3)


def test_evaluate_merged_people_lower_precision_exactly():
    truth = _truth({"A": ["a1", "a2", "a3"], "B": ["b1", "b2"]})
    acc = evaluate(_mapping({"X": ["a1", "a2", "a3", "b1", "b2"]}), truth)
    # predicted pairs: C(5,2) = 10; truly together: C(3,2) + C(2,2) = 4
    assert acc.pairwise_precision == 0.4
    assert acc.pairwise_recall == 1.0
    assert (acc.false_merges, acc.people_split, acc.predicted_people, acc.largest_component) == (1, 0, 1, 5)


def test_evaluate_missing_identifiers_count_against_recall():
    truth = _truth({"A": ["a1", "a2", "a3"], "B": ["b1"], "C": ["c1"]})
    acc = evaluate(_mapping({"X": ["a1", "a2"], "Y": ["b1"]}), truth)  # a3 and c1 dropped
    assert acc.pairwise_recall == 1 / 3  # of a1a2, a1a3, a2a3 only a1a2 kept
    assert acc.pairwise_precision == 1.0
    assert acc.people_split == 1  # A partly missing; C's only identifier missing is no split
    assert (acc.true_people, acc.predicted_people) == (3, 2)


def test_evaluate_counts_linked_junk_and_shared_but_not_singletons():
    truth = _truth(
        {"A": ["a1", "a2"], "B": ["b1"]},
        extra=[("s1", "A", "shared"), ("s2", "B", "shared"), ("j1", "", "junk"), ("j2", "", "junk"),
               ("j3", "", "junk")],
    )
    mapping = _mapping({"X": ["a1", "a2", "s1", "j1"], "Y": ["b1"], "Z": ["j2"], "W": ["s2"]})  # j3 dropped
    acc = evaluate(mapping, truth)
    assert (acc.junk_linked, acc.shared_linked) == (1, 1)
    assert acc.largest_component == 4  # junk and shared identifiers count towards size
    assert (acc.pairwise_precision, acc.pairwise_recall, acc.predicted_people) == (1.0, 1.0, 2)


def test_evaluate_largest_true_household_sums_personal_identifiers():
    truth = _truth({"A": ["a1", "a2"], "B": ["b1"], "C": ["c1", "c2"]}, extra=[("s1", "C", "shared")])
    households = pd.DataFrame({"person_key": ["A", "B", "C", "D"], "household_key": ["H1", "H1", "H2", "H3"]})
    mapping = _mapping({"X": ["a1", "a2", "b1"], "Y": ["c1", "c2", "s1"]})
    assert evaluate(mapping, truth, households).largest_true_household == 3  # H1: 2 + 1; s1 is shared
    assert evaluate(mapping, truth).largest_true_household == 0


def test_evaluate_rejects_duplicate_identifiers_and_missing_columns():
    truth = _truth({"A": ["a1"]})
    with pytest.raises(IdentityEvalError, match="duplicate.*a1"):
        evaluate(_mapping({"X": ["a1"], "Y": ["a1"]}), truth)
    with pytest.raises(IdentityEvalError, match="person_id"):
        evaluate(_mapping({"X": ["a1"]}).drop(columns="person_id"), truth)


def test_read_truth_keeps_junk_strings_and_empty_keys(tmp_path):
    (tmp_path / "_truth").mkdir()
    (tmp_path / "_truth" / "identities.csv").write_text(
        "id_type,id_value,person_key,kind\nlogin_id,null,,junk\nphone,+8613912345678,P00000001,personal\n"
    )
    truth = read_truth(tmp_path)
    assert truth.to_dict("list") == {
        "id_type": ["login_id", "phone"], "id_value": ["null", "+8613912345678"],
        "person_key": ["", "P00000001"], "kind": ["junk", "personal"],
    }


def test_read_truth_missing_file_raises_named_error(tmp_path):
    with pytest.raises(TruthNotFoundError, match="identities.csv") as err:
        read_truth(tmp_path)
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(TruthNotFoundError, match="people.csv"):
        read_households(tmp_path)


def test_read_households_returns_person_and_household_keys(tmp_path):
    (tmp_path / "_truth").mkdir()
    (tmp_path / "_truth" / "people.csv").write_text(
        "person_key,activity,propensity,churn_date,signup_date,household_key\n"
        "P00000001,0.82,0.26,,2025-05-30,H00000001\nP00000002,0.21,0.04,2026-11-02,2026-08-27,H00000001\n"
    )
    assert read_households(tmp_path).to_dict("list") == {
        "person_key": ["P00000001", "P00000002"], "household_key": ["H00000001", "H00000001"],
    }


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.none() | st.integers(0, 5)), max_size=60))
def test_evaluate_pair_counts_match_brute_force(labels):
    truth = _truth({}, extra=[(f"i{i}", f"P{t}", "personal") for i, (t, _) in enumerate(labels)])
    mapping = pd.DataFrame(
        [("phone", f"i{i}", p) for i, (_, p) in enumerate(labels) if p is not None],
        columns=["id_type", "id_value", "person_id"],
    )
    acc = evaluate(mapping, truth)

    same_true = same_pred = same_both = 0
    for (t1, p1), (t2, p2) in combinations(labels, 2):
        same_true += t1 == t2
        together = p1 is not None and p1 == p2
        same_pred += together
        same_both += together and t1 == t2
    assert acc.pairwise_precision == (same_both / same_pred if same_pred else 1.0)
    assert acc.pairwise_recall == (same_both / same_true if same_true else 1.0)
    # A missing identifier is its own predicted singleton.
    cluster = [p if p is not None else ("missing", i) for i, (_, p) in enumerate(labels)]
    spans = {t: {c for c, (t2, _) in zip(cluster, labels, strict=True) if t2 == t} for t, _ in labels}
    assert acc.people_split == sum(len(s) > 1 for s in spans.values())
    members = {p: {t for t, p2 in labels if p2 == p} for _, p in labels if p is not None}
    assert acc.false_merges == sum(len(s) > 1 for s in members.values())
    assert (acc.true_people, acc.predicted_people) == (len(spans), len(members))
