"""The nightly run, whole: `cdp run --date D` (every stage, default configuration, quality gates on) of
the day after H days of history, in its own process under /usr/bin/time -v (wall, user + system CPU
seconds, peak RSS). The history is loaded once per code version with `cdp load-history` and copied
before each timed run, so every run starts from the same lakehouse.

Each repetition runs, interleaved (same data, same seed, one sitting): this code with the gates on, and
with them off (quality.enabled: false), and, with --baseline REV, the same two with that revision's
code (a git worktree). The gates' share of the run is (on - off) / on of the medians; this code also
reports the seconds its gates measured themselves (summary.gate_seconds).

    python bench/daily.py --people 100000 --history 30 --repeat 3 --baseline 306e143
Writes bench/results/daily-<date>-<people>.json and prints a Markdown table for the README. The
generated landing folder is kept under bench/_out/daily-<people>-<history>/ and reused (--fresh: again)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from identity import _env, machine  # noqa: E402
from ingest import PY, START, baseline_checkout  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TIME = "/usr/bin/time"
# The issue's targets (1M people, 30 days of history, day 31, gates on, this 2-core machine).
TARGETS = {"wall_s_max": 120, "peak_gib_max": 4.0, "gate_share_max": 0.20}


class Failed(RuntimeError):
    """A measured command failed."""


def timed(cmd: list[str], env: dict, cwd: Path, log: Path) -> dict:
    """Run `cmd` under /usr/bin/time -v; its wall, CPU and peak RSS (the largest process: the engine is
    embedded in the Python process). The output goes to `log`."""
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run([TIME, "-v", *map(str, cmd)], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    text = log.read_text()
    if proc.returncode != 0:
        raise Failed(f"{' '.join(map(str, cmd))} failed (exit {proc.returncode}); log {log}:\n{text[-3000:]}")

    def field(name: str) -> float:
        return float(re.search(rf"{re.escape(name)}: ([0-9.]+)", text).group(1))

    return {"wall_s": round(wall, 1), "cpu_s": round(field("User time (seconds)") + field("System time (seconds)"), 1),
            "peak_gib": round(field("Maximum resident set size (kbytes)") / 2**20, 2)}


# The `cdp` command of the checkout it runs in (cwd and PYTHONPATH: that checkout's sources first).
CDP = [PY, "-c", "import sys; sys.argv[0] = 'cdp'; from spark_jobs.cli import app; app()"]


def conf(code: Path, gates: bool, work: Path) -> Path:
    """The checkout's conf/cdp.yaml with quality.enabled set."""
    data = yaml.safe_load((code / "conf" / "cdp.yaml").read_text()) or {}
    data.setdefault("quality", {})["enabled"] = gates
    out = work / f"cdp-{code.name}-{'gates' if gates else 'nogates'}.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def environment(code: Path, lakehouse: Path, landing: Path, conf_file: Path, work: Path) -> dict:
    return {**_env(), "PYTHONPATH": str(code), "CDP_CONF": str(conf_file), "CDP_LAKEHOUSE": str(lakehouse),
            "CDP_LANDING": str(landing), "CDP_EXPORTS": str(work / "exports"),
            "CDP_MLFLOW_ARTIFACTS": str(work / "mlruns")}


def generate(people: int, days: int, seed: int, folder: Path, fresh: bool) -> Path:
    landing = folder / "landing"
    marker = folder / "generated.json"
    params = {"people": people, "days": days, "seed": seed, "start": START}
    if not fresh and marker.exists() and json.loads(marker.read_text()) == params:
        return landing
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"generating {people:,} people x {days} days ...", flush=True)
    r = timed([*CDP, "generate", "--people", people, "--days", days, "--seed", seed, "--start", START,
               "--landing", landing], {**_env(), "PYTHONPATH": str(ROOT)}, ROOT, folder / "generate.log")
    print(f"  generated in {r['wall_s']} s", flush=True)
    marker.write_text(json.dumps(params))
    return landing


