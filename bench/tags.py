"""Marts benchmark: profiles + all tags + segments (spark_jobs.profiles.run, tags.run, segments.run, called
directly, without the quality gates that spark_jobs.pipeline.run_stage attaches) for one as-of date on Sail
(Delta) and JVM Spark (the same code, on a Parquet copy of the input tables: no delta-spark JARs here), in one
process and one Spark session per run. Each run's peak memory is the peak RSS of its process tree (sampled);
the load average before each run is recorded (the machine may be shared). The engines' outputs are compared
by checksums (rows, exact sums and order-free hashes of gold_profiles, gold_tags, gold_profile_tags and
gold_segment_members).

    python bench/tags.py --scales 100000 1000000 --days 30 --repeat 3 --repeat-big 1
Writes bench/results/tags-<date>-<scales>.json and prints Markdown tables for the README.
Data (generated, ingested, standardised, One-ID for the last day; a Parquet copy for JVM Spark) is kept under
bench/_out/tags-<people>/ and reused by later runs with the same people/days/seed and unchanged sources that
shape it, unless --fresh."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from identity import _env, _scale_name, machine  # noqa: E402
from ingest import PY, START  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The sources that shape the prepared data (generation, ingest, standardise, One-ID and its rules).
PREPARE_SOURCES = ("spark_jobs/generate.py", "spark_jobs/ingest.py", "spark_jobs/standardise.py",
                   "spark_jobs/normalise.py", "spark_jobs/contracts.py", "spark_jobs/identity",
                   "conf/cdp.yaml")
ENGINES = ("sail", "jvm")
OUTPUTS = ("gold_profiles", "gold_tags", "gold_profile_tags", "gold_segment_members")
STAGES = ("profiles", "tags", "segments")
BIG = 1_000_000  # scales from here on run --repeat-big times (and are checked against the targets)
TARGETS = {"sail_marts_s_max": 120, "jvm_over_sail_min": 3}  # the goals at 1M people on 2 cores
REL_TOL = 1e-9  # sums of doubles: engines add in different orders


class Failed(RuntimeError):
    """A measured process failed or ran out of time."""


def run_measured(cmd: list[str], env: dict, timeout: float | None = None,
                 max_rss_gib: float | None = None) -> tuple[float, float, str]:
    """bench/ingest.py's run_measured with limits: the process group is ended on timeout, or when the tree's
    RSS passes `max_rss_gib` (a shared machine: better than the kernel's OOM killer picking a process)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    peak = 0
    done = threading.Event()
    ours: dict[int, float] = {}  # CPU seconds of each process of the tree, as last seen
    busy0 = _busy_seconds()
    over: list[float] = []

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in tree)
                peak = max(peak, rss)
                if max_rss_gib and rss > max_rss_gib * 2**30 and not over:
                    over.append(rss / 2**30)
                    os.killpg(proc.pid, signal.SIGKILL)  # the group this call started
                for p in tree:
                    t = p.cpu_times()
                    ours[p.pid] = t.user + t.system
            except psutil.Error:
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the group this call started (python + its JVM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        done.set()
        thread.join()
        raise Failed(f"timed out after {timeout:.0f} s (peak {peak / 2**30:.2f} GiB)") from None
    done.set()
    thread.join()
    if over:
        raise Failed(f"ended: its processes used {over[0]:.1f} GiB, over --max-rss-gib {max_rss_gib}")
    if proc.returncode != 0:
        raise Failed(f"{' '.join(str(c) for c in cmd)} failed:\n{err[-3000:]}")
    wall = time.perf_counter() - t0
    # What the rest of the machine used meanwhile, in per cent of all cores (approximate: the tree's
    # processes are sampled every 0.1 s).
    others = max(0.0, _busy_seconds() - busy0 - sum(ours.values())) / (wall * (os.cpu_count() or 1)) * 100
    return wall, peak / 2**30, out + "\n" + json.dumps({"others_cpu_pct": round(others, 1)})


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def _clean_env() -> dict[str, str]:
    """The environment of every step but the timed Sail runs: Sail's defaults (no SAIL_* overrides)."""
    return {k: v for k, v in _env().items() if not k.startswith("SAIL_")}


def _measure(cmd: list, timeout: float | None = None, max_rss_gib: float | None = None,
             env: dict[str, str] | None = None) -> dict:
    wall, gib, out = run_measured(cmd, env or _clean_env(), timeout, max_rss_gib)
    jsons = [line for line in out.splitlines() if line.startswith("{")]
    return {**json.loads(jsons[-2]), **json.loads(jsons[-1]), "wall_s": round(wall, 1), "peak_gib": round(gib, 2)}


def prepare(people: int, days: int, seed: int, folder: Path, fresh: bool) -> dict:
    """Generate `days` daily batches, ingest + standardise them on Sail (Delta), run One-ID for the last day
    (the gold_id_map snapshot the marts read), copy the input tables to Parquet for JVM Spark. Skipped when
    `folder` already holds data prepared with the same parameters."""
    files = [p for f in PREPARE_SOURCES for p in ([ROOT / f] if (ROOT / f).is_file() else sorted((ROOT / f).rglob("*.py")))]
    sources = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()[:16]
    params = {"people": people, "days": days, "seed": seed, "start": START, "sources": sources}
    marker = folder / "prepared.json"
    if not fresh and marker.exists():
        done = json.loads(marker.read_text())
        if done["params"] == params:
            return {**done, "reused": True}
        if {**done["params"], "sources": sources} == params:
            # The repository moves while benchmarks run (a new table contract, a generator tweak): reuse the
            # data, say so, and leave regenerating (minutes at 1M people) to --fresh.
            print(f"   WARNING: {folder} was prepared with other sources ({done['params']['sources']}, now {sources}): "
                  "reused; --fresh prepares it again", flush=True)
            return {**done, "reused": True, "stale_sources": sources}
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    landing, lakehouse = folder / "landing", folder / "lakehouse"
    steps = {}
    wall, gib, _ = run_measured([PY, "-m", "spark_jobs.cli", "generate", "--people", people, "--days", days,
                                 "--seed", seed, "--start", START, "--landing", landing], _clean_env())
    manifest = json.loads((landing / "_truth" / "manifest.json").read_text())
    steps["generate"] = {"wall_s": round(wall, 1), "peak_gib": round(gib, 2), "raw_lines": manifest["total_lines"]}
    steps["ingest_standardise"] = _measure([PY, HERE / "ingest_job.py", "--engine", "sail", "--landing", landing,
                                            "--lakehouse", lakehouse, "--start", START, "--days", days])
    shutil.rmtree(landing)  # the lakehouse is all the later stages read
    dates = _dates(days)
    steps["identity"] = _measure([PY, HERE / "identity_job.py", "stage", "--engine", "sail", "--lakehouse", lakehouse,
                                  "--date", dates[-1]])
    steps["copy"] = _measure([PY, HERE / "tags_job.py", "copy", "--lakehouse", lakehouse,
                              "--parquet-lakehouse", folder / "lakehouse-parquet"])
    done = {"params": params, "as_of": dates[-1], "steps": steps,
            "seconds": round(sum(s["wall_s"] for s in steps.values()), 1)}
    marker.write_text(json.dumps(done, indent=2))
    return {**done, "reused": False}


def _dates(days: int) -> list[str]:
    import datetime as dt

    start = dt.date.fromisoformat(START)
    return [(start + dt.timedelta(days=d)).isoformat() for d in range(days)]


def _root(folder: Path, engine: str) -> Path:
    return folder / ("lakehouse" if engine == "sail" else "lakehouse-parquet")  # Delta on Sail, Parquet on JVM


def _reset(folder: Path, engine: str) -> None:
    """Remove what an earlier run wrote, so every run is the first for its date (no previous snapshot)."""
    root = _root(folder, engine)
    for name in OUTPUTS:
        shutil.rmtree(root / "gold" / name, ignore_errors=True)
    shutil.rmtree(root / "_staging", ignore_errors=True)
    shutil.rmtree(folder / f"exports-{engine}", ignore_errors=True)


def wait_for_quiet(max_busy: float, max_wait: float) -> dict:
    """Wait (up to `max_wait` s) until the machine's CPU use over a 5 s sample is at most `max_busy` per cent
    of all cores: between runs nothing of ours runs, so what is busy is someone else's work."""
    t0 = time.perf_counter()
    while True:
        busy = psutil.cpu_percent(interval=5)
        waited = time.perf_counter() - t0
        if busy <= max_busy or waited >= max_wait:
            return {"cpu_busy_pct": busy, "waited_s": round(waited, 1), "quiet": busy <= max_busy}
        time.sleep(10)


def code_version() -> dict:
    """The commit and a hash of the code and config under test (spark_jobs/, conf/) as a run starts: the
    repository may change while the benchmark runs."""
    files = sorted([*(ROOT / "spark_jobs").glob("*.py"), *(ROOT / "conf").glob("*.yaml")])
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {"commit": head.stdout.strip() or None,
            "code_hash": hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]}


