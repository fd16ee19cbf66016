"""`make mlflow-ui` opens MLflow's model-training view, not the GenAI landing page MLflow 3 shows first: a
real `mlflow ui` on a loopback port over a store the project's tracking set-up made, read in headless
Chromium (the page is a JavaScript app)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.airflow_standalone import free_port, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _sidebar(chromium: str, url: str) -> str:
    """The rendered page's text (tags stripped), after its scripts ran."""
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--virtual-time-budget=20000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=180, check=True).stdout
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))


def test_the_mlflow_ui_link_opens_the_model_training_view(tmp_path, monkeypatch):
    import mlflow

    from ml.tracking import EXPERIMENT_KIND, MODEL_TRAINING, UI_PATH, configure
    from spark_jobs.config import load_config

    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make test` installs it (scripts/system-deps.sh)"
    store = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    cfg = load_config(env={}).ml.model_copy(update={"artifacts": str(tmp_path / "artifacts"), "experiment": "cdp_ui"})
    experiment = configure(cfg)
    assert configure(cfg) == experiment  # a second set-up finds it
    assert mlflow.MlflowClient().get_experiment(experiment).tags[EXPERIMENT_KIND] == MODEL_TRAINING
    with mlflow.start_run(run_name="lightgbm_fixed"):
        mlflow.log_metric("roc_auc", 0.8)

    port = free_port()
    ui = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", store, "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _up(base), 120, "mlflow ui")
        landing = _sidebar(chromium, base + "/")
        training = _sidebar(chromium, base + UI_PATH)
        runs = _sidebar(chromium, f"{base}/#/experiments/{experiment}?workflowType=machine_learning")
    finally:
        ui.terminate()
        ui.wait(30)
    # MLflow 3's own first page is the GenAI one (prompts, AI gateway); the project's link is not.
    assert "Prompts" in landing and "AI Gateway" in landing
    assert "Model registry" in training and "Prompts" not in training and "cdp_ui" in training
    assert "lightgbm_fixed" in runs and "Model registry" in runs


def _up(base: str) -> bool:
    try:
        return requests.get(base + "/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False
