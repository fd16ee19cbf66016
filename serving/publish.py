"""Publish: reads the gold marts of one as-of date (gold_profiles, gold_tags, gold_scores,
gold_segment_members, gold_id_map, gold_recent_events, through delta-rs at the versions of the last
complete run) and writes them to the online store as one snapshot."""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict

import pandas as pd
import pyarrow.compute as pc

from serving.store import OnlineStore, Snapshot
from spark_jobs.tables import TableNotFoundError, latest_partition, table_path

log = logging.getLogger(__name__)

TABLES = ("gold_profiles", "gold_tags", "gold_scores", "gold_segment_members", "gold_id_map", "gold_recent_events")
PROFILE_ATTRIBUTES = ("name", "gender", "birthday", "city", "tier", "phone", "email")  # each with its *_source
PROFILE_FIELDS = ("age", "first_seen", "last_seen", "tenure_days", "channels")
CURRENT = ("entered", "stayed")  # gold_segment_members statuses of a person in the audience on that day


class PublishError(RuntimeError):
    """Nothing can be published (no gold tables, or no profiles for the as-of date); the message says why."""


def _read(root: str, name: str, version: int | None, partition: dict | None = None, where=None) -> pd.DataFrame:
    # delta-rs at a pinned version: tables.read_pandas reads the newest only (a version argument there
    # would serve here and in ml/; tables.py is not ours to change in this issue).
    from deltalake import DeltaTable

    path = table_path(root, name)
    if not DeltaTable.is_deltatable(path):
        raise TableNotFoundError(f"table {name} does not exist at {path}: run the stage that writes it first")
    parts = [(k, "=", str(v)) for k, v in (partition or {}).items()] or None
    return DeltaTable(path, version=version).to_pyarrow_dataset(partitions=parts).to_table(filter=where).to_pandas()


def _versions(root: str, pinned: dict[str, int] | None) -> dict[str, int | None]:
    from deltalake import DeltaTable

    out: dict[str, int | None] = {}
    for name in TABLES:
        path = table_path(root, name)
        if pinned and name in pinned:
            out[name] = pinned[name]
        elif DeltaTable.is_deltatable(path):
            out[name] = DeltaTable(path).version()
        else:
            out[name] = None
    return out


def _typed(value: str | None, value_type: str):
    if value is None:
        return None
    try:
        if value_type == "long":
            return int(value)
        if value_type == "double":
            v = float(value)
            return v if math.isfinite(v) else None
        if value_type == "boolean":
            return value == "true"
    except ValueError:
        return value
    return value


def _plain(v):
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return v


def current_owners(id_map: pd.DataFrame) -> pd.DataFrame:
    """One owner per identifier, as `cdp whois` answers without --on: the open row (valid_to NULL), else
    the latest starting; ties by person id."""
    if id_map.empty:
        return id_map
    df = id_map.copy()
    start = pd.to_datetime(df["valid_from"], utc=True).fillna(pd.to_datetime(df["first_seen"], utc=True))
    df["_open"] = df["valid_to"].isna()
    df["_start"] = start.fillna(pd.Timestamp.min.tz_localize("UTC"))
    df = df.sort_values(["id_type", "id_value", "_open", "_start", "person_id"])
    return df.drop_duplicates(["id_type", "id_value"], keep="last").drop(columns=["_open", "_start"])