def run_marts(engine: str, folder: Path, as_of: str, a: argparse.Namespace) -> dict:
    _reset(folder, engine)
    quiet = wait_for_quiet(a.max_busy, a.max_wait)
    if not quiet["quiet"]:
        print(f"   (machine still {quiet['cpu_busy_pct']}% busy after {quiet['waited_s']} s: running anyway)", flush=True)
    load, code = [round(x, 2) for x in os.getloadavg()], code_version()
    env = {**_clean_env(), **(a.sail_env if engine == "sail" else {})}
    r = _measure([PY, HERE / "tags_job.py", "marts", "--engine", engine, "--lakehouse", _root(folder, engine),
                  "--date", as_of, "--exports", folder / f"exports-{engine}", "--driver-memory", a.driver_memory],
                 a.timeout, a.max_rss_gib, env)
    r["loadavg_before"], r["before"] = load, quiet
    if code != code_version():
        r["code_changed_during_run"] = True
    r.update(code)
    return r


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def _ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 2) if num and den else None


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= REL_TOL * max(abs(a), abs(b), 1.0)


def compare(runs: dict[str, list[dict]]) -> dict:
    """Checksums of every run against the first: equal `exact` parts, `approx` within REL_TOL."""
    all_runs = [(e, i, r) for e, rs in runs.items() for i, r in enumerate(rs) if "checksums" in r]
    if not all_runs:
        return {"agree": None, "differences": []}
    e0, i0, first = all_runs[0]
    ref = first["checksums"]
    diffs = []
    for e, i, r in all_runs[1:]:
        c = r["checksums"]
        for table, figures in ref["exact"].items():
            if c["exact"].get(table) != figures:
                diffs.append({"run": f"{e}#{i + 1}", "against": f"{e0}#{i0 + 1}", "table": table,
                              "theirs": c["exact"].get(table), "ours": figures})
        for table, sums in ref["approx"].items():
            other = c["approx"].get(table, {})
            for k, v in sums.items():
                if not _close(v, other.get(k)):
                    diffs.append({"run": f"{e}#{i + 1}", "against": f"{e0}#{i0 + 1}", "table": table, "figure": k,
                                  "theirs": other.get(k), "ours": v})
    return {"agree": not diffs, "runs_compared": len(all_runs), "differences": diffs}


