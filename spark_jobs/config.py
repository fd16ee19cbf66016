"""Loads the one typed CDP config from conf/cdp.yaml (plus environment overrides); writes nothing."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from spark_jobs.regexes import engine_regex_error

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONF = PROJECT_ROOT / "conf" / "cdp.yaml"
CHANNELS = ("app_events", "wechat", "crm", "orders", "pos", "ad_leads")

# Environment variable -> dotted config key it overrides.
ENV_OVERRIDES = {
    "CDP_ENGINE": "engine.kind",
    "CDP_SPARK_REMOTE": "engine.remote",
    "CDP_LANDING": "paths.landing",
    "CDP_LAKEHOUSE": "paths.lakehouse",
    "CDP_EXPORTS": "paths.exports",
    "CDP_MLFLOW_ARTIFACTS": "ml.artifacts",
}


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file and the key to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _runs_on_every_engine(pattern: str) -> str:
    problem = engine_regex_error(pattern)
    if problem:
        raise ValueError(f"`{pattern}`: {problem}")
    return pattern


# A regex the engine runs (rlike, regexp_replace): checked against Sail's and JVM Spark's regex dialects.
EngineRegex = Annotated[str, AfterValidator(_runs_on_every_engine)]


class SailConfig(_Strict):
    session_timeout_secs: int = Field(86400, gt=0)
    parallelism: int | None = Field(None, gt=0)


class EngineConfig(_Strict):
    kind: Literal["local", "connect", "classic"] = "local"
    remote: str = "sc://localhost:15002"
    classic_master: str = "local[*]"
    classic_delta: bool = True
    classic_driver_memory: str = "4g"
    classic_jars: tuple[str, ...] = ()  # extra JARs for classic, e.g. GraphFrames for identity.algorithm: graphframes
    # Extra Spark settings for classic (applied last): executor memory, a YARN queue, spark.sql.* tuning.
    classic_conf: dict[str, str] = Field(default_factory=dict)
    sail: SailConfig = SailConfig()

    @field_validator("remote")
    @classmethod
    def _remote_is_spark_connect(cls, v: str) -> str:
        if not v.startswith("sc://"):
            raise ValueError(f"must be a Spark Connect URL like sc://host:15002, got {v!r}")
        return v


def file_safe(name: str) -> str:
    """`name` (a run id) as a file name: anything but letters, digits, `_.-` becomes `_`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


class PathsConfig(_Strict):
    landing: str = "landing"
    lakehouse: str = "lakehouse"
    sources: str = "conf/sources.yaml"    # landing sources: formats, field mappings, identity semantics
    tags: str = "conf/tags.yaml"          # tag definitions (TagsConfig)
    segments: str = "conf/segments.yaml"  # segment definitions (SegmentsConfig)
    analytics: str = "conf/analytics.yaml"  # metrics, funnels, retention, transitions, alerts (AnalyticsConfig)
    exports: str = "exports"              # segment exports: <exports>/<segment>/<date>/

    def file(self, which: str) -> Path:
        return _resolve(getattr(self, which))

    def exports_uri(self) -> str:
        return self.exports.rstrip("/") if "://" in self.exports else str(_resolve(self.exports))

    def landing_path(self):
        """The landing zone: a local Path, or a LandingPath (spark_jobs/storage.py) when it is an
        object-store URI such as s3://bucket/landing."""
        from spark_jobs.storage import landing_root

        return landing_root(self.landing.rstrip("/")) if "://" in self.landing else _resolve(self.landing)

    def on_object_store(self) -> bool:
        """The lakehouse or the landing zone is an object-store URI (the engine then needs S3 access)."""
        return "://" in self.lakehouse or "://" in self.landing

    def lakehouse_uri(self) -> str:
        """The table root: object-store URIs are kept as they are, local paths made absolute."""
        if "://" in self.lakehouse:
            return self.lakehouse.rstrip("/")
        return str(_resolve(self.lakehouse))

    def runs(self, run_id: str | None = None) -> Path:
        """Where run figures and summaries go: <lakehouse>/_runs (the project's lakehouse/_runs when the
        lakehouse is an object store), or one run's folder in it (the run id made file-name safe)."""
        root = (Path(self.lakehouse_uri()) if "://" not in self.lakehouse else PROJECT_ROOT / "lakehouse") / "_runs"
        return root / file_safe(run_id) if run_id else root


