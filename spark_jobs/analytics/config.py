"""Loads and checks conf/analytics.yaml: every metric, funnel, retention and transition typed and checked
against the events, the tags and the segments when config loads, never mid-run; reads nothing else."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from spark_jobs.config import ConfigError, read_yaml
from spark_jobs.contracts import EVENT_NAMES

_NAME = r"^[a-z][a-z0-9_]{0,62}$"
EVENTS = tuple(sorted({n for names in EVENT_NAMES.values() for n in names}))
ORDER = "order"  # the action of an order in the activity source (return_actions may name it)
# The columns of each source a metric reads (and may group by); values are their types.
SOURCE_COLUMNS: dict[str, dict[str, str]] = {
    "events": {"event_name": "string", "channel": "string", "platform": "string", "appid": "string"},
    "orders": {"channel": "string", "category": "string", "store_id": "string", "amount": "double"},
    "activity": {"action": "string", "channel": "string", "platform": "string"},
}
FUNNEL_DIMENSIONS = ("channel", "platform", "appid")  # columns of the entry event
TOTAL = "total"  # the dimension (and value) of a metric's overall row


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Analysis(_Strict):
    name: str = Field(pattern=_NAME)
    description: str = ""


class _Counted(_Analysis):
    source: Literal["events", "orders", "activity"]
    where: dict[str, tuple[str, ...]] = {}  # column -> allowed values
    dimensions: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _columns(self):
        cols = SOURCE_COLUMNS[self.source]
        for c in self.where:
            if c not in cols:
                raise ValueError(f"where: unknown column {c!r} of source {self.source}; columns: {sorted(cols)}")
        return self


class PeopleMetric(_Counted):
    """Distinct people with a row of the source on the day (new_only: people first seen that day)."""

    kind: Literal["people"]
    new_only: bool = False


class CountMetric(_Counted):
    """Rows of the source on the day."""

    kind: Literal["count"]


class SumMetric(_Counted):
    """The sum of a numeric column of the source's rows on the day."""

    kind: Literal["sum"]
    column: str

    @model_validator(mode="after")
    def _numeric(self) -> SumMetric:
        typ = SOURCE_COLUMNS[self.source].get(self.column)
        if typ is None:
            raise ValueError(f"column: unknown column {self.column!r} of source {self.source}; "
                             f"columns: {sorted(SOURCE_COLUMNS[self.source])}")
        if typ != "double":
            raise ValueError(f"column: sum needs a numeric column; {self.column} is {typ}")
        return self


class RatioMetric(_Analysis):
    """numerator / denominator (two other metrics), per dimension value both have."""

    kind: Literal["ratio"]
    numerator: str
    denominator: str
    dimensions: tuple[str, ...] = ()


MetricSpec = Annotated[PeopleMetric | CountMetric | SumMetric | RatioMetric, Field(discriminator="kind")]


class FunnelSpec(_Analysis):
    steps: tuple[str, ...] = Field(min_length=2)
    window_days: int = Field(7, ge=1, le=90)
    order: Literal["strict", "any"] = "strict"
    dimensions: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _steps(self) -> FunnelSpec:
        unknown = [s for s in self.steps if s not in EVENTS]
        if unknown:
            raise ValueError(f"steps: unknown event(s) {unknown}; events: {list(EVENTS)}")
        if len(set(self.steps)) != len(self.steps):
            raise ValueError(f"steps: an event may be one step only, got {list(self.steps)}")
        return self


class RetentionSpec(_Analysis):
    cohort: Literal["first_seen"] = "first_seen"
    period: Literal["day", "week"] = "week"
    periods: int = Field(8, ge=1, le=52)
    return_actions: tuple[str, ...] = ()  # event names or 'order'; none: any activity

    @model_validator(mode="after")
    def _actions(self) -> RetentionSpec:
        unknown = [a for a in self.return_actions if a not in (*EVENTS, ORDER)]
        if unknown:
            raise ValueError(f"return_actions: unknown action(s) {unknown}; actions: {[*EVENTS, ORDER]}")
        return self

    @property
    def period_days(self) -> int:
        return 7 if self.period == "week" else 1


class TransitionSpec(_Analysis):
    kind: Literal["tag", "segments"]
    tag: str | None = None
    segments: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_source(self) -> TransitionSpec:
        if self.kind == "tag" and (self.tag is None or self.segments):
            raise ValueError("kind tag needs `tag` (and no segments)")
        if self.kind == "segments" and (not self.segments or self.tag is not None):
            raise ValueError("kind segments needs `segments` (and no tag)")
        return self


class AlertsConfig(_Strict):
    level: float = Field(99, gt=50, lt=100, description="forecast interval (%); outside it: an alert")
    critical_level: float = Field(99.9, gt=50, lt=100, description="outside this interval: critical")
    min_history_days: int = Field(14, ge=3, description="fewer points: no forecast yet, no alert")
    history_days: int = Field(90, ge=7)
    season_length: int = Field(7, ge=1)
    min_relative_change: float = Field(0.3, ge=0, description="and at least this far from the forecast (share of it)")
    min_absolute_change: float = Field(5, ge=0)
    drill_down: int = Field(3, ge=1, description="dimension values named per alert")
    transform: bool = Field(True, description=(
        "forecast counts on Anscombe's square root and sums on a cube root (variance-stabilising: a count's "
        "spread grows with its level, money is heavy-tailed), the interval transformed back"))
    small_sample: bool = Field(True, description=(
        "widen each interval by Student's t on the series' residual degrees of freedom (points - the ETS "
        "model's parameters) instead of the normal quantile: a 14-point fit knows its spread poorly"))
    per_day: bool = Field(True, description=(
        "level and critical_level hold for the day's whole set of series (Bonferroni over the series "
        "forecast that day), not for each series: 100 series at 99 % each would give one false alarm a day"))

    @model_validator(mode="after")
    def _levels(self) -> AlertsConfig:
        if self.critical_level <= self.level:
            raise ValueError(f"critical_level {self.critical_level} must be above level {self.level}")
        if self.history_days <= self.min_history_days:
            raise ValueError(f"history_days {self.history_days} must be more than min_history_days {self.min_history_days}")
        return self


