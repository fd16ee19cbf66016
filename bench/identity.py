"""One-ID benchmark: connected components of the bare identity graph on Sail and JVM Spark (the project's
DataFrame algorithm, each in two modes: `sail`/`jvm` with the default local union-find pre-pass, and
`sail-rounds`/`jvm-rounds` with large-star/small-star rounds alone, the pure GraphFrames algorithm), GraphX,
scipy and networkx, all reading the same Parquet files; then the whole
identity stage (rules, stable ids, audit, writes) on Sail (Delta) and JVM Spark (Parquet copy).
Every step runs in its own process; peak memory is the peak RSS of that process tree (sampled).

    python bench/identity.py --scales 10000 100000 1000000 --days 7
Writes bench/results/identity-<date>-<scales>.json and prints Markdown tables for the README.
Data (lakehouse, graph) is kept under bench/_out/identity-<people>/ and reused by later runs with the same
people/days/seed and unchanged generate/ingest/standardise sources, unless --fresh."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import PY, START, baseline_checkout, last_json, run_measured  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PREPARE_SOURCES = ("generate.py", "ingest.py", "standardise.py", "normalise.py", "contracts.py")
COMPONENT_ENGINES = ("sail", "sail-rounds", "jvm", "jvm-rounds", "graphx", "scipy", "networkx")
ROUNDS_ONLY = "-rounds"  # suffix of a Spark engine run with --rounds-only (no local union-find pre-pass)
STAGE_ENGINES = ("sail", "jvm")
GOLD = ("gold_id_map", "gold_id_dropped", "gold_id_decisions", "gold_id_changes")
BASELINE = "sail-baseline"  # the identity stage of --baseline REV's code, on the same Sail lakehouse
BIG = 1_000_000  # scales from here on run --repeat-big times (and are checked against the targets)
TARGETS = {  # the goals at 1M people on 2 cores
    "sail_components_s_max": 10, "sail_stage_s_max": 45,
    "jvm_over_sail_min": 8, "graphx_over_sail_min": 4, "sail_over_scipy_max": 5,
}


class Disagreement(RuntimeError):
    """Two engines found different components: the benchmark is void."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result  # what was measured, kept in the results file for inspection


def spark_shell() -> Path:
    spec = importlib.util.find_spec("pyspark")
    return Path(spec.submodule_search_locations[0]) / "bin" / "spark-shell"


def _env() -> dict[str, str]:
    # pyspark routes column functions to Spark Connect while this is set; the jobs set what they need.
    return {k: v for k, v in os.environ.items() if k != "SPARK_CONNECT_MODE_ENABLED"}


def _measure(cmd: list[str], env: dict | None = None) -> dict:
    wall, gib, out = run_measured([str(c) for c in cmd], env or _env())
    return {**last_json(out), "wall_s": round(wall, 1), "peak_gib": round(gib, 2)}


def prepare(people: int, days: int, seed: int, folder: Path, fresh: bool, population: str = "default") -> dict:
    """Generate, ingest+standardise on Sail (Delta), export the bare graph and a Parquet copy of silver.
    Skipped when `folder` already holds data prepared with the same parameters."""
    # The sources that shape the data: a change to any of them makes earlier data stale.
    sources = hashlib.sha256(b"".join((ROOT / "spark_jobs" / f).read_bytes() for f in PREPARE_SOURCES)).hexdigest()[:16]
    params = {"people": people, "days": days, "seed": seed, "start": START, "sources": sources}
    if population != "default":
        params["population"] = population
    marker = folder / "prepared.json"
    if not fresh and marker.exists():
        done = json.loads(marker.read_text())
        if done["params"] == params:
            return {**done, "reused": True}
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    landing = folder / "landing"
    steps = {}
    wall, gib, _ = run_measured([PY, "-m", "spark_jobs.cli", "generate", "--people", str(people), "--days", str(days),
                                 "--seed", str(seed), "--start", START, "--landing", str(landing),
                                 *(["--population", population] if population != "default" else [])], _env())
    steps["generate"] = {"wall_s": round(wall, 1), "peak_gib": round(gib, 2)}
    steps["ingest_standardise"] = _measure([PY, HERE / "ingest_job.py", "--engine", "sail", "--landing", landing,
                                            "--lakehouse", folder / "lakehouse", "--start", START, "--days", days])
    shutil.rmtree(landing)  # the lakehouse is all the identity stage reads
    steps["export"] = _measure([PY, HERE / "identity_job.py", "export", "--lakehouse", folder / "lakehouse",
                                "--graph", folder, "--parquet-lakehouse", folder / "lakehouse-parquet"])
    done = {"params": params, "steps": steps, "seconds": round(sum(s["wall_s"] for s in steps.values()), 1)}
    marker.write_text(json.dumps(done, indent=2))
    return {**done, "reused": False}


