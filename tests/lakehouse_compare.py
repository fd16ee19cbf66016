"""Comparing two lakehouses table by table, row for row, for the tests that run the same pipeline on
two engines or two storages (test_jvm_stack, test_object_store). Not a test module."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from deltalake import DeltaTable

from spark_jobs.contracts import CONTRACTS

ROOT = Path(__file__).resolve().parent.parent
# Columns that record when or by which run a row was written, or how long a step took: they differ
# between any two runs, on any engine. Everything else must be equal.
RUN_COLUMNS = {"ingested_at", "run_id", "_run_id", "written_at", "started_at", "finished_at", "seconds",
               "computed_at", "recorded_at", "checked_at", "created_at", "updated_at", "_ingested_at",
               "duration_s", "validated_at", "loaded_at", "claimed_at",
               "check_key"}  # ops_dq_results: a hash of the run id and the scope
# Tables every daily run writes: a comparison that did not see them compared too little.
MUST_COMPARE = ("bronze_app_events", "silver_events", "silver_identifiers", "gold_id_map", "gold_profiles",
                "gold_tags", "gold_segment_members", "ops_ingest_files", "ops_runs")


def cdp(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """A real `cdp` process of this venv."""
    exe = Path(sys.executable).parent / "cdp"
    return subprocess.run([str(exe), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)


def table(root: str | Path, name: str) -> DeltaTable | None:
    path = f"{str(root).rstrip('/')}/{CONTRACTS[name].layer}/{name}"
    return DeltaTable(path) if DeltaTable.is_deltatable(path) else None


def comparable(t: DeltaTable) -> list[tuple]:
    rows = []
    for r in t.to_pyarrow_table().to_pylist():
        if isinstance(r.get("props"), str):
            r["props"] = json.dumps(json.loads(r["props"]), sort_keys=True)
        rows.append(tuple(sorted((k, repr(v)) for k, v in r.items() if k not in RUN_COLUMNS)))
    return sorted(rows)


def assert_same_tables(want_root: str | Path, got_root: str | Path) -> list[str]:
    """Every contract table is in both lakehouses or in neither, with equal rows; returns the names compared."""
    compared = []
    for name in sorted(CONTRACTS):
        a, b = table(want_root, name), table(got_root, name)
        assert (a is None) == (b is None), f"{name}: in one lakehouse only"
        if a is None:
            continue
        got, want = comparable(b), comparable(a)
        missing = [r for r in want if r not in got][:2]
        extra = [r for r in got if r not in want][:2]
        assert len(got) == len(want) and not missing and not extra, (name, len(got), len(want), missing, extra)
        compared.append(name)
    for must in MUST_COMPARE:
        assert must in compared, (must, compared)
    return compared
