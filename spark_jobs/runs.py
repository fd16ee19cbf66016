"""Run safety: one writer per lakehouse (a claim file under _runs/), batch days in order, and ops_runs,
the manifest each complete run writes last (the Delta version of every table) that consistent readers use."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from spark_jobs.config import CdpConfig, file_safe

log = logging.getLogger(__name__)

CLAIM_FILE = "claim.json"
RUNS_TABLE = "ops_runs"


HISTORY_RUN_PREFIX = "history__"  # the run id of a history load: one batch of many landing days


def history_run_id(first: dt.date, last: dt.date) -> str:
    """The run id of a history load (`cdp load-history`) of the landing days first..last."""
    return f"{HISTORY_RUN_PREFIX}{first.isoformat()}__{last.isoformat()}__{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}"


def is_history_run(run_id: str) -> bool:
    return run_id.startswith(HISTORY_RUN_PREFIX)


class RunConflictError(RuntimeError):
    """Another run is writing the lakehouse; the message names it and says what to do."""


class RunOrderError(ValueError):
    """A batch day would be run out of order; the message names the days and the switch that allows it."""


@dataclass(frozen=True)
class Claim:
    """Who writes the lakehouse now. `pid` is set for a run that lives in one process (the CLI): when
    that process is gone from this host, the claim is stale and the next run takes it over. An Airflow
    run spans many task processes: it claims in its first task and releases in its summary task."""

    run_id: str
    batch_date: str
    host: str
    pid: int | None
    since: str

    def describe(self) -> str:
        who = f"pid {self.pid} on {self.host}" if self.pid else f"an Airflow run on {self.host}"
        return f"run {self.run_id} (batch {self.batch_date}, {who}, since {self.since} UTC)"


def claim_path(cfg: CdpConfig) -> Path:
    return cfg.paths.runs() / CLAIM_FILE


def current_claim(cfg: CdpConfig) -> Claim | None:
    path = claim_path(cfg)
    try:
        return Claim(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):  # a claim cut short by a crash while it was written
        log.warning("unreadable run claim %s: treated as stale", path)
        return Claim("unknown", "unknown", socket.gethostname(), -1, "unknown")


def _alive(c: Claim) -> bool:
    if c.pid is None or c.host != socket.gethostname():
        return True  # cannot tell from here: an Airflow run, or another machine's
    if c.pid < 0:
        return False
    try:
        os.kill(c.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire(cfg: CdpConfig, run_id: str, batch_date: dt.date, pid: int | None = None, wait: float = 0.0) -> bool:
    """Claim the lakehouse for `run_id`. True when this call took the claim; False when `run_id` holds
    it already (a later stage or task of the same run). Raises RunConflictError when another live run
    holds it and `wait` seconds pass without it being released; a stale claim (its process is gone)
    is taken over with a warning. The claim is created atomically (O_EXCL)."""
    path = claim_path(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = Claim(run_id, batch_date.isoformat(), socket.gethostname(), pid,
                 dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"))
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = current_claim(cfg)
            if held is None:
                continue  # released between the two calls
            if held.run_id == run_id:
                return False
            if not _alive(held):
                log.warning("taking over the stale claim of %s: its process is gone", held.describe())
                _remove_if(path, held)
                continue
            if time.monotonic() >= deadline:
                raise RunConflictError(
                    f"the lakehouse {cfg.paths.lakehouse_uri()} is being written by {held.describe()}; "
                    f"wait for it to finish (or pass --wait SECONDS). If no such run is alive, "
                    f"`cdp runs release {held.run_id}` removes its claim ({path})") from None
            time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(mine), fh)
        _clear_old_staging(cfg, run_id)
        return True


def _remove_if(path: Path, held: Claim) -> None:
    """Remove the claim file only while it still holds `held` (another run may have replaced it)."""
    try:
        if json.loads(path.read_text()).get("run_id") == held.run_id:
            path.unlink()
    except (FileNotFoundError, ValueError):
        path.unlink(missing_ok=True)


def release(cfg: CdpConfig, run_id: str) -> bool:
    """Drop `run_id`'s claim; True when it held one."""
    held = current_claim(cfg)
    if held is None or held.run_id != run_id:
        return False
    _remove_if(claim_path(cfg), held)
    return True


def clear_staging(cfg: CdpConfig, run_id: str) -> None:
    """Remove a run's staging folder (what its stages staged and unstaged leaves: empty folders, or
    everything when a stage failed)."""
    from spark_jobs.storage import remove_tree

    remove_tree(f"{cfg.paths.lakehouse_uri()}/_staging/{file_safe(run_id)}")


def _clear_old_staging(cfg: CdpConfig, run_id: str) -> None:
    """Staged intermediates of runs that ended without cleaning up (killed): with the claim held, no
    other run is using them, and they may hold personal data."""
    from spark_jobs.storage import children, remove_tree

    root = f"{cfg.paths.lakehouse_uri()}/_staging"
    for name in children(root):
        if name != file_safe(run_id) and not name.startswith("adhoc-"):
            remove_tree(f"{root}/{name}")


# --- the manifest ---------------------------------------------------------------------------------

def run_history(cfg: CdpConfig):
    """Every row of ops_runs as pandas (empty when no run completed yet), oldest first."""
    import pandas as pd

    from spark_jobs.contracts import contract
    from spark_jobs.tables import TableNotFoundError, read_pandas

    try:
        df = read_pandas(cfg.paths.lakehouse_uri(), RUNS_TABLE)
    except TableNotFoundError:
        return pd.DataFrame(columns=contract(RUNS_TABLE).column_names)
    return df.sort_values("finished_at").reset_index(drop=True)


@dataclass(frozen=True)
class RunSnapshot:
    """The tables as a complete run left them."""

    run_id: str
    batch_date: dt.date
    tables: dict[str, int]


