"""Ingest benchmark: generation, then ingest+standardise on Sail (Delta) and JVM Spark (Parquet), side
by side on the same files, plus the pyarrow+deltalake floor for the app_events bronze load.
Every step runs in its own process; peak memory is the peak RSS of that process tree (sampled).

    python bench/ingest.py --scales 10000 100000 1000000 --days 30
    python bench/ingest.py --scales 1000000 --engines sail --formats default real --baseline 95e5e8e
Each format (`cdp generate --format default|real`, the same records) is generated once and run by
every engine; --baseline runs an earlier revision's job on the default files, interleaved, so the
ratios compare runs of one sitting. Writes bench/results/ingest-<date>.json and prints a Markdown table."""

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


CPU_S: list[float] = []  # CPU seconds (user + system) of each run_measured command, in order


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Run a command; return wall seconds, peak RSS (GiB) of its process tree, and its stdout (its CPU
    seconds, children included, are appended to CPU_S)."""
    cpu0 = _children_cpu()
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
    CPU_S.append(round(_children_cpu() - cpu0, 1))
    return time.perf_counter() - t0, peak / 2**30, out


def last_json(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def baseline_checkout(rev: str, work: Path) -> Path:
    """A worktree of the project at `rev` (today's code before a change), for side-by-side runs."""
    path = work / f"baseline-{rev}"
    if not path.exists():
        subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "--detach", str(path), rev], check=True,
                       capture_output=True)
    return path


def _job(job: Path, engine: str, landing: Path, out_dir: Path, days: int, env: dict) -> dict:
    shutil.rmtree(out_dir, ignore_errors=True)
    wall, gib, out = run_measured([PY, str(job), "--engine", engine, "--landing", str(landing),
                                   "--lakehouse", str(out_dir), "--start", START, "--days", str(days)], env)
    r = last_json(out)
    r.update(wall_s=round(wall, 1), peak_gib=round(gib, 2), cpu_s=CPU_S[-1])
    shutil.rmtree(out_dir, ignore_errors=True)
    return r


def _summary(rs: list[dict]) -> dict:
    med = statistics.median(r["ingest_s"] + r["standardise_s"] for r in rs)
    return {
        "ingest_plus_standardise_s": round(med, 1),
        "ingest_s": round(statistics.median(r["ingest_s"] for r in rs), 1),
        "standardise_s": round(statistics.median(r["standardise_s"] for r in rs), 1),
        "cpu_s": statistics.median(r["cpu_s"] for r in rs),
        "lines_per_s": round(rs[0]["lines"] / med),
        "peak_gib": max(r["peak_gib"] for r in rs),
        "runs": rs,
    }


