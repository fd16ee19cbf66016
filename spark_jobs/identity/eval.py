"""Scores an identity mapping (id_type, id_value -> person_id) against landing/_truth/ (identities.csv, people.csv); writes nothing."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

KEY = ["id_type", "id_value"]
MAPPING_COLUMNS = [*KEY, "person_id"]
TRUTH_COLUMNS = [*KEY, "person_key", "kind"]
HOUSEHOLD_COLUMNS = ["person_key", "household_key"]
# Truth kinds that belong to one person: `recycled` is a re-issued value, its current owner's.
PERSONAL_KINDS = ("personal", "recycled")


class TruthNotFoundError(FileNotFoundError):
    """A ground-truth file is missing; generate the landing zone with `cdp generate` first."""


class IdentityEvalError(ValueError):
    """A mapping, truth or households frame has the wrong shape (the message names the frame and the fix)."""


@dataclass(frozen=True)
class IdentityAccuracy:
    """Pairwise and per-person accuracy of an identity mapping against ground truth."""

    pairwise_precision: float
    pairwise_recall: float
    f1: float
    true_people: int
    predicted_people: int
    people_split: int
    false_merges: int
    largest_component: int
    largest_true_household: int
    junk_linked: int
    shared_linked: int

    def as_dict(self) -> dict:
        """Plain dict of the fields (for logging, MLflow metrics, JSON)."""
        return asdict(self)


def read_truth(landing: Path | str) -> pd.DataFrame:
    """Read `landing/_truth/identities.csv` as strings (junk rows have person_key '')."""
    return _read_truth_csv(Path(landing) / "_truth" / "identities.csv", TRUTH_COLUMNS)


def read_households(landing: Path | str) -> pd.DataFrame:
    """Read person_key, household_key from `landing/_truth/people.csv`."""
    return _read_truth_csv(Path(landing) / "_truth" / "people.csv", HOUSEHOLD_COLUMNS)


def _read_truth_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise TruthNotFoundError(
            f"ground truth file not found: {path}; point at a landing zone made by `cdp generate`"
        ) from None
    _require_columns(df, columns, str(path))
    return df[columns]


def _require_columns(df: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise IdentityEvalError(f"{what}: missing column(s) {missing}; expected {columns}")


def _codes(*columns: pd.Series) -> list[np.ndarray]:
    """Joint integer codes for columns of equal meaning (Arrow hashing: ~10x pandas on 10M strings)."""
    arrays = [pa.array(c, from_pandas=True) for c in columns]
    types = {a.type for a in arrays if a.type != pa.null()}
    # One common type: an empty or all-null column is typed null; mixed types (int vs str) go to string.
    common = types.pop() if len(types) == 1 else pa.string()
    arrays = [a if a.type == common else a.cast(common) for a in arrays]
    encoded = pc.dictionary_encode(pa.concat_arrays(arrays), null_encoding="encode")
    indices = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return np.split(indices, np.cumsum([len(a) for a in arrays])[:-1])


def _key_codes(mapping: pd.DataFrame, truth: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    m_type, t_type = _codes(mapping["id_type"], truth["id_type"])
    m_value, t_value = _codes(mapping["id_value"], truth["id_value"])
    width = max(int(m_value.max(initial=0)), int(t_value.max(initial=0))) + 1
    return m_type * width + m_value, t_type * width + t_value


def _require_unique(keys: np.ndarray, rows: np.ndarray, df: pd.DataFrame, what: str) -> None:
    dup = pd.Series(keys).duplicated().to_numpy()
    if dup.any():
        first = df[KEY].iloc[rows[dup][0]].tolist()
        raise IdentityEvalError(
            f"{what}: {int(dup.sum())} duplicate (id_type, id_value) row(s), e.g. {first}; "
            "each identifier must appear once"
        )


def _pairs(counts: np.ndarray) -> int:
    counts = np.asarray(counts, dtype=np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _ratio(num: int, den: int) -> float:
    return 1.0 if den == 0 else num / den


def evaluate(
    mapping: pd.DataFrame, truth: pd.DataFrame, households: pd.DataFrame | None = None
) -> IdentityAccuracy:
    """Score `mapping` (id_type, id_value, person_id) against `truth` (id_type, id_value, person_key, kind).

    Pairwise scores come from the contingency table of personal identifiers (true person x predicted
    person). A personal identifier missing from the mapping is its own predicted singleton.
    `households` (person_key, household_key) gives largest_true_household; 0 without it.
    """
    _require_columns(mapping, MAPPING_COLUMNS, "mapping")
    _require_columns(truth, TRUTH_COLUMNS, "truth")
    # Codes are computed on whole columns and filtered as arrays: no copies of 10M-row frames.
    kept = np.flatnonzero(mapping["person_id"].notna().to_numpy())
    m_key, t_key = _key_codes(mapping, truth)
    m_key = m_key[kept]
    _require_unique(m_key, kept, mapping, "mapping")
    _require_unique(t_key, np.arange(len(t_key)), truth, "truth")

    (pred_of_row,) = _codes(mapping["person_id"])
    pred_of_row = pred_of_row[kept]
    comp_size = np.bincount(pred_of_row)
    at = pd.Index(m_key).get_indexer(t_key)  # truth row -> mapping row, -1 when dropped
    t_pred = np.full(len(at), -1, dtype=np.int64)
    t_pred[at >= 0] = pred_of_row[at[at >= 0]]
    kind = truth["kind"].to_numpy()

    personal = np.isin(kind, PERSONAL_KINDS)
    person_keys = truth.loc[personal, "person_key"]
    (true_code,) = _codes(person_keys)
    pred = t_pred[personal]
    here = pred >= 0
    n_true = int(true_code.max(initial=-1)) + 1

    # Contingency cells as one int64 per (true, predicted) pair of codes.
    width = int(pred.max(initial=0)) + 1
    cell_of_row, cell_ids = pd.factorize(true_code[here] * width + pred[here])
    pred_sizes = np.bincount(pred[here])
    same_cell = _pairs(np.bincount(cell_of_row))
    same_true = _pairs(np.bincount(true_code))
    same_pred = _pairs(pred_sizes)
    precision = _ratio(same_cell, same_pred)
    recall = _ratio(same_cell, same_true)
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)

    # A true person is split when it spans >1 cell, each missing identifier being a cell of its own.
    cell_true, cell_pred = cell_ids // width, cell_ids % width
    spans = np.bincount(cell_true, minlength=n_true) + np.bincount(true_code[~here], minlength=n_true)
    false_merges = int((np.bincount(cell_pred) > 1).sum())

    def linked(name: str) -> int:
        preds = t_pred[(kind == name) & (t_pred >= 0)]
        return int((comp_size[preds] > 1).sum())

    return IdentityAccuracy(
        pairwise_precision=precision,
        pairwise_recall=recall,
        f1=f1,
        true_people=n_true,
        predicted_people=int(np.count_nonzero(pred_sizes)),
        people_split=int((spans > 1).sum()),
        false_merges=false_merges,
        largest_component=int(comp_size.max(initial=0)),
        largest_true_household=_largest_true_household(person_keys, households),
        junk_linked=linked("junk"),
        shared_linked=linked("shared"),
    )


def _largest_true_household(person_keys: pd.Series, households: pd.DataFrame | None) -> int:
    if households is None:
        return 0
    _require_columns(households, HOUSEHOLD_COLUMNS, "households")
    per_person = person_keys.value_counts().rename("n").reset_index()
    per_household = per_person.merge(households[HOUSEHOLD_COLUMNS], on="person_key").groupby(
        "household_key")["n"].sum()
    return int(per_household.max()) if len(per_household) else 0


def evidence_ceiling(links: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """The best mapping the data allows: connected components over only those links (src_type,
    src_value, dst_type, dst_value) whose two ends are personal identifiers of the same true person.
    Scoring it with `evaluate` gives the recall no resolver can beat on this data (identifiers a
    person never left together on one record cannot be joined)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    _require_columns(links, ["src_type", "src_value", "dst_type", "dst_value"], "links")
    _require_columns(truth, TRUTH_COLUMNS, "truth")
    personal = truth[truth["kind"].isin(PERSONAL_KINDS)].reset_index(drop=True)
    index = pd.Index(list(zip(personal["id_type"], personal["id_value"], strict=True)))
    src = index.get_indexer(list(zip(links["src_type"], links["src_value"], strict=True)))
    dst = index.get_indexer(list(zip(links["dst_type"], links["dst_value"], strict=True)))
    owner = personal["person_key"].to_numpy()
    same = (src >= 0) & (dst >= 0)
    same[same] = owner[src[same]] == owner[dst[same]]
    n = len(personal)
    graph = coo_matrix((np.ones(int(same.sum())), (src[same], dst[same])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    return pd.DataFrame({"id_type": personal["id_type"], "id_value": personal["id_value"], "person_id": label.astype(str)})


def pattern_figures(mapping: pd.DataFrame, truth: pd.DataFrame, landing: Path | str) -> dict:
    """Figures for the real-population patterns whose truth `cdp generate --population retail` writes:
    duplicate memberships joined (of _truth/duplicate_members.csv) and false merges across re-issued
    values (_truth/ownership.csv: a previous and a later owner predicted as one person). Files that
    are absent give no figure."""
    folder = Path(landing) / "_truth"
    out: dict = {}
    pred = dict(zip(zip(mapping["id_type"], mapping["id_value"], strict=True), mapping["person_id"], strict=True))
    dup_path = folder / "duplicate_members.csv"
    if dup_path.exists():
        dups = pd.read_csv(dup_path, dtype=str, keep_default_na=False)
        joined = sum(1 for a, b in zip(dups["member_id"], dups["second_member_id"], strict=True)
                     if pred.get(("member_id", a)) is not None and pred.get(("member_id", a)) == pred.get(("member_id", b)))
        out["duplicate_memberships"] = len(dups)
        out["duplicate_memberships_joined"] = joined
        out["duplicate_memberships_joined_share"] = _ratio(joined, len(dups))
    own_path = folder / "ownership.csv"
    if own_path.exists():
        owners = pd.read_csv(own_path, dtype=str, keep_default_na=False)
        personal = truth[truth["kind"].isin(PERSONAL_KINDS)]
        persons_of: dict[str, set] = {}
        for t, v, k in zip(personal["id_type"], personal["id_value"], personal["person_key"], strict=True):
            p = pred.get((t, v))
            if p is not None:
                persons_of.setdefault(k, set()).add(p)
        merged = 0
        for _, group in owners.groupby(["id_type", "id_value"]):
            keys = list(group["person_key"])
            if any(persons_of.get(a, set()) & persons_of.get(b, set()) for i, a in enumerate(keys) for b in keys[i + 1:]):
                merged += 1
        out["reissued_values"] = int(owners.groupby(["id_type", "id_value"]).ngroups)
        out["reissued_false_merges"] = merged
    return out