class IngestConfig(_Strict):
    # The sources to ingest (names in paths.sources); null: every declared source that has a landing
    # folder (landing/<source>/), so a source nobody delivers costs nothing.
    sources: tuple[str, ...] | None = None


class StandardiseConfig(_Strict):
    phone_region: str = Field("CN", min_length=2, max_length=2)
    timezone: str = "Asia/Shanghai"  # local day of an event (event_date)


class BlocklistConfig(_Strict):
    """Identifier values that never link anything: exact canonical values and regexes per id_type
    (`"*"` applies to every type), and types whose all-same-digit values are junk (`13333333333`)."""

    # Where each default comes from, and what was left out on purpose: docs/identity-blocklist.md.
    exact: dict[str, tuple[str, ...]] = {
        "*": ("unknown", "null", "none", "undefined", "n/a", "na", "-", "0", "test",
              "-1", "anonymous", "nil", "nan", "{}", '""'),
        "phone": ("+8613800000000", "+8613900000000", "+8612345678901", "+8613800138000"),
        "email": ("test@test.com", "test@example.com", "noreply@example.com", "null@null.com",
                  "1@1.com", "a@a.com", "na@na.com", "none@none.com"),
        "device_id": ("00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "02:00:00:00:00:00",
                      "9774D56D682E549C", "LMY47D"),
    }
    regex: dict[str, tuple[EngineRegex, ...]] = {
        "*": (r"^[0\-]+$",),  # zeroes and dashes: all-zero IDFA / OAID / ANDROID_ID / IMEI, "0000", "--"
        "email": (r"^(test|demo|fake|noreply|no-reply)@", r"@(example|test)\.(com|cn)$",
                  r"^(noemail|no-email|no_email|nomail)@", r"@example\.(net|org)$",
                  r"\.(test|example|invalid|localhost)$"),
        "device_id": (r"^[F\-]+$",),
    }
    repeated_digits: tuple[str, ...] = ("phone",)  # +8613333333333, +8618888888888 and the like


ID_TYPES = ("member_id", "unionid", "login_id", "phone", "email", "openid", "device_id")


class MatchingConfig(_Strict):
    """The learned tie-break (spark_jobs/identity/matching.py): two memberships linked through one
    verified identifier are scored by a Fellegi-Sunter model on their CRM attributes."""

    enabled: bool = True
    # Merge above this match probability (null: the model's default threshold).
    threshold: float | None = Field(None, gt=0.0, lt=1.0)
    # Train only on this many CRM members at most (a random sample; EM needs thousands, not millions).
    train_sample: int = Field(10_000, ge=100)


class IdentityConfig(_Strict):
    algorithm: Literal["dataframe", "graphframes"] = "dataframe"  # graphframes: classic Spark with the JAR
    strong_types: tuple[str, ...] = ("member_id", "login_id", "unionid")
    hub_max_strong: int = Field(3, ge=1, description="a value linked to more distinct strong identifiers of one type is a hub")
    # Per id_type thresholds: a device that two accounts log in on is a family's, not a person's.
    hub_max_strong_by_type: dict[str, int] = {"device_id": 1}
    # Per-person limits: a person holds at most this many identifiers of a type. Links are re-added
    # strongest first and one that would break a limit is cut (gold_id_dropped says which).
    limits: dict[str, int] = {"member_id": 1, "unionid": 1, "login_id": 2, "phone": 3, "email": 3,
                              "openid": 4, "device_id": 8}
    # Evidence priority, strongest first: a link is as strong as its weaker end.
    priority: tuple[str, ...] = ID_TYPES
    max_rounds: int = Field(100, ge=1)
    # Connected components: a local union-find settles partitions of up to this many edges before the
    # large-star / small-star rounds join what spans partitions; null runs the rounds alone.
    local_union_find_edges: int | None = Field(10_000_000, ge=1)
    blocklist: BlocklistConfig = BlocklistConfig()
    # Time-aware ownership: an identifier seen with strong identities in disjoint periods (a re-issued
    # phone number) belongs to each owner for their period, and does not join them.
    time_aware_ownership: bool = True
    # A contact-only link (a phone typed on an order) may join two people who each hold a verified strong identifier.
    contact_joins_verified: bool = False
    matching: MatchingConfig = MatchingConfig()

    @field_validator("strong_types", "priority", "limits", "hub_max_strong_by_type")
    @classmethod
    def _known_types(cls, v):
        unknown = sorted(set(v) - set(ID_TYPES))  # the names, or a mapping's keys
        if unknown:
            raise ValueError(f"unknown id type(s) {unknown}; known: {list(ID_TYPES)}")
        return v

    @field_validator("limits", "hub_max_strong_by_type")
    @classmethod
    def _positive(cls, v: dict[str, int]) -> dict[str, int]:
        bad = {t: n for t, n in v.items() if n < 1}
        if bad:
            raise ValueError(f"limits must be at least 1, got {bad}")
        return v

    @model_validator(mode="after")
    def _priority_covers_limits(self) -> IdentityConfig:
        missing = sorted(set(ID_TYPES) - set(self.priority))
        if missing:
            raise ValueError(f"priority must rank every id type; missing {missing}")
        return self