def run_components(engine: str, folder: Path, driver_memory: str) -> dict:
    spark, rounds_only = engine.removesuffix(ROUNDS_ONLY), engine.endswith(ROUNDS_ONLY)
    if spark in ("sail", "jvm"):
        scratch = folder / f"scratch-{engine}"
        shutil.rmtree(scratch, ignore_errors=True)
        r = _measure([PY, HERE / "identity_job.py", "components", "--engine", spark, "--graph", folder,
                      "--scratch", scratch, "--driver-memory", driver_memory, *(["--rounds-only"] if rounds_only else [])])
        shutil.rmtree(scratch, ignore_errors=True)
        r["e2e_s"] = r["components_s"]  # Spark is lazy: reading the Parquet is part of the first round
        return r
    if engine == "graphx":
        env = {**_env(), "BENCH_NODES": str(folder / "nodes.parquet"), "BENCH_EDGES": str(folder / "edges.parquet")}
        shell = [spark_shell(), "--master", f"local[{os.cpu_count()}]", "--driver-memory", driver_memory,
                 "--conf", "spark.ui.enabled=false", "--conf", "spark.ui.showConsoleProgress=false",
                 "-i", HERE / "identity_graphx.scala"]
        # stdin from /dev/null: should the script ever fall through to the REPL, it ends instead of waiting.
        r = _measure(["bash", "-c", 'exec "$0" "$@" < /dev/null', *shell], env)
    else:
        r = _measure([PY, HERE / "identity_floor.py", "--engine", engine, "--graph", folder])
    r["e2e_s"] = round(r["load_s"] + r["components_s"], 2)
    return r


def _root(engine: str) -> str:
    return "lakehouse" if engine in ("sail", BASELINE) else "lakehouse-parquet"  # Delta on Sail, the Parquet copy on JVM


def run_stage(engine: str, folder: Path, date: str, driver_memory: str, baseline: Path | None = None) -> dict:
    shutil.rmtree(folder / _root(engine) / "_staging", ignore_errors=True)
    job = (baseline or ROOT) / "bench" / "identity_job.py"
    return _measure([PY, job, "stage", "--engine", "sail" if engine == BASELINE else engine,
                     "--lakehouse", folder / _root(engine), "--date", date, "--driver-memory", driver_memory])


def _reset_gold(folder: Path) -> None:
    for engine in STAGE_ENGINES:
        for name in GOLD:
            shutil.rmtree(folder / _root(engine) / "gold" / name, ignore_errors=True)


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def _summarise(runs: list[dict], keys: tuple[str, ...]) -> dict:
    out = {k: _median(runs, k) for k in keys if _median(runs, k) is not None}
    out["peak_gib"] = max(r["peak_gib"] for r in runs)
    out["runs"] = runs
    return out


def _ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 2) if num and den else None


