"""Loads and checks conf/tags.yaml and conf/segments.yaml: every tag and segment is typed and every rule
checked (unknown tag, type mismatch, cycle) when config loads, never mid-run; reads nothing else."""

from __future__ import annotations

import graphlib
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlglot import exp

from spark_jobs import rules
from spark_jobs.config import ConfigError, read_yaml
from spark_jobs.contracts import CONTRACTS, EVENT_NAMES, PROFILE_ATTRIBUTES, PROFILE_DERIVED
from spark_jobs.privacy.audiences import AD_PLATFORMS, PLATFORMS
from spark_jobs.privacy.consent import PURPOSES

_NAME = r"^[a-z][a-z0-9_]{0,62}$"

# What statistical tags and segment behaviours read: per source, its columns and their types. Every
# source also has a local `date` (windows count back from the as-of date) and a time stamp `ts`.
SOURCE_COLUMNS: dict[str, dict[str, str]] = {
    "events": {"event_name": "string", "channel": "string", "platform": "string", "appid": "string"},
    "orders": {"order_id": "string", "channel": "string", "category": "string", "store_id": "string",
               "amount": "double"},
    "activity": {"action": "string", "channel": "string"},  # events and orders: action = event name or 'order'
}
_COUNTING = {"count", "count_distinct", "active_days", "days_since_last", "days_since_first"}
_NEEDS_COLUMN = {"sum", "avg", "min", "max", "count_distinct", "first", "last", "mode"}
PROFILE_COLUMNS: dict[str, str] = {**PROFILE_ATTRIBUTES, **PROFILE_DERIVED}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Tag(_Strict):
    name: str = Field(pattern=_NAME)
    description: str = ""

    def outputs(self) -> dict[str, str]:
        """Tag name -> value type of every tag this entry produces."""
        raise NotImplementedError


class AttributeTag(_Tag):
    """A profile column as a tag, optionally banded (`bins`) or mapped (`map`)."""

    kind: Literal["attribute"]
    column: str
    bins: tuple[float, ...] | None = None  # ascending edges: [18, 25] -> "<18", "18-24", "25+"
    map: dict[str, str] | None = None  # value -> label; unmapped values get `default`
    default: str | None = None

    @model_validator(mode="after")
    def _check(self) -> AttributeTag:
        if self.column not in PROFILE_COLUMNS:
            raise ValueError(f"unknown profile column {self.column!r}; columns: {sorted(PROFILE_COLUMNS)}")
        if self.bins is not None and self.map is not None:
            raise ValueError("use bins or map, not both")
        if self.bins is not None:
            if PROFILE_COLUMNS[self.column] not in ("long", "double"):
                raise ValueError(f"bins need a numeric column; {self.column} is {PROFILE_COLUMNS[self.column]}")
            if not self.bins or list(self.bins) != sorted(set(self.bins)):
                raise ValueError("bins must be strictly ascending")
        return self

    def outputs(self) -> dict[str, str]:
        t = PROFILE_COLUMNS[self.column]
        plain = t if t in rules.TYPES else "string"
        return {self.name: "string" if (self.bins is not None or self.map is not None) else plain}


class StatTag(_Tag):
    """An aggregate of a source's rows over a window of days ending on the as-of date (inclusive):
    window_days 7 on 2026-11-30 counts dates 2026-11-24 .. 2026-11-30. No window: all history."""

    kind: Literal["stat"]
    source: Literal["events", "orders", "activity"]
    agg: Literal["count", "sum", "avg", "min", "max", "count_distinct", "first", "last", "mode",
                 "active_days", "days_since_last", "days_since_first"]
    column: str | None = None
    window_days: int | None = Field(None, ge=1)
    where: dict[str, tuple[str, ...]] = {}  # column -> allowed values

    @model_validator(mode="after")
    def _check(self) -> StatTag:
        cols = SOURCE_COLUMNS[self.source]
        if self.agg in _NEEDS_COLUMN and self.column is None:
            raise ValueError(f"agg {self.agg} needs a column; {self.source} has {sorted(cols)}")
        if self.agg not in _NEEDS_COLUMN and self.column is not None:
            raise ValueError(f"agg {self.agg} takes no column")
        for c in ([self.column] if self.column else []) + list(self.where):
            if c not in cols:
                raise ValueError(f"unknown column {c!r} of source {self.source}; columns: {sorted(cols)}")
        if self.agg in ("sum", "avg") and cols[self.column] != "double":
            raise ValueError(f"agg {self.agg} needs a numeric column; {self.column} is {cols[self.column]}")
        return self

    def outputs(self) -> dict[str, str]:
        if self.agg in _COUNTING:
            return {self.name: "long"}
        if self.agg in ("sum", "avg"):
            return {self.name: "double"}
        return {self.name: SOURCE_COLUMNS[self.source][self.column]}