class QualityConfig(_Strict):
    """Great Expectations gates on every table write (expectations/)."""

    enabled: bool = True
    docs: str | None = None  # Data Docs and result files; default <lakehouse>/_dq (local lakehouse)
    volume_tolerance: float = Field(0.5, gt=0, description="warn when a batch's rows differ from the trailing median by more")
    volume_history: int = Field(7, ge=1, description="earlier batches in the trailing median")
    volume_min_history: int = Field(3, ge=1, description="no volume check before this many earlier batches")
    volume_min_rows: int = Field(100, ge=0, description="no volume check on tables whose median is smaller")
    late_hours: int = Field(24, ge=0, description="event times up to this long before the batch day are on time")
    max_person_identifiers: int = Field(50, ge=1, description="critical: no person may hold more identifiers")
    max_over_limit_share: float = Field(0.01, ge=0, le=1, description="warning: share of identifiers in people over a per-type limit")
    max_singleton_share: float = Field(0.9, ge=0, le=1, description="warning: share of identifiers alone in their person")
    prove_keys: bool = Field(True, description="a key a writer proves by construction is recorded as proved after "
                             "checking the proof's premise; false checks every key over the whole frame")


class MaintenanceConfig(_Strict):
    """Delta table upkeep (spark_jobs.maintenance): compaction, vacuum, log checkpoints."""

    retention_hours: int = Field(168, ge=0, description="vacuum deletes unreferenced files older than this")
    # Readers and writers in flight, and time travel inside the window, still need removed files: a
    # shorter vacuum retention is refused unless forced. 168 h (7 days) is the Delta default.
    min_retention_hours: int = Field(168, ge=0, description="a shorter vacuum retention is refused unless forced")
    target_file_mb: int = Field(128, ge=1, description="compaction bin-packs small files up to about this size")

    @model_validator(mode="after")
    def _retention_meets_minimum(self) -> MaintenanceConfig:
        if self.retention_hours < self.min_retention_hours:
            raise ValueError(f"retention_hours {self.retention_hours} is below min_retention_hours {self.min_retention_hours}")
        return self


# --- profiles: survivorship per attribute ------------------------------------------------------------
# Where each profile attribute can come from: CRM contact fields, or identifiers seen in any source.
ATTRIBUTE_SOURCES: dict[str, tuple[str, ...]] = {
    **{a: ("crm",) for a in ("name", "gender", "birthday", "city", "tier")},
    "phone": ("crm", "orders", "app_events", "wechat", "pos", "ad_leads"),
    "email": ("crm",),
}


class Survivorship(_Strict):
    """How one attribute's value is chosen among what the person's records say.
    source_priority: the first source in `sources` that has a value (its most recent value);
    most_recent: the newest value from any listed source; most_frequent: the value seen on most records.
    Ties go to the source listed first, then the newest, then the smallest value."""

    rule: Literal["source_priority", "most_recent", "most_frequent"]
    sources: tuple[str, ...] | None = None  # None: every source the attribute has, in ATTRIBUTE_SOURCES order


