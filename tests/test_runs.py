"""Run safety on real processes: one writer per lakehouse, days in order, the ops_runs manifest that
consistent readers pin, and SIGKILL at several points. Each scenario is compared with the reference
world, the same days run one by one. Marked e2e and slow."""

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from spark_jobs import runs
from spark_jobs.config import load_config
from spark_jobs.contracts import CONTRACTS
from spark_jobs.generate import generate
from spark_jobs.pipeline import run_day, summarise
from spark_jobs.tables import table_path

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
START = dt.date(2026, 11, 1)
D1, D2, D3 = (START + dt.timedelta(days=i) for i in range(3))
QUICK = ["ingest", "standardise"]  # the stages where redeliveries and races showed
SOURCES = ["orders", "pos", "crm"]
# The batch-partitioned tables a day's ingest and standardise write (and the column naming the batch).
BATCH_TABLES = {
    **{f"bronze_{m}": "_batch_date" for m in ("orders", "pos", "crm")}, "bronze_quarantine": "_batch_date",
    "ops_ingest_files": "batch_date", "silver_orders": "_batch_date", "silver_contacts": "_batch_date",
    "silver_identifiers": "_batch_date", "silver_id_links": "_batch_date",
}
RUN_TIMES = {"_ingested_at", "ingested_at"}


def _config_file(base: Path, name: str) -> Path:
    path = base / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "paths": {"landing": str(base / "landing"), "lakehouse": str(base / name), "exports": str(base / f"{name}-exports")},
        "ingest": {"sources": SOURCES},
    }))
    return path


