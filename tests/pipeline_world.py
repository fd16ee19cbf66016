"""The pipeline's own two-day lakehouse (1,500 generated people, every stage run by `run_stage`), built
once per test worker and shared by the modules that read it: tests/test_pipeline.py, test_serving.py and
test_serving_sql.py (a pytest plugin, registered in conftest.py; those modules run on one xdist worker,
the `pipeline_world` group). Readers only: no test writes to it."""

import datetime as dt

import pytest

from spark_jobs.config import CdpConfig, EngineConfig, PathsConfig
from spark_jobs.contracts import CONTRACTS
from spark_jobs.generate import NoiseRates, generate
from spark_jobs.pipeline import run_stage, summarise
from spark_jobs.tables import table_stats

START = dt.date(2026, 11, 1)
GROUP = "pipeline_world"
world_changes: dict[str, set[str]] = {}  # stage -> the tables whose Delta version it moved


def _versions(cfg) -> dict[str, int]:
    root = cfg.paths.lakehouse_uri()
    return {n: s["version"] for n in CONTRACTS if (s := table_stats(root, n))}


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    manifest = generate(base / "landing", people=1500, days=2, seed=11, start=START, noise=NoiseRates(corrupt_line=0.01))
    cfg = CdpConfig(engine=EngineConfig(kind="local"), paths=PathsConfig(
        landing=str(base / "landing"), lakehouse=str(base / "lh"), exports=str(base / "exports")))
    summaries = []
    changed: dict[str, set[str]] = {}

    def tracked(stage, batch, run_id, **kwargs):
        before = _versions(cfg)
        run_stage(stage, batch, run_id, cfg=cfg, **kwargs)
        after = _versions(cfg)
        changed.setdefault(stage, set()).update(n for n, v in after.items() if before.get(n) != v)

    for i in range(2):
        batch = START + dt.timedelta(days=i)
        run_id = f"test_{batch}"
        for ch in cfg.ingest_sources():
            tracked("ingest", batch, run_id, channel=ch)
        tracked("standardise", batch, run_id)
        for stage in ("identity", "profiles", "tags", "segments", "analytics"):
            tracked(stage, batch, run_id)
        summaries.append(summarise(run_id, cfg))
    world_changes.update(changed)
    return base, cfg, manifest, summaries