def bench_scale(people: int, days: int, work: Path, repeat: int, engines: list[str], formats: list[str],
                baseline: str | None, floor: bool) -> dict:
    result = {"people": people, "days": days}
    env = {k: v for k, v in os.environ.items() if k != "SPARK_CONNECT_MODE_ENABLED"}
    landings = {}
    for fmt in formats:
        landing = work / f"landing-{people}-{fmt}"
        gen_s, gen_gib, _ = run_measured([PY, "-m", "spark_jobs.cli", "generate", "--people", str(people), "--days",
                                          str(days), "--start", START, "--landing", str(landing), "--format", fmt])
        manifest = json.loads((landing / "_truth" / "manifest.json").read_text())
        result[f"generate_{fmt}"] = {"seconds": round(gen_s, 1), "peak_gib": round(gen_gib, 2), "cpu_s": CPU_S[-1],
                                     "raw_lines": manifest["total_lines"]}
        landings[fmt] = landing
    result["raw_lines"] = result[f"generate_{formats[0]}"]["raw_lines"]
    # (label, job script, engine, landing): today's code (baseline) and this code, interleaved per repeat
    # so that machine noise hits all alike.
    variants = [(f"{e}_{fmt}", HERE / "ingest_job.py", e, landings[fmt]) for fmt in formats for e in engines]
    if baseline:
        old = baseline_checkout(baseline, work)
        variants.insert(0, (f"baseline_{baseline}", old / "bench" / "ingest_job.py", "sail", landings["default"]))
    runs: dict[str, list[dict]] = {v[0]: [] for v in variants}
    for _ in range(repeat):
        for label, job, engine, landing in variants:
            runs[label].append(_job(job, engine, landing, work / f"lh-{people}-{label}", days, env))
    for label, rs in runs.items():
        result[label] = _summary(rs)
    if baseline:
        base = result[f"baseline_{baseline}"]["ingest_plus_standardise_s"]
        result["ratio_vs_baseline"] = {label: round(result[label]["ingest_plus_standardise_s"] / base, 2)
                                       for label in runs if not label.startswith("baseline")}
    for fmt in formats:  # the parser alone, one process: its CPU share of the ingest
        parse = [last_json(run_measured([PY, str(HERE / "ingest_job.py"), "--engine", "sail", "--landing", str(landings[fmt]),
                                         "--lakehouse", "-", "--start", START, "--days", str(days), "--parse-only"])[2])
                 for _ in range(repeat)]
        cpu = statistics.median(p["parse_cpu_s"] for p in parse)
        result[f"parser_{fmt}"] = {"cpu_s": cpu, "records": parse[0]["records"]}
        if f"sail_{fmt}" in result:
            result[f"parser_{fmt}"]["share_of_ingest_cpu"] = round(cpu / max(result[f"sail_{fmt}"]["cpu_s"], 0.01), 2)
    if floor and "default" in landings:
        floor_dir = work / f"floor-{people}"
        shutil.rmtree(floor_dir, ignore_errors=True)
        floors = [last_json(run_measured([PY, str(HERE / "ingest_floor.py"), "--landing", str(landings["default"]),
                                          "--out", str(floor_dir)])[2]) for _ in range(repeat)]
        result["floor_app_events_bronze_s"] = round(statistics.median(f["bronze_app_events_s"] for f in floors), 1)
    for landing in landings.values():
        shutil.rmtree(landing, ignore_errors=True)
    if baseline:
        subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force", str(work / f"baseline-{baseline}")],
                       check=False, capture_output=True)
    return result


def markdown(results: list[dict]) -> str:
    labels = sorted({k for r in results for k, v in r.items() if isinstance(v, dict) and "ingest_plus_standardise_s" in v})
    rows = ["| people | raw lines | variant | ingest+standardise s (ingest / standardise) | CPU s | peak GiB | × baseline |",
            "|---:|---:|---|---:|---:|---:|---:|"]
    for r in results:
        for label in labels:
            v = r.get(label)
            if v:
                rows.append(f"| {r['people']:,} | {r['raw_lines']:,} | {label} | {v['ingest_plus_standardise_s']} "
                            f"({v['ingest_s']} / {v['standardise_s']}) | {v['cpu_s']} | {v['peak_gib']} | "
                            f"{r.get('ratio_vs_baseline', {}).get(label, '-')} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scales", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=1, help="runs per engine; medians are reported")
    ap.add_argument("--engines", nargs="+", default=["sail", "jvm"])
    ap.add_argument("--formats", nargs="+", default=["default", "real"], choices=["default", "real"],
                    help="cdp generate --format of the landing files (the same records either way)")
    ap.add_argument("--baseline", default=None, help="a git revision whose ingest+standardise runs side by side on "
                    "the default-format files (e.g. the commit before a change)")
    ap.add_argument("--no-floor", action="store_true", help="skip the pyarrow+deltalake floor of the app_events load")
    ap.add_argument("--work", type=Path, default=HERE / "_out")
    a = ap.parse_args()
    if a.baseline and "default" not in a.formats:
        ap.error("--baseline runs on the default-format files: keep default in --formats")
    a.work.mkdir(parents=True, exist_ok=True)
    results = []
    for people in a.scales:
        print(f"== {people:,} people x {a.days} days", flush=True)
        results.append(bench_scale(people, a.days, a.work, a.repeat, a.engines, a.formats, a.baseline, not a.no_floor))
        print(markdown(results[-1:]), flush=True)
    machine = {"date": dt.date.today().isoformat(), "cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30),
               "python": platform.python_version(), "platform": platform.platform()}
    out = HERE / "results" / f"ingest-{machine['date']}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    print(markdown(results))
    print(f"(written to {out})")


if __name__ == "__main__":
    main()