def bench_scale(people: int, a: argparse.Namespace) -> dict:
    folder = a.work / f"tags-{people}"
    prep = prepare(people, a.days, a.seed, folder, a.fresh)
    rows, as_of = prep["steps"]["copy"]["rows"], prep["as_of"]
    how = "reused" if prep["reused"] else f"{prep['seconds']} s"
    print(f"   prepared ({how}): {rows['silver_events']:,} events, {rows['silver_orders']:,} orders, "
          f"{rows['silver_identifiers']:,} identifier rows, as of {as_of}", flush=True)
    result: dict = {"people": people, "days": a.days, "seed": a.seed, "as_of": as_of, "inputs": rows, "prepare": prep,
                    "engines": {}}
    repeat = a.repeat_big if people >= BIG else a.repeat
    runs: dict[str, list[dict]] = {e: [] for e in a.engines}
    failed: dict[str, str] = {}
    for i in range(repeat):
        for engine in a.engines:  # interleaved, so machine noise hits both alike
            if engine in failed:
                continue
            try:
                r = run_marts(engine, folder, as_of, a)
            except Failed as e:
                failed[engine] = str(e)[-3000:]
                lines = [x for x in failed[engine].splitlines() if x.strip()]
                print(f"   {engine} #{i + 1}: FAILED: {lines[-1] if lines else '?'} (details in the results file)",
                      flush=True)
                continue
            runs[engine].append(r)
            print(f"   {engine} #{i + 1}: {r['marts_s']} s (profiles {r['profiles_s']} / tags {r['tags_s']} / "
                  f"segments {r['segments_s']}), wall {r['wall_s']} s, {r['peak_gib']} GiB, load before "
                  f"{r['loadavg_before'][0]} (cpu {r['before']['cpu_busy_pct']}%, waited {r['before']['waited_s']} s); "
                  f"others used {r['others_cpu_pct']}% cpu during the run", flush=True)
    for engine, msg in failed.items():
        result["engines"][engine] = {"error": msg, "runs": runs.pop(engine)}
    for engine, rs in runs.items():
        keys = ("marts_s", "profiles_s", "tags_s", "segments_s", "session_start_s", "wall_s", "checksums_s")
        result["engines"][engine] = {
            **{k: _median(rs, k) for k in keys}, "peak_gib": max(r["peak_gib"] for r in rs),
            "rows_written": {k: v for s in rs[0]["stages"].values() for k, v in s["rows_written"].items()},
            "loadavg_before": [r["loadavg_before"] for r in rs],
            "cpu_busy_pct_before": [r["before"]["cpu_busy_pct"] for r in rs],
            "others_cpu_pct_during": [r["others_cpu_pct"] for r in rs], "runs": rs,
        }
    result["agreement"] = compare(runs)
    result["code_versions"] = sorted({(r["commit"], r["code_hash"]) for rs in runs.values() for r in rs})
    if len(result["code_versions"]) > 1:
        print(f"   WARNING: the runs started on different spark_jobs/ or conf/ versions: {result['code_versions']}",
              flush=True)
    if any(r.get("code_changed_during_run") for rs in runs.values() for r in rs):
        # A job imports the code and loads the config as it starts: a later edit does not change what it runs.
        print("   (note: spark_jobs/ or conf/ were edited while a run went on; runs use the version they started with)",
              flush=True)
    e = result["engines"]
    result["ratios"] = {f"{k}_jvm_over_sail": _ratio(e.get("jvm", {}).get(f"{k}_s"), e.get("sail", {}).get(f"{k}_s"))
                        for k in ("marts", *STAGES, "wall")}
    result["ratios"]["peak_jvm_over_sail"] = _ratio(e.get("jvm", {}).get("peak_gib"), e.get("sail", {}).get("peak_gib"))
    return result


