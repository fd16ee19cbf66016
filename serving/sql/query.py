"""Runs BI queries read-only: one SELECT per request, checked by DuckDB's own parser, executed by an
in-memory DuckDB that can reach nothing but the catalog's Arrow datasets (no files, no extensions,
settings locked). Reads the datasets the catalog hands it; writes nothing anywhere."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from serving.sql.catalog import CATALOG, SCHEMAS, Snapshot, TableView

BATCH_ROWS = 64 * 1024
_SEARCH_PATH = ",".join(f"{CATALOG}.{s}" for s in SCHEMAS)


class ReadOnlyError(PermissionError):
    """A statement that is not one SELECT: the endpoint is read-only; the message says what it accepts."""


class QueryError(ValueError):
    """DuckDB refused the query (syntax, unknown table or column, type error); the message is DuckDB's."""


_PARSER = threading.local()


def check_read_only(sql: str) -> None:
    """Accept exactly one SELECT (also WITH … SELECT, VALUES, FROM t, DESCRIBE/SHOW/SUMMARIZE, which DuckDB
    plans as SELECT); refuse DDL, DML, COPY, ATTACH, PRAGMA, SET, INSTALL/LOAD, CALL, EXPLAIN and
    transactions, and several statements in one request. DuckDB parses it, so what is checked is what
    would run."""
    if not sql or not sql.strip():
        raise QueryError("the query is empty: send one SELECT statement")
    parser = getattr(_PARSER, "con", None)
    if parser is None:
        parser = _PARSER.con = duckdb.connect(":memory:", config={"enable_external_access": False})
    try:
        statements = parser.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(str(e)) from None
    if len(statements) != 1:
        raise ReadOnlyError(f"the SQL endpoint runs one statement per request and got {len(statements)}: "
                            "send each SELECT separately")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise ReadOnlyError(f"the SQL endpoint is read-only: a {kind.name} statement is refused; send one SELECT "
                            "(or WITH … SELECT) over the listed tables")


@dataclass
class Result:
    """A query's schema and its batches, streamed from the cursor that runs it; the cursor is closed (and
    the timeout disarmed) at the end of the stream."""

    schema: pa.Schema
    reader: pa.RecordBatchReader
    cursor: duckdb.DuckDBPyConnection
    timer: threading.Timer

    def batches(self):
        try:
            yield from self.reader
        finally:
            self.close()

    def close(self) -> None:
        self.timer.cancel()
        try:
            self.cursor.close()
        except duckdb.Error:
            pass


class QueryEngine:
    """DuckDB databases over catalog snapshots: per set of views, one in-memory database whose catalog
    `cdp` holds a schema per layer with a view per table (so `cdp.gold.gold_profiles`, `gold.gold_profiles`
    and `gold_profiles` all resolve). Databases of an older snapshot are dropped when a newer one is used."""

    def __init__(self, threads: int = 2, memory_limit: str = "1GB", timeout_seconds: float = 300.0):
        self.threads = threads
        self.memory_limit = memory_limit
        self.timeout_seconds = timeout_seconds
        self._lock = threading.Lock()
        self._token = None
        self._databases: dict[tuple, duckdb.DuckDBPyConnection] = {}

    def _database(self, snapshot: Snapshot, views: list[TableView]) -> duckdb.DuckDBPyConnection:
        key = tuple((v.name, v.sql) for v in views)
        with self._lock:
            if snapshot.token != self._token:
                self._databases, self._token = {}, snapshot.token
            db = self._databases.get(key)
            if db is None:
                db = self._databases[key] = self._build(views)
            return db

    def _build(self, views: list[TableView]) -> duckdb.DuckDBPyConnection:
        db = duckdb.connect(":memory:", config={"threads": self.threads, "memory_limit": self.memory_limit})
        db.execute(f"ATTACH ':memory:' AS {CATALOG}")
        for schema in SCHEMAS:
            db.execute(f"CREATE SCHEMA {CATALOG}.{schema}")
        setup = db.cursor()
        for v in views:
            setup.register(v.source, v.dataset)
            setup.execute(f'CREATE VIEW {CATALOG}.{v.schema}."{v.name}" AS {v.sql}')
        setup.close()
        # No files, no network, no extensions, and a query cannot turn any of it back on.
        db.execute("SET enable_external_access = false")
        db.execute("SET autoinstall_known_extensions = false")
        db.execute("SET autoload_known_extensions = false")
        db.execute("SET lock_configuration = true")
        return db

    def _cursor(self, snapshot: Snapshot, views: list[TableView]) -> duckdb.DuckDBPyConnection:
        cursor = self._database(snapshot, views).cursor()
        for v in views:
            cursor.register(v.source, v.dataset)
        cursor.execute(f"SET search_path = '{_SEARCH_PATH}'")  # a session setting: allowed after the lock
        return cursor

    def run(self, sql: str, snapshot: Snapshot, views: list[TableView]) -> Result:
        """Check and plan `sql` over `views`, ready to stream; ReadOnlyError / QueryError say why it was
        refused. A query still running after `timeout_seconds` (planning and streaming) is interrupted."""
        check_read_only(sql)
        cursor = self._cursor(snapshot, views)
        timer = threading.Timer(self.timeout_seconds, cursor.interrupt)
        timer.daemon = True
        timer.start()
        try:
            reader = cursor.sql(sql).to_arrow_reader(BATCH_ROWS)
        except duckdb.Error as e:
            timer.cancel()
            cursor.close()
            if isinstance(e, duckdb.InterruptException):
                raise QueryError(f"the query ran longer than {self.timeout_seconds:.0f} s and was stopped") from None
            raise QueryError(str(e)) from None
        return Result(reader.schema, reader, cursor, timer)

    def schema(self, sql: str, snapshot: Snapshot, views: list[TableView]) -> pa.Schema:
        """The result schema of `sql` without running it over the data (a LIMIT 0 plan)."""
        check_read_only(sql)
        cursor = self._cursor(snapshot, views)
        try:
            return cursor.sql(sql).limit(0).to_arrow_table().schema
        except duckdb.Error as e:
            raise QueryError(str(e)) from None
        finally:
            cursor.close()
