"""The Arrow Flight SQL wire vocabulary the endpoint speaks: the protobuf commands of FlightSql.proto
(built here as descriptors, field numbers as in the Apache Arrow spec), their Any packing, and the
Arrow schemas of the catalog answers."""

from __future__ import annotations

import pyarrow as pa
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "arrow.flight.protocol.sql"
TYPE_URL_PREFIX = "type.googleapis.com/"

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _BYTES, _BOOL, _INT32, _UINT32 = _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_BOOL, _F.TYPE_INT32, _F.TYPE_UINT32
_OPT, _REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED

# message -> (field, number, type, label). Written as proto2 so that HasField tells an absent optional
# field (e.g. no catalog filter) from an empty one, as proto3 `optional` does; the wire format is the same.
_MESSAGES: dict[str, tuple[tuple[str, int, int, int], ...]] = {
    "CommandGetSqlInfo": (("info", 1, _UINT32, _REP),),
    "CommandGetXdbcTypeInfo": (("data_type", 1, _INT32, _OPT),),
    "CommandGetCatalogs": (),
    "CommandGetDbSchemas": (("catalog", 1, _STRING, _OPT), ("db_schema_filter_pattern", 2, _STRING, _OPT)),
    "CommandGetTables": (("catalog", 1, _STRING, _OPT), ("db_schema_filter_pattern", 2, _STRING, _OPT),
                         ("table_name_filter_pattern", 3, _STRING, _OPT), ("table_types", 4, _STRING, _REP),
                         ("include_schema", 5, _BOOL, _OPT)),
    "CommandGetTableTypes": (),
    "CommandGetPrimaryKeys": (("catalog", 1, _STRING, _OPT), ("db_schema", 2, _STRING, _OPT), ("table", 3, _STRING, _OPT)),
    "CommandGetExportedKeys": (("catalog", 1, _STRING, _OPT), ("db_schema", 2, _STRING, _OPT), ("table", 3, _STRING, _OPT)),
    "CommandGetImportedKeys": (("catalog", 1, _STRING, _OPT), ("db_schema", 2, _STRING, _OPT), ("table", 3, _STRING, _OPT)),
    "CommandGetCrossReference": (("pk_catalog", 1, _STRING, _OPT), ("pk_db_schema", 2, _STRING, _OPT),
                                 ("pk_table", 3, _STRING, _OPT), ("fk_catalog", 4, _STRING, _OPT),
                                 ("fk_db_schema", 5, _STRING, _OPT), ("fk_table", 6, _STRING, _OPT)),
    "CommandStatementQuery": (("query", 1, _STRING, _OPT), ("transaction_id", 2, _BYTES, _OPT)),
    "TicketStatementQuery": (("statement_handle", 1, _BYTES, _OPT),),
    "CommandPreparedStatementQuery": (("prepared_statement_handle", 1, _BYTES, _OPT),),
    "ActionCreatePreparedStatementRequest": (("query", 1, _STRING, _OPT), ("transaction_id", 2, _BYTES, _OPT)),
    "ActionCreatePreparedStatementResult": (("prepared_statement_handle", 1, _BYTES, _OPT),
                                            ("dataset_schema", 2, _BYTES, _OPT), ("parameter_schema", 3, _BYTES, _OPT)),
    "ActionClosePreparedStatementRequest": (("prepared_statement_handle", 1, _BYTES, _OPT),),
}

# Commands that would change data or open a transaction: recognised by name and refused (read-only).
WRITE_COMMANDS = frozenset({
    "CommandStatementUpdate", "CommandPreparedStatementUpdate", "CommandStatementIngest",
    "CommandStatementSubstraitPlan", "ActionCreatePreparedSubstraitPlanRequest",
    "ActionBeginTransactionRequest", "ActionBeginSavepointRequest", "ActionEndTransactionRequest",
    "ActionEndSavepointRequest",
})