class ReportConfig(_Strict):
    days: int = Field(60, ge=1)


class AnalyticsConfig(_Strict):
    metrics: tuple[MetricSpec, ...] = ()
    funnels: tuple[FunnelSpec, ...] = ()
    retention: tuple[RetentionSpec, ...] = ()
    transitions: tuple[TransitionSpec, ...] = ()
    alerts: AlertsConfig = AlertsConfig()
    report: ReportConfig = ReportConfig()
    restate_days: int = Field(3, ge=0, le=31, description=(
        "gold_metrics_daily of the last restate_days days before the as-of date is recomputed when the "
        "batch brings records dated on them (late arrivals); 0: never"))

    def metric(self, name: str):
        return next(m for m in self.metrics if m.name == name)

    def tags_read(self) -> set[str]:
        """Tags the analyses group by or follow (read from gold_tags of the as-of date)."""
        dims = {d for a in (*self.metrics, *self.funnels) for d in a.dimensions}
        return {d for d in dims if d not in SOURCE_COLUMNS["activity"] and d not in SOURCE_COLUMNS["events"]
                and d not in SOURCE_COLUMNS["orders"]}


_SECTIONS = {"metrics": "metric", "funnels": "funnel", "retention": "retention", "transitions": "transition"}


def check_analytics(cfg: AnalyticsConfig, tag_types: dict[str, str], segments: set[str]) -> None:
    """Cross-checks against the tags and segments: ValueError naming the analysis and the problem."""
    strings = sorted(t for t, typ in tag_types.items() if typ == "string")
    for section in _SECTIONS:
        names = [a.name for a in getattr(cfg, section)]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{section}: {dup} declared twice")

    def dimension_problem(d: str, columns) -> str | None:
        if d in columns:
            return None
        if d in tag_types:
            return None if tag_types[d] == "string" else f"tag {d!r} is {tag_types[d]}: group by string tags only"
        return f"unknown dimension {d!r}; a column ({sorted(columns)}) or a string tag ({strings})"

    by_name = {m.name: m for m in cfg.metrics}
    for m in cfg.metrics:
        if m.kind == "ratio":
            for part in ("numerator", "denominator"):
                other = by_name.get(getattr(m, part))
                if other is None:
                    raise ValueError(f"metric {m.name!r}: {part}: unknown metric {getattr(m, part)!r}; metrics: {sorted(by_name)}")
                if other.kind == "ratio":
                    raise ValueError(f"metric {m.name!r}: {part}: {other.name!r} is a ratio itself; use a people, count or sum metric")
                missing = [d for d in m.dimensions if d not in other.dimensions]
                if missing:
                    raise ValueError(f"metric {m.name!r}: dimension(s) {missing} are not dimensions of its {part} {other.name!r}")
            continue
        for d in m.dimensions:
            problem = dimension_problem(d, SOURCE_COLUMNS[m.source])
            if problem:
                raise ValueError(f"metric {m.name!r}: dimensions: {problem}")
    for f in cfg.funnels:
        for d in f.dimensions:
            problem = dimension_problem(d, FUNNEL_DIMENSIONS)
            if problem:
                raise ValueError(f"funnel {f.name!r}: dimensions: {problem}")
    for t in cfg.transitions:
        if t.kind == "tag" and t.tag not in strings:
            what = f"is {tag_types[t.tag]}" if t.tag in tag_types else "is not a tag of conf/tags.yaml"
            raise ValueError(f"transition {t.name!r}: tag {t.tag!r} {what}; string tags: {strings}")
        unknown = [s for s in t.segments if s not in segments]
        if unknown:
            raise ValueError(f"transition {t.name!r}: unknown segment(s) {unknown}; segments: {sorted(segments)}")


def _validation_message(e: ValidationError, data: dict) -> str:
    out = []
    for err in e.errors():
        loc = list(err["loc"])
        where = ""
        if len(loc) >= 2 and loc[0] in _SECTIONS and isinstance(loc[1], int):
            items = data.get(loc[0]) or []
            item = items[loc[1]] if loc[1] < len(items) else None
            name = item.get("name") if isinstance(item, dict) else None
            where = f"{_SECTIONS[loc[0]]} {name!r}" if name else f"{loc[0]}[{loc[1]}]"
            loc = [p for p in loc[2:] if p not in {"people", "count", "sum", "ratio"}]
        field = ".".join(str(p) for p in loc)
        msg = re.sub(r"^(Value|Assertion) error, ", "", err["msg"])
        out.append(f"{where}{': ' if where and field else ''}{field}: {msg}" if (where or field) else msg)
    return "; ".join(out)


def load_analytics(path: Path, tag_types: dict[str, str], segments: set[str]) -> AnalyticsConfig:
    """conf/analytics.yaml, typed and checked; ConfigError names the file, the analysis and the problem."""
    data = read_yaml(path)
    try:
        cfg = AnalyticsConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{path}: {_validation_message(e, data)}") from None
    try:
        check_analytics(cfg, tag_types, segments)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    return cfg