class ProfilesConfig(_Strict):
    # gold_recent_events (served by /v1/profiles/{id}/events): each person's newest `recent_events_limit`
    # events and orders of the last `recent_events_days` days, newest first
    recent_events_days: int = Field(30, ge=1, le=366)
    recent_events_limit: int = Field(20, ge=1, le=1000)
    survivorship: dict[str, Survivorship] = {
        "name": Survivorship(rule="most_recent"), "gender": Survivorship(rule="most_frequent"),
        "birthday": Survivorship(rule="most_frequent"), "city": Survivorship(rule="most_recent"),
        "tier": Survivorship(rule="most_recent"),
        "phone": Survivorship(rule="source_priority", sources=("crm", "orders", "app_events", "wechat", "pos", "ad_leads")),
        "email": Survivorship(rule="most_recent"),
    }

    @field_validator("survivorship")
    @classmethod
    def _every_attribute_known(cls, v: dict[str, Survivorship]) -> dict[str, Survivorship]:
        missing = sorted(set(ATTRIBUTE_SOURCES) - set(v))
        unknown = sorted(set(v) - set(ATTRIBUTE_SOURCES))
        if missing or unknown:
            raise ValueError(f"declare a rule for each of {list(ATTRIBUTE_SOURCES)}"
                             + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
        for attr, rule in v.items():
            bad = sorted(set(rule.sources or ()) - set(ATTRIBUTE_SOURCES[attr]))
            if bad:
                raise ValueError(f"{attr}: source(s) {bad} never carry it; its sources: {list(ATTRIBUTE_SOURCES[attr])}")
        return v

    def sources(self, attr: str) -> tuple[str, ...]:
        return self.survivorship[attr].sources or ATTRIBUTE_SOURCES[attr]


class MlConfig(_Strict):
    """Churn and purchase-propensity models (ml/): features are tags computed as of each cutoff."""

    tracking_uri: str | None = None  # None: sqlite:///<project>/mlruns/mlflow.db ($MLFLOW_TRACKING_URI wins)
    artifacts: str = "mlruns/artifacts"  # artifact root of experiments created on the default store
    experiment: str = "cdp"
    horizon_days: int = Field(14, ge=1, description="labels look this many days past the cutoff")
    cutoffs: int = Field(3, ge=2, description="cutoffs stacked per training set; the newest is the holdout")
    cutoff_step_days: int = Field(7, ge=1, description="days between cutoffs")
    holdouts: int = Field(1, ge=1, description="rolling origins: the newest cutoffs each evaluated as a holdout "
                                               "(spread reported); the newest decides registration and promotion")
    bootstrap: int = Field(200, ge=0, description="paired bootstrap resamples of the holdout for the margin CIs")
    calibration: Literal["sigmoid", "isotonic", "none"] = "sigmoid"  # fitted on a validation fold (ml/train.py)
    tuning_trials: int = Field(30, ge=0, description="Optuna trials of the LightGBM search (ml/tuning.py) per "
                                                     "target, inside the training cutoffs; 0: no search")
    tuning_timeout_seconds: float = Field(120, gt=0, description="time box of one target's search")
    active_days: int = Field(30, ge=1, description="churn is defined for people active this many days before the cutoff")
    features: tuple[str, ...] = (
        "tenure_days", "events_7d", "events_30d", "active_days_30d", "add_cart_7d", "view_item_30d", "orders_30d",
        "orders_90d", "spend_30d", "spend_90d", "avg_order_value_90d", "categories_90d", "stores_90d",
        "wechat_events_30d", "pos_orders_90d", "days_since_last_active", "days_since_last_order",
        "days_since_first_order", "rfm_recency", "rfm_monetary",
        "orders_180d", "orders_365d", "orders_all", "order_days_all", "spend_all",  # lifetime counts (issue 17)
    )  # not rfm_frequency: a quintile among each cutoff's buyers, so one value means other counts at other
    # cutoffs, and most buyers tie at one order (CDNOW sample, churn, logistic: ROC-AUC 0.595 with it, 0.753 without)
    categorical: tuple[str, ...] = ("lifecycle_stage", "preferred_channel", "member_tier", "city_tier")
    models: dict[str, str] = {"churn": "cdp_churn", "purchase": "cdp_propensity"}  # target -> registered name
    seed: int = 42

    @field_validator("models")
    @classmethod
    def _known_targets(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - {"churn", "purchase"})
        if unknown:
            raise ValueError(f"unknown target(s) {unknown}; targets: churn, purchase")
        return v


class GenerateDefaults(_Strict):
    people: int = Field(20000, ge=1)
    days: int = Field(3, ge=1)
    seed: int = 42
    start: dt.date = dt.date(2026, 11, 1)


class CdpConfig(_Strict):
    engine: EngineConfig = EngineConfig()
    paths: PathsConfig = PathsConfig()
    ingest: IngestConfig = IngestConfig()
    standardise: StandardiseConfig = StandardiseConfig()
    identity: IdentityConfig = IdentityConfig()
    quality: QualityConfig = QualityConfig()
    profiles: ProfilesConfig = ProfilesConfig()
    ml: MlConfig = MlConfig()
    maintenance: MaintenanceConfig = MaintenanceConfig()
    generate: GenerateDefaults = GenerateDefaults()
    # Loaded from paths.sources / paths.tags / paths.segments (their own files, their own errors) unless given.
    sources: Any = None
    tags: Any = None
    segments: Any = None
    analytics: Any = None  # loaded from paths.analytics unless given

    def ingest_sources(self) -> tuple[str, ...]:
        """The sources a run ingests: ingest.sources, or every declared source with a landing folder."""
        if self.ingest.sources is not None:
            return self.ingest.sources
        landing = self.paths.landing_path()
        return tuple(n for n in self.sources.sources if (landing / n).is_dir())

    @model_validator(mode="after")
    def _load_tags_and_segments(self) -> CdpConfig:
        from spark_jobs.sources.config import load_sources
        from spark_jobs.tag_config import load_segments, load_tags

        if self.sources is None:
            object.__setattr__(self, "sources", load_sources(self.paths.file("sources")))
        unknown = sorted(set(self.ingest.sources or ()) - set(self.sources.sources))
        if unknown:
            raise ValueError(f"ingest.sources: {unknown} are not declared in {self.paths.sources} "
                             f"(declared: {sorted(self.sources.sources)})")

        if self.tags is None:
            object.__setattr__(self, "tags", load_tags(self.paths.file("tags")))
        if self.segments is None:
            object.__setattr__(self, "segments", load_segments(self.paths.file("segments"), self.tags))
        if self.analytics is None:
            from spark_jobs.analytics.config import load_analytics

            object.__setattr__(self, "analytics", load_analytics(self.paths.file("analytics"), self.tags.types,
                                                                 {s.name for s in self.segments.segments}))
        kinds = {out: t.kind for t in self.tags.tags for out in t.outputs()}
        for name in (*self.ml.features, *self.ml.categorical):
            if name not in self.tags.types:
                raise ValueError(f"ml: feature {name!r} is not a tag of {self.paths.tags}")
            if kinds[name] == "predicted":
                raise ValueError(f"ml: feature {name!r} is a predicted tag: a model must not learn from model scores")
        bad = [n for n in self.ml.features if self.tags.types[n] not in ("long", "double", "boolean")]
        if bad:
            raise ValueError(f"ml: features {bad} are not numeric; list them under ml.categorical")
        return self


def _resolve(p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


def _set_dotted(data: dict, dotted: str, value: str) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {}) or {}
    node[leaf] = value


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> CdpConfig:
    """Load conf/cdp.yaml (or `path`, or $CDP_CONF), apply CDP_* environment overrides, validate."""
    env = os.environ if env is None else env
    conf_path = Path(path or env.get("CDP_CONF") or DEFAULT_CONF)
    data = read_yaml(conf_path)
    for var, dotted in ENV_OVERRIDES.items():
        if env.get(var):
            _set_dotted(data, dotted, env[var])
    if "tags" in data or "segments" in data or "sources" in data or "analytics" in data:
        raise ConfigError(f"{conf_path}: sources, tags, segments and analytics live in their own files "
                          "(paths.sources, paths.tags, paths.segments, paths.analytics)")
    try:
        return CdpConfig.model_validate(data)
    except ValidationError as e:
        for err in e.errors():  # a tags/segments file's own error names that file
            if isinstance((err.get("ctx") or {}).get("error"), ConfigError):
                raise err["ctx"]["error"] from None
        raise ConfigError(f"{conf_path}: {_problems(e)}") from None


def _problems(e: ValidationError) -> str:
    return "; ".join(f"{_dotted(err['loc']) + ': ' if err['loc'] else ''}{err['msg'].removeprefix('Value error, ')}"
                     for err in e.errors())


def _dotted(loc: tuple[str | int, ...]) -> str:
    """A pydantic error location as the key to fix: identity.blocklist.regex.email[0]."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def read_yaml(path: Path) -> dict:
    """A YAML file whose top level is a mapping; ConfigError naming the file otherwise."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data
