"""The online store: reads and writes published snapshots (people, identifier map, audience members,
recent events) in
SQLite (embedded default) or Redis; the only module that talks to either.

A snapshot is written under a new generation number that no reader looks at, then made current in one
atomic step (SQLite: one transaction updating the pointer row; Redis: one MULTI setting the pointer and
its metadata). Every read is one consistent read of the current generation (SQLite: one read transaction
under WAL's snapshot isolation; Redis: one Lua script, which Redis runs atomically), so a reader sees one
as-of date or the next, never a mix of two.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse


class StoreError(RuntimeError):
    """The online store cannot be opened or used (bad URL, server down); the message says what to fix."""


class NotPublishedError(StoreError):
    """Nothing has been published to the store yet: run `cdp publish` first."""


@dataclass(frozen=True)
class Snapshot:
    """One as-of date of the gold marts, shaped for look-ups."""

    as_of: str
    people: list[tuple[str, str]]  # (person_id, profile document as JSON)
    ids: list[tuple[str, str]]  # ("id_type:id_value", person_id), canonical values
    members: list[tuple[str, str, str]]  # (segment, person_id, entered_on)
    segments: list[str] = field(default_factory=list)  # every published segment, members or not
    events: list[tuple[str, str]] = field(default_factory=list)  # (person_id, recent events as a JSON array)
    sources: dict[str, int | None] = field(default_factory=dict)  # table -> Delta version read

    def meta(self, generation: int) -> dict:
        counts: dict[str, int] = dict.fromkeys(self.segments, 0)
        for seg, _, _ in self.members:
            counts[seg] = counts.get(seg, 0) + 1
        return {"generation": generation, "as_of": self.as_of, "people": len(self.people), "identifiers": len(self.ids),
                "segments": counts, "sources": self.sources,
                "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


@dataclass(frozen=True)
class Member:
    person_id: str
    entered_on: str


class OnlineStore(ABC):
    """Published snapshots, read by identifier key (`id_type:canonical value`) or by segment."""

    url: str

    @abstractmethod
    def publish(self, snapshot: Snapshot) -> dict:
        """Write `snapshot` as a new generation and make it current atomically; returns its metadata."""

    @abstractmethod
    def current(self) -> dict | None:
        """The metadata of the current snapshot (as_of, counts, generation), or None before the first publish."""

    @abstractmethod
    def people(self, keys: list[str]) -> tuple[dict, list[dict | None]]:
        """(metadata, the profile document of each identifier key or None), from one snapshot."""

    @abstractmethod
    def membership(self, segment: str, key: str) -> tuple[dict, str | None, str | None]:
        """(metadata, person_id or None, entered_on or None when not a member), from one snapshot."""

    @abstractmethod
    def members(self, segment: str, after: str | None, limit: int) -> tuple[dict, list[Member]]:
        """(metadata, up to `limit` members with person_id > `after`, in person_id order), from one snapshot."""

    @abstractmethod
    def events(self, key: str) -> tuple[dict, str | None, list[dict]]:
        """(metadata, person_id or None, their recent events newest first: [] when none), from one snapshot."""

    def close(self) -> None:  # noqa: B027 - optional
        pass

    def reclaim(self) -> None:  # noqa: B027 - optional
        """Return the space of deleted generations, so that their rows leave the store's files (erasure)."""


def open_store(url: str) -> OnlineStore:
    """A store from its URL: `sqlite:///abs/path.sqlite` (or a plain path) or `redis://host:port/db`."""
    parsed = urlparse(url)
    if parsed.scheme in ("redis", "rediss", "unix"):
        return RedisStore(url)
    if parsed.scheme == "sqlite":
        return SqliteStore(Path(parsed.path))
    if parsed.scheme in ("", "file"):
        return SqliteStore(Path(parsed.path or url))
    raise StoreError(f"unknown online store URL {url!r}: use sqlite:///path/online.sqlite or redis://host:port/0")


def serving_dir(lakehouse: str) -> Path:
    """Where the online API's files live: <lakehouse>/_serving (keys, access log, the embedded store), or
    the project's lakehouse/_serving when the lakehouse is an object store."""
    from spark_jobs.config import PROJECT_ROOT

    return (PROJECT_ROOT / "lakehouse" if "://" in lakehouse else Path(lakehouse)) / "_serving"


