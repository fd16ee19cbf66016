"""Churn and propensity models on generated data with real Delta tables, Sail and a real MLflow store
(SQLite in a temp folder): point-in-time features, labels from (T, T+H] only, train -> register ->
alias -> load by alias -> score into gold_scores, and a worse challenger never replacing the champion."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml import features, score, train
from ml.tuning import BASELINE
from spark_jobs import ingest, profiles, standardise
from spark_jobs.config import load_config
from spark_jobs.generate import generate
from spark_jobs.identity import stage as identity
from spark_jobs.tables import Lakehouse, read_pandas
from tests.conftest import contract_frame

pytestmark = pytest.mark.e2e

START = dt.date(2026, 11, 1)
DAYS = 20
SNAPSHOTS = [START + dt.timedelta(days=d) for d in (9, 14, 19)]  # cutoffs 9 and 14, horizons end 14 and 19


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """800 people over 20 days: bronze and silver for every day, One-ID and profiles on the snapshot days."""
    from tests.conftest import _session

    base = tmp_path_factory.mktemp("ml")
    generate(base / "landing", people=800, days=DAYS, seed=3, start=START)
    cfg = load_config(env={})
    cfg = cfg.model_copy(update={
        "paths": cfg.paths.model_copy(update={"lakehouse": str(base / "lh"), "landing": str(base / "landing")}),
        "ml": cfg.ml.model_copy(update={"horizon_days": 5, "cutoffs": 2, "cutoff_step_days": 5, "tuning_trials": 8,
                                        "artifacts": str(base / "artifacts"), "experiment": "test"}),
    })
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARK_CONNECT_MODE_ENABLED", "1")
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{base}/mlflow.db")
        spark = _session("sail")
        lh = Lakehouse(spark, cfg.paths.lakehouse_uri())
        for d in range(DAYS):
            day = START + dt.timedelta(days=d)
            for ch in cfg.ingest_sources():
                ingest.run(spark, lh, base / "landing", ch, day, dt.datetime(2026, 12, 1))
            standardise.run(lh, cfg.standardise, day)
            if day in SNAPSHOTS:
                identity.run(lh, cfg.identity, day)
                profiles.run(lh, cfg, day)
        cutoffs = features.default_cutoffs(lh, cfg)
        built = features.run(lh, cfg, cutoffs)
        trained = train.run(cfg)
        scored = score.run(lh, cfg, SNAPSHOTS[-1])
        yield {"cfg": cfg, "lh": lh, "cutoffs": cutoffs, "built": built, "trained": trained, "scored": scored,
               "uri": f"sqlite:///{base}/mlflow.db"}


@pytest.fixture
def mlflow_store(world, monkeypatch, sail):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world["uri"])
    from ml.tracking import configure

    configure(world["cfg"].ml)
    return world


def test_default_cutoffs_end_one_horizon_before_the_newest_snapshot(world):
    assert world["cutoffs"] == [SNAPSHOTS[0], SNAPSHOTS[1]]
    stats = world["built"]["cutoffs"]
    assert set(stats) == {c.isoformat() for c in world["cutoffs"]}
    for s in stats.values():
        assert s["rows"] > 500 and 0 < s["purchase_rate"] < 1 and 0 < s["churn_rate"] < 1


def test_features_are_point_in_time_later_data_changes_nothing(world, sail):
    cfg, lh = world["cfg"], world["lh"]
    cutoff = SNAPSHOTS[0]
    key = "test/pit"

    def snapshot() -> pd.DataFrame:
        try:
            return features.build_features(lh, cfg, cutoff, key).toPandas().sort_values("person_id").reset_index(drop=True)
        finally:
            lh.unstage(key)

    before = snapshot()
    late_batch = START + dt.timedelta(days=DAYS + 1)  # a batch no cutoff or horizon of these tests reaches
    events = read_pandas(lh.root, "silver_events", partition={"_batch_date": cutoff}).head(50)
    extra = [{**{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()},
              "event_id": f"late-{i}", "_batch_date": late_batch,
              "event_date": cutoff if i % 2 else late_batch,  # late arrivals dated on the cutoff, and later events
              "event_time": pd.Timestamp(r["event_time"]).to_pydatetime().replace(tzinfo=None)}
             for i, r in enumerate(events.to_dict("records"))]
    lh.write_partition("silver_events", contract_frame(sail, "silver_events", extra), {"_batch_date": late_batch})
    after = snapshot()
    pd.testing.assert_frame_equal(before, after)


def test_labels_count_only_orders_inside_the_horizon(world, sail):
    """label_purchase is 1 exactly for people with an order dated in (T, T+H], recomputed from
    silver_orders and gold_id_map in pandas (member id first, then phone, as attribution does)."""
    cfg, lh = world["cfg"], world["lh"]
    cutoff = SNAPSHOTS[0]
    end = cutoff + dt.timedelta(days=cfg.ml.horizon_days)
    rows = read_pandas(lh.root, "gold_features", partition={"cutoff": cutoff})
    ids = read_pandas(lh.root, "gold_id_map", partition={"as_of": end})
    owner = {(t, v): p for t, v, p in zip(ids["id_type"], ids["id_value"], ids["person_id"], strict=True)}
    orders = read_pandas(lh.root, "silver_orders")
    local = pd.to_datetime(orders["paid_time"], utc=True).dt.tz_convert("Asia/Shanghai").dt.date
    inside = orders[(local > cutoff) & (local <= end) & (orders["_batch_date"] <= end)]
    buyers = {owner.get(("member_id", m)) or owner.get(("phone", p)) for m, p in zip(inside["member_id"], inside["phone"], strict=True)}
    expected = {p for p in buyers if p}
    got = set(rows.loc[rows["label_purchase"] == 1, "person_id"])
    assert got == expected & set(rows["person_id"]) and len(got) > 10
    # churn is defined for people active before the cutoff only
    assert rows.loc[rows["days_since_last_active"] >= cfg.ml.active_days, "label_churn"].isna().all()
    assert rows.loc[rows["days_since_last_active"] < cfg.ml.active_days, "label_churn"].notna().all()


def test_train_registers_aliases_and_scores_with_the_champion(mlflow_store):
    import mlflow
    from mlflow.tracking import MlflowClient

    world = mlflow_store
    cfg, lh = world["cfg"], world["lh"]
    client = MlflowClient()
    for target, name in cfg.ml.models.items():
        result = world["trained"][target]
        assert result["version"] == 1 and result["promotion"]["decision"] == "promoted: no champion yet"
        assert int(client.get_model_version_by_alias(name, "champion").version) == 1
        assert int(client.get_model_version_by_alias(name, "challenger").version) == 1
        for kind, m in result["kinds"].items():
            assert 0.5 < m["roc_auc"] <= 1 and 0 <= m["brier"] <= 1 and m["lift_top_decile"] > 1, (target, kind, m)
        run = client.get_run(result["run_id"])
        assert run.data.params["data.gold_features.version"] == str(world["built"]["version"])
        assert run.data.params["holdout_cutoff"] == SNAPSHOTS[1].isoformat()
        children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
        names = {c.info.run_name: c for c in children}
        assert set(names) == {*train.KINDS, train.TUNED, "lightgbm tuning"}  # the fixed baseline kept beside the tuned
        tuning = result["tuning"]
        trials = client.search_runs([run.info.experiment_id],
                                    f"tags.mlflow.parentRunId = '{names['lightgbm tuning'].info.run_id}'")
        assert len(trials) == tuning["trials"] == cfg.ml.tuning_trials and tuning["validation"] == "fold 25 %"
        assert tuning["validation_roc_auc"] >= tuning["baseline_validation_roc_auc"]
        trial0 = next(t for t in trials if t.info.run_name == "trial 0")
        assert float(trial0.data.params["learning_rate"]) == BASELINE["learning_rate"]  # trial 0: the fixed set
        assert names[train.TUNED].data.params["lgbm.num_leaves"] == str(tuning["params"]["num_leaves"])
        for child in (c for n, c in names.items() if n != "lightgbm tuning"):
            plots = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
            assert plots == {f"plots/{p}" for p in ("roc.png", "gains_lift.png", "calibration.png", "feature_importance.png")}
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
        assert model.metadata.get_input_schema() is not None and model.metadata.get_output_schema() is not None
    scores = read_pandas(lh.root, "gold_scores", partition={"as_of": SNAPSHOTS[-1]})
    people = read_pandas(lh.root, "gold_profiles", partition={"as_of": SNAPSHOTS[-1]})
    assert world["scored"]["skipped"] == []
    for name in cfg.ml.models.values():
        mine = scores[scores["model"] == name]
        assert set(mine["person_id"]) == set(people["person_id"]) and set(mine["version"]) == {"1"}
        assert mine["score"].between(0, 1).all() and set(mine["decile"]) == set(range(1, 11))
        assert mine.groupby("decile")["score"].min().is_monotonic_increasing


def test_a_worse_challenger_does_not_replace_the_champion(mlflow_store):
    import mlflow
    from mlflow.tracking import MlflowClient

    cfg = mlflow_store["cfg"]
    frame, _ = train.read_training_set(cfg.paths.lakehouse_uri())
    sp = train.split(frame, "churn")
    cols = list(cfg.ml.features) + list(cfg.ml.categorical)
    noise = sp.train[sp.label].sample(frac=1.0, random_state=1).to_numpy()  # labels shuffled: no signal
    with mlflow.start_run(run_name="worse"):
        bad = train.fit_and_log("logistic", sp.train[cols], pd.Series(noise), sp.holdout[cols],
                                sp.holdout[sp.label].astype(int).to_numpy(), list(cfg.ml.features),
                                list(cfg.ml.categorical), 0, "worse", {})
    name = cfg.ml.models["churn"]
    version = int(mlflow.register_model(bad["model_uri"], name).version)
    decision = train.promote(cfg, frame, "churn", version)
    assert decision["decision"] == "kept the champion: the challenger is not better"
    assert decision["challenger_roc_auc"] < decision["champion_roc_auc"]
    assert int(MlflowClient().get_model_version_by_alias(name, "champion").version) == 1


def test_the_mlflow_store_and_artifacts_hold_no_personal_identifier(world):
    """What training logs (params, metrics, tags, signatures, input examples, models, the BTYD baselines)
    is features and pseudonymous person ids: no identifier of the world, byte by byte (issue 19)."""
    from tests.pii_scan import files_under, hits, world_identifiers

    base = Path(world["cfg"].paths.lakehouse).parent
    pattern = world_identifiers(world["cfg"].paths.lakehouse_uri())
    assert hits([base / "landing"], pattern)  # the search finds them where they are
    stores = [base / "mlflow.db", Path(world["cfg"].ml.artifacts)]
    assert files_under(stores) > 20
    assert hits(stores, pattern) == []


def test_training_without_features_says_what_to_run(tmp_path):
    with pytest.raises(train.TrainError, match="gold_features does not exist"):
        train.read_training_set(str(tmp_path / "lh"))


def test_cutoffs_beyond_the_data_name_the_missing_snapshot(world, sail):
    cfg, lh = world["cfg"], world["lh"]
    with pytest.raises(features.FeatureError, match="no One-ID snapshot for 2026-11-25"):
        features.run(lh, cfg, [SNAPSHOTS[-1]])  # its horizon ends after the newest batch


def test_decimal_amounts_reach_features_as_doubles(world):
    """spend features come from silver_orders' decimal(12,2) amounts, summed as doubles."""
    rows = read_pandas(world["lh"].root, "gold_features")
    assert rows["spend_30d"].dtype == np.float64 and (rows["spend_30d"] >= 0).all()
    assert Decimal("0") <= Decimal(str(rows["spend_30d"].max()))