def _cfg(conf: Path):
    return load_config(conf, env={})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Three generated days; `d1` holds day 1 run completely (the manifest readers pin), `ref` day 1
    plus days 2 and 3 run one by one (ingest and standardise)."""
    base = tmp_path_factory.mktemp("runs")
    generate(base / "landing", people=150, days=3, seed=7, start=START)
    conf = _config_file(base, "d1")
    run_day(D1, None, _cfg(conf))
    shutil.copytree(base / "d1", base / "ref")
    ref = _config_file(base, "ref")
    for day in (D2, D3):
        run_day(day, QUICK, _cfg(ref))
    return base


def _scenario(world: Path, name: str, start_from: str = "d1") -> Path:
    shutil.copytree(world / start_from, world / name)
    return _config_file(world, name)


def _batch_rows(cfg, table: str, day: dt.date, version: int | None = None) -> list[tuple]:
    t = DeltaTable(table_path(cfg.paths.lakehouse_uri(), table), version=version)
    rows = t.to_pyarrow_table(partitions=[(BATCH_TABLES[table], "=", day.isoformat())]).to_pylist()
    return sorted(tuple(sorted((k, repr(v)) for k, v in r.items() if k not in RUN_TIMES)) for r in rows)


def _assert_day_equals_reference(world: Path, cfg, day: dt.date) -> None:
    ref = _cfg(world / "ref.yaml")
    for table in BATCH_TABLES:
        assert _batch_rows(cfg, table, day) == _batch_rows(ref, table, day), f"{table} {day}"


def _cli(conf: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "CDP_CONF": str(conf)}
    env.pop("SPARK_CONNECT_MODE_ENABLED", None)
    return subprocess.Popen([str(Path(sys.executable).parent / "cdp"), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(condition, what: str, proc: subprocess.Popen | None = None, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _quick(day: dt.date) -> list[str]:
    return ["run", "--date", day.isoformat(), "--stage", "ingest", "--stage", "standardise"]


def test_a_second_run_fails_fast_while_one_writes_and_days_cannot_skip_ahead(world):
    """Cases 1 and 2: day 2 runs in one process; day 2 again and day 3 started meanwhile fail at once,
    naming the run that writes. Day 3 started first is refused (day 2 not run). Nothing is lost or
    loaded twice: the result equals the one-by-one world, quarantine included."""
    conf = _scenario(world, "concurrent")
    cfg = _cfg(conf)
    with pytest.raises(runs.RunOrderError, match=r"landing day\(s\) 2026-11-02 after the newest day run \(2026-11-01\)"):
        run_day(D3, QUICK, cfg)
    first = _cli(conf, *_quick(D2))
    _wait_for(lambda: runs.current_claim(cfg) is not None, "the first run's claim", first)
    t0 = time.monotonic()
    second, third = _cli(conf, *_quick(D2)), _cli(conf, *_quick(D3))
    for proc in (second, third):
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 2 and "RunConflictError" in out and "is being written by run cli__2026-11-02" in out, out
    assert time.monotonic() - t0 < 60  # failed fast, not after a run
    out, _ = first.communicate(timeout=600)
    assert first.returncode == 0, out[-3000:]
    run_day(D3, QUICK, cfg)
    for day in (D2, D3):
        _assert_day_equals_reference(world, cfg, day)
    files = DeltaTable(table_path(cfg.paths.lakehouse_uri(), "ops_ingest_files")).to_pandas()
    quarantine = DeltaTable(table_path(cfg.paths.lakehouse_uri(), "bronze_quarantine")).to_pandas()
    assert files["quarantined"].sum() == len(quarantine)  # no quarantined line lost
    assert not (Path(cfg.paths.lakehouse_uri()) / "_staging").exists() or not any(
        p for p in (Path(cfg.paths.lakehouse_uri()) / "_staging").iterdir() if not p.name.startswith("adhoc-"))


def test_a_day_run_out_of_order_is_refused_unless_allowed_and_then_later_days_need_a_rerun(world):
    """Case 3: days 1-3 run; re-running day 2 is refused; allowed, it gives day 2's tables again and
    records day 3 as needing a re-run (ops_runs, summary) until day 3 is run again."""
    conf = _scenario(world, "order", start_from="ref")
    cfg = _cfg(conf)
    with pytest.raises(runs.RunOrderError, match=r"batch 2026-11-02 is before batch day\(s\) 2026-11-03 already run.*"
                                                 r"--allow-out-of-order"):
        run_day(D2, QUICK, cfg)
    run_id = run_day(D2, QUICK, cfg, allow_out_of_order=True)
    _assert_day_equals_reference(world, cfg, D2)
    assert runs.stale_days(cfg) == [D3]
    assert summarise(run_id, cfg)["needs_rerun"] == ["2026-11-03"]
    newest = runs.run_history(cfg).iloc[-1]
    assert (newest["run_id"], newest["stale_days"], newest["status"]) == (run_id, '["2026-11-03"]', "partial")
    run_day(D3, QUICK, cfg)  # the newest day again: in order
    assert runs.stale_days(cfg) == []
    _assert_day_equals_reference(world, cfg, D3)


def _version(cfg, table: str) -> int | None:
    path = table_path(cfg.paths.lakehouse_uri(), table)
    return DeltaTable(path).version() if DeltaTable.is_deltatable(path) else None


# The table a kill follows, and the table of the same stage committed after it.
KILL_POINTS = {"bronze_crm": "ops_ingest_files", "gold_id_map": "gold_id_changes"}
DAY_COLUMN = {"bronze_crm": "_batch_date", "ops_ingest_files": "batch_date", "gold_id_map": "as_of", "gold_id_changes": "as_of"}


def _has_day(cfg, table: str, day: dt.date, version: int | None = None) -> bool:
    path = table_path(cfg.paths.lakehouse_uri(), table)
    if not DeltaTable.is_deltatable(path):
        return False
    return any(p.get(DAY_COLUMN[table]) == day.isoformat() for p in DeltaTable(path, version=version).partitions())


@pytest.mark.parametrize("kill_after", sorted(KILL_POINTS))
def test_a_killed_run_leaves_the_last_complete_run_current_for_readers(world, kill_after):
    """Case 12: SIGKILL a full run of day 2 right after it committed `kill_after`, before its partner
    table (bronze_crm before ops_ingest_files; gold_id_map before gold_id_changes). The manifest still
    names day 1's run, and at its versions neither table has day 2: a pinned reader never sees the
    half day. The next run takes over the stale claim, clears the dead run's staging, completes day 2
    and equals the reference."""
    conf = _scenario(world, f"kill-{kill_after}")
    cfg = _cfg(conf)
    before = runs.last_complete(cfg)
    assert before is not None and before.batch_date == D1
    proc = _cli(conf, "run", "--date", D2.isoformat())
    _wait_for(lambda: _has_day(cfg, kill_after, D2), f"{kill_after} committed for {D2}", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert runs.last_complete(cfg) == before  # the manifest was not touched
    assert runs.run_history(cfg)["status"].tolist() == ["complete"]
    for table in (kill_after, KILL_POINTS[kill_after]):
        assert not _has_day(cfg, table, D2, version=before.tables[table]), table
    assert _has_day(cfg, kill_after, D2)  # an unpinned reader would see day 2 in one table ...
    dead = runs.current_claim(cfg)
    assert dead is not None and dead.pid == proc.pid  # left behind by the kill
    staging = Path(cfg.paths.lakehouse_uri()) / "_staging"
    assert any(staging.iterdir())

    run_id = run_day(D2, None, cfg)  # takes over the stale claim
    after = runs.last_complete(cfg)
    assert after.run_id == run_id and after.batch_date == D2
    for table in (kill_after, KILL_POINTS[kill_after]):
        assert _has_day(cfg, table, D2, version=after.tables[table]), table
    assert runs.current_claim(cfg) is None
    assert not any(p for p in staging.iterdir() if not p.name.startswith("adhoc-"))
    _assert_day_equals_reference(world, cfg, D2)
    assert set(after.tables) == {n for n in CONTRACTS if n != "ops_runs" and _version(cfg, n) is not None}
