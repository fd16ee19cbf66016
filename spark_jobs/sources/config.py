"""Loads conf/sources.yaml: every landing source, its format, reader options, field mapping and identity
semantics, checked at load (pydantic); reads the file, writes nothing."""

from __future__ import annotations

import codecs
import re
import zoneinfo
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spark_jobs.config import ID_TYPES, ConfigError, read_yaml
from spark_jobs.contracts import CHANNEL_FIELDS, RECORD_KEYS, Column
from spark_jobs.sources.presets import PRESETS

MODELS = tuple(CHANNEL_FIELDS)
# Named timestamp formats; anything else is a Spark datetime pattern.
NAMED_FORMATS = ("iso", "iso_local", "epoch_s", "epoch_ms")
_OFFSET_LETTERS = re.compile(r"[XxZO]")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
ENCODINGS = ("utf-8", "utf-8-sig", "gb18030", "gbk", "utf-16")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class NumberFormat(_Strict):
    """Text allowed around a decimal number: a thousands separator (checked in groups of three) and
    currency symbols. The decimal point is always `.`."""

    thousands: str | None = None
    symbols: tuple[str, ...] = ()

    @field_validator("thousands")
    @classmethod
    def _one_char(cls, v: str | None) -> str | None:
        if v is not None and (len(v) != 1 or v in ".-0123456789"):
            raise ValueError(f"thousands must be one character other than a digit, '.' or '-', got {v!r}")
        return v


class FieldMap(_Strict):
    """Where one model field's value comes from in a source's records."""

    from_: str | None = Field(None, alias="from")
    expr: str | None = None
    formats: tuple[str, ...] | None = None
    number: NumberFormat | None = None
    values: dict[str, str] | None = None
    other: Literal["quarantine", "keep"] = "quarantine"  # a value outside `values`
    object: str | None = None  # JSON object field: drop keys with this prefix

    @model_validator(mode="after")
    def _one_origin(self) -> FieldMap:
        if self.from_ is not None and self.expr is not None:
            raise ValueError("give either from or expr, not both")
        return self

    @field_validator("values", mode="before")
    @classmethod
    def _as_text(cls, v):
        # YAML reads unquoted map keys like 1 or true as numbers/booleans; the file's text is a string.
        return None if v is None else {str(k): str(x) for k, x in v.items()}


class CsvOptions(_Strict):
    delimiter: str = ","
    quote: str = '"'
    escape: str | None = None  # None: RFC-4180, a quote inside a quoted field is doubled
    header: bool = True
    columns: tuple[str, ...] | None = None  # the column names when there is no header row

    @model_validator(mode="after")
    def _columns_without_header(self) -> CsvOptions:
        for name, ch in (("delimiter", self.delimiter), ("quote", self.quote), ("escape", self.escape)):
            if ch is not None and len(ch) != 1:
                raise ValueError(f"{name} must be one character, got {ch!r}")
        if not self.header and not self.columns:
            raise ValueError("a CSV without a header row needs `columns`")
        if self.header and self.columns:
            raise ValueError("give `columns` only when header is false (the header row names them)")
        if self.columns and len(set(self.columns)) != len(self.columns):
            raise ValueError("columns repeat a name")
        return self


class IdentifierDecl(_Strict):
    type: str
    strength: Literal["verified", "binding", "contact"]

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ID_TYPES:
            raise ValueError(f"unknown identifier type {v!r}; known: {list(ID_TYPES)}")
        return v


