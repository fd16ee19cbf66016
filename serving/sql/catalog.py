"""What the BI SQL endpoint shows: the gold and ops Delta tables (read through delta-rs as Arrow datasets,
no copy) at the versions of the last complete run, and the one policy that decides which of them a key
may see."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from serving.access import ApiKey
from spark_jobs.contracts import CONTRACTS
from spark_jobs.tables import read_dataset

CATALOG = "cdp"
SCHEMAS = ("gold", "ops")  # layers BI reads; bronze and silver hold raw records, not marts
SQL_SCOPE = "sql:read"
PII_SCOPE = "pii:read"
# Tables holding phones, e-mails, names, birthdays or raw identifier values (as the API masks them without
# pii:read). Until per-column masked views exist, a key without pii:read does not see these tables at all.
PII_TABLES = frozenset({"gold_profiles", "gold_id_map", "gold_id_decisions", "gold_id_dropped", "ops_dq_results"})


@dataclass(frozen=True)
class TableView:
    """One table as a principal sees it: `sql` is the SELECT that defines it over `source` (the registered
    Arrow dataset), so a masked view is a different `sql` over the same dataset."""

    schema: str
    name: str
    dataset: object  # pyarrow.dataset.Dataset at a pinned Delta version
    version: int
    sql: str

    @property
    def source(self) -> str:
        return f"_cdp_{self.name}"

    @property
    def arrow_schema(self) -> pa.Schema:
        return self.dataset.schema


@dataclass(frozen=True)
class Snapshot:
    """The tables at one set of versions; `token` changes whenever any version does."""

    tables: dict[str, TableView]
    token: tuple[tuple[str, int], ...]


def views_for(key: ApiKey, snapshot: Snapshot) -> list[TableView]:
    """The tables `key` may query and list, in catalog order: the single place that maps table -> what a
    principal may see. Masked views per scope go here (replace `sql` rather than drop the table)."""
    if SQL_SCOPE not in key.scopes:
        return []
    return [v for v in snapshot.tables.values() if PII_SCOPE in key.scopes or v.name not in PII_TABLES]


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