def last_complete(cfg: CdpConfig) -> RunSnapshot | None:
    """The newest complete run (by batch date, then finish time): the versions a consistent reader
    pins (Lakehouse(pinned=...)). None before the first complete run."""
    runs = run_history(cfg)
    done = runs[runs["status"] == "complete"]
    if done.empty:
        return None
    row = done.sort_values(["batch_date", "finished_at"]).iloc[-1]
    return RunSnapshot(row["run_id"], _as_date(row["batch_date"]), json.loads(row["tables"]))


def pinned_versions(cfg: CdpConfig, writes: tuple[str, ...] = ()) -> dict[str, int]:
    """The table versions a consistent reader pins: those of the last complete run (none before the
    first), less the tables the reader itself writes. Use as Lakehouse(..., pinned=...)."""
    snap = last_complete(cfg)
    return {} if snap is None else {t: v for t, v in snap.tables.items() if t not in writes}


def _as_date(v) -> dt.date:
    return v if isinstance(v, dt.date) and not isinstance(v, dt.datetime) else dt.date.fromisoformat(str(v)[:10])


def run_days(cfg: CdpConfig) -> dict[dt.date, dt.datetime]:
    """Each batch date some run finished (complete, or a run of some stages only), and when its
    newest such run finished: the days the order rules count as run."""
    runs = run_history(cfg)
    done = runs[runs["status"].isin(["complete", "partial"])]
    return {_as_date(d): g["finished_at"].max().to_pydatetime() for d, g in done.groupby("batch_date")}


def stale_days(cfg: CdpConfig) -> list[dt.date]:
    """Complete days that a later-finished run made stale (an out-of-order day, changed files) and
    that have not been re-run since: they need a re-run, in order."""
    runs = run_history(cfg)
    finished = run_days(cfg)
    out = set()
    for _, r in runs[runs["status"].isin(["complete", "partial"])].iterrows():
        for day in json.loads(r["stale_days"] or "[]"):
            d = dt.date.fromisoformat(day)
            if d in finished and finished[d] <= r["finished_at"].to_pydatetime():
                out.add(d)
    return sorted(out)


def check_order(cfg: CdpConfig, batch_date: dt.date, allow_out_of_order: bool = False,
                sources: list[str] | None = None, first_day: dt.date | None = None) -> list[dt.date]:
    """Refuse (RunOrderError) a batch that is not the next in order: one before the newest complete
    day, or one that skips a landing day after it that was never run. A lakehouse's first run may be
    any day. With `allow_out_of_order` the run goes on; returns the complete days after it, which it
    makes stale."""
    done = run_days(cfg)
    if not done:
        return []
    newest = max(done)
    later = sorted(d for d in done if d > batch_date)
    skipped = _unrun_landing_days(cfg, newest, first_day or batch_date, sources)
    problems = []
    if later:
        problems.append(f"batch {batch_date} is before batch day(s) {_days(later)} already run: identity, segments and "
                        "duplicate detection of those days built on the state before it")
    if skipped:
        problems.append(f"landing day(s) {_days(skipped)} after the newest day run ({newest}) have not been run")
    if problems and not allow_out_of_order:
        raise RunOrderError("; ".join(problems) + ". Run the days in order (`cdp run --date` each, oldest first, or "
                            "`cdp load-history`), or pass --allow-out-of-order: the later days are then recorded as "
                            "needing a re-run")
    if problems:
        log.warning("running %s out of order (allowed): %s", batch_date, "; ".join(problems))
    return later


def _days(days: list[dt.date]) -> str:
    shown = ", ".join(d.isoformat() for d in days[:5])
    return shown + (f" and {len(days) - 5} more" if len(days) > 5 else "")


def _unrun_landing_days(cfg: CdpConfig, newest: dt.date, before: dt.date, sources: list[str] | None) -> list[dt.date]:
    """Landing days strictly between `newest` and `before` that some ingested source delivered."""
    landing = cfg.paths.landing_path()
    days = set()
    for name in sources or cfg.ingest_sources():
        folder = landing / name
        if not folder.is_dir():
            continue
        for child in folder.iterdir():
            try:
                d = dt.date.fromisoformat(child.name)
            except ValueError:
                continue
            if newest < d < before:
                days.add(d)
    return sorted(days)


def record_run(cfg: CdpConfig, run_id: str, batch_date: dt.date, started_at: dt.datetime, status: str,
               first_day: dt.date | None = None, stale: list[dt.date] = (), note: str | None = None) -> dict[str, int]:
    """Append the run's row to ops_runs (status complete, partial: some stages only, or failed): for a
    complete or partial run, the Delta version of every table now
    (the run holds the claim, so they are its own). Written last; returns the versions recorded."""
    import pyarrow as pa

    from spark_jobs.contracts import CONTRACTS, contract
    from spark_jobs.tables import append_arrow, table_stats

    root = cfg.paths.lakehouse_uri()
    versions = {} if status == "failed" else {
        name: stats["version"] for name in CONTRACTS if name != RUNS_TABLE and (stats := table_stats(root, name))}
    naive = lambda t: t.astimezone(dt.UTC).replace(tzinfo=None) if t.tzinfo else t  # noqa: E731
    row = {
        "run_id": run_id, "batch_date": batch_date, "first_day": first_day or batch_date, "status": status,
        "started_at": naive(started_at), "finished_at": naive(dt.datetime.now(dt.UTC)),
        "tables": json.dumps(versions, sort_keys=True), "stale_days": json.dumps([d.isoformat() for d in stale]),
        "note": note,
    }
    schema = contract(RUNS_TABLE).arrow_schema()
    append_arrow(root, RUNS_TABLE, pa.Table.from_pylist([row], schema=schema))
    return versions