def _interleaved(kind: str, engines: list[str], repeat: int, run, describe) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Run every engine `repeat` times, interleaved so machine noise hits them alike. An engine whose
    process fails is reported with its error and not run again; the others go on."""
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    failed: dict[str, str] = {}
    for i in range(repeat):
        for engine in engines:
            if engine in failed:
                continue
            try:
                r = run(engine)
            except SystemExit as e:  # run_measured's way of saying the process failed (with its stderr)
                failed[engine] = str(e)[-3000:]
                runs.pop(engine)
                stderr = [line for line in failed[engine].split(" failed:\n", 1)[-1].splitlines() if line.strip()]
                print(f"   {kind} {engine} #{i + 1}: FAILED: {stderr[-1] if stderr else 'no stderr'} (details in the "
                      f"results file)", flush=True)
                continue
            runs[engine].append(r)
            print(f"   {kind} {engine} #{i + 1}: {describe(r)}", flush=True)
    return runs, failed


def bench_scale(people: int, a: argparse.Namespace) -> dict:
    folder = a.work / f"identity-{people}"
    folder = folder.with_name(folder.name + ("" if a.population == "default" else f"-{a.population}"))
    prep = prepare(people, a.days, a.seed, folder, a.fresh, a.population)
    graph = prep["steps"]["export"]
    how = "reused" if prep["reused"] else f"{prep['seconds']} s"
    print(f"   prepared ({how}): {graph['nodes']:,} nodes, {graph['edges']:,} edges, "
          f"batch dates {graph['batch_dates'][0]}..{graph['batch_dates'][-1]}", flush=True)
    result: dict = {"people": people, "days": a.days, "seed": a.seed, "prepare": prep,
                    "graph": {"nodes": graph["nodes"], "edges": graph["edges"]}, "components": {}, "stage": {}}
    repeat = a.repeat_big if people >= BIG else a.repeat

    engines = list(a.engines)
    if "networkx" in engines and graph["nodes"] + graph["edges"] > a.networkx_max:
        engines.remove("networkx")
        why = f"nodes + edges = {graph['nodes'] + graph['edges']:,} > --networkx-max {a.networkx_max:,}"
        result["components"]["networkx"] = {"skipped": why}
        print(f"   components networkx skipped: {why}", flush=True)
    runs, failed = _interleaved(
        "components", engines, repeat, lambda e: run_components(e, folder, a.driver_memory),
        lambda r: f"{r['e2e_s']} s in process, wall {r['wall_s']} s, {r['peak_gib']} GiB, {r['components']:,} components",
    )
    result["components"].update({e: {"error": msg} for e, msg in failed.items()})
    for engine, rs in runs.items():
        keys = ("e2e_s", "load_s", "scan_s", "read_s", "build_s", "components_s", "session_start_s", "wall_s")
        result["components"][engine] = _summarise(rs, keys)
        for key in ("rounds", "local_edges"):  # the Spark jobs: rounds run, and the mode (null: rounds only)
            if key in rs[0]:
                result["components"][engine][key] = rs[0][key]
    answers = {(r["nodes"], r["components"], r["label_sum"]) for rs in runs.values() for r in rs}
    if len(answers) > 1:
        detail = {e: [(r["nodes"], r["components"], r["label_sum"]) for r in rs] for e, rs in runs.items()}
        raise Disagreement(f"{people:,} people: engines disagree on (nodes, components, label sum): {detail}", result)
    if answers:
        nodes, result["graph"]["components"], _ = answers.pop()
        if nodes != graph["nodes"]:
            raise Disagreement(f"{people:,} people: components labelled {nodes:,} nodes, the graph has {graph['nodes']:,}",
                               result)

    date = graph["batch_dates"][-1]
    previous = graph["batch_dates"][-2] if a.with_previous and len(graph["batch_dates"]) > 1 else None
    result["stage_batch_date"], result["stage_previous_snapshot"] = date, previous
    _reset_gold(folder)

    old = baseline_checkout(a.baseline, a.work) if a.baseline else None

    def stage(engine: str) -> dict:
        code = old if engine == BASELINE else None
        if a.baseline:  # two codes share the Sail lakehouse: each run starts from no gold tables
            _reset_gold(folder)
        if previous and not (folder / _root(engine) / "gold" / "gold_id_map").exists():
            run_stage(engine, folder, previous, a.driver_memory, code)  # untimed: the snapshot ids stay stable against
        elif not previous:
            _reset_gold(folder)
        return run_stage(engine, folder, date, a.driver_memory, code)

    stage_runs, failed = _interleaved(
        "stage", list(a.stage_engines) + ([BASELINE] if a.baseline else []), repeat, stage,
        lambda r: (f"{r['stage_s']} s, wall {r['wall_s']} s, {r['peak_gib']} GiB, {r['figures']['identifiers']:,} "
                   f"identifiers -> {r['figures']['people']:,} people in {r['figures']['rounds']} rounds"),
    )
    result["stage"].update({e: {"error": msg} for e, msg in failed.items()})
    for engine, rs in stage_runs.items():
        result["stage"][engine] = {**_summarise(rs, ("stage_s", "session_start_s", "wall_s")), "figures": rs[0]["figures"]}
    # Same rules, same graph: every figure but the round count (which depends on node id order) must match.
    figures = {json.dumps({k: v for k, v in r["figures"].items() if k != "rounds"}, sort_keys=True)
               for e, rs in stage_runs.items() if e != BASELINE for r in rs}
    if len(figures) > 1:
        raise Disagreement(f"{people:,} people: the identity stage gives different figures (an engine differs, or "
                           f"spark_jobs changed during the run): {sorted(figures)}", result)

    c, s = result["components"], result["stage"]
    e2e = {e: c[e].get("e2e_s") for e in c}
    result["ratios"] = {
        "components_jvm_over_sail": _ratio(e2e.get("jvm"), e2e.get("sail")),
        "components_graphx_over_sail": _ratio(e2e.get("graphx"), e2e.get("sail")),
        "components_sail_over_scipy": _ratio(e2e.get("sail"), e2e.get("scipy")),
        "components_wall_sail_over_scipy": _ratio(c.get("sail", {}).get("wall_s"), c.get("scipy", {}).get("wall_s")),
        # The pure large-star/small-star algorithm (no local pre-pass) on both engines.
        "components_jvm_over_sail_rounds": _ratio(e2e.get("jvm-rounds"), e2e.get("sail-rounds")),
        "components_graphx_over_sail_rounds": _ratio(e2e.get("graphx"), e2e.get("sail-rounds")),
        "components_sail_rounds_over_scipy": _ratio(e2e.get("sail-rounds"), e2e.get("scipy")),
        "stage_jvm_over_sail": _ratio(s.get("jvm", {}).get("stage_s"), s.get("sail", {}).get("stage_s")),
        "stage_sail_over_baseline": _ratio(s.get("sail", {}).get("stage_s"), s.get(BASELINE, {}).get("stage_s")),
    }
    return result


def targets(r: dict) -> dict:
    """The issue's goals, checked for one scale (they are stated for 1M people)."""
    c, s, q = r["components"], r["stage"], r["ratios"]

    def check(value, ok):
        return {"value": value, "met": None if value is None else ok(value)}

    return {
        "sail_components_s": check(c.get("sail", {}).get("e2e_s"), lambda v: v < TARGETS["sail_components_s_max"]),
        "sail_stage_s": check(s.get("sail", {}).get("stage_s"), lambda v: v < TARGETS["sail_stage_s_max"]),
        "jvm_over_sail": check(q["components_jvm_over_sail"], lambda v: v >= TARGETS["jvm_over_sail_min"]),
        "graphx_over_sail": check(q["components_graphx_over_sail"], lambda v: v >= TARGETS["graphx_over_sail_min"]),
        "sail_over_scipy": check(q["components_sail_over_scipy"], lambda v: v <= TARGETS["sail_over_scipy_max"]),
    }