class RfmSegment(_Strict):
    name: str = Field(pattern=_NAME)
    when: str  # a rule over recency, frequency, monetary (scores 1..5)


class RfmTag(_Tag):
    """Recency, frequency and monetary quintile scores (1..5, 5 best) of buyers in the window, and the
    first RFM segment whose rule matches (rules read `recency`, `frequency`, `monetary`). Produces
    <name>_recency, <name>_frequency, <name>_monetary, <name>_segment; people without orders in the
    window get no scores and the segment `no_orders_label`."""

    kind: Literal["rfm"]
    window_days: int = Field(365, ge=1)
    segments: tuple[RfmSegment, ...]
    default: str = "others"
    no_orders_label: str = "no_orders"

    @field_validator("segments")
    @classmethod
    def _rules(cls, v: tuple[RfmSegment, ...]) -> tuple[RfmSegment, ...]:
        for seg in v:
            try:
                t = rules.infer(rules.parse(seg.when), {"recency": "long", "frequency": "long", "monetary": "long"})
            except rules.RuleError as e:
                raise ValueError(f"segment {seg.name}: {e}") from None
            if t != "boolean":
                raise ValueError(f"segment {seg.name}: `when` must be a condition, it gives {t}")
        return v

    def outputs(self) -> dict[str, str]:
        return {f"{self.name}_{p}": "long" for p in ("recency", "frequency", "monetary")} | {f"{self.name}_segment": "string"}


class LifecycleTag(_Tag):
    """new: first seen within new_days; returning: active within active_days after a gap of at least
    returning_gap_days with no activity (and active before it); active: last activity within
    active_days; at_risk: within churned_days; churned: otherwise. First match in that order."""

    kind: Literal["lifecycle"]
    new_days: int = Field(30, ge=1)
    active_days: int = Field(30, ge=1)
    churned_days: int = Field(90, ge=1)
    returning_gap_days: int = Field(60, ge=1)

    @model_validator(mode="after")
    def _order(self) -> LifecycleTag:
        if not self.active_days < self.churned_days:
            raise ValueError("active_days must be less than churned_days")
        return self

    def outputs(self) -> dict[str, str]:
        return {self.name: "string"}


class Case(_Strict):
    when: str
    then: str | int | float | bool


class RuleTag(_Tag):
    """`expr` (a condition or value over other tags) or `cases` (first `when` that holds gives its `then`,
    else `else`)."""

    kind: Literal["rule"]
    expr: str | None = None
    cases: tuple[Case, ...] | None = None
    else_: str | int | float | bool | None = Field(None, alias="else")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_form(self) -> RuleTag:
        if (self.expr is None) == (self.cases is None):
            raise ValueError("give either expr or cases")
        if self.expr is None and self.else_ is None and not self.cases:
            raise ValueError("cases is empty")
        return self

    def rule(self) -> rules.Rule:
        if self.expr is not None:
            return rules.parse(self.expr)
        parts = []
        for c in self.cases:
            rules.parse(c.when)  # a clear error for the branch itself
            parts.append(f"WHEN ({c.when}) THEN {_literal(c.then)}")
        default = f" ELSE {_literal(self.else_)}" if self.else_ is not None else ""
        return rules.parse(f"CASE {' '.join(parts)}{default} END")

    def outputs(self) -> dict[str, str]:
        return {self.name: "unknown"}  # inferred by TagsConfig once every other tag's type is known


def _literal(v) -> str:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int | float):
        return repr(v)
    return exp.Literal.string(str(v)).sql(dialect="spark")


class PredictedTag(_Tag):
    """A model's newest score (or decile) for the person on or before the as-of date, from gold_scores."""

    kind: Literal["predicted"]
    model: str
    value: Literal["score", "decile"] = "score"

    def outputs(self) -> dict[str, str]:
        return {self.name: "double" if self.value == "score" else "long"}


TagSpec = Annotated[AttributeTag | StatTag | RfmTag | LifecycleTag | RuleTag | PredictedTag, Field(discriminator="kind")]


class TagsConfig(_Strict):
    tags: tuple[TagSpec, ...] = ()
    types: dict[str, str] = {}  # every tag's value type, filled by check_tags

    rule_order: tuple[str, ...] = ()  # rule tags, each after the rules it reads; filled by check_tags


