"""Where MLflow keeps runs and models: a local SQLite store and artifact folder inside the project by
default (no server), or $MLFLOW_TRACKING_URI / conf `ml.tracking_uri`; reads and writes no tables."""

from __future__ import annotations

import os
from pathlib import Path

from spark_jobs.config import PROJECT_ROOT, MlConfig


def tracking_uri(cfg: MlConfig) -> str:
    """$MLFLOW_TRACKING_URI, else conf ml.tracking_uri, else sqlite:///<project>/mlruns/mlflow.db."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking_uri
    if uri:
        return uri
    db = PROJECT_ROOT / "mlruns" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def artifact_root(cfg: MlConfig) -> str:
    path = Path(cfg.artifacts)
    path = path if path.is_absolute() else PROJECT_ROOT / path
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve().as_uri()


EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
# `workflowType` in the UI's URL picks its sidebar (the choice is otherwise kept in the browser, GenAI first)
UI_PATH = "/#/experiments?workflowType=machine_learning"


def configure(cfg: MlConfig) -> str:
    """Point MLflow (tracking and registry) at the store and make sure the experiment exists; returns
    the experiment id."""
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # alembic migrations log a page on a new store
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per model load in task logs
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    existing = mlflow.get_experiment_by_name(cfg.experiment)
    if existing is not None:
        experiment_id = existing.experiment_id
    else:
        # A local store keeps artifacts in the project's folder; a server decides for itself.
        local = uri.startswith(("sqlite:", "file:")) or "://" not in uri
        experiment_id = mlflow.create_experiment(
            cfg.experiment, artifact_location=f"{artifact_root(cfg)}/{cfg.experiment}" if local else None)
    # The UI's experiment type: classic model training (runs, metrics, models), not the GenAI pages
    # (traces, prompts) MLflow 3 opens on for an untyped experiment.
    mlflow.MlflowClient().set_experiment_tag(experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id
