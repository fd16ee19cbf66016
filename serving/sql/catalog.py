"""What the BI SQL endpoint shows: the gold and ops Delta tables (read through delta-rs as Arrow datasets,
no copy) at the versions of the last complete run, and the one policy that decides which of them a key
may see."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from serving.access import PII_ATTRIBUTES, PII_ID_TYPES, PII_SCOPE, ApiKey
from spark_jobs.contracts import CONTRACTS
from spark_jobs.privacy.classes import column_class
from spark_jobs.tables import read_dataset

CATALOG = "cdp"
SCHEMAS = ("gold", "ops")  # layers BI reads; bronze and silver hold raw records, not marts
SQL_SCOPE = "sql:read"
# Tables holding phones, e-mails, names, birthdays or raw identifier values: a key without pii:read reads
# them through masked views (masked_sql), the other tables as they are.
PII_TABLES = frozenset({"gold_profiles", "gold_id_map", "gold_id_decisions", "gold_id_dropped", "ops_dq_results"})
MASKED = "***"  # what a masked free-text value reads as
# serving.access's masks as DuckDB expressions over `{v}` (a VARCHAR), character for character the same text
# the API returns (tests/test_serving_access.py checks them against the Python functions).
SQL_MASKS = {
    "phone": "CASE WHEN length({v}) <= 7 THEN repeat('*', length({v})) "
             "ELSE left({v}, length({v}) - 8) || '****' || right({v}, 4) END",
    "email": "CASE WHEN strpos({v}, '@') = 0 OR substr({v}, strpos({v}, '@') + 1) = '' THEN '***' "
             "ELSE left({v}, least(strpos({v}, '@') - 1, 1)) || '***@' || substr({v}, strpos({v}, '@') + 1) END",
    "name": "left({v}, 1) || repeat('*', greatest(length({v}) - 1, 1))",
    "birthday": "left({v}, 4) || '-**-**'",
}
TYPE_COLUMNS = {"id_value": "id_type", "other_value": "other_type", "src_value": "src_type", "dst_value": "dst_type"}


def _masked_column(table: str, column: str, columns: set[str]) -> str | None:
    """The masked expression of one column, or None when it is shown as it is."""
    quoted = f'"{column}"'
    text = f"CAST({quoted} AS VARCHAR)"
    kind = column_class(table, column)
    if kind in PII_ATTRIBUTES:
        return SQL_MASKS[kind].format(v=text)
    if kind == "identifier":
        typed = TYPE_COLUMNS.get(column)
        if typed not in columns:  # a value of no declared type: as sensitive as a phone
            return f"CASE WHEN {quoted} IS NULL THEN NULL ELSE '{MASKED}' END"
        cases = " ".join(f"WHEN '{t}' THEN {SQL_MASKS[t].format(v=text)}" for t in PII_ID_TYPES)
        return f'CASE "{typed}" {cases} ELSE {quoted} END'
    if kind == "free_text":
        return f"CASE WHEN {quoted} IS NULL THEN NULL ELSE '{MASKED}' END"
    return None


def _masks(table: str, names: list[str]) -> dict[str, str]:
    """column -> its masked expression, for the columns of `table` that are masked."""
    return {n: m for n in names if (m := _masked_column(table, n, set(names)))}


def _select(table: str, names: list[str], masks: dict[str, str]) -> str:
    exprs = [f'{masks[n]} AS "{n}"' if n in masks else f'"{n}"' for n in names]
    return f'SELECT {", ".join(exprs)} FROM "_cdp_{table}"'


def masked_sql(table: str, names: list[str]) -> str:
    """The SELECT a key without pii:read reads `table` through: phones, e-mails, names and birthdays masked
    as the API masks them (identifier columns when their type column says phone or email), free text as
    '***'; every other column as it is. Masked columns read as VARCHAR."""
    return _select(table, names, _masks(table, names))


@dataclass(frozen=True)
class TableView:
    """One table as a principal sees it: `sql` is the SELECT that defines it over `source` (the registered
    Arrow dataset), so a masked view is a different `sql` over the same dataset."""

    schema: str
    name: str
    dataset: object  # pyarrow.dataset.Dataset at a pinned Delta version
    version: int
    sql: str
    masked: tuple[str, ...] = ()  # columns the view masks (VARCHAR whatever the table's type)

    @property
    def source(self) -> str:
        return f"_cdp_{self.name}"

    @property
    def arrow_schema(self) -> pa.Schema:
        schema = self.dataset.schema
        for col in self.masked:
            i = schema.get_field_index(col)
            schema = schema.set(i, schema.field(i).with_type(pa.string()))
        return schema

    def masked_view(self) -> TableView:
        names = self.dataset.schema.names
        masks = _masks(self.name, names)
        return TableView(self.schema, self.name, self.dataset, self.version, _select(self.name, names, masks), tuple(masks))


@dataclass(frozen=True)
class Snapshot:
    """The tables at one set of versions; `token` changes whenever any version does."""

    tables: dict[str, TableView]
    token: tuple[tuple[str, int], ...]


def views_for(key: ApiKey, snapshot: Snapshot) -> list[TableView]:
    """The tables `key` may query and list, in catalog order: the single place that maps table -> what a
    principal may see. Without pii:read, the PII tables are their masked views."""
    if SQL_SCOPE not in key.scopes:
        return []
    if PII_SCOPE in key.scopes:
        return list(snapshot.tables.values())
    return [v.masked_view() if v.name in PII_TABLES else v for v in snapshot.tables.values()]


class Catalog:
    """The lakehouse's BI-facing tables under `root`, re-read at most every `refresh_seconds` so that a
    new complete run shows up without a restart. `pinned()` gives {table: version} (the last complete
    run's, spark_jobs.runs.pinned_versions); a table it does not name is read at its newest version."""

    def __init__(self, root: str, pinned: Callable[[], dict[str, int]] = dict, refresh_seconds: float = 10.0):
        self.root = root
        self._pinned = pinned
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._loaded_at = 0.0

    def snapshot(self) -> Snapshot:
        with self._lock:
            if self._snapshot is None or time.monotonic() - self._loaded_at > self.refresh_seconds:
                self._snapshot = self._load()
                self._loaded_at = time.monotonic()
            return self._snapshot

    def _load(self) -> Snapshot:
        pinned = self._pinned()
        tables = {}
        for name, c in sorted(CONTRACTS.items(), key=lambda kv: (SCHEMAS.index(kv[1].layer), kv[0])
                              if kv[1].layer in SCHEMAS else (99, kv[0])):
            if c.layer not in SCHEMAS:
                continue
            found = read_dataset(self.root, name, pinned.get(name))
            if found is None:  # not written yet (e.g. gold_scores before a model is trained)
                continue
            dataset, version = found
            tables[name] = TableView(c.layer, name, dataset, version, f'SELECT * FROM "_cdp_{name}"')
        return Snapshot(tables, tuple((n, v.version) for n, v in tables.items()))