def check_tags(cfg: TagsConfig) -> TagsConfig:
    """Type every tag, rules included (in dependency order); raise ValueError naming the tag and problem."""
    types: dict[str, str] = {}
    owner: dict[str, str] = {}
    for t in cfg.tags:
        for out, typ in t.outputs().items():
            if out in types:
                raise ValueError(f"tag {out!r}: declared twice (by {owner[out]!r} and {t.name!r})")
            if out in CONTRACTS["gold_profile_tags"].column_names:
                raise ValueError(f"tag {out!r}: the name is reserved (a gold_profile_tags column)")
            types[out], owner[out] = typ, t.name
    rule_tags = {t.name: t for t in cfg.tags if isinstance(t, RuleTag)}
    graph = {}
    for name, t in rule_tags.items():
        try:
            graph[name] = {d for d in t.rule().names() if d in rule_tags}
        except rules.RuleError as e:
            raise ValueError(f"tag {name!r}: {e}") from None
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        cycle = e.args[1]
        raise ValueError(f"tag {cycle[0]!r}: rules form a cycle: {' -> '.join(cycle)}") from None
    for name in order:
        try:
            typ = rules.infer(rule_tags[name].rule(), {k: v for k, v in types.items() if v != "unknown"})
        except rules.RuleError as e:
            raise ValueError(f"tag {name!r}: {e}") from None
        if typ == "null":
            raise ValueError(f"tag {name!r}: the rule always gives NULL")
        types[name] = typ
    return cfg.model_copy(update={"types": types, "rule_order": tuple(order)})


# --- segments ------------------------------------------------------------------------------------------
_EVENT_NAMES = {n for names in EVENT_NAMES.values() for n in names}


def _days_arg(node: exp.Expression, fn: str) -> int:
    if not (isinstance(node, exp.Literal) and not node.is_string and node.this.isdigit() and int(node.this) >= 1):
        raise rules.RuleError(f"{fn}: days must be a whole number of at least 1, got `{node.sql()}`")
    return int(node.this)


def _check_event_count(args: list[exp.Expression]) -> None:
    if len(args) != 2:
        raise rules.RuleError("event_count takes (event_name, days)")
    name = args[0]
    if not (isinstance(name, exp.Literal) and name.is_string):
        raise rules.RuleError(f"event_count: the event name must be a quoted string, got `{name.sql()}`")
    if name.this not in _EVENT_NAMES:
        raise rules.RuleError(f"event_count: unknown event {name.this!r}; events: {sorted(_EVENT_NAMES)}")
    _days_arg(args[1], "event_count")


def _check_days_only(fn: str):
    def check(args: list[exp.Expression]) -> None:
        if len(args) != 1:
            raise rules.RuleError(f"{fn} takes (days)")
        _days_arg(args[0], fn)
    return check


# Behaviour a segment rule may ask about, counted over the last `days` days up to the as-of date.
BEHAVIOURS: dict[str, rules.Function] = {
    "event_count": rules.Function("long", _check_event_count),
    "order_count": rules.Function("long", _check_days_only("order_count")),
    "order_amount": rules.Function("double", _check_days_only("order_amount")),
}
EXPORT_IDENTIFIERS = ("phone", "email", "unionid", "openid", "device_id", "member_id", "login_id")


class ExportConfig(_Strict):
    # Internal files of plaintext identifiers (person_id and the identifiers, csv/parquet part files).
    formats: tuple[Literal["csv", "parquet"], ...] = ("csv", "parquet")
    identifiers: tuple[Literal[EXPORT_IDENTIFIERS], ...] = ("phone", "unionid", "device_id")
    # Named destinations (SegmentsConfig.destinations): one CSV each, in the destination's declared form.
    destinations: tuple[str, ...] = ()


class Destination(_Strict):
    """Where an audience goes and in what form: `platform` fixes the normalisation (PLATFORMS);
    `hash` one of the platform's (default its first); plaintext only with `plaintext: true`."""

    platform: Literal[tuple(PLATFORMS)]
    identifiers: tuple[Literal["phone", "email"], ...] = ("phone",)
    hash: Literal["sha256", "md5", "none"] | None = None
    plaintext: bool = False  # this destination may receive identifiers in clear (an internal system)
    country_code: str = Field("86", pattern=r"^[1-9][0-9]{0,2}$")  # national-format platforms: whose numbers
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> Destination:
        spec = PLATFORMS[self.platform]
        unsupported = [i for i in self.identifiers if i not in spec.identifiers()]
        if unsupported:
            raise ValueError(f"platform {self.platform} matches on {list(spec.identifiers())}, not {unsupported}")
        if not self.identifiers:
            raise ValueError("declare at least one identifier")
        algorithm = self.algorithm
        if algorithm not in spec.hashes:
            raise ValueError(f"platform {self.platform} takes hash {' or '.join(spec.hashes)}, not {algorithm}")
        if (algorithm == "none") != self.plaintext:
            raise ValueError("plaintext identifiers need `platform: plaintext` and `plaintext: true` together"
                             if algorithm == "none" else "`plaintext: true` is only for `platform: plaintext`")
        return self

    @property
    def algorithm(self) -> str:
        return self.hash or PLATFORMS[self.platform].hashes[0]


