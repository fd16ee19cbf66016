"""`cdp sql serve`: an Arrow Flight SQL server (gRPC) over the lakehouse's gold and ops Delta tables. Every
call needs an API key with the sql:read scope (serving/access.py); the catalog calls are answered from the
lakehouse's table list; queries run read-only (serving/sql/query.py). Reads the tables and the key file;
writes nothing."""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.flight as fl

from serving.access import ApiKey, KeyRing
from serving.sql import protocol
from serving.sql.catalog import CATALOG, SCHEMAS, SQL_SCOPE, Catalog, views_for
from serving.sql.query import QueryEngine, QueryError, ReadOnlyError
from spark_jobs.contracts import CONTRACTS

log = logging.getLogger(__name__)
VERSION = "1"
TABLE_TYPE = "TABLE"
RESULT_TTL_SECONDS = 300.0  # a result whose ticket is never fetched is dropped after this
PREPARED_TTL_SECONDS = 3600.0
HOW_TO_AUTHENTICATE = ("send the API key as `authorization: Bearer <key>` (ADBC: adbc.flight.sql.authorization_header; "
                       "Arrow Flight SQL JDBC: token=<key>) or as the password of user/password (basic) authentication; "
                       "create one with `cdp api-key add NAME --scope sql:read`")


class SqlEndpointError(RuntimeError):
    """The endpoint cannot start (port taken, lakehouse unreadable); the message says what to fix."""


# --- authentication -------------------------------------------------------------------------------------

class _Principal(fl.ServerMiddleware):
    def __init__(self, key: ApiKey, token: str | None):
        self.key = key
        self._token = token

    def sending_headers(self):
        # A basic-auth handshake is answered with the key as the bearer token the client sends from then on.
        return {"authorization": f"Bearer {self._token}"} if self._token else {}


class _KeyCheck(fl.ServerMiddlewareFactory):
    """Checks the API key of every call, before any handler runs."""

    def __init__(self, keys: KeyRing):
        self.keys = keys

    def start_call(self, info, headers):
        token, basic = _presented_key(headers)
        if not token:
            raise fl.FlightUnauthenticatedError(f"no API key: {HOW_TO_AUTHENTICATE}")
        key = self.keys.check(token)
        if key is None:
            raise fl.FlightUnauthenticatedError(f"unknown API key: {HOW_TO_AUTHENTICATE}")
        if SQL_SCOPE not in key.scopes:
            raise fl.FlightUnauthorizedError(f"API key {key.name!r} lacks the {SQL_SCOPE} scope the SQL endpoint needs; "
                                             f"add it with `cdp api-key add {key.name} --scope {SQL_SCOPE} ...`")
        return _Principal(key, token if basic else None)


def _presented_key(headers: dict) -> tuple[str | None, bool]:
    """(key, whether it came by basic auth) from the call's headers."""
    def first(name):
        values = headers.get(name) or []
        return values[0] if values else None

    auth = first("authorization") or ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    if scheme.lower() == "basic" and value.strip():
        try:
            raw = value.strip()
            _, _, password = base64.b64decode(raw + "=" * (-len(raw) % 4)).decode().partition(":")  # Go's client pads not
        except (ValueError, UnicodeDecodeError):
            return None, True
        return password or None, True
    return first("x-api-key"), False


class _AcceptHandshake(fl.ServerAuthHandler):
    """Completes the Handshake RPC: the key was checked by _KeyCheck already (its middleware answers the
    bearer token). Flight's own token check is left open for the same reason."""

    def authenticate(self, outgoing, incoming):
        pass

    def is_valid(self, token):
        return b""


# --- the server -----------------------------------------------------------------------------------------

@dataclass
class _Pending:
    owner: str
    result: object
    expires: float


@dataclass
class _Prepared:
    owner: str
    query: str
    expires: float


def _like(pattern: str | None):
    """A predicate for SQL LIKE `pattern` (% any run, _ one character; None or empty: everything)."""
    if not pattern:
        return lambda value: True
    rx = re.compile("".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern), re.S)
    return lambda value: value is not None and rx.fullmatch(value) is not None