def _build() -> dict[str, type]:
    file = descriptor_pb2.FileDescriptorProto(name="cdp_flight_sql.proto", package=PACKAGE, syntax="proto2")
    for name, fields in _MESSAGES.items():
        msg = file.message_type.add(name=name)
        for field, number, type_, label in fields:
            msg.field.add(name=field, number=number, type=type_, label=label)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}")) for name in _MESSAGES}


MESSAGES = _build()


class ProtocolError(ValueError):
    """A Flight request whose command is not a Flight SQL message this endpoint understands."""


def unpack(data: bytes):
    """(message name, decoded message or None for a known name without a descriptor here) of an Any."""
    wrapper = any_pb2.Any()
    try:
        wrapper.ParseFromString(data)
    except Exception as e:  # noqa: BLE001  (protobuf raises its own DecodeError)
        raise ProtocolError(f"the command is not a Flight SQL message ({e})") from e
    full = wrapper.type_url.rpartition("/")[2]
    package, _, name = full.rpartition(".")
    if package != PACKAGE:
        raise ProtocolError(f"the command {full or '(empty)'!r} is not a Flight SQL command ({PACKAGE}.*)")
    cls = MESSAGES.get(name)
    if cls is None:
        return name, None
    msg = cls()
    msg.ParseFromString(wrapper.value)
    return name, msg


def pack(name: str, **fields) -> bytes:
    """A Flight SQL message, Any-packed and serialised (for tickets and action results)."""
    msg = MESSAGES[name](**{k: v for k, v in fields.items() if v is not None})
    return any_pb2.Any(type_url=f"{TYPE_URL_PREFIX}{PACKAGE}.{name}", value=msg.SerializeToString()).SerializeToString()


def optional(msg, field: str) -> str | None:
    return getattr(msg, field) if msg.HasField(field) else None


# --- answers ------------------------------------------------------------------------------------------

CATALOGS_SCHEMA = pa.schema([pa.field("catalog_name", pa.utf8(), False)])
DB_SCHEMAS_SCHEMA = pa.schema([pa.field("catalog_name", pa.utf8()), pa.field("db_schema_name", pa.utf8(), False)])
TABLES_SCHEMA = pa.schema([pa.field("catalog_name", pa.utf8()), pa.field("db_schema_name", pa.utf8()),
                           pa.field("table_name", pa.utf8(), False), pa.field("table_type", pa.utf8(), False)])
TABLES_WITH_SCHEMA_SCHEMA = TABLES_SCHEMA.append(pa.field("table_schema", pa.binary(), False))
TABLE_TYPES_SCHEMA = pa.schema([pa.field("table_type", pa.utf8(), False)])
PRIMARY_KEYS_SCHEMA = pa.schema([pa.field("catalog_name", pa.utf8()), pa.field("db_schema_name", pa.utf8()),
                                 pa.field("table_name", pa.utf8(), False), pa.field("column_name", pa.utf8(), False),
                                 pa.field("key_name", pa.utf8()), pa.field("key_sequence", pa.int32(), False)])
FOREIGN_KEYS_SCHEMA = pa.schema(
    [pa.field(n, pa.utf8(), n in ("pk_table_name", "pk_column_name", "fk_table_name", "fk_column_name"))
     for n in ("pk_catalog_name", "pk_db_schema_name", "pk_table_name", "pk_column_name",
               "fk_catalog_name", "fk_db_schema_name", "fk_table_name", "fk_column_name")]
    + [pa.field("key_sequence", pa.int32(), False), pa.field("fk_key_name", pa.utf8()), pa.field("pk_key_name", pa.utf8()),
       pa.field("update_rule", pa.uint8(), False), pa.field("delete_rule", pa.uint8(), False)])