class SourceConfig(_Strict):
    """One source: a kind of landing file (landing/<name>/<date>/) feeding one record model."""

    name: str
    model: str
    format: Literal["csv", "jsonl", "parquet"]
    encoding: str = "utf-8"
    csv: CsvOptions = CsvOptions()
    timezone: str | None = None
    window: Literal["daily", "history"] = "daily"
    preset: Literal["sensors", "segment"] | None = None
    fields: dict[str, FieldMap] = {}
    identifiers: dict[str, IdentifierDecl] = {}
    attributes: tuple[str, ...] = ()
    # The fields that name one record across batches (default: the model's, contracts.RECORD_KEYS).
    key: tuple[str, ...] | None = None

    @field_validator("fields", mode="before")
    @classmethod
    def _shorthand(cls, v):
        return {k: ({"from": m} if isinstance(m, str) else m) for k, m in (v or {}).items()}

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        v = v.lower().replace("_", "-")
        if v not in ENCODINGS:
            raise ValueError(f"unsupported encoding {v!r}; use one of {list(ENCODINGS)}")
        codecs.lookup(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                zoneinfo.ZoneInfo(v)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Asia/Shanghai)") from None
        return v

    @model_validator(mode="after")
    def _check(self) -> SourceConfig:
        if not _NAME.match(self.name):
            raise ValueError(f"source name {self.name!r} must be lower-case letters, digits and _ (it names a folder)")
        if self.model not in MODELS:
            raise ValueError(f"model {self.model!r} is not one of {list(MODELS)}")
        if self.preset and PRESETS[self.preset]["model"] != self.model:
            raise ValueError(f"preset {self.preset!r} feeds model {PRESETS[self.preset]['model']!r}, not {self.model!r}")
        if self.preset and self.format != "jsonl":
            raise ValueError(f"preset {self.preset!r} reads jsonl files")
        known = {c.name: c for c in CHANNEL_FIELDS[self.model]}
        for where, names in (("fields", self.fields), ("identifiers", self.identifiers), ("attributes", self.attributes),
                             ("key", self.key or ())):
            unknown = sorted(set(names) - set(known))
            if unknown:
                raise ValueError(f"{where}: {unknown} are not fields of model {self.model!r} (fields: {list(known)})")
        for name, m in self.mapping().items():
            _check_field(known[name], m)
        if self.format == "csv":
            for name, m in self.mapping().items():
                if m.object is not None:
                    raise ValueError(f"fields.{name}: object applies to JSON sources only")
        if self.format != "csv" and self.encoding == "utf-16":
            raise ValueError("utf-16 is read for csv sources only")
        optional = [k for k in self.record_key() if known[k].nullable]
        if optional:
            raise ValueError(f"key: {optional} may be empty in model {self.model!r}; a record key needs required fields "
                             f"(required: {[c.name for c in known.values() if not c.nullable]})")
        return self

    def record_key(self) -> tuple[str, ...]:
        """The fields that name one record across batches: the source's `key`, else its model's."""
        return self.key or RECORD_KEYS[self.model]

    def mapping(self) -> dict[str, FieldMap]:
        """Every model field's mapping: the source's own, over its preset's, over the field's own name."""
        preset = {k: FieldMap.model_validate(v) for k, v in (PRESETS[self.preset]["fields"] if self.preset else {}).items()}
        out = {}
        for c in CHANNEL_FIELDS[self.model]:
            base = preset.get(c.name)
            own = self.fields.get(c.name)
            if own is None:
                out[c.name] = base or FieldMap(from_=c.name)
            elif base is None or own.from_ is not None or own.expr is not None:
                out[c.name] = own if (own.from_ or own.expr) else own.model_copy(update={"from_": c.name})
            else:  # the source only refines the preset's mapping (formats, values ...)
                out[c.name] = base.model_copy(update={k: getattr(own, k) for k in own.model_fields_set})
        return out

    def identifier_fields(self) -> dict[str, IdentifierDecl]:
        """The fields that hold identifiers: the source's own declarations over its preset's."""
        preset = PRESETS[self.preset].get("identifiers", {}) if self.preset else {}
        return {**{k: IdentifierDecl.model_validate(v) for k, v in preset.items()}, **self.identifiers}

    def zone(self, default: str) -> str:
        return self.timezone or default


def _check_field(col: Column, m: FieldMap) -> None:
    where = f"fields.{col.name}"
    if m.formats is not None:
        if col.type not in ("timestamp", "date"):
            raise ValueError(f"{where}: formats apply to timestamps and dates; {col.name} is {col.type}")
        for f in m.formats:
            if f not in NAMED_FORMATS and not re.search(r"[yMdHhms]", f):
                raise ValueError(f"{where}: {f!r} is neither one of {list(NAMED_FORMATS)} nor a datetime pattern")
    if m.number is not None and not col.type.startswith(("decimal", "long", "int", "double")):
        raise ValueError(f"{where}: number applies to numeric fields; {col.name} is {col.type}")
    if m.values is not None and col.type != "string":
        raise ValueError(f"{where}: values applies to text fields; {col.name} is {col.type}")
    if m.expr is not None:
        from spark_jobs.sources.expressions import expression_columns

        expression_columns(m.expr, where)  # raises on syntax this project does not run
        from spark_jobs.regexes import expression_regex_errors

        errors = expression_regex_errors(m.expr)
        if errors:
            raise ValueError(f"{where}: " + "; ".join(errors))


def is_naive(fmt: str) -> bool:
    """Whether a timestamp format has no offset (its text is a wall clock in the source's zone)."""
    if fmt in NAMED_FORMATS:
        return fmt == "iso_local"
    return not _OFFSET_LETTERS.search(re.sub(r"'[^']*'", "", fmt))


class SourcesConfig(_Strict):
    sources: dict[str, SourceConfig]

    @field_validator("sources", mode="before")
    @classmethod
    def _named(cls, v):
        if not isinstance(v, dict) or not v:
            raise ValueError("needs at least one source (a mapping of name -> source)")
        out = {}
        for name, s in v.items():
            if not isinstance(s, dict):
                raise ValueError(f"{name}: a source is a mapping of keys")
            out[name] = {"model": name, **s, "name": name}
        return out

    def get(self, name: str) -> SourceConfig:
        try:
            return self.sources[name]
        except KeyError:
            raise ConfigError(f"unknown source {name!r}; conf/sources.yaml declares {sorted(self.sources)}") from None


def load_sources(path: Path) -> SourcesConfig:
    """conf/sources.yaml (or `path`) as a checked SourcesConfig; ConfigError naming the file, the source
    and the key otherwise."""
    data = read_yaml(path)
    unknown = sorted(set(data) - {"sources"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {unknown}; the file holds `sources:`")
    try:
        return SourcesConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'] if p not in ('function-after[_check(), SourceConfig]',))}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in e.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None