def default_store_url(lakehouse: str) -> str:
    """CDP_ONLINE_STORE when set, else the embedded store of the lakehouse (<lakehouse>/_serving/online.sqlite)."""
    return os.environ.get("CDP_ONLINE_STORE") or f"sqlite://{serving_dir(lakehouse) / 'online.sqlite'}"


def _need(meta: dict | None) -> dict:
    if meta is None:
        raise NotPublishedError("nothing is published to the online store yet: run `cdp publish` first")
    return meta


# --- SQLite -----------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS people (gen INTEGER, person_id TEXT, doc TEXT NOT NULL, PRIMARY KEY (gen, person_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ids (gen INTEGER, key TEXT, person_id TEXT NOT NULL, PRIMARY KEY (gen, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (gen INTEGER, segment TEXT, person_id TEXT, entered_on TEXT,
                                    PRIMARY KEY (gen, segment, person_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (gen INTEGER, person_id TEXT, events TEXT NOT NULL, PRIMARY KEY (gen, person_id)) WITHOUT ROWID;
"""
_TABLES = ("people", "ids", "members", "events")


class SqliteStore(OnlineStore):
    """A SQLite file in WAL mode: no server, many concurrent readers beside one publisher, and each read
    transaction sees one committed state. One connection per thread (the API serves from a thread pool)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.url = f"sqlite://{self.path}"
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = self._con()
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the online store {self.path}: {e}") from e

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            con.execute("PRAGMA busy_timeout=30000")
            self._local.con = con
            with self._lock:
                self._all.append(con)
        return con

    def _read(self, fn):
        con = self._con()
        con.execute("BEGIN")
        try:
            row = con.execute("SELECT v FROM meta WHERE k = 'current'").fetchone()
            meta = _need(json.loads(row[0]) if row else None)
            return meta, fn(con, meta["generation"])
        finally:
            con.execute("COMMIT")

    def current(self) -> dict | None:
        row = self._con().execute("SELECT v FROM meta WHERE k = 'current'").fetchone()
        return json.loads(row[0]) if row else None

    def publish(self, snapshot: Snapshot) -> dict:
        con = self._con()
        current = self.current()
        gen = (current["generation"] if current else 0) + 1
        with self._lock:
            con.execute("BEGIN IMMEDIATE")  # one publisher at a time; readers go on
            try:
                for t in _TABLES:  # a crashed publish's rows
                    con.execute(f"DELETE FROM {t} WHERE gen >= ?", (gen,))
                con.executemany("INSERT INTO people VALUES (?, ?, ?)", ((gen, p, d) for p, d in snapshot.people))
                con.executemany("INSERT INTO ids VALUES (?, ?, ?)", ((gen, k, p) for k, p in snapshot.ids))
                con.executemany("INSERT INTO members VALUES (?, ?, ?, ?)", ((gen, s, p, e) for s, p, e in snapshot.members))
                con.executemany("INSERT INTO events VALUES (?, ?, ?)", ((gen, p, e) for p, e in snapshot.events))
                meta = snapshot.meta(gen)
                con.execute("INSERT OR REPLACE INTO meta VALUES ('current', ?)", (json.dumps(meta),))
                con.execute("COMMIT")  # the swap: readers see the new generation from here on, all of it
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("BEGIN IMMEDIATE")
            for t in _TABLES:  # readers still inside the old generation keep their WAL snapshot
                con.execute(f"DELETE FROM {t} WHERE gen < ?", (gen,))
            con.execute("COMMIT")
        return meta

    def people(self, keys: list[str]) -> tuple[dict, list[dict | None]]:
        def fetch(con, gen):
            out = []
            for key in keys:
                row = con.execute("SELECT p.doc FROM ids i JOIN people p ON p.gen = i.gen AND p.person_id = i.person_id "
                                  "WHERE i.gen = ? AND i.key = ?", (gen, key)).fetchone()
                out.append(json.loads(row[0]) if row else None)
            return out

        return self._read(fetch)

    def membership(self, segment: str, key: str) -> tuple[dict, str | None, str | None]:
        def fetch(con, gen):
            row = con.execute("SELECT person_id FROM ids WHERE gen = ? AND key = ?", (gen, key)).fetchone()
            if row is None:
                return None, None
            hit = con.execute("SELECT entered_on FROM members WHERE gen = ? AND segment = ? AND person_id = ?",
                              (gen, segment, row[0])).fetchone()
            return row[0], (hit[0] if hit else None)

        meta, (person, entered) = self._read(fetch)
        return meta, person, entered

    def members(self, segment: str, after: str | None, limit: int) -> tuple[dict, list[Member]]:
        def fetch(con, gen):
            rows = con.execute("SELECT person_id, entered_on FROM members WHERE gen = ? AND segment = ? AND person_id > ? "
                               "ORDER BY person_id LIMIT ?", (gen, segment, after or "", limit)).fetchall()
            return [Member(p, e) for p, e in rows]

        return self._read(fetch)

    def events(self, key: str) -> tuple[dict, str | None, list[dict]]:
        def fetch(con, gen):
            row = con.execute("SELECT i.person_id, e.events FROM ids i LEFT JOIN events e ON e.gen = i.gen AND "
                              "e.person_id = i.person_id WHERE i.gen = ? AND i.key = ?", (gen, key)).fetchone()
            return (row[0], json.loads(row[1]) if row[1] else []) if row else (None, [])

        meta, (person, events) = self._read(fetch)
        return meta, person, events

    def reclaim(self) -> None:
        """VACUUM: rewrite the file without the free pages that still hold deleted rows, and truncate the
        WAL (a deleted generation's rows otherwise stay readable in both)."""
        con = self._con()
        with self._lock:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            con.execute("VACUUM")
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            for con in self._all:
                con.close()
            self._all.clear()
        self._local = threading.local()


# --- Redis ------------------------------------------------------------------------------------------

# Keys (prefix P, generation G): P:gen (current G), P:meta (its metadata), P:G:people (hash person_id ->
# doc), P:G:id (hash key -> person_id), P:G:seg:<segment> (hash person_id -> entered_on), P:G:segl:<segment>
# (sorted set of person_ids, all score 0: lexicographic paging), P:G:events (hash person_id -> JSON
# array of recent events). The scripts read P:gen and the generation's keys in one atomic step; they name keys built from P:gen, so they suit a single Redis
# server (or a replica), not Redis Cluster.
_LUA_PEOPLE = """
local p = ARGV[1]
local gen = redis.call('GET', p .. ':gen')
if not gen then return false end
local out = {redis.call('GET', p .. ':meta')}
for i = 2, #ARGV do
  local pid = redis.call('HGET', p .. ':' .. gen .. ':id', ARGV[i])
  if pid then out[i] = redis.call('HGET', p .. ':' .. gen .. ':people', pid) else out[i] = false end
end
return out
"""
# The person of identifier ARGV[3] and their field in the generation's hash ARGV[2] (seg:<segment>: the
# day they entered it; events: their recent events).
_LUA_PERSON_FIELD = """
local p = ARGV[1]
local gen = redis.call('GET', p .. ':gen')
if not gen then return false end
local meta = redis.call('GET', p .. ':meta')
local pid = redis.call('HGET', p .. ':' .. gen .. ':id', ARGV[3])
if not pid then return {meta, false, false} end
return {meta, pid, redis.call('HGET', p .. ':' .. gen .. ':' .. ARGV[2], pid)}
"""
_LUA_MEMBERS = """
local p = ARGV[1]
local gen = redis.call('GET', p .. ':gen')
if not gen then return false end
local out = {redis.call('GET', p .. ':meta')}
local ids = redis.call('ZRANGEBYLEX', p .. ':' .. gen .. ':segl:' .. ARGV[2], ARGV[3], '+', 'LIMIT', 0, tonumber(ARGV[4]))
for i, pid in ipairs(ids) do
  out[2 * i] = pid
  out[2 * i + 1] = redis.call('HGET', p .. ':' .. gen .. ':seg:' .. ARGV[2], pid)
end
return out
"""
_CHUNK = 5000


class RedisStore(OnlineStore):
    """Redis (redis-py, one connection pool): each read is one Lua script call, so one round trip."""

    def __init__(self, url: str, prefix: str = "cdp"):
        import redis

        self.url = url
        self.prefix = prefix
        self._errors = (redis.RedisError,)
        try:
            self._r = redis.Redis.from_url(url, decode_responses=True)
            self._r.ping()
        except redis.RedisError as e:
            raise StoreError(f"cannot reach the online store {url}: {e} (is redis-server running?)") from e
        self._people = self._r.register_script(_LUA_PEOPLE)
        self._person_field = self._r.register_script(_LUA_PERSON_FIELD)
        self._members = self._r.register_script(_LUA_MEMBERS)

    def _call(self, script, *args):
        try:
            out = script(args=[self.prefix, *args])
        except self._errors as e:
            raise StoreError(f"online store {self.url}: {e}") from e
        if out is None:
            _need(None)
        return json.loads(out[0]), out[1:]

    def current(self) -> dict | None:
        raw = self._r.get(f"{self.prefix}:meta")
        return json.loads(raw) if raw else None

    def publish(self, snapshot: Snapshot) -> dict:
        r, p = self._r, self.prefix
        gen = int(r.incr(f"{p}:nextgen"))
        g = f"{p}:{gen}"
        self._unlink(f"{g}:*")  # a crashed publish's keys
        pipe = r.pipeline(transaction=False)
        for rows, key in ((snapshot.people, f"{g}:people"), (snapshot.ids, f"{g}:id"), (snapshot.events, f"{g}:events")):
            for i in range(0, len(rows), _CHUNK):
                pipe.hset(key, mapping=dict(rows[i:i + _CHUNK]))
                pipe.execute()
        by_segment: dict[str, list[tuple[str, str]]] = {}
        for seg, pid, entered in snapshot.members:
            by_segment.setdefault(seg, []).append((pid, entered))
        for seg, rows in by_segment.items():
            for i in range(0, len(rows), _CHUNK):
                chunk = rows[i:i + _CHUNK]
                pipe.hset(f"{g}:seg:{seg}", mapping=dict(chunk))
                pipe.zadd(f"{g}:segl:{seg}", dict.fromkeys((pid for pid, _ in chunk), 0))
                pipe.execute()
        meta = snapshot.meta(gen)
        swap = r.pipeline(transaction=True)  # MULTI/EXEC: pointer and metadata change together
        swap.set(f"{p}:gen", gen)
        swap.set(f"{p}:meta", json.dumps(meta))
        swap.execute()
        # Scripts read pointer and data atomically, so nobody is left inside an older generation: drop
        # them all (the one just replaced, and any a crashed publish left).
        self._unlink(f"{p}:*", keep=str(gen))
        return meta

    def _unlink(self, pattern: str, keep: str | None = None) -> None:
        batch = []
        for key in self._r.scan_iter(match=pattern, count=1000):
            if keep is not None:
                part = key[len(self.prefix) + 1:].split(":", 1)[0]
                if not part.isdigit() or part == keep:
                    continue
            batch.append(key)
            if len(batch) >= 1000:
                self._r.unlink(*batch)
                batch = []
        if batch:
            self._r.unlink(*batch)

    def people(self, keys: list[str]) -> tuple[dict, list[dict | None]]:
        meta, docs = self._call(self._people, *keys)
        docs = list(docs) + [None] * (len(keys) - len(docs))
        return meta, [json.loads(d) if d else None for d in docs]

    def membership(self, segment: str, key: str) -> tuple[dict, str | None, str | None]:
        meta, (person, entered) = self._call(self._person_field, f"seg:{segment}", key)
        return meta, person or None, entered or None

    def members(self, segment: str, after: str | None, limit: int) -> tuple[dict, list[Member]]:
        meta, flat = self._call(self._members, segment, f"({after}" if after else "-", str(limit))
        return meta, [Member(flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2)]

    def events(self, key: str) -> tuple[dict, str | None, list[dict]]:
        meta, (person, events) = self._call(self._person_field, "events", key)
        return meta, person or None, json.loads(events) if events else []

    def close(self) -> None:
        self._r.close()

