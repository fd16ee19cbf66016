"""ML benchmark: feature build (ml/features.py, two cutoffs), training (ml/train.py: LightGBM + logistic
regression per target, MLflow logging, registry, promotion) and batch scoring (ml/score.py, spark_udf on
Sail) at 100k and 1M people, each step in its own process (wall time and peak RSS of the process tree).

It copies the silver tables of the 30-day lakehouse that bench/tags.py prepared (bench/_out/tags-<people>/)
and first builds what the models need (timed separately as `prepare`): One-ID snapshots in date order on
2026-11-09, -16, -23 and -30 (so person ids stay stable between them, as in daily runs) and profiles on the
cutoffs 2026-11-09 and 2026-11-16 and on 2026-11-30 (scoring). MLflow: a SQLite store and artifacts under
bench/_out/ml-<people>/.

    python bench/models.py --scales 100000 1000000
Writes bench/results/ml-<date>-<scales>.json and prints a Markdown table."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from identity import _env, machine  # noqa: E402
from ingest import PY, last_json, run_measured  # noqa: E402

HERE = Path(__file__).resolve().parent
CUTOFFS = ("2026-11-09", "2026-11-16")
HORIZON = 14
SNAPSHOTS = ("2026-11-09", "2026-11-16", "2026-11-23", "2026-11-30")
AS_OF = "2026-11-30"


def _cfg(lakehouse: str, work: Path):
    from spark_jobs.config import load_config

    cfg = load_config(env={})
    return cfg.model_copy(update={
        "paths": cfg.paths.model_copy(update={"lakehouse": lakehouse, "exports": str(work / "exports")}),
        "ml": cfg.ml.model_copy(update={"horizon_days": HORIZON, "cutoffs": 2, "cutoff_step_days": 7,
                                        "artifacts": str(work / "artifacts"), "experiment": "bench"}),
    })


def job(a: argparse.Namespace) -> None:
    """One step in this process; prints its figures as the last JSON line."""
    import time

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{a.work}/mlflow.db"
    cfg = _cfg(a.lakehouse, a.work)
    t0 = time.perf_counter()
    if a.step == "train":
        from ml import train

        res = train.run(cfg)
        out = {t: {"best": r["best"], "version": r["version"], "decision": r["promotion"]["decision"],
                   "rule_roc_auc": round(r["rule"]["roc_auc"], 4),
                   **{f"{k}_{m}": round(v[m], 4) for k, v in r["kinds"].items() for m in ("roc_auc", "pr_auc", "lift_top_decile", "brier")},
                   } for t, r in res.items()}
        print(json.dumps({"seconds": round(time.perf_counter() - t0, 2), "targets": out}))
        return
    from spark_jobs.session import spark_session
    from spark_jobs.tables import Lakehouse

    with spark_session(cfg.engine) as spark:
        lh = Lakehouse(spark, cfg.paths.lakehouse_uri())
        if a.step == "prepare":
            from spark_jobs import identity, profiles

            done = {}
            for day in map(dt.date.fromisoformat, SNAPSHOTS):
                t = time.perf_counter()
                identity.run(lh, cfg.identity, day)
                done[f"identity {day}"] = round(time.perf_counter() - t, 1)
                if day.isoformat() in (*CUTOFFS, AS_OF):
                    t = time.perf_counter()
                    profiles.run(lh, cfg, day)
                    done[f"profiles {day}"] = round(time.perf_counter() - t, 1)
            out = {"built": done}
        elif a.step == "features":
            from ml import features

            out = features.run(lh, cfg, [dt.date.fromisoformat(c) for c in CUTOFFS])
        else:
            from ml import score

            res = score.run(lh, cfg, dt.date.fromisoformat(AS_OF))
            out = {"scores": res["scores"], "rows": res["tables"].get("gold_scores", 0)}
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 2), **out}, default=str))


def bench_scale(people: int, a: argparse.Namespace) -> dict:
    source = HERE / "_out" / f"tags-{people}" / "lakehouse"
    if not (source / "silver").exists():
        raise SystemExit(f"{source} is missing: run bench/tags.py --scales {people} first (it prepares the data)")
    work = HERE / "_out" / f"ml-{people}"
    if work.exists():
        shutil.rmtree(work)  # a fresh store and lakehouse: the first version of each model is registered and promoted
    lakehouse = work / "lakehouse"
    shutil.copytree(source / "silver", lakehouse / "silver")
    result = {"people": people, "cutoffs": CUTOFFS, "horizon_days": HORIZON, "as_of": AS_OF, "steps": {}}
    for step in ("prepare", "features", "train", "score"):
        print(f"== {people:,} people: {step}", flush=True)
        wall, gib, out = run_measured([PY, __file__, "job", step, "--lakehouse", str(lakehouse), "--work", str(work)], _env())
        result["steps"][step] = {**last_json(out), "wall_s": round(wall, 1), "peak_gib": round(gib, 2),
                                 "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
        print(f"   {result['steps'][step].get('seconds')} s in-process, {wall:.1f} s wall, peak {gib:.2f} GiB", flush=True)
    return result


def markdown(results: list[dict]) -> str:
    rows = ["| people | training rows | features | train (both targets, 2 models each) | score (2 models) | peak GiB (features / train / score) |",
            "|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        s = r["steps"]
        train_rows = sum(c["rows"] for c in s["features"]["cutoffs"].values())
        rows.append(f"| {r['people']:,} | {train_rows:,} | {s['features']['seconds']:.1f} s | {s['train']['seconds']:.1f} s | "
                    f"{s['score']['seconds']:.1f} s | {s['features']['peak_gib']:.2f} / {s['train']['peak_gib']:.2f} / {s['score']['peak_gib']:.2f} |")
    rows += ["", "| people | target | LightGBM ROC-AUC | logistic ROC-AUC | rule ROC-AUC | LightGBM PR-AUC | lift top decile | Brier |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for t, m in r["steps"]["train"]["targets"].items():
            rows.append(f"| {r['people']:,} | {t} | {m['lightgbm_roc_auc']:.4f} | {m['logistic_roc_auc']:.4f} | {m['rule_roc_auc']:.4f} | "
                        f"{m['lightgbm_pr_auc']:.4f} | {m['lightgbm_lift_top_decile']:.2f} | {m['lightgbm_brier']:.4f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    j = sub.add_parser("job")
    j.add_argument("step", choices=("prepare", "features", "train", "score"))
    j.add_argument("--lakehouse", required=True)
    j.add_argument("--work", type=Path, required=True)
    ap.add_argument("--scales", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--results", type=Path, default=HERE / "results")
    a = ap.parse_args()
    if a.cmd == "job":
        job(a)
        return
    results = [bench_scale(p, a) for p in a.scales]
    a.results.mkdir(parents=True, exist_ok=True)
    name = "-".join(f"{p // 1000}k" if p < 1_000_000 else f"{p // 1_000_000}m" for p in a.scales)
    out = a.results / f"ml-{dt.date.today().isoformat()}-{name}.json"
    out.write_text(json.dumps({"machine": machine(), "results": results}, indent=2, default=str))
    print(markdown(results))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
