"""The alert webhook notifier (spark_jobs/analytics/notify.py) against a real HTTP server on loopback, its
URL taken from an Airflow connection given as an environment variable."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from spark_jobs.analytics.notify import AlertWebhookError, AlertWebhookNotifier

ALERT = {"as_of": "2026-11-20", "metric": "active_people", "dimension": "channel", "dimension_value": "wechat",
         "observed": 0.0, "expected": 600.0, "lower": 540.0, "upper": 660.0, "severity": "critical", "direction": "drop",
         "drill_down": "[]"}


@pytest.fixture
def hook():
    received: list[dict] = []
    status = {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": json.loads(body)})
            self.send_response(status["code"])
            self.end_headers()
            self.wfile.write(b"nope" if status["code"] >= 400 else b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], received, status
    server.shutdown()
    server.server_close()


def _run_with(tmp_path, monkeypatch, alerts) -> str:
    from spark_jobs.config import load_config

    monkeypatch.setenv("CDP_LAKEHOUSE", str(tmp_path / "lh"))
    folder = load_config().paths.runs("run_1")
    folder.mkdir(parents=True)
    (folder / "analytics.json").write_text(json.dumps({"batch_date": "2026-11-20", "analytics": {"alerts": alerts}}))
    return "run_1"


def test_notify_posts_the_runs_alerts_to_the_connection(tmp_path, monkeypatch, hook):
    port, received, _ = hook
    monkeypatch.setenv("AIRFLOW_CONN_CDP_ALERTS_WEBHOOK", f"http://:s3cret@127.0.0.1:{port}/cdp/alerts")
    run_id = _run_with(tmp_path, monkeypatch, [ALERT, {**ALERT, "severity": "warning", "dimension_value": "app"}])
    AlertWebhookNotifier().notify({"run_id": run_id})
    assert len(received) == 1 and received[0]["path"] == "/cdp/alerts" and received[0]["auth"] == "Bearer s3cret"
    assert received[0]["body"]["batch_date"] == "2026-11-20" and len(received[0]["body"]["alerts"]) == 2
    AlertWebhookNotifier(min_severity="critical").notify({"run_id": run_id})
    assert [a["dimension_value"] for a in received[1]["body"]["alerts"]] == ["wechat"]


def test_notify_sends_nothing_without_alerts_or_without_a_connection(tmp_path, monkeypatch, hook):
    port, received, _ = hook
    run_id = _run_with(tmp_path, monkeypatch, [ALERT])
    AlertWebhookNotifier(conn_id="cdp_no_such_hook").notify({"run_id": run_id})  # logged, not raised
    monkeypatch.setenv("AIRFLOW_CONN_CDP_ALERTS_WEBHOOK", f"http://127.0.0.1:{port}/x")
    (tmp_path / "lh" / "_runs" / "run_1" / "analytics.json").write_text(
        json.dumps({"batch_date": "2026-11-20", "analytics": {"alerts": []}}))
    AlertWebhookNotifier().notify({"run_id": run_id})
    assert received == []


def test_notify_names_the_connection_when_the_webhook_refuses(tmp_path, monkeypatch, hook):
    port, _, status = hook
    status["code"] = 403
    monkeypatch.setenv("AIRFLOW_CONN_CDP_ALERTS_WEBHOOK", f"http://127.0.0.1:{port}/x")
    run_id = _run_with(tmp_path, monkeypatch, [ALERT])
    with pytest.raises(AlertWebhookError, match="'cdp_alerts_webhook' answered 403: nope"):
        AlertWebhookNotifier().notify({"run_id": run_id})
    monkeypatch.setenv("AIRFLOW_CONN_CDP_ALERTS_WEBHOOK", "postgres://db:5432/x")
    with pytest.raises(AlertWebhookError, match="type 'postgres'.*http or https"):
        AlertWebhookNotifier().notify({"run_id": run_id})