class SqlServer(fl.FlightServerBase):
    """Arrow Flight SQL over `catalog`, with `keys` checked on every call."""

    def __init__(self, catalog: Catalog, keys: KeyRing, host: str = "127.0.0.1", port: int = 0,
                 engine: QueryEngine | None = None):
        super().__init__(f"grpc://{host}:{port}", auth_handler=_AcceptHandshake(), middleware={"key": _KeyCheck(keys)})
        self.catalog = catalog
        self.engine = engine or QueryEngine()
        self._lock = threading.Lock()
        self._pending: dict[bytes, _Pending] = {}
        self._prepared: dict[bytes, _Prepared] = {}

    # which key is calling, and what it sees
    @staticmethod
    def _key(context) -> ApiKey:
        return context.get_middleware("key").key

    def _views(self, key: ApiKey):
        snapshot = self.catalog.snapshot()
        return snapshot, views_for(key, snapshot)

    # Flight RPCs
    def get_flight_info(self, context, descriptor):
        key = self._key(context)
        name, msg = self._command(descriptor)
        if name in ("CommandStatementQuery", "CommandPreparedStatementQuery"):
            sql = msg.query if name == "CommandStatementQuery" else self._prepared_query(key, msg.prepared_statement_handle)
            result = self._guard(lambda: self._run(key, sql))
            handle = uuid.uuid4().bytes
            self._remember(self._pending, handle, _Pending(key.name, result, time.monotonic() + RESULT_TTL_SECONDS))
            ticket = protocol.pack("TicketStatementQuery", statement_handle=handle)
            return fl.FlightInfo(result.schema, descriptor, [fl.FlightEndpoint(ticket, [])], -1, -1)
        schema = self._metadata_schema(name, msg)
        return fl.FlightInfo(schema, descriptor, [fl.FlightEndpoint(descriptor.command, [])], -1, -1)

    def get_schema(self, context, descriptor):
        key = self._key(context)
        name, msg = self._command(descriptor)
        if name in ("CommandStatementQuery", "CommandPreparedStatementQuery"):
            sql = msg.query if name == "CommandStatementQuery" else self._prepared_query(key, msg.prepared_statement_handle)
            snapshot, views = self._views(key)
            return fl.SchemaResult(self._guard(lambda: self.engine.schema(sql, snapshot, views)))
        return fl.SchemaResult(self._metadata_schema(name, msg))

    def do_get(self, context, ticket):
        key = self._key(context)
        name, msg = self._decode(ticket.ticket)
        if name == "TicketStatementQuery":
            with self._lock:
                pending = self._pending.pop(msg.statement_handle, None)
            if pending is None or pending.owner != key.name:
                raise pa.ArrowInvalid("unknown or expired statement ticket: run the query again")
            return fl.GeneratorStream(pending.result.schema, pending.result.batches())
        return fl.RecordBatchStream(self._metadata(key, name, msg))

    def do_action(self, context, action):
        key = self._key(context)
        kind = action.type
        if kind == "CreatePreparedStatement":
            _, msg = self._decode(action.body.to_pybytes(), "ActionCreatePreparedStatementRequest")
            snapshot, views = self._views(key)
            schema = self._guard(lambda: self.engine.schema(msg.query, snapshot, views))
            handle = uuid.uuid4().bytes
            self._remember(self._prepared, handle, _Prepared(key.name, msg.query, time.monotonic() + PREPARED_TTL_SECONDS))
            log.info("key %s prepared: %s", key.name, msg.query)
            return [fl.Result(protocol.pack("ActionCreatePreparedStatementResult", prepared_statement_handle=handle,
                                            dataset_schema=schema.serialize().to_pybytes(),
                                            parameter_schema=pa.schema([]).serialize().to_pybytes()))]
        if kind == "ClosePreparedStatement":
            _, msg = self._decode(action.body.to_pybytes(), "ActionClosePreparedStatementRequest")
            with self._lock:
                prepared = self._prepared.get(msg.prepared_statement_handle)
                if prepared is not None and prepared.owner == key.name:
                    del self._prepared[msg.prepared_statement_handle]
            return []
        if kind == "CloseSession":
            return []
        if kind in ("BeginTransaction", "EndTransaction", "BeginSavepoint", "EndSavepoint", "CreatePreparedSubstraitPlan"):
            raise fl.FlightUnauthorizedError(f"the SQL endpoint is read-only: {kind} is refused; send one SELECT")
        raise NotImplementedError(f"action {kind!r} is not supported by the CDP SQL endpoint "
                                  "(supported: CreatePreparedStatement, ClosePreparedStatement)")

    def list_actions(self, context):
        return [("CreatePreparedStatement", "prepare one SELECT"), ("ClosePreparedStatement", "drop a prepared SELECT")]

    def do_put(self, context, descriptor, reader, writer):
        self._key(context)
        raise fl.FlightUnauthorizedError("the SQL endpoint is read-only: uploads (DoPut: updates, ingestion, "
                                         "bound parameters) are refused; send one SELECT with literal values")

    def do_exchange(self, context, descriptor, reader, writer):
        raise NotImplementedError("DoExchange is not supported by the CDP SQL endpoint")

    def list_flights(self, context, criteria):
        return iter(())

    # helpers
    def _command(self, descriptor):
        if descriptor.descriptor_type != fl.DescriptorType.CMD:
            raise pa.ArrowInvalid("the CDP SQL endpoint takes Flight SQL commands (a CMD descriptor), not paths")
        name, msg = self._decode(descriptor.command)
        if name in protocol.WRITE_COMMANDS:
            raise fl.FlightUnauthorizedError(f"the SQL endpoint is read-only: {name} is refused; send one SELECT")
        if msg is None:
            raise NotImplementedError(f"{name} is not supported by the CDP SQL endpoint")
        return name, msg

    @staticmethod
    def _decode(data: bytes, expect: str | None = None):
        try:
            name, msg = protocol.unpack(data)
        except protocol.ProtocolError as e:
            raise pa.ArrowInvalid(str(e)) from e
        if expect is not None and name != expect:
            raise pa.ArrowInvalid(f"expected {expect}, got {name}")
        return name, msg

    def _remember(self, store: dict, handle: bytes, item) -> None:
        now = time.monotonic()
        with self._lock:
            for h in [h for h, p in store.items() if p.expires < now]:
                old = store.pop(h)
                if isinstance(old, _Pending):
                    old.result.close()
            store[handle] = item

    def _prepared_query(self, key: ApiKey, handle: bytes) -> str:
        with self._lock:
            prepared = self._prepared.get(handle)
        if prepared is None or prepared.owner != key.name:
            raise pa.ArrowInvalid("unknown or closed prepared statement: prepare it again")
        return prepared.query

    def _run(self, key: ApiKey, sql: str):
        snapshot, views = self._views(key)
        log.info("key %s runs: %s", key.name, sql)
        return self.engine.run(sql, snapshot, views)

    @staticmethod
    def _guard(call):
        """Map the engine's refusals to Flight statuses: read-only -> PERMISSION_DENIED, a bad query ->
        INVALID_ARGUMENT (DuckDB's message), anything else -> INTERNAL with a pointer to the log."""
        try:
            return call()
        except ReadOnlyError as e:
            raise fl.FlightUnauthorizedError(str(e)) from None
        except QueryError as e:
            raise pa.ArrowInvalid(str(e)) from None
        except Exception as e:
            log.exception("SQL endpoint failure")
            raise fl.FlightInternalError(f"internal error of the SQL endpoint ({type(e).__name__}); see the server log") from e

    # catalog answers
    @staticmethod
    def _metadata_schema(name: str, msg) -> pa.Schema:
        schemas = {"CommandGetCatalogs": protocol.CATALOGS_SCHEMA, "CommandGetDbSchemas": protocol.DB_SCHEMAS_SCHEMA,
                   "CommandGetTableTypes": protocol.TABLE_TYPES_SCHEMA, "CommandGetSqlInfo": protocol.SQL_INFO_SCHEMA,
                   "CommandGetPrimaryKeys": protocol.PRIMARY_KEYS_SCHEMA,
                   "CommandGetExportedKeys": protocol.FOREIGN_KEYS_SCHEMA,
                   "CommandGetImportedKeys": protocol.FOREIGN_KEYS_SCHEMA,
                   "CommandGetCrossReference": protocol.FOREIGN_KEYS_SCHEMA,
                   "CommandGetXdbcTypeInfo": protocol.XDBC_TYPE_INFO_SCHEMA}
        if name == "CommandGetTables":
            return protocol.TABLES_WITH_SCHEMA_SCHEMA if msg.include_schema else protocol.TABLES_SCHEMA
        if name not in schemas:
            raise NotImplementedError(f"{name} is not supported by the CDP SQL endpoint")
        return schemas[name]

    def _metadata(self, key: ApiKey, name: str, msg) -> pa.Table:
        schema = self._metadata_schema(name, msg)
        if name == "CommandGetSqlInfo":
            return protocol.sql_info_table(list(msg.info), VERSION)
        if name == "CommandGetCatalogs":
            return pa.table({"catalog_name": [CATALOG]}, schema=schema)
        if name == "CommandGetTableTypes":
            return pa.table({"table_type": [TABLE_TYPE]}, schema=schema)
        catalog_ok = lambda c: c is None or c == CATALOG  # noqa: E731  (an empty catalog means "none": ours has one)
        if name == "CommandGetDbSchemas":
            ok = _like(protocol.optional(msg, "db_schema_filter_pattern"))
            rows = [s for s in SCHEMAS if ok(s)] if catalog_ok(protocol.optional(msg, "catalog")) else []
            return pa.table({"catalog_name": [CATALOG] * len(rows), "db_schema_name": rows}, schema=schema)
        if name == "CommandGetTables":
            return self._tables(key, msg, schema, catalog_ok)
        if name == "CommandGetPrimaryKeys":
            rows = []
            visible = {v.name: v for v in self._views(key)[1]}
            view = visible.get(msg.table)
            if view is not None and catalog_ok(protocol.optional(msg, "catalog")) \
                    and protocol.optional(msg, "db_schema") in (None, view.schema):
                rows = [(CATALOG, view.schema, view.name, col, None, i + 1) for i, col in enumerate(CONTRACTS[view.name].keys)]
            return pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in rows], schema=schema)
        return schema.empty_table()  # no foreign keys; no XDBC type list (clients fall back to the result types)

    def _tables(self, key: ApiKey, msg, schema: pa.Schema, catalog_ok) -> pa.Table:
        schema_ok = _like(protocol.optional(msg, "db_schema_filter_pattern"))
        table_ok = _like(protocol.optional(msg, "table_name_filter_pattern"))
        types = set(msg.table_types)
        rows = []
        if catalog_ok(protocol.optional(msg, "catalog")) and (not types or TABLE_TYPE in types):
            for v in self._views(key)[1]:
                if schema_ok(v.schema) and table_ok(v.name):
                    row = {"catalog_name": CATALOG, "db_schema_name": v.schema, "table_name": v.name, "table_type": TABLE_TYPE}
                    if msg.include_schema:
                        row["table_schema"] = v.arrow_schema.serialize().to_pybytes()
                    rows.append(row)
        return pa.Table.from_pylist(rows, schema=schema)


def serve(cfg, host: str = "127.0.0.1", port: int = 32010, refresh_seconds: float = 10.0) -> None:
    """Run the endpoint over `cfg`'s lakehouse until interrupted, with the keys of `cdp api-key add`."""
    from serving.store import serving_dir
    from spark_jobs import runs

    root = cfg.paths.lakehouse_uri()
    catalog = Catalog(root, pinned=lambda: runs.pinned_versions(cfg), refresh_seconds=refresh_seconds)
    try:
        catalog.snapshot()  # fail at start, not at the first query, on an unreadable lakehouse
    except OSError as e:
        raise SqlEndpointError(f"cannot read the lakehouse {root} ({e}): check CDP_LAKEHOUSE / conf paths") from e
    try:
        server = SqlServer(catalog, KeyRing(serving_dir(root) / "api_keys.json"), host, port)
    except pa.ArrowException as e:
        raise SqlEndpointError(f"cannot listen on {host}:{port} ({e}): is the port taken? choose another with --port") from e
    print(f"CDP SQL endpoint (Arrow Flight SQL) on grpc://{host}:{server.port} over {root}", flush=True)
    server.serve()