def targets(r: dict) -> dict:
    """The issue's goals (stated for 1M people, 2 cores): all three stages on Sail under 2 minutes (in
    process; the wall time with engine start and exit is reported too), Sail at least 3x JVM Spark."""
    def check(value, ok):
        return {"value": value, "met": None if value is None else ok(value)}

    return {
        "sail_marts_s": check(r["engines"].get("sail", {}).get("marts_s"), lambda v: v < TARGETS["sail_marts_s_max"]),
        "sail_wall_s": check(r["engines"].get("sail", {}).get("wall_s"), lambda v: v < TARGETS["sail_marts_s_max"]),
        "jvm_over_sail": check(r["ratios"]["marts_jvm_over_sail"], lambda v: v >= TARGETS["jvm_over_sail_min"]),
    }


def _met(t: dict) -> str:
    return "n/a" if t["met"] is None else "met" if t["met"] else "NOT met"


def markdown(results: list[dict]) -> str:
    rows = ["Profiles + tags + segments for the last of the daily batches (spark_jobs.profiles/tags/segments.run in "
            "one Spark session, no quality gates), seconds in process (profiles / tags / segments); wall = whole "
            "process incl. engine start; peak RSS of the process tree. Sail on Delta, JVM Spark (local[2]) on a Parquet "
            "copy, same code. Medians of the runs given:", "",
            "| people × days | events | runs | Sail s (profiles / tags / segments) | Sail wall s | JVM s (profiles / tags "
            "/ segments) | JVM wall s | JVM ÷ Sail | peak GiB Sail / JVM | engines agree | verdict |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---|"]

    def cell(d: dict | None) -> tuple[str, str]:
        if not d:
            return "-", "-"
        if "error" in d:
            return "failed", "-"
        return f"{d['marts_s']} ({d['profiles_s']} / {d['tags_s']} / {d['segments_s']})", str(d["wall_s"])

    for r in results:
        e = r["engines"]
        s, sw = cell(e.get("sail"))
        j, jw = cell(e.get("jvm"))
        n = max((len(d.get("runs", [])) for d in e.values()), default=0)
        agree = {True: "yes", False: "**NO**", None: "-"}[r["agreement"]["agree"]]
        peaks = " / ".join(str(e[x]["peak_gib"]) if "peak_gib" in e.get(x, {}) else "-" for x in ENGINES)
        if r["people"] >= BIG:
            t = r["targets"]
            verdict = (f"Sail < {TARGETS['sail_marts_s_max']} s: {_met(t['sail_marts_s'])} (wall: {_met(t['sail_wall_s'])}); "
                       f"≥ {TARGETS['jvm_over_sail_min']}× JVM: {_met(t['jvm_over_sail'])}")
        else:
            verdict = "(targets are for 1M)"
        rows.append(f"| {r['people']:,} × {r['days']} | {r['inputs']['silver_events']:,} | {n} | {s} | {sw} | {j} | {jw} | "
                    f"{r['ratios']['marts_jvm_over_sail'] or '-'} | {peaks} | {agree} | {verdict} |")
    rows += ["", "Rows written and inputs (silver rows of all batches; gold_id_map snapshot of the as-of date); "
             "load average (1 min) before each timed run and (in brackets) the CPU the rest of the machine used during it, in "
             "per cent of both cores:", "",
             "| people | silver_events / orders / contacts / identifiers | gold_id_map | gold_profiles | gold_tags | "
             "gold_profile_tags | gold_segment_members | load before Sail runs | load before JVM runs | "
             "prepare s: generate / ingest+standardise / identity / copy |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    for r in results:
        i, e = r["inputs"], r["engines"]
        w = next((d["rows_written"] for d in e.values() if "rows_written" in d), {})
        loads = [", ".join(f"{r['loadavg_before'][0]} ({r['others_cpu_pct']}%)" for r in e.get(x, {}).get("runs", []))
                 or "-" for x in ENGINES]
        st = r["prepare"]["steps"]
        prep = " / ".join(str(st[k]["wall_s"]) for k in ("generate", "ingest_standardise", "identity", "copy"))
        rows.append(f"| {r['people']:,} | {i['silver_events']:,} / {i['silver_orders']:,} / {i['silver_contacts']:,} / "
                    f"{i['silver_identifiers']:,} | {i['gold_id_map']:,} | {w.get('gold_profiles', 0):,} | "
                    f"{w.get('gold_tags', 0):,} | {w.get('gold_profile_tags', 0):,} | {w.get('gold_segment_members', 0):,} | "
                    f"{loads[0]} | {loads[1]} | {prep}{' (reused)' if r['prepare']['reused'] else ''} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[100_000, 1_000_000], help="people")
    ap.add_argument("--days", type=int, default=30, help="daily batches generated; the marts run for the last")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeat", type=int, default=3, help=f"runs per engine below {BIG:,} people; medians are reported")
    ap.add_argument("--repeat-big", type=int, default=1, help=f"runs per engine from {BIG:,} people on")
    ap.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    ap.add_argument("--driver-memory", default="12g", help="JVM driver heap for JVM Spark")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds a run may take before it is ended")
    ap.add_argument("--sail-env", nargs="*", default=[], metavar="KEY=VALUE",
                    help="Sail settings for the timed Sail runs only, e.g. SAIL_RUNTIME__MEMORY_POOL__TYPE=fair "
                         "(every other step runs with Sail's defaults: SAIL_* variables of this shell are dropped)")
    ap.add_argument("--prepare-only", action="store_true", help="prepare the data of each scale, run nothing")
    ap.add_argument("--max-rss-gib", type=float, default=18,
                    help="end a run whose processes use more memory than this (before the kernel's OOM killer does)")
    ap.add_argument("--max-busy", type=float, default=15,
                    help="before each run, wait until the machine's CPU use is at most this per cent (shared machine)")
    ap.add_argument("--max-wait", type=float, default=1200, help="seconds to wait for that before running anyway")
    ap.add_argument("--fresh", action="store_true", help="regenerate data even when a matching one is in --work")
    ap.add_argument("--work", type=Path, default=HERE / "_out")
    ap.add_argument("--results", type=Path, default=HERE / "results")
    a = ap.parse_args()
    a.sail_env = dict(kv.split("=", 1) for kv in a.sail_env)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.prepare_only:
        for people in a.scales:
            prep = prepare(people, a.days, a.seed, a.work / f"tags-{people}", a.fresh)
            how = "reused" if prep["reused"] else f"prepared in {prep['seconds']} s"
            print(f"== {people:,} people x {a.days} days: {how}", flush=True)
        return
    info = machine()
    info["sail_env"] = a.sail_env  # the timed Sail runs' settings (besides the defaults of spark_jobs/session.py)
    out = a.results / f"tags-{info['date']}-{'-'.join(_scale_name(p) for p in a.scales)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}

    def save() -> None:  # after every scale: a late failure keeps what was measured
        out.write_text(json.dumps({"machine": info, "args": args, "targets": TARGETS, "results": results}, indent=2,
                                  default=str))

    for people in a.scales:
        print(f"== {people:,} people x {a.days} days", flush=True)
        t = time.perf_counter()
        results.append(bench_scale(people, a))
        results[-1]["targets"] = targets(results[-1])
        results[-1]["bench_wall_s"] = round(time.perf_counter() - t, 1)
        save()
        if results[-1]["agreement"]["agree"] is False:
            print(f"   ENGINES DISAGREE: {json.dumps(results[-1]['agreement']['differences'])[:3000]}", flush=True)
        print(f"   ({results[-1]['bench_wall_s']} s for this scale)", flush=True)
    print(markdown(results))
    print(f"(written to {out})")
    if any(r["agreement"]["agree"] is False for r in results):
        raise SystemExit("FAILED: the engines wrote different results (see 'agreement' in the results file)")


if __name__ == "__main__":
    main()
