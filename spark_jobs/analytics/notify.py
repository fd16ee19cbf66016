"""Airflow notifier for anomaly alerts: reads the analytics stage's figures of the run (_runs/<run>/analytics.json)
and POSTs its alerts as JSON to the URL of an Airflow connection; writes no table. Light imports only: DAG
files import it while Airflow parses them."""

from __future__ import annotations

import json
import logging

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)
WEBHOOK_CONN_ID = "cdp_alerts_webhook"  # e.g. AIRFLOW_CONN_CDP_ALERTS_WEBHOOK='https://hooks.example.com/cdp?token=...'


class AlertWebhookError(RuntimeError):
    """The webhook answered with an error; the message says which connection and what it answered."""


def webhook_url(conn) -> str:
    """The URL an Airflow connection names: `http://host:port/path` (type http or https; the path is its schema)."""
    if conn.conn_type not in ("http", "https"):
        raise AlertWebhookError(f"Airflow connection {conn.conn_id!r} has type {conn.conn_type!r}; the alert webhook needs "
                                "http or https (e.g. AIRFLOW_CONN_CDP_ALERTS_WEBHOOK='https://hooks.example.com/cdp')")
    port = f":{conn.port}" if conn.port else ""
    path = f"/{conn.schema.lstrip('/')}" if conn.schema else ""
    return f"{conn.conn_type}://{conn.host}{port}{path}"


class AlertWebhookNotifier(BaseNotifier):
    """On the analytics task's success: POST {run_id, batch_date, alerts} to connection `conn_id` when the
    run raised alerts (`min_severity`: warning or critical). No connection: logged, nothing sent."""

    template_fields = ("conn_id",)

    def __init__(self, conn_id: str = WEBHOOK_CONN_ID, min_severity: str = "warning", timeout: float = 10.0):
        super().__init__()
        self.conn_id, self.min_severity, self.timeout = conn_id, min_severity, timeout

    def alerts(self, run_id: str) -> dict | None:
        from spark_jobs.config import load_config

        path = load_config().paths.runs(run_id) / "analytics.json"
        if not path.exists():
            return None
        figures = json.loads(path.read_text())
        wanted = ("critical",) if self.min_severity == "critical" else ("warning", "critical")
        found = [a for a in figures["analytics"]["alerts"] if a["severity"] in wanted]
        return {"run_id": run_id, "batch_date": figures["batch_date"], "alerts": found} if found else None

    def notify(self, context) -> None:
        import requests
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        run_id = context["run_id"]
        payload = self.alerts(run_id)
        if payload is None:
            log.info("no alerts in run %s: nothing sent", run_id)
            return
        try:
            conn = BaseHook.get_connection(self.conn_id)
        except AirflowNotFoundException:
            log.warning("%d alert(s) in run %s, but no Airflow connection %r to send them to", len(payload["alerts"]), run_id,
                        self.conn_id)
            return
        headers = {"Authorization": f"Bearer {conn.password}"} if conn.password else {}
        answer = requests.post(webhook_url(conn), json=payload, headers=headers, timeout=self.timeout)
        if answer.status_code >= 400:
            raise AlertWebhookError(f"webhook of connection {self.conn_id!r} answered {answer.status_code}: {answer.text[:200]}")
        log.info("sent %d alert(s) of run %s to connection %r", len(payload["alerts"]), run_id, self.conn_id)