def build_snapshot(root: str, as_of: str | None = None, pinned: dict[str, int] | None = None,
                   segments: list[str] | None = None) -> Snapshot:
    """The snapshot of `as_of` (default: the newest gold_profiles date at the pinned versions)."""
    versions = _versions(root, pinned)
    if versions["gold_profiles"] is None:
        raise PublishError(f"no gold_profiles under {root}: run the pipeline (cdp run) before publishing")
    as_of = as_of or latest_partition(root, "gold_profiles", "as_of", version=versions["gold_profiles"])
    if as_of is None:
        raise PublishError("gold_profiles has no as-of date yet: run the profiles stage first")
    on = {"as_of": as_of}
    profiles = _read(root, "gold_profiles", versions["gold_profiles"], on)
    if profiles.empty:
        raise PublishError(f"gold_profiles has no rows as of {as_of}")
    tags = _read(root, "gold_tags", versions["gold_tags"], on) if versions["gold_tags"] is not None else None
    id_map = current_owners(_read(root, "gold_id_map", versions["gold_id_map"], on)) \
        if versions["gold_id_map"] is not None else pd.DataFrame(columns=["id_type", "id_value", "person_id"])
    members = (_read(root, "gold_segment_members", versions["gold_segment_members"], on)
               if versions["gold_segment_members"] is not None else None)
    # written by the profiles stage beside gold_profiles: the same as-of date, already JSON
    recent = (_read(root, "gold_recent_events", versions["gold_recent_events"], on)
              if versions["gold_recent_events"] is not None else None)
    scores = None
    if versions["gold_scores"] is not None:  # each model's newest scores up to the as-of date, as predicted tags read them
        s = _read(root, "gold_scores", versions["gold_scores"], where=pc.field("as_of") <= pc.scalar(pd.Timestamp(as_of).date()))
        if not s.empty:
            newest = s.groupby("model")["as_of"].transform("max")
            scores = s[s["as_of"] == newest]

    people = set(profiles["person_id"])
    tag_docs: dict[str, dict] = defaultdict(dict)
    if tags is not None:
        for pid, tag, value, vt in zip(tags["person_id"], tags["tag"], tags["value"], tags["value_type"], strict=True):
            tag_docs[pid][tag] = _typed(value, vt)
    score_docs: dict[str, dict] = defaultdict(dict)
    if scores is not None:
        for r in scores.itertuples(index=False):
            score_docs[r.person_id][r.model] = {"score": _plain(r.score), "decile": _plain(r.decile),
                                                "version": r.version, "as_of": _plain(r.as_of)}
    seg_rows: list[tuple[str, str, str]] = []
    seg_docs: dict[str, list] = defaultdict(list)
    if members is not None:
        current = members[members["status"].isin(CURRENT)].sort_values(["segment", "person_id"])
        for seg, pid, entered in zip(current["segment"], current["person_id"], current["entered_on"], strict=True):
            seg_rows.append((seg, pid, _plain(entered)))
            seg_docs[pid].append({"segment": seg, "entered_on": _plain(entered)})
    id_docs: dict[str, list] = defaultdict(list)
    ids: list[tuple[str, str]] = []
    for t, v, pid in zip(id_map["id_type"], id_map["id_value"], id_map["person_id"], strict=True):
        if pid in people:
            ids.append((f"{t}:{v}", pid))
            id_docs[pid].append({"type": t, "value": v})
    # the person id is an identifier too: /v1/profiles/person_id:p_...
    ids.extend((f"person_id:{pid}", pid) for pid in sorted(people))

    docs = []
    for r in profiles.to_dict("records"):
        pid = r["person_id"]
        doc = {
            "person_id": pid, "as_of": as_of,
            "profile": {a: {"value": _plain(r[a]), "source": r[f"{a}_source"]} for a in PROFILE_ATTRIBUTES},
            **{f: _plain(r[f]) for f in PROFILE_FIELDS},
            "tags": tag_docs.get(pid, {}), "scores": score_docs.get(pid, {}),
            "segments": seg_docs.get(pid, []),
            "identifiers": sorted(id_docs.get(pid, []), key=lambda d: (d["type"], d["value"])),
        }
        doc["channels"] = doc["channels"].split(",") if doc["channels"] else []
        docs.append((pid, json.dumps(doc, ensure_ascii=False, allow_nan=False)))
    names = sorted(set(segments or []) | {s for s, _, _ in seg_rows}
                   | (set(members["segment"]) if members is not None else set()))
    events = ([] if recent is None else
              [(p, e) for p, e in zip(recent["person_id"], recent["events"], strict=True) if p in people])
    return Snapshot(as_of=as_of, people=docs, ids=ids, members=seg_rows, segments=names, sources=versions, events=events)


def publish(store: OnlineStore, root: str, as_of: str | None = None, pinned: dict[str, int] | None = None,
            segments: list[str] | None = None) -> dict:
    """Build the snapshot and swap it into `store`; returns the published metadata (with seconds taken)."""
    started = time.monotonic()
    snapshot = build_snapshot(root, as_of, pinned, segments)
    built = time.monotonic()
    meta = store.publish(snapshot)
    log.info("published %s people as of %s to %s in %.1f s", meta["people"], meta["as_of"], store.url,
             time.monotonic() - started)
    return {**meta, "seconds": {"read": round(built - started, 2), "write": round(time.monotonic() - built, 2)}}


def publish_config(cfg, store_url: str | None = None, as_of: str | None = None) -> dict:
    """`publish` for a CDP config: the lakehouse's gold tables at the versions of the last complete run
    (ops_runs; the newest versions before any run completed) into the store at `store_url` (default:
    CDP_ONLINE_STORE, else the lakehouse's embedded SQLite store)."""
    from serving.store import default_store_url, open_store
    from spark_jobs.runs import pinned_versions

    root = cfg.paths.lakehouse_uri()
    store = open_store(store_url or default_store_url(root))
    try:
        return publish(store, root, as_of, pinned_versions(cfg), [s.name for s in cfg.segments.segments])
    finally:
        store.close()