def bench(a: argparse.Namespace) -> dict:
    folder = HERE / "_out" / f"daily-{a.people}-{a.history}"
    landing = generate(a.people, a.history + 1, a.seed, folder, a.fresh)
    first = dt.date.fromisoformat(START)
    last_history, day = first + dt.timedelta(days=a.history - 1), first + dt.timedelta(days=a.history)
    versions = {"this": ROOT}
    if a.baseline:
        versions[f"baseline {a.baseline}"] = baseline_checkout(a.baseline, HERE / "_out")
    history, runs = {}, {}
    for name, code in versions.items():
        base = folder / f"history-{code.name}"
        print(f"{name}: load-history {START}..{last_history} ...", flush=True)
        shutil.rmtree(base, ignore_errors=True)
        env = environment(code, base, landing, conf(code, True, folder), folder)
        history[name] = timed([*CDP, "load-history", "--from", START, "--to", last_history], env, code,
                              folder / f"load-history-{code.name}.log")
        print(f"  {history[name]}", flush=True)
    for rep in range(a.repeat):
        for name, code in versions.items():
            for gates in (True, False):
                lh = folder / "run-lakehouse"
                shutil.rmtree(lh, ignore_errors=True)
                shutil.copytree(folder / f"history-{code.name}", lh, symlinks=True)
                env = environment(code, lh, landing, conf(code, gates, folder), folder)
                r = timed([*CDP, "run", "--date", day], env, code, folder / f"run-{code.name}-{gates}-{rep}.log")
                summary = json.loads((lh / "_runs" / "latest.json").read_text())
                r.update(seconds=summary["seconds"], gate_seconds=summary.get("gate_seconds"),
                         tag_rows=(summary.get("tags") or {}).get("tag_rows"))
                runs.setdefault(f"{name}, gates {'on' if gates else 'off'}", []).append(r)
                print(f"  rep {rep + 1}: {name}, gates {'on' if gates else 'off'}: {r['wall_s']} s wall, "
                      f"{r['cpu_s']} s CPU, {r['peak_gib']} GiB; gates measured {r['gate_seconds']} s", flush=True)
    shutil.rmtree(folder / "run-lakehouse", ignore_errors=True)
    return {"people": a.people, "history_days": a.history, "day": day.isoformat(), "seed": a.seed,
            "repeat": a.repeat, "history_load": history, "runs": runs, "summary": summarise(runs, versions)}


def _median(rs: list[dict], key: str):
    values = [r[key] for r in rs if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def summarise(runs: dict, versions: dict) -> dict:
    out = {}
    for name in versions:
        on, off = runs[f"{name}, gates on"], runs[f"{name}, gates off"]
        wall_on, wall_off = _median(on, "wall_s"), _median(off, "wall_s")
        stages = {s: _median([{"v": r["seconds"].get(s)} for r in on], "v") for s in on[0]["seconds"]}
        out[name] = {"wall_s": wall_on, "cpu_s": _median(on, "cpu_s"), "peak_gib": max(r["peak_gib"] for r in on),
                     "wall_s_gates_off": wall_off, "cpu_s_gates_off": _median(off, "cpu_s"),
                     "peak_gib_gates_off": max(r["peak_gib"] for r in off),
                     "gate_share": round((wall_on - wall_off) / wall_on, 3) if wall_on else None,
                     "gate_seconds_measured": _median(on, "gate_seconds"), "stage_seconds": stages}
    return out


def markdown(r: dict) -> str:
    rows = ["| code | wall s (gates on) | CPU s | peak GiB | wall s (gates off) | gates' share | gates measured s |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in r["summary"].items():
        rows.append(f"| {name} | {s['wall_s']} | {s['cpu_s']} | {s['peak_gib']} | {s['wall_s_gates_off']} | "
                    f"{s['gate_share']:.0%} | {s['gate_seconds_measured'] if s['gate_seconds_measured'] is not None else '-'} |")
    stages = sorted({k for s in r["summary"].values() for k in s["stage_seconds"]})
    rows += ["", "| stage (s, gates on) | " + " | ".join(r["summary"]) + " |", "|---|" + "---:|" * len(r["summary"])]
    for st in stages:
        rows.append(f"| {st} | " + " | ".join(str(s["stage_seconds"].get(st, "-")) for s in r["summary"].values()) + " |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--people", type=int, default=100_000)
    p.add_argument("--history", type=int, default=30, help="days of history before the measured day")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--baseline", help="a git revision to run side by side (today's code before a change)")
    p.add_argument("--fresh", action="store_true", help="generate the landing folder again")
    a = p.parse_args()
    if not os.path.exists(TIME):
        sys.exit(f"{TIME} is needed (Debian package `time`: scripts/system-deps.sh installs it)")
    result = {"machine": machine(), "date": dt.date.today().isoformat(), **bench(a)}
    out = HERE / "results" / f"daily-{result['date']}-{a.people}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    print(f"\n(JSON: {out})")


if __name__ == "__main__":
    main()