class SegmentSpec(_Strict):
    name: str = Field(pattern=_NAME)
    description: str = ""
    rule: str
    # analysis: no marketing; marketing_<channel>: every export keeps only people who opted in to <channel>.
    purpose: Literal[tuple(PURPOSES)] = "analysis"
    export: ExportConfig | None = None


class SegmentsConfig(_Strict):
    destinations: dict[str, Destination] = Field(default_factory=dict)
    segments: tuple[SegmentSpec, ...] = ()

    @model_validator(mode="after")
    def _destinations(self) -> SegmentsConfig:
        for name in self.destinations:
            if not re.fullmatch(_NAME, name):
                raise ValueError(f"destination name {name!r} must match {_NAME}")
        for s in self.segments:
            for d in s.export.destinations if s.export else ():
                if d not in self.destinations:
                    raise ValueError(f"segment {s.name!r} exports to unknown destination {d!r}; declared: "
                                     f"{sorted(self.destinations) or 'none (add a destinations: mapping)'}")
                if self.destinations[d].platform in AD_PLATFORMS and s.purpose != "marketing_ads":
                    raise ValueError(f"segment {s.name!r} exports to the ad platform {d!r} but its purpose is "
                                     f"{s.purpose}: declare `purpose: marketing_ads` (only people who consented "
                                     "to ads are exported)")
        return self

    @field_validator("segments")
    @classmethod
    def _unique(cls, v: tuple[SegmentSpec, ...]) -> tuple[SegmentSpec, ...]:
        names = [s.name for s in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"segment(s) {dup} declared twice")
        return v


def check_rule(text: str, tag_types: dict[str, str]) -> rules.Rule:
    """A segment rule (or a `cdp segment preview` rule): parsed and checked to be a condition over tags
    and behaviours."""
    rule = rules.parse(text)
    typ = rules.infer(rule, tag_types, BEHAVIOURS)
    if typ != "boolean":
        raise rules.RuleError(f"a segment rule must be a condition, {text!r} gives {typ}")
    return rule


# --- loading ---------------------------------------------------------------------------------------------
def _validation_message(e: ValidationError, data: dict, key: str) -> str:
    out = []
    for err in e.errors():
        loc = list(err["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] == key and isinstance(loc[1], int):
            items = data.get(key) or []
            name = items[loc[1]].get("name") if loc[1] < len(items) and isinstance(items[loc[1]], dict) else None
            where = f"{key[:-1]} {name!r}" if name else f"{key}[{loc[1]}]"
            loc = [p for p in loc[2:] if p not in {"attribute", "stat", "rfm", "lifecycle", "rule", "predicted"}]
        field = ".".join(str(p) for p in loc)
        msg = re.sub(r"^(Value|Assertion) error, ", "", err["msg"])
        out.append(f"{where}{': ' if where and field else ''}{field}: {msg}" if (where or field) else msg)
    return "; ".join(out)


def load_tags(path: Path) -> TagsConfig:
    """conf/tags.yaml, typed and checked; ConfigError names the file, the tag and the problem."""
    data = read_yaml(path)
    try:
        cfg = TagsConfig.model_validate({"tags": data.get("tags") or [], **{k: v for k, v in data.items() if k != "tags"}})
    except ValidationError as e:
        raise ConfigError(f"{path}: {_validation_message(e, data, 'tags')}") from None
    try:
        return check_tags(cfg)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None


def load_segments(path: Path, tags: TagsConfig) -> SegmentsConfig:
    """conf/segments.yaml, each rule checked against the tags; ConfigError names the file and segment."""
    data = read_yaml(path)
    try:
        cfg = SegmentsConfig.model_validate({"segments": data.get("segments") or [],
                                             **{k: v for k, v in data.items() if k != "segments"}})
    except ValidationError as e:
        raise ConfigError(f"{path}: {_validation_message(e, data, 'segments')}") from None
    for seg in cfg.segments:
        try:
            check_rule(seg.rule, tags.types)
        except rules.RuleError as e:
            raise ConfigError(f"{path}: segment {seg.name!r}: {e}") from None
    return cfg
