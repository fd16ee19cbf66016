"""Ingest benchmark: generation, then ingest+standardise on Sail (Delta) and JVM Spark (Parquet), side
by side on the same files, plus the pyarrow+deltalake floor for the app_events bronze load.
Every step runs in its own process; peak memory is the peak RSS of that process tree (sampled).

    python bench/ingest.py --scales 10000 100000 1000000 --days 30
Writes bench/results/ingest-<date>.json and prints a Markdown table for the README."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
PY = sys.executable
START = "2026-11-01"


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Run a command; return wall seconds, peak RSS (GiB) of its process tree, and its stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                rss = root.memory_info().rss + sum(c.memory_info().rss for c in root.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    done.set()
    thread.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return time.perf_counter() - t0, peak / 2**30, out


def last_json(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def bench_scale(people: int, days: int, work: Path, repeat: int, engines: list[str]) -> dict:
    landing = work / f"landing-{people}"
    gen_s, gen_gib, _ = run_measured([PY, "-m", "spark_jobs.cli", "generate", "--people", str(people), "--days", str(days),
                                      "--start", START, "--landing", str(landing)])
    manifest = json.loads((landing / "_truth" / "manifest.json").read_text())
    result = {"people": people, "days": days, "raw_lines": manifest["total_lines"],
              "generate": {"seconds": round(gen_s, 1), "peak_gib": round(gen_gib, 2),
                           "lines_per_s": round(manifest["total_lines"] / gen_s)}}
    env = {k: v for k, v in os.environ.items() if k != "SPARK_CONNECT_MODE_ENABLED"}
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    for _ in range(repeat):
        for engine in engines:  # interleaved, so machine noise hits both alike
            out_dir = work / f"lh-{people}-{engine}"
            shutil.rmtree(out_dir, ignore_errors=True)
            wall, gib, out = run_measured([PY, str(HERE / "ingest_job.py"), "--engine", engine, "--landing", str(landing),
                                           "--lakehouse", str(out_dir), "--start", START, "--days", str(days)], env)
            r = last_json(out)
            r.update(wall_s=round(wall, 1), peak_gib=round(gib, 2))
            runs[engine].append(r)
    for engine, rs in runs.items():
        med = statistics.median(r["ingest_s"] + r["standardise_s"] for r in rs)
        result[engine] = {
            "ingest_plus_standardise_s": round(med, 1),
            "ingest_s": round(statistics.median(r["ingest_s"] for r in rs), 1),
            "standardise_s": round(statistics.median(r["standardise_s"] for r in rs), 1),
            "app_events_bronze_s": round(statistics.median(r["per_channel_ingest_s"]["app_events"] for r in rs), 1),
            "lines_per_s": round(rs[0]["lines"] / med),
            "peak_gib": max(r["peak_gib"] for r in rs),
            "runs": rs,
        }
    if "sail" in result and "jvm" in result:
        result["sail_speedup_vs_jvm"] = round(result["jvm"]["ingest_plus_standardise_s"] / result["sail"]["ingest_plus_standardise_s"], 2)
    floor_dir = work / f"floor-{people}"
    shutil.rmtree(floor_dir, ignore_errors=True)
    floors = [last_json(run_measured([PY, str(HERE / "ingest_floor.py"), "--landing", str(landing), "--out", str(floor_dir)])[2])
              for _ in range(repeat)]
    result["floor_app_events_bronze_s"] = round(statistics.median(f["bronze_app_events_s"] for f in floors), 1)
    if "sail" in result:
        result["sail_vs_floor"] = round(result["sail"]["app_events_bronze_s"] / max(result["floor_app_events_bronze_s"], 0.01), 2)
    shutil.rmtree(landing, ignore_errors=True)
    return result


def markdown(results: list[dict]) -> str:
    rows = ["| people | raw lines | generate s (GiB) | Sail ingest+std s (lines/s, GiB) | JVM ingest+std s (GiB) | Sail × JVM | app_events bronze: Sail s / floor s |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        s, j = r.get("sail", {}), r.get("jvm", {})
        rows.append(
            f"| {r['people']:,} | {r['raw_lines']:,} | {r['generate']['seconds']} ({r['generate']['peak_gib']}) | "
            f"{s.get('ingest_plus_standardise_s', '-')} ({s.get('lines_per_s', 0):,}, {s.get('peak_gib', '-')}) | "
            f"{j.get('ingest_plus_standardise_s', '-')} ({j.get('peak_gib', '-')}) | {r.get('sail_speedup_vs_jvm', '-')} | "
            f"{s.get('app_events_bronze_s', '-')} / {r['floor_app_events_bronze_s']} |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scales", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=1, help="runs per engine; medians are reported")
    ap.add_argument("--engines", nargs="+", default=["sail", "jvm"])
    ap.add_argument("--work", type=Path, default=HERE / "_out")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    results = []
    for people in a.scales:
        print(f"== {people:,} people x {a.days} days", flush=True)
        results.append(bench_scale(people, a.days, a.work, a.repeat, a.engines))
        print(json.dumps({k: v for k, v in results[-1].items() if k not in ("sail", "jvm")}), flush=True)
    machine = {"date": dt.date.today().isoformat(), "cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30),
               "python": platform.python_version(), "platform": platform.platform()}
    out = HERE / "results" / f"ingest-{machine['date']}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    print(markdown(results))
    print(f"(written to {out})")


if __name__ == "__main__":
    main()