XDBC_TYPE_INFO_SCHEMA = pa.schema([
    pa.field("type_name", pa.utf8(), False), pa.field("data_type", pa.int32(), False), pa.field("column_size", pa.int32()),
    pa.field("literal_prefix", pa.utf8()), pa.field("literal_suffix", pa.utf8()),
    pa.field("create_params", pa.list_(pa.field("item", pa.utf8(), False))), pa.field("nullable", pa.int32(), False),
    pa.field("case_sensitive", pa.bool_(), False), pa.field("searchable", pa.int32(), False),
    pa.field("unsigned_attribute", pa.bool_()), pa.field("fixed_prec_scale", pa.bool_(), False),
    pa.field("auto_increment", pa.bool_()), pa.field("local_type_name", pa.utf8()), pa.field("minimum_scale", pa.int32()),
    pa.field("maximum_scale", pa.int32()), pa.field("sql_data_type", pa.int32(), False),
    pa.field("datetime_subcode", pa.int32()), pa.field("num_prec_radix", pa.int32()), pa.field("interval_precision", pa.int32())])

_SQL_INFO_VALUE = pa.dense_union([
    pa.field("string_value", pa.utf8()), pa.field("bool_value", pa.bool_()), pa.field("bigint_value", pa.int64()),
    pa.field("int32_bitmask", pa.int32()), pa.field("string_list", pa.list_(pa.utf8())),
    pa.field("int32_to_int32_list_map", pa.map_(pa.int32(), pa.list_(pa.int32())))])
SQL_INFO_SCHEMA = pa.schema([pa.field("info_name", pa.uint32(), False), pa.field("value", _SQL_INFO_VALUE, False)])

# SqlInfo ids of FlightSql.proto and what this server answers for them.
SQL_INFO: dict[int, str | bool | int] = {
    0: "cdp",          # FLIGHT_SQL_SERVER_NAME
    2: pa.__version__,  # FLIGHT_SQL_SERVER_ARROW_VERSION
    3: True,           # FLIGHT_SQL_SERVER_READ_ONLY
    4: True,           # FLIGHT_SQL_SERVER_SQL
    5: False,          # FLIGHT_SQL_SERVER_SUBSTRAIT
    8: 0,              # FLIGHT_SQL_SERVER_TRANSACTION: SQL_SUPPORTED_TRANSACTION_NONE
    9: False,          # FLIGHT_SQL_SERVER_CANCEL
    500: False,        # SQL_DDL_CATALOG
    501: False,        # SQL_DDL_SCHEMA
    502: False,        # SQL_DDL_TABLE
    503: 1,            # SQL_IDENTIFIER_CASE: case-insensitive (DuckDB)
    504: '"',          # SQL_IDENTIFIER_QUOTE_CHAR
    505: 1,            # SQL_QUOTED_IDENTIFIER_CASE: case-insensitive
}
_INT32_INFO = {8, 503, 505}  # enums travel as int32_bitmask


def sql_info_table(ids: list[int], server_version: str) -> pa.Table:
    """The GetSqlInfo answer for `ids` (all known ones when empty); unknown ids are left out, as the spec allows."""
    known = {**SQL_INFO, 1: server_version}
    wanted = [i for i in (ids or sorted(known)) if i in known]
    codes, offsets, children = [], [], {0: [], 1: [], 2: [], 3: []}
    for i in wanted:
        v = known[i]
        code = 1 if isinstance(v, bool) else 3 if i in _INT32_INFO else 2 if isinstance(v, int) else 0
        codes.append(code)
        offsets.append(len(children[code]))
        children[code].append(v)
    arrays = [pa.array(children[0], pa.utf8()), pa.array(children[1], pa.bool_()), pa.array(children[2], pa.int64()),
              pa.array(children[3], pa.int32()), pa.array([], pa.list_(pa.utf8())),
              pa.array([], pa.map_(pa.int32(), pa.list_(pa.int32())))]
    value = pa.UnionArray.from_dense(pa.array(codes, pa.int8()), pa.array(offsets, pa.int32()), arrays,
                                     [f.name for f in _SQL_INFO_VALUE], list(range(6)))
    return pa.Table.from_arrays([pa.array(wanted, pa.uint32()), value], schema=SQL_INFO_SCHEMA)