def test_cdp_train_through_airflow_trains_and_promotes_the_chosen_target(world, tmp_path):
    """`airflow dags test cdp_train` on a copy of the world: features from the newest snapshot of the
    interval (cutoffs 2026-11-10 and -15), `targets: [churn]` trains and promotes churn only."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import mlflow
    import yaml

    root = Path(__file__).resolve().parent.parent
    shutil.copytree(world["cfg"].paths.lakehouse_uri(), tmp_path / "lh")
    conf = yaml.safe_load((root / "conf" / "cdp.yaml").read_text())
    conf["ml"] = {"horizon_days": 5, "cutoffs": 2, "cutoff_step_days": 5, "experiment": "airflow",
                  "artifacts": str(tmp_path / "artifacts"), "tuning_trials": 4}
    (tmp_path / "cdp.yaml").write_text(yaml.safe_dump(conf))
    store = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "CDP_CONF": str(tmp_path / "cdp.yaml"),
           "CDP_LAKEHOUSE": str(tmp_path / "lh"), "MLFLOW_TRACKING_URI": store}
    env.pop("SPARK_CONNECT_MODE_ENABLED", None)
    airflow = str(Path(sys.executable).parent / "airflow")
    assert subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, timeout=300).returncode == 0
    # A manual run on Monday 2026-11-23 covers the week to that Monday; the newest snapshot in it is 11-20.
    out = subprocess.run([airflow, "dags", "test", "cdp_train", "2026-11-23T04:00:00+00:00", "-c",
                          json.dumps({"targets": ["churn"]})], env=env, capture_output=True, text=True, timeout=900)
    log = out.stdout + out.stderr
    assert re.search(r"DagRun Finished: .*?, state=success", log), log[-4000:]
    feats = read_pandas(str(tmp_path / "lh"), "gold_features", columns=["cutoff"])
    assert sorted(str(c) for c in feats["cutoff"].unique()) == ["2026-11-10", "2026-11-15"]
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    assert str(client.get_model_version_by_alias("cdp_churn", "champion").version) == "1"
    assert not client.search_registered_models("name = 'cdp_propensity'")  # not in this run's targets
