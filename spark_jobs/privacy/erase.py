"""Erasure (PIPL art. 47, GDPR art. 17): finds a person through One-ID and deletes them from every Delta
table, export, staged leftover, run record, Data Docs page, log and the online store; records suppressions.

How it matches: every identifier of the person (gold_id_map, all snapshots) becomes a search pattern that
also finds its raw forms (a phone with separators or a country code, an e-mail in any case) and the
SHA-256 forms ad-platform exports carry. A table row whose personal-data columns match, or whose person id
is one of the person's, is deleted (bronze, quarantine, silver, gold); in ops tables the matched text is
redacted instead, so the run record and quality history stay whole. Text files are redacted in place.
An identifier another person owns too (a re-issued phone) is not searched for: deleting by it would erase
the other person's rows. The report lists it under `shared`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

# Text files worth redacting (run figures, Data Docs, GX results, logs, MLflow artifacts, exports).
TEXT_SUFFIXES = (".json", ".jsonl", ".html", ".htm", ".txt", ".log", ".csv", ".md", ".yaml", ".yml", ".tsv")
REDACTED = "[erased]"
PERSON_COLUMNS = ("person_id", "other_person_id")


class ErasureError(ValueError):
    """An erasure request that cannot be carried out safely; the message says what to do."""


@dataclass
class Target:
    """Who is erased: their person ids (every snapshot's) and identifiers, by type (canonical values)."""

    person_ids: set[str] = field(default_factory=set)
    identifiers: dict[str, set[str]] = field(default_factory=dict)
    shared: dict[str, list[str]] = field(default_factory=dict)  # "type:value" -> other person ids

    def values(self) -> list[tuple[str, str]]:
        return sorted((t, v) for t, vs in self.identifiers.items() for v in vs)


# --- matching ----------------------------------------------------------------------------------------

_SEP = r"[ ().-]*"
# One pattern finds every form: a non-word character (or the start) before, one after, and between them
# one of the bodies below. Group 1 and 2 are the boundaries a redaction keeps.
LEAD, TAIL = r"(^|[^A-Za-z0-9_])", r"([^A-Za-z0-9_]|$)"


def _phone_body(e164: str) -> str:
    """A phone in any usual written form: with or without + / 00 and the country code, digits grouped by
    spaces, dots, dashes or brackets, a trunk 0 before the national number."""
    import phonenumbers

    n = phonenumbers.parse(e164)
    national = _SEP.join(str(phonenumbers.national_significant_number(n)))
    cc = _SEP.join(str(n.country_code))
    return rf"(?:(?:\+|00){_SEP}{cc}{_SEP}|{cc}{_SEP})?(?:0{_SEP})?{national}"


def hashed_forms(id_type: str, value: str) -> list[str]:
    """The digests ad platforms match on for a canonical identifier (spark_jobs.privacy.tokens' rules):
    e-mail as it is; phone in every platform format; SHA-256 and MD5 of each."""
    from spark_jobs.privacy.tokens import PHONE_FORMATS, normalise_phone, platform_hash

    forms = [normalise_phone(value, f) for f in PHONE_FORMATS] if id_type == "phone" else [value]
    return [platform_hash(f, algo) for f in forms if f for algo in ("sha256", "md5")]


def pattern(target: Target) -> str:
    """The regex (RE2 and Rust regex syntax: no look-around; use case-insensitively) that finds any form
    of the target's identifiers, their hashed forms and person ids."""
    bodies = []
    for id_type, value in target.values():
        bodies.append(_phone_body(value) if id_type == "phone" else re.escape(value))
        bodies += hashed_forms(id_type, value)
    bodies += [re.escape(p) for p in sorted(target.person_ids)]
    if not bodies:
        raise ErasureError("nothing to search for: no identifier and no person id")
    return LEAD + "(?:" + "|".join(bodies) + ")" + TAIL


# --- resolving the person ----------------------------------------------------------------------------

def _id_map(root: str):
    """gold_id_map's every snapshot (the columns resolve needs), string views cast to strings (Sail
    writes them, and pyarrow's comparisons do not mix the two)."""
    import pyarrow as pa
    from deltalake import DeltaTable

    from spark_jobs.tables import table_path

    path = table_path(root, "gold_id_map")
    if not DeltaTable.is_deltatable(path):
        return None
    t = DeltaTable(path).to_pyarrow_dataset().to_table(columns=["id_type", "id_value", "person_id", "as_of", "valid_to"])
    return t.cast(pa.schema([f.with_type(pa.string()) if pa.types.is_string_view(f.type) else f for f in t.schema]))


def resolve(root: str, id_type: str | None = None, value: str | None = None, person_id: str | None = None,
            phone_region: str = "CN") -> Target:
    """The person to erase, from one identifier (raw forms accepted: normalised as the pipeline does) or a
    person id. Raises ErasureError when the identifier belongs to several people now: name the person."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from spark_jobs.config import ID_TYPES
    from spark_jobs.identity.stage import canonical_identifier

    target = Target()
    ids = _id_map(root)
    if person_id is None:
        if id_type not in ID_TYPES:
            raise ErasureError(f"unknown identifier type {id_type!r}: one of {', '.join(ID_TYPES)}")
        canonical = canonical_identifier(id_type, value or "", phone_region)
        if canonical is None:
            raise ErasureError(f"{value!r} is not a valid {id_type}")
        target.identifiers.setdefault(id_type, set()).add(canonical)
        if ids is None:
            return target
        rows = ids.filter(pc.and_(pc.equal(ids["id_type"], id_type), pc.equal(ids["id_value"], canonical))).select(
            ["person_id", "as_of", "valid_to"]).to_pylist()
        if not rows:
            return target  # never resolved (a dropped junk value, or identity has not run): its rows still go
        newest = max(r["as_of"] for r in rows)
        owners = sorted({r["person_id"] for r in rows if r["as_of"] == newest and r["valid_to"] is None}
                        or {r["person_id"] for r in rows if r["as_of"] == newest})
        if len(owners) > 1:
            raise ErasureError(f"{id_type} {value!r} belongs to {len(owners)} people as of {newest}: {owners}; "
                               f"erase one of them with --person")
        person_id = owners[0]
    target.person_ids.add(person_id)
    if ids is None:
        return target
    mine = ids.filter(pc.equal(ids["person_id"], person_id))
    pairs = {(t, v) for t, v in zip(mine["id_type"].to_pylist(), mine["id_value"].to_pylist(), strict=True)}
    if not pairs and not target.identifiers:
        raise ErasureError(f"person {person_id!r} is not in gold_id_map: nothing identifies them")
    pairs |= {(t, v) for t, vs in target.identifiers.items() for v in vs}
    # Every snapshot's person ids of those identifiers (a merge renumbers), and who else holds them now.
    keys = pc.binary_join_element_wise(ids["id_type"], ids["id_value"], ":")
    table = ids.filter(pc.is_in(keys, value_set=pa.array(sorted(f"{t}:{v}" for t, v in pairs))))
    by_key: dict[str, dict[str, set]] = {}
    newest = max(table["as_of"].to_pylist()) if table.num_rows else None
    for t, v, p, a in zip(*(table[c].to_pylist() for c in ("id_type", "id_value", "person_id", "as_of")), strict=True):
        entry = by_key.setdefault(f"{t}:{v}", {"all": set(), "now": set()})
        entry["all"].add(p)
        if a == newest:
            entry["now"].add(p)
    for t, v in sorted(pairs):
        entry = by_key.get(f"{t}:{v}", {"all": set(), "now": set()})
        others = sorted(entry["now"] - {person_id})
        if others:
            target.shared[f"{t}:{v}"] = others
            target.identifiers.get(t, set()).discard(v)
            continue
        target.identifiers.setdefault(t, set()).add(v)
        target.person_ids |= entry["all"]
    return target


# --- the tables --------------------------------------------------------------------------------------

def _scanned_columns(name: str, schema) -> list[str]:
    """String columns that may hold personal data: by the column's PII class where the table is declared,
    every string column otherwise (gold_profile_tags' tag columns, a table from a newer version)."""
    import pyarrow as pa

    strings = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    from spark_jobs.privacy.classes import column_class

    out = []
    for c in strings:
        try:
            if column_class(name, c) != "none":
                out.append(c)
        except Exception:  # noqa: BLE001 - an undeclared column is searched
            out.append(c)
    return out


def _predicate(columns: list[str], person_columns: list[str], regex: str, target: Target) -> str:
    from spark_jobs.tables import sql_literal

    parts = [f'"{c}" ~* {sql_literal(regex)}' for c in columns]
    if target.person_ids:
        ids = ", ".join(sql_literal(p) for p in sorted(target.person_ids))
        parts += [f'"{c}" IN ({ids})' for c in person_columns]
    return " OR ".join(parts)


def erase_table(root: str, name: str, target: Target, regex: str, redact: bool) -> dict | None:
    """Delete (or, `redact`, rewrite the matched text of) the rows of `name` that hold the person."""
    from deltalake import DeltaTable

    from spark_jobs.tables import sql_literal, table_path

    t = DeltaTable(table_path(root, name))
    schema = t.to_pyarrow_dataset().schema
    columns = _scanned_columns(name, schema)
    person_columns = [c for c in PERSON_COLUMNS if c in schema.names]
    if not columns and not (person_columns and target.person_ids):
        return None
    if redact:
        updated = 0
        for c in columns:
            for _ in range(3):  # a match consumes the boundary after it: adjacent forms need another pass
                m = t.update(updates={c: f"regexp_replace(\"{c}\", {sql_literal(regex)}, '\\1{REDACTED}\\2', 'gi')"},
                             predicate=f'"{c}" ~* {sql_literal(regex)}')
                if not m.get("num_updated_rows"):
                    break
                updated += m["num_updated_rows"]
        return {"table": name, "rows_redacted": updated, "version": t.version()} if updated else None
    m = t.delete(_predicate(columns, person_columns, regex, target))
    deleted = m.get("num_deleted_rows", 0)
    return {"table": name, "rows_deleted": deleted, "version": t.version()} if deleted else None


def _delta_tables(root: str) -> list[str]:
    from spark_jobs.maintenance import tables

    return tables(root)


def purge_history(root: str, name: str) -> dict:
    """Make old versions of `name` unreadable at once: vacuum with zero retention, then a checkpoint and
    the removal of every older commit and checkpoint (their add actions carry column statistics, which
    can hold the erased values). Time travel before this point is gone for the table."""
    from spark_jobs import maintenance

    vacuumed = maintenance.vacuum(root, name, retention_hours=0, force=True, min_retention_hours=0)
    pruned = maintenance.prune_log(root, name)
    return {"files_deleted": vacuumed["files_deleted"], "log_files_deleted": pruned["log_files_deleted"]}


# --- files ---------------------------------------------------------------------------------------------

def redact_files(folder: Path, regex: re.Pattern, skip: tuple[Path, ...] = ()) -> list[dict]:
    """Redact every match in the text files under `folder` (in place); an export's CSV/JSONL line that
    matches is dropped instead, as its manifest's member count is lowered."""
    out = []
    if not folder.exists():
        return out
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if any(path.is_relative_to(s) for s in skip) or path.suffix.lower() not in TEXT_SUFFIXES:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if not regex.search(text):
            continue
        out.append({"file": str(path), "matches": len(regex.findall(text))})
        while regex.search(text):  # a match consumes the boundary after it: adjacent forms need another pass
            text = regex.sub(lambda m: m.group(1) + REDACTED + m.group(2), text)
        path.write_text(text, encoding="utf-8")
    return out


def erase_exports(folder: str, regex: re.Pattern) -> list[dict]:
    """Drop the person's rows from every export file (CSV and JSON lines, line by line; Parquet, row by
    row) and lower the member count of the manifest beside it."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    root = Path(folder)
    out = []
    if "://" in folder or not root.exists():
        return out
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        removed = 0
        if path.suffix in (".csv", ".jsonl", ".tsv"):
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            kept = [ln for i, ln in enumerate(lines) if i == 0 and path.suffix != ".jsonl" or not regex.search(ln)]
            removed = len(lines) - len(kept)
            if removed:
                path.write_text("".join(kept), encoding="utf-8")
        elif path.suffix == ".parquet":
            t = pq.read_table(path)
            hit = pa.array([False] * t.num_rows)
            for c in t.column_names:
                if pa.types.is_string(t[c].type):
                    hit = pc.or_(hit, pc.fill_null(pc.match_substring_regex(t[c], regex.pattern, ignore_case=True), False))
            removed = pc.sum(hit).as_py() or 0
            if removed:
                pq.write_table(t.filter(pc.invert(hit)), path)
        if removed:
            out.append({"file": str(path), "rows_deleted": removed})
            manifest = path.parent / "_manifest.json"
            if manifest.exists():
                m = json.loads(manifest.read_text())
                if isinstance(m.get("members"), int):
                    m["members"] = max(0, m["members"] - removed)
                    manifest.write_text(json.dumps(m, indent=2))
    return out


# --- the request ----------------------------------------------------------------------------------------

def erase(cfg, id_type: str | None = None, value: str | None = None, person_id: str | None = None,
          purge: bool = False, store_url: str | None = None, request_id: str | None = None,
          extra_folders: tuple[Path, ...] = (), wait: float = 0.0) -> dict:
    """Erase one person (by an identifier or `person_id`) everywhere, under the lakehouse claim, record
    their suppressions and a run row (readers pin the erased versions), republish the online store, and
    with `purge` make old Delta versions unreadable. Returns the erasure report (also written to
    <runs>/<request>/erasure.json, which holds no identifier)."""
    from spark_jobs import runs
    from spark_jobs.privacy import suppression

    root = cfg.paths.lakehouse_uri()
    request_id = request_id or f"erase-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    started_at = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    runs.acquire(cfg, request_id, dt.date.today(), wait=wait)  # also clears staged leftovers of killed runs
    try:
        target = resolve(root, id_type, value, person_id, cfg.standardise.phone_region)
        combined = pattern(target)
        log.info("erasing %d identifier(s) and %d person id(s) (%s)", len(target.values()), len(target.person_ids),
                 request_id)
        touched = []
        for name in _delta_tables(root):
            r = erase_table(root, name, target, combined, redact=name.startswith("ops_"))
            if r:
                touched.append(r)
                log.info("  %s: %s", name, {k: v for k, v in r.items() if k.startswith("rows")})
        pyregex = re.compile(combined, re.IGNORECASE)
        exports = erase_exports(cfg.paths.exports_uri(), pyregex)
        suppressed = suppression.record(root, target, request_id)
        touched_names = {r["table"] for r in touched} | {suppression.TABLE}
        purged = {n: purge_history(root, n) for n in sorted(touched_names)} if purge else {}
        files = []
        for folder in (cfg.paths.runs(), _dq_folder(cfg), *extra_folders):
            files += redact_files(Path(folder), pyregex)
        # A complete run at the erased versions, before anything reads pinned versions again (the purged
        # ones are gone): readers of the last complete run, the online store's publish among them.
        snap = runs.last_complete(cfg)
        if snap is not None:
            runs.record_run(cfg, request_id, snap.batch_date, started_at, "complete", first_day=snap.batch_date,
                            note=f"erasure {request_id}: {sum(r.get('rows_deleted', 0) for r in touched)} rows deleted")
        store = _republish(cfg, store_url)
        files += redact_files(_serving_folder(root), pyregex, skip=(_serving_folder(root) / "online.sqlite",))
    finally:
        runs.release(cfg, request_id)
    report = {
        "request_id": request_id, "erased_at": started_at.isoformat(), "person_ids": len(target.person_ids),
        "identifiers": {t: len(v) for t, v in target.identifiers.items()},
        "shared": {k.split(":", 1)[0]: len(v) for k, v in target.shared.items()},
        "tables": touched, "exports": exports, "files_redacted": files, "suppressions": suppressed,
        "purged": purged, "online_store": store, "seconds": round(time.monotonic() - t0, 2),
    }
    out = cfg.paths.runs(request_id)
    out.mkdir(parents=True, exist_ok=True)
    (out / "erasure.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def _dq_folder(cfg) -> Path:
    from spark_jobs.config import PROJECT_ROOT

    docs = getattr(cfg.quality, "docs", None) if hasattr(cfg, "quality") else None
    if docs:
        return Path(docs)
    root = cfg.paths.lakehouse_uri()
    return (PROJECT_ROOT / "lakehouse" if "://" in root else Path(root)) / "_dq"


def _serving_folder(root: str) -> Path:
    from serving.store import serving_dir

    return serving_dir(root)


def _republish(cfg, store_url: str | None) -> dict | None:
    """Publish the erased gold tables over the online store (when it was ever published), then reclaim
    the store's free space so the deleted rows leave its file."""
    from serving.publish import publish_config
    from serving.store import default_store_url, open_store

    url = store_url or default_store_url(cfg.paths.lakehouse_uri())
    store = open_store(url)
    try:
        if store.current() is None:
            return None
    finally:
        store.close()
    meta = publish_config(cfg, url)
    store = open_store(url)
    try:
        store.reclaim()
    finally:
        store.close()
    return {"url": url.split("?")[0], "people": meta.get("people"), "as_of": meta.get("as_of")}


# --- the request queue (the cdp_privacy DAG) ------------------------------------------------------------

def queue_dir(cfg) -> Path:
    """Pending erasure requests: <lakehouse>/_privacy/requests (the project's lakehouse/ when the lakehouse
    is an object store). A request file names the identifier and is deleted once the erasure is done."""
    from spark_jobs.config import PROJECT_ROOT

    root = cfg.paths.lakehouse_uri()
    return (PROJECT_ROOT / "lakehouse" if "://" in root else Path(root)) / "_privacy" / "requests"


def enqueue(cfg, id_type: str | None = None, value: str | None = None, person_id: str | None = None,
            purge: bool = False) -> str:
    """Queue an erasure request (checked now: an unknown type or an invalid value is refused here, not
    at night); returns its id."""
    from spark_jobs.config import ID_TYPES
    from spark_jobs.identity.stage import canonical_identifier

    if person_id is None:
        if id_type not in ID_TYPES:
            raise ErasureError(f"unknown identifier type {id_type!r}: one of {', '.join(ID_TYPES)}")
        if canonical_identifier(id_type, value or "", cfg.standardise.phone_region) is None:
            raise ErasureError(f"{value!r} is not a valid {id_type}")
    request_id = f"erase-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    folder = queue_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    path = folder / f"{request_id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"request_id": request_id, "id_type": id_type, "value": value, "person_id": person_id,
                               "purge": purge, "requested_at": dt.datetime.now(dt.UTC).isoformat()}))
    tmp.chmod(0o600)
    tmp.rename(path)
    return request_id


def process_queue(cfg, store_url: str | None = None, wait: float = 0.0) -> list[dict]:
    """Carry out every queued request, oldest first; a request that fails stays queued (with its error
    beside it) and the others go on. Returns the reports; raises ErasureError at the end if any failed."""
    reports, failed = [], []
    for path in sorted(queue_dir(cfg).glob("*.json")):
        req = json.loads(path.read_text())
        try:
            reports.append(erase(cfg, req["id_type"], req["value"], req["person_id"], req["purge"], store_url,
                                 req["request_id"], wait=wait))
        except ErasureError as e:
            path.with_suffix(".error").write_text(str(e))
            failed.append(f"{req['request_id']}: {e}")
            continue
        path.unlink()
        path.with_suffix(".error").unlink(missing_ok=True)
    if failed:
        raise ErasureError(f"{len(failed)} erasure request(s) failed and stay queued: " + "; ".join(failed))
    return reports
