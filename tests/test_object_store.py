"""The lakehouse and the landing zone on an S3-compatible object store: a real S3 server on loopback
(moto's HTTP server, started by scripts/object-store.sh), the real `cdp` command on Sail and on JVM
Spark (Hadoop S3A, the pinned `s3` JARs), and delta-rs reading the result. The tables written on the
object store equal those of the same run on a local folder, row for row."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest

from spark_jobs.generate import NoiseRates, generate
from tests.airflow_standalone import free_port
from tests.lakehouse_compare import ROOT, assert_same_tables, cdp, table

pytestmark = [pytest.mark.xdist_group("object_store")]
START = dt.date(2026, 11, 1)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A running object store with a bucket `cdp`; the AWS variables that reach it, set in this process
    (delta-rs and pyarrow read them) and returned for child processes."""
    state = tmp_path_factory.mktemp("object-store")
    env = {**os.environ, "CDP_S3_PORT": str(free_port()), "CDP_S3_DIR": str(state)}
    script = str(ROOT / "scripts" / "object-store.sh")
    started = subprocess.run([script, "start", "--bucket", "cdp"], env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    printed = subprocess.run([script, "env"], env=env, capture_output=True, text=True, check=True).stdout
    aws = dict(line.removeprefix("export ").split("=", 1) for line in printed.splitlines())
    saved = {k: os.environ.get(k) for k in aws}
    os.environ.update(aws)
    try:
        yield aws
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=60)


def test_the_landing_zone_on_the_object_store_is_listed_with_the_same_accounting(s3, tmp_path):
    """Ingest's listing of an s3:// day folder: files are scanned from their bytes (checksum, lines,
    header), sub-folders and hidden names are skipped with a reason, exactly as on a local folder."""
    from spark_jobs.ingest import list_batch
    from spark_jobs.sources.config import load_sources
    from spark_jobs.storage import landing_root, upload_tree

    local = tmp_path / "landing"
    day = local / "crm" / START.isoformat()
    (day / "nested").mkdir(parents=True)
    (day / "members.csv").write_text("member_id,phone,name\nM1,13912345678,张伟\nM2,13912345679,李娜")
    (day / "_partial.csv").write_text("member_id\nM3\n")
    (day / "nested" / "more.csv").write_text("member_id\nM4\n")
    upload_tree(local, "s3://cdp/t-listing/landing")
    sources = load_sources(ROOT / "conf" / "sources.yaml")
    crm = sources.get("crm")
    on_s3 = list_batch(landing_root("s3://cdp/t-listing/landing"), crm, START)
    on_disk = list_batch(local, crm, START)

    def view(files):
        # (A local folder's own size, 4096, is the file system's, not data: folders have none on S3.)
        return sorted((f.rel, f.status, f.checksum, f.bytes if f.status == "loaded" else None, f.lines, f.names, f.note)
                      for f in files)

    assert view(on_s3) == view(on_disk)
    statuses = {f.rel: f.status for f in on_s3}
    assert statuses == {"crm/2026-11-01/members.csv": "loaded", "crm/2026-11-01/_partial.csv": "skipped",
                        "crm/2026-11-01/nested": "skipped"}
    loaded = next(f for f in on_s3 if f.status == "loaded")
    assert loaded.lines == 2 and str(loaded.path) == "s3://cdp/t-listing/landing/crm/2026-11-01/members.csv"