def _cell(d: dict | None, extra: str = "") -> str:
    if not d:
        return "-"
    if "skipped" in d or "error" in d:
        return "skipped" if "skipped" in d else "failed"
    return f"{d['e2e_s']} ({extra}wall {d['wall_s']}, {d['peak_gib']} GiB)"


def _ratio_cell(in_process: float | None, wall: float | None) -> str:
    return f"{in_process} (wall {wall})" if in_process else "-"


def markdown(results: list[dict]) -> str:
    rows = ["Connected components of the bare identity graph (no rules), seconds in process with the Parquet load "
            "(wall = whole process incl. engine start; peak RSS). Sail and JVM Spark run the same code, with the local "
            "union-find pre-pass (default) and with large-star/small-star rounds only (the pure GraphFrames algorithm):", "",
            "| people | nodes | edges | components | Sail | Sail rounds only | JVM Spark (same code) | JVM rounds only "
            "| GraphX | scipy | networkx | JVM ÷ Sail | JVM ÷ Sail (rounds only) | GraphX ÷ Sail | Sail ÷ scipy |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def rounds(d: dict | None) -> str:
        return f"{d['rounds']} rounds, " if "rounds" in (d or {}) else ""

    for r in results:
        c, q, g = r["components"], r["ratios"], r["graph"]
        rows.append(
            f"| {r['people']:,} | {g['nodes']:,} | {g['edges']:,} | {g.get('components', 0):,} | "
            f"{_cell(c.get('sail'), rounds(c.get('sail')))} | {_cell(c.get('sail-rounds'), rounds(c.get('sail-rounds')))} | "
            f"{_cell(c.get('jvm'))} | {_cell(c.get('jvm-rounds'))} | "
            f"{_cell(c.get('graphx'))} | {_cell(c.get('scipy'))} | {_cell(c.get('networkx'))} | "
            f"{q['components_jvm_over_sail'] or '-'} | {q.get('components_jvm_over_sail_rounds') or '-'} | "
            f"{q['components_graphx_over_sail'] or '-'} | "
            f"{_ratio_cell(q['components_sail_over_scipy'], q['components_wall_sail_over_scipy'])} |"
        )
    rows += ["", "Whole identity stage (spark_jobs.identity.run: rules, components, stable ids, audit, writes) for the "
             "last batch date; Sail on Delta, JVM Spark on a Parquet copy:", "",
             "| people × days | identifiers | people found | rounds | Sail s (wall, GiB) | JVM s (wall, GiB) | JVM ÷ Sail "
             "| prepare s: generate / ingest+standardise / export |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        s, steps = r["stage"], r["prepare"]["steps"]
        f = next((s[e]["figures"] for e in STAGE_ENGINES if "figures" in s.get(e, {})), {})
        cells = [("failed" if "error" in s[e] else f"{s[e]['stage_s']} ({s[e]['wall_s']}, {s[e]['peak_gib']})")
                 if e in s else "-" for e in STAGE_ENGINES]
        reused = " (reused)" if r["prepare"]["reused"] else ""
        rows.append(
            f"| {r['people']:,} × {r['days']} | {f.get('identifiers', 0):,} | {f.get('people', 0):,} | {f.get('rounds', '-')} | "
            f"{' | '.join(cells)} | {r['ratios']['stage_jvm_over_sail'] or '-'} | "
            f"{steps['generate']['wall_s']} / {steps['ingest_standardise']['wall_s']} / {steps['export']['wall_s']}{reused} |"
        )
    for r in results:
        b, now = r["stage"].get(BASELINE), r["stage"].get("sail")
        if b and "stage_s" in b and now and "stage_s" in now:
            rows += ["", f"{r['people']:,} people: the identity stage of this code {now['stage_s']} s "
                         f"({now['peak_gib']} GiB) against the baseline's {b['stage_s']} s ({b['peak_gib']} GiB), "
                         f"{r['ratios']['stage_sail_over_baseline']}x, same data, interleaved"]
    big = [r for r in results if r["people"] >= BIG]
    for r in big:
        q = r["ratios"]
        rows += ["", f"Targets at {r['people']:,} people: " + ", ".join(
            f"{k} {v['value']} {'met' if v['met'] else 'NOT met' if v['met'] is not None else 'n/a'}"
            for k, v in r["targets"].items()) + "; rounds only (for comparison, not targets): " + ", ".join(
            f"{k} {q.get(f'components_{k}') or 'n/a'}"
            for k in ("jvm_over_sail_rounds", "graphx_over_sail_rounds", "sail_rounds_over_scipy"))]
    return "\n".join(rows)


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    versions = {}
    for pkg in ("pysail", "pyspark", "scipy", "networkx", "pyarrow", "numpy", "deltalake"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"date": dt.date.today().isoformat(), "cpu": cpu, "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30), "python": platform.python_version(),
            "java": java[0] if java else None, "platform": platform.platform(), "versions": versions}


def _scale_name(people: int) -> str:
    return f"{people // 1_000_000}m" if people % 1_000_000 == 0 else f"{people // 1000}k" if people % 1000 == 0 else str(people)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="people")
    ap.add_argument("--days", type=int, default=7, help="daily batches generated and ingested per scale")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeat", type=int, default=1, help=f"runs per engine below {BIG:,} people; medians are reported")
    ap.add_argument("--repeat-big", type=int, default=1, help=f"runs per engine from {BIG:,} people on")
    ap.add_argument("--engines", nargs="*", choices=COMPONENT_ENGINES, default=list(COMPONENT_ENGINES),
                    help="components engines")
    ap.add_argument("--stage-engines", nargs="*", choices=STAGE_ENGINES, default=list(STAGE_ENGINES))
    ap.add_argument("--networkx-max", type=int, default=12_000_000,
                    help="skip networkx when nodes + edges exceed this (memory: ~0.5 KB per node and edge)")
    ap.add_argument("--with-previous", action="store_true",
                    help="first run the stage (untimed) for the day before, so the timed run has a previous snapshot")
    ap.add_argument("--driver-memory", default="8g", help="JVM driver heap for JVM Spark and GraphX")
    ap.add_argument("--fresh", action="store_true", help="regenerate data even when a matching one is in --work")
    ap.add_argument("--population", default="default", help="cdp generate --population (default | retail)")
    ap.add_argument("--baseline", default=None,
                    help="a git revision whose identity stage runs side by side with this one on Sail, on the same data")
    ap.add_argument("--work", type=Path, default=HERE / "_out")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    info = machine()
    out = HERE / "results" / f"identity-{info['date']}-{'-'.join(_scale_name(p) for p in a.scales)}.json"
    out.parent.mkdir(exist_ok=True)
    results: list[dict] = []
    args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}

    def save(error: str | None = None) -> None:  # after every scale: a late failure keeps what was measured
        out.write_text(json.dumps({"machine": info, "args": args, "targets": TARGETS, "results": results,
                                   "error": error}, indent=2))

    for people in a.scales:
        print(f"== {people:,} people x {a.days} days", flush=True)
        t = time.perf_counter()
        try:
            results.append(bench_scale(people, a))
        except Disagreement as e:
            results.append(e.result)
            save(str(e))
            raise SystemExit(f"FAILED: {e}\n(measurements so far in {out})") from None
        results[-1]["targets"] = targets(results[-1])
        results[-1]["bench_wall_s"] = round(time.perf_counter() - t, 1)
        save()
        print(f"   ({results[-1]['bench_wall_s']} s for this scale)", flush=True)
    print(markdown(results))
    print(f"(written to {out})")


if __name__ == "__main__":
    main()
