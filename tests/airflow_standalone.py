"""A real `airflow standalone` (scheduler, api-server, dag-processor, triggerer) for the scheduler tests,
its REST API v2 with a JWT, and the UI's grid read in headless Chromium (Playwright driving the
system's /usr/bin/chromium; nothing is downloaded)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

BIN = Path(sys.executable).parent
USER, PASSWORD = "admin", "cdp-test-admin"
TERMINAL = {"success", "failed"}
CHROMIUM = "/usr/bin/chromium"
# The machine has no outside network: Chromium's background connections must be off.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, every: float = 1.0):
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except requests.RequestException as e:  # not up yet
            last = e
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


class Standalone:
    """`airflow standalone` in its own process group, stopped with SIGINT (a SIGTERM orphans its children)."""

    def __init__(self, env: dict[str, str]):
        self.home = Path(env["AIRFLOW_HOME"])
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = self.home / "standalone.log"
        self.env = {
            **env,
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # standalone starts its parts as `airflow ...`
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base,  # also the execution API address the task runners call
            "AIRFLOW__API__SECRET_KEY": "cdp-test-secret-key",
            "AIRFLOW__API_AUTH__JWT_SECRET": "cdp-test-jwt-secret-0123456789abcdef0123456789",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),  # fixed defaults clash under xdist
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            # Only the runs the test asks for: unpausing must not start the latest cron interval.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "NO_COLOR": "1",
        }
        self.proc: subprocess.Popen | None = None
        self.token: str | None = None
        self.http = requests.Session()

    def start(self, timeout: float = 240) -> None:
        pw = self.home / "passwords.json"
        pw.touch(mode=0o600)
        pw.write_text(json.dumps({USER: PASSWORD}))
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN / "airflow"), "standalone"], env=self.env, cwd=self.home, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
            # A parent that ignores SIGINT (nohup, `cmd &`) would pass that on and SIGINT would do nothing.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        wait_for(self._healthy, timeout, "airflow standalone to be healthy")
        r = requests.post(f"{self.base}/auth/token", json={"username": USER, "password": PASSWORD}, timeout=10)
        assert r.status_code == 201, (r.status_code, r.text)
        self.token = r.json()["access_token"]
        self.http.headers["Authorization"] = f"Bearer {self.token}"

    def _healthy(self) -> bool:
        assert self.proc.poll() is None, f"airflow standalone exited: {self.tail()}"
        r = requests.get(f"{self.base}/api/v2/monitor/health", timeout=3)
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return r.status_code == 200 and all(r.json().get(p, {}).get("status") == "healthy" for p in parts)

    def tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def api(self, method: str, path: str, body: dict | None = None, **params) -> requests.Response:
        return self.http.request(method, f"{self.base}/api/v2{path}", json=body, params=params or None, timeout=30)

    def wait_runs(self, dag_id: str, run_ids: list[str], timeout: float) -> dict[str, dict]:
        def done():
            runs = {r: self.api("GET", f"/dags/{dag_id}/dagRuns/{r}").json() for r in run_ids}
            return runs if all(r.get("state") in TERMINAL for r in runs.values()) else None

        return wait_for(done, timeout, f"runs {run_ids} of {dag_id}", every=3)

    def task_states(self, dag_id: str, run_id: str) -> dict[tuple[str, int], str]:
        tis = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100).json()["task_instances"]
        return {(t["task_id"], t["map_index"]): t["state"] for t in tis}

    def stop(self, timeout: float = 90) -> list[str]:
        """SIGINT, wait for standalone and every process it started; return what was still alive
        (then killed), which should be nothing."""
        if self.proc is None:
            return []
        children = psutil.Process(self.proc.pid).children(recursive=True) if self.proc.poll() is None else []
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        # The scheduler drains its LocalExecutor workers on SIGTERM: on a loaded 2-core machine that took
        # more than 30 s once (CI, 2026-12-03), so the children get the same time as standalone itself.
        _, alive = psutil.wait_procs(children, timeout=timeout)
        left = [" ".join(p.cmdline()[:3]) for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if self.proc.poll() is None or left:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()
        return left


def read_grid(base: str, token: str, dag_id: str, run_ids: list[str], screenshot: Path) -> dict:
    """Open each run's page of the DAG in headless Chromium, signed in with the API's JWT (the UI reads it
    from cookie `_token`), and read the grid: the state colour of every task cell, the state its tooltip
    names, and the task-instance table (one row per map index). A screenshot of the last run's page is kept."""
    from playwright.sync_api import sync_playwright

    seen: dict = {"cells": {}, "tooltips": {}, "table": {}}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1920, "height": 1200})
            context.add_cookies([{"name": "_token", "value": token, "url": base}])
            page = context.new_page()
            for run_id in run_ids:
                page.goto(f"{base}/dags/{dag_id}/runs/{run_id}")
                cells = page.locator(f'a[data-testid^="grid-{run_id}-"]')
                cells.first.wait_for(timeout=60_000)
                page.wait_for_load_state("networkidle")
                # The cell badge carries its state only as a theme colour: map the theme's colours back.
                seen["cells"][run_id] = page.evaluate(
                    """(runId) => {
                        const probe = document.createElement('span'); document.body.appendChild(probe);
                        const colour = {};
                        for (const st of ['success', 'failed', 'running', 'queued', 'scheduled', 'skipped',
                                          'upstream_failed', 'up_for_retry', 'removed', 'deferred', 'restarting']) {
                            probe.style.backgroundColor = `var(--chakra-colors-${st}-solid)`;
                            const c = getComputedStyle(probe).backgroundColor;
                            colour[c] = colour[c] || st;
                        }
                        probe.remove();
                        const out = {};
                        for (const a of document.querySelectorAll(`a[data-testid^="grid-${runId}-"]`)) {
                            const task = a.closest('[data-task-id]').getAttribute('data-task-id');
                            const badge = a.querySelector('[data-testid="task-state-badge"]');
                            const bg = badge ? getComputedStyle(badge).backgroundColor : null;
                            out[task] = colour[bg] || `unknown colour ${bg}`;
                        }
                        return out;
                    }""",
                    run_id,
                )
                tips = {}
                for i in range(cells.count()):  # the tooltip names the state in words
                    cell = cells.nth(i)
                    task = cell.locator("xpath=ancestor::*[@data-task-id][1]").get_attribute("data-task-id")
                    trigger = cell.locator("xpath=..")
                    trigger.dispatch_event("pointermove", {"pointerType": "mouse"})
                    tip = page.locator(f'[id="{trigger.get_attribute("id").replace(":trigger", ":content")}"]')
                    tip.wait_for(state="visible", timeout=10_000)
                    tips[task] = tip.inner_text()
                    trigger.dispatch_event("pointerout", {"pointerType": "mouse"})
                seen["tooltips"][run_id] = tips
                rows = page.locator('[data-testid="table-list"] tbody tr')
                seen["table"][run_id] = sorted(
                    tuple(rows.nth(i).locator(f'[data-testid="table-cell-{c}"]').inner_text().strip()
                          for c in ("task_display_name", "rendered_map_index", "state"))
                    for i in range(rows.count()))
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return seen