@pytest.fixture(scope="module")
def runs(s3, tmp_path_factory):
    """One generated day, run by `cdp run` on Sail twice: from a local landing folder into a local
    lakehouse, and from the same files on the object store into a lakehouse on the object store."""
    base = tmp_path_factory.mktemp("s3-runs")
    generate(base / "landing", people=300, days=2, seed=11, start=START, noise=NoiseRates.preset("retail"))
    from spark_jobs.storage import upload_tree

    upload_tree(base / "landing", "s3://cdp/landing")
    local = {**os.environ, "CDP_ENGINE": "local", "CDP_LANDING": str(base / "landing"),
             "CDP_LAKEHOUSE": str(base / "lakehouse"), "CDP_EXPORTS": str(base / "exports")}
    remote = {**os.environ, **s3, "CDP_ENGINE": "local", "CDP_LANDING": "s3://cdp/landing",
              "CDP_LAKEHOUSE": "s3://cdp/lakehouse", "CDP_EXPORTS": "s3://cdp/exports"}
    for env in (local, remote):
        env.pop("SPARK_CONNECT_MODE_ENABLED", None)
        done = cdp(env, "run", "--date", START.isoformat())
        assert done.returncode == 0, f"{env['CDP_LAKEHOUSE']}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return {"base": base, "local": local, "remote": remote}


@pytest.mark.e2e
@pytest.mark.slow
def test_sail_runs_the_day_from_and_into_the_object_store_with_the_local_runs_tables(runs):
    compared = assert_same_tables(Path(runs["local"]["CDP_LAKEHOUSE"]), "s3://cdp/lakehouse")
    assert len(compared) >= 15
    files = table("s3://cdp/lakehouse", "ops_ingest_files").to_pyarrow_table().to_pylist()
    landed = sorted(str(p.relative_to(runs["base"] / "landing")) for p in (runs["base"] / "landing").glob(f"*/{START}/*"))
    assert sorted(f["file"] for f in files) == landed
    from spark_jobs.storage import children

    exports = children("s3://cdp/exports")
    assert exports, "the segment exports were written to the object store"
    assert "_manifest.json" in children(f"s3://cdp/exports/{exports[0]}/{START}")


_JVM_APPEND = """
import datetime as dt, json, sys
from pyspark.sql import functions as F
from spark_jobs.config import EngineConfig
from spark_jobs.session import spark_session
from spark_jobs.tables import Lakehouse

day, nxt = dt.date.fromisoformat(sys.argv[1]), dt.date.fromisoformat(sys.argv[2])
with spark_session(EngineConfig(kind="classic", classic_master="local[2]"), object_store=True) as spark:
    lh = Lakehouse(spark, "s3://cdp/lakehouse")
    tags = lh.read("gold_tags", {"as_of": day})
    lh.write_partition("gold_tags", tags.withColumn("as_of", F.lit(nxt)), {"as_of": nxt})
    print(json.dumps({"profiles": lh.read("gold_profiles").count(), "tags": lh.read("gold_tags", {"as_of": nxt}).count()}))
"""


@pytest.mark.e2e
@pytest.mark.slow
def test_jvm_spark_reads_and_appends_to_the_object_store_lakehouse_through_s3a(runs, monkeypatch):
    """JVM Spark (delta-spark over Hadoop S3A, the pinned `s3` JARs) reads the tables Sail wrote on the
    object store and commits a partition to one; delta-rs and Sail read that commit."""
    import json
    import sys

    nxt = START + dt.timedelta(days=1)
    env = {k: v for k, v in runs["remote"].items() if k != "SPARK_CONNECT_MODE_ENABLED"}
    done = subprocess.run([sys.executable, "-c", _JVM_APPEND, START.isoformat(), nxt.isoformat()], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-6000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    tags = table("s3://cdp/lakehouse", "gold_tags")
    rows = tags.to_pyarrow_table().to_pylist()
    first = sorted((r["person_id"], r["tag"], r["value"]) for r in rows if r["as_of"] == START)
    second = sorted((r["person_id"], r["tag"], r["value"]) for r in rows if r["as_of"] == nxt)
    assert first and second == first and seen["tags"] == len(first)
    assert seen["profiles"] == table("s3://cdp/lakehouse", "gold_profiles").to_pyarrow_table().num_rows
    assert "Apache-Spark" in (tags.history(1)[0].get("engineInfo") or ""), tags.history(1)
    from spark_jobs.tables import Lakehouse
    from tests.conftest import _use

    sail = Lakehouse(_use("sail", monkeypatch), "s3://cdp/lakehouse")
    assert sail.read("gold_tags", {"as_of": nxt}).count() == len(first)
